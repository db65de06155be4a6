"""A captioning run's state on disk: the units of work, the journal of committed units, the run config, the lock.

Work is cut into units: per split, consecutive blocks of ``records_per_file`` rows, each written as
``data/{split}-{index:05d}-of-{count:05d}.parquet`` (the file naming ``datasets.load_dataset`` maps to
splits). The cut depends only on the dataset, the splits and ``num_samples``, never on ``num_shards``, so
scale-out jobs write disjoint files of one layout and a merge just gathers them.

A unit is committed atomically: written to a temporary file, ``os.replace``d into place, then appended to
``.cqa/journal.jsonl`` with its row count and SHA-256. A journaled unit counts as done only while its file
still has that checksum, so a damaged shard is redone on resume instead of failing every later run.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import re
import socket
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

STATE_DIR = ".cqa"  # hidden: datasets ignores it and Hub uploads skip it
JOURNAL = "journal.jsonl"
RUN_CONFIG = "run.json"
LOCK = "lock"


class RunStateError(RuntimeError):
    """The output folder's run state cannot be used as it is; the message says what to do."""


@dataclass(frozen=True)
class WorkUnit:
    split: str
    index: int
    count: int
    start: int
    stop: int

    @property
    def filename(self) -> str:
        return f"data/{self.split}-{self.index:05d}-of-{self.count:05d}.parquet"


# What `WorkUnit.filename` writes; a run config or journal naming anything else (`../../x.parquet`) was not written
# by a run and could reach outside the output folder.
UNIT_NAME_RE = re.compile(r"data/[A-Za-z0-9_-]+-\d{5}-of-\d{5}\.parquet")


def plan_units(num_rows: dict[str, int], records_per_file: int) -> list[WorkUnit]:
    """All units of a run, split by split, independent of sharding."""
    if records_per_file < 1:
        raise ValueError(f"records_per_file must be at least 1, got {records_per_file}")
    units = []
    for split, n in num_rows.items():
        count = max(1, -(-n // records_per_file))
        units += [
            WorkUnit(split, i, count, i * records_per_file, min(n, (i + 1) * records_per_file)) for i in range(count)
        ]
    return units


def shard_units(units: Sequence[WorkUnit], num_shards: int, shard_index: int) -> list[WorkUnit]:
    """Round-robin over the global unit order: job ``shard_index`` of ``num_shards`` takes every n-th unit."""
    if num_shards < 1 or not 0 <= shard_index < num_shards:
        raise ValueError(f"need 0 <= shard_index < num_shards, got shard {shard_index} of {num_shards}")
    return [u for i, u in enumerate(units) if i % num_shards == shard_index]


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_journal(output_dir: Path) -> dict[str, dict]:
    """Committed units whose file is present and intact, by file name.

    A line cut short by a crash, or one that is not a journal entry, is skipped (with a warning): its unit is
    simply redone. A unit whose file is missing or no longer matches its checksum is also redone.
    """
    path = output_dir / STATE_DIR / JOURNAL
    done: dict[str, dict] = {}
    if not path.exists():
        return done
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        try:
            entry = json.loads(line)
            name = entry["file"]
            if not UNIT_NAME_RE.fullmatch(name):
                raise TypeError(name)
        except (json.JSONDecodeError, KeyError, TypeError):
            logger.warning("%s line %d is damaged; the unit it recorded will be redone", path, number)
            continue
        file = output_dir / name
        if not file.is_file():
            done.pop(name, None)
            continue
        if "sha256" in entry and file_sha256(file) != entry["sha256"]:
            logger.warning("%s does not match its journal checksum (damaged); it will be redone", file)
            done.pop(name, None)
            continue
        done[name] = entry
    return done


def append_journal(output_dir: Path, entry: dict) -> None:
    with open(output_dir / STATE_DIR / JOURNAL, "a") as f:
        f.write(json.dumps(entry) + "\n")
        f.flush()
        os.fsync(f.fileno())


def commit_file(output_dir: Path, name: str, write: Callable[[Path], None], entry: dict) -> None:
    """Write `output_dir/name` through `write(tmp_path)`, move it into place, then journal it with its checksum."""
    final = output_dir / name
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
    write(tmp)
    os.replace(tmp, final)
    append_journal(output_dir, {"file": name, **entry, "sha256": file_sha256(final)})


def write_json_atomic(path: Path, obj: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True))
    os.replace(tmp, path)


def read_run_config(output_dir: Path) -> dict:
    path = output_dir / STATE_DIR / RUN_CONFIG
    if not path.is_file():
        raise RunStateError(f"{output_dir} is not a CQA output folder (no {STATE_DIR}/{RUN_CONFIG})")
    try:
        config = json.loads(path.read_text())
        if not isinstance(config, dict) or not isinstance(config.get("units"), list):
            raise ValueError("no list of units")
        strange = [str(u)[:80] for u in config["units"] if not isinstance(u, str) or not UNIT_NAME_RE.fullmatch(u)]
        if strange:
            raise ValueError(f"unit {strange[0]!r} is not a data/<split>-NNNNN-of-NNNNN.parquet file")
    except ValueError as err:
        raise RunStateError(
            f"{path} is damaged ({err}); the run's options cannot be checked. Start again in an empty folder, "
            "or restore the file from the run that wrote it"
        ) from None
    return config


def stray_shards(output_dir: Path, units: Sequence[str]) -> list[str]:
    """Parquet files under data/ that are no unit of this run (they would be loaded as extra rows)."""
    data = output_dir / "data"
    present = {f"data/{p.name}" for p in data.glob("*.parquet")} if data.is_dir() else set()
    return sorted(present - set(units))


def remove_interrupted_writes(output_dir: Path) -> None:
    data = output_dir / "data"
    for stale in data.glob(".*.tmp-*") if data.is_dir() else []:
        stale.unlink()


@contextmanager
def run_lock(output_dir: Path) -> Iterator[None]:
    """Hold `.cqa/lock` while writing: a second run on the same folder stops and says who holds it.

    `flock` is released by the kernel when the holder dies, so a killed run never leaves a stale lock.
    """
    path = output_dir / STATE_DIR / LOCK
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            raise RunStateError(
                f"{output_dir} is being written by {holder} (lock {path}); wait for it to finish or stop it first"
            ) from None
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()} on {socket.gethostname()}")
        f.flush()
        try:
            yield
        finally:
            f.seek(0)
            f.truncate()
            fcntl.flock(f, fcntl.LOCK_UN)
