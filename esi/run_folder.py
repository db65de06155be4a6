"""A resumable job folder: the run's options, a journal of committed units, a lock naming its holder.

Preparation (`esi.data.prepare`) and captioning (`esi.cqa.run`) both write long jobs into a folder that a
killed run must be able to continue without losing or duplicating work. They share this engine:

- ``STATE/run.json`` holds the options that decide what a unit contains. A resumed run must bring the same
  ones; otherwise it stops with a readable diff ("x was A, now B").
- A unit's files are written under a temporary name (``.NAME.tmp-PID``), ``os.replace``d into place, then
  journaled: one line of ``STATE/journal.jsonl`` with the unit's name, each file's sha256 and what the job
  wants to remember. A journaled unit counts as done only while every file still has its checksum, so a
  damaged file is redone on resume; a journal line cut short by a crash is skipped and its unit redone.
- ``STATE/lock`` is held (``flock``) while the folder is written and names the holder (host, pid, start time);
  the kernel releases it when the holder dies, so a killed run never leaves a stale lock.

Every JSON file goes through `write_json_atomic` (temporary file, fsync, rename: `write_text_atomic`): a crash
leaves the old file or the new one, never half of one.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import shutil
import socket
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from esi.checksum import sha256_file

logger = logging.getLogger(__name__)

RUN_CONFIG = "run.json"
JOURNAL = "journal.jsonl"
LOCK = "lock"


class RunFolderError(RuntimeError):
    """The folder's run state cannot be used as it is; the message says what to do."""


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write `text` to a temporary file, fsync it, rename it over `path`: a crash leaves the old file or the new."""
    tmp = temporary_path(path)
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_json_atomic(path: str | os.PathLike, obj: object, **dump_options) -> None:
    """`write_text_atomic` of `obj` as JSON (`json.dumps` with `dump_options`)."""
    write_text_atomic(path, json.dumps(obj, **dump_options))


def temporary_path(path: str | os.PathLike) -> Path:
    """Where `path` is written before it is moved into place (hidden, so that no loader picks it up)."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def options_diff(previous: Mapping, current: Mapping, keys: Iterable[str] | None = None) -> list[str]:
    """`"x was A, now B"` for every option (of `keys`, default all) whose value differs."""
    names = sorted(set(previous) | set(current)) if keys is None else list(keys)
    return [f"{k} was {previous.get(k)!r}, now {current.get(k)!r}" for k in names if previous.get(k) != current.get(k)]


class RunFolder:
    """The run state of the job folder `root`, kept under `root/state_dir`.

    Args:
        root: the job's output folder.
        state_dir: hidden folder name for the state (loaders and Hub uploads skip dot-folders).
        file_pattern: every file a unit may commit, relative to `root`; a journal or config naming anything
            else (`../../x`) was not written by a run and is refused, so nothing reaches outside `root`.
        data_glob: what a loader of the finished folder reads as data (relative to `root`); a matching file that
            is no file of the run is refused.
        check_config: raises `ValueError` for a run config the job cannot use (called on every read).
    """

    def __init__(
        self,
        root: str | os.PathLike,
        state_dir: str,
        file_pattern: re.Pattern,
        data_glob: str | None = None,
        check_config: Callable[[dict], None] | None = None,
    ):
        self.root = Path(root)
        self.state = self.root / state_dir
        self.file_pattern = file_pattern
        self.data_glob = data_glob
        self.check_config = check_config
        self.done: dict[str, dict] = {}

    def read_config(self) -> dict:
        path = self.state / RUN_CONFIG
        if not path.is_file():
            raise RunFolderError(f"{self.root} holds no run to continue (no {path.relative_to(self.root)})")
        try:
            config = json.loads(path.read_text())
            if not isinstance(config, dict):
                raise ValueError("not a JSON object")
            if self.check_config is not None:
                self.check_config(config)
        except ValueError as err:
            raise RunFolderError(
                f"{path} is damaged ({err}); the run's options cannot be checked. Start again in an empty folder, "
                "or restore the file from the run that wrote it"
            ) from None
        return config

    @contextmanager
    def run(
        self,
        config: dict,
        resume: bool,
        compare: Iterable[str] | None = None,
        expected: Collection[str] | None = None,
    ) -> Iterator[dict[str, dict]]:
        """Hold the folder for a run with options `config`; yields the units already done (`journal`).

        A non-empty folder is continued only with `resume` and the same options (`compare`: the keys that must
        agree, default all). Files left half-written by a killed run are deleted. With `expected` (the run's
        files), a file matching `data_glob` that is none of them is refused: a loader would read it as data.
        """
        if self._occupied():
            if not resume:
                raise FileExistsError(
                    f"output directory {self.root} is not empty; pass --resume to continue the run there, "
                    "or choose an empty directory"
                )
            changed = options_diff(self.read_config(), config, compare)
            if changed:
                raise ValueError(
                    f"cannot resume {self.root} with different options: {'; '.join(changed)}. Rerun with the "
                    "earlier options, or use a new directory"
                )
        self.state.mkdir(parents=True, exist_ok=True)
        with self.lock():
            write_json_atomic(self.state / RUN_CONFIG, config, indent=2, sort_keys=True)
            self._remove_interrupted_writes()
            self.refuse_stray_files(expected)
            self.done = self.journal()
            yield self.done

    def _occupied(self) -> bool:
        """Whether the folder holds anything but its lock file (all that `clear` leaves)."""
        if not self.root.is_dir():
            return False
        inside = [*self.root.iterdir(), *(self.state.iterdir() if self.state.is_dir() else [])]
        return any(p not in (self.state, self.state / LOCK) for p in inside)

    def clear(self) -> None:
        """Empty the folder for a fresh run (all but the lock file), unless another run is writing it."""
        self.state.mkdir(parents=True, exist_ok=True)
        with self.lock():
            for child in [*self.root.iterdir(), *self.state.iterdir()]:
                if child == self.state or child == self.state / LOCK:
                    continue
                shutil.rmtree(child) if child.is_dir() else child.unlink()

    def commit_all(self, units: Iterable[tuple[str, Mapping[str, Callable[[str], object]], dict]]) -> None:
        """Commit each `(unit, {file: write}, entry)` as it comes: `write(tmp_path)` writes the file."""
        for unit, writers, entry in units:
            for name, write in writers.items():
                tmp = temporary_path(self.root / name)
                tmp.parent.mkdir(parents=True, exist_ok=True)
                write(str(tmp))
                os.replace(tmp, self.root / name)
            self.record(unit, list(writers), entry)

    def record(self, unit: str, files: Iterable[str], entry: dict) -> None:
        """Journal `unit` as done with its `files` (already in place) and their checksums."""
        line = {"unit": unit, "files": {name: sha256_file(self.root / name) for name in files}, **entry}
        with open(self.state / JOURNAL, "a") as f:
            f.write(json.dumps(line) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.done[unit] = line

    def journal(self) -> dict[str, dict]:
        """Journaled units whose files are all present and intact, by unit name (the latest entry of each)."""
        path = self.state / JOURNAL
        done: dict[str, dict] = {}
        lines = path.read_text().splitlines() if path.exists() else []
        for number, line in enumerate(lines, start=1):
            try:
                entry = json.loads(line)
                unit, files = entry["unit"], entry["files"]
                if not isinstance(unit, str) or not isinstance(files, dict):
                    raise TypeError(entry)
                if not all(isinstance(n, str) and self.file_pattern.fullmatch(n) for n in files):
                    raise TypeError(files)
            except (json.JSONDecodeError, KeyError, TypeError):
                logger.warning("%s line %d is damaged; the unit it recorded will be redone", path, number)
                continue
            damaged = [
                n for n, sha in files.items() if not (self.root / n).is_file() or sha256_file(self.root / n) != sha
            ]
            if damaged:
                if any((self.root / n).is_file() for n in damaged):
                    logger.warning(
                        "%s: not the file(s) the journal recorded (damaged); unit %s is redone", damaged, unit
                    )
                done.pop(unit, None)
                continue
            done[unit] = entry
        return done

    def _remove_interrupted_writes(self) -> None:
        for stale in self.root.rglob(".*.tmp-*"):
            if self.state not in stale.parents and stale.is_file():
                stale.unlink()

    def refuse_stray_files(self, expected: Collection[str] | None) -> None:
        """Raise if a file that `data_glob` matches is none of `expected` (a loader would read it as data)."""
        if self.data_glob is None or expected is None:
            return
        stray = sorted({str(p.relative_to(self.root)) for p in self.root.glob(self.data_glob)} - set(expected))
        if stray:
            raise RunFolderError(
                f"{self.root} holds file(s) that are no unit of this run: {stray[:5]}; they would be loaded as "
                "extra rows. Move them out of the folder and run again"
            )

    @contextmanager
    def lock(self) -> Iterator[None]:
        """Hold `STATE/lock`: a second run on the same folder stops and says who holds it."""
        path = self.state / LOCK
        with open(path, "a+") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                f.seek(0)
                holder = f.read().strip() or "another process"
                raise RunFolderError(
                    f"{self.root} is being written by {holder} (lock {path}); wait for it to finish or stop it first"
                ) from None
            f.seek(0)
            f.truncate()
            since = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
            f.write(f"pid {os.getpid()} on {socket.gethostname()} since {since}")
            f.flush()
            try:
                yield
            finally:
                f.seek(0)
                f.truncate()
                fcntl.flock(f, fcntl.LOCK_UN)
