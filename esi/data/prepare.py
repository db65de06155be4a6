"""Stream any ECG source into the prepared dataset: bounded memory, parallel, resumable, shardable.

A source (PTB-XL, Challenge, MIMIC-IV-ECG, WFDB folder) lists light rows (metadata, no signals)
and turns one row into one example. The rows are cut into units of `unit_size` records; each
worker process reads a unit's records and streams them into one Arrow file per split
(`OUTPUT/{split}/unit-NNNNN.arrow`, written under a temporary name and renamed when complete);
the unit is then journaled in `OUTPUT/.prepare/` (rows per split, skipped records, each file's sha256)
by `esi.run_folder.RunFolder`. A killed run is resumed with `resume=True`: committed units are kept,
half-written or damaged files are deleted and redone, so no record is lost or written twice. Once
every unit is committed the folder gets `datasets`' `save_to_disk` metadata (`dataset_dict.json`,
per-split `state.json`) and loads with `datasets.load_from_disk` (memory-mapped) and `esi.data.torch_dataset`.

`num_shards` / `shard_index` split a corpus across machines: shard k prepares units k, k + n, ...
into its own complete folder.

Research software, not a diagnostic device.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Protocol

import pandas as pd
from datasets import DatasetDict, Features, load_from_disk
from datasets.arrow_writer import ArrowWriter
from tqdm.auto import tqdm

from esi.data.options import PrepareOptions, default_num_proc
from esi.data.schema import SPLIT_FOLDS, RecordError, split_of
from esi.run_folder import RunFolder, temporary_path, write_json_atomic

logger = logging.getLogger(__name__)

STATE_DIR = ".prepare"
# The files a unit commits (`RunFolder` refuses a journal naming anything else).
UNIT_FILE_RE = re.compile(rf"({'|'.join(SPLIT_FOLDS)})/unit-\d{{5}}\.arrow")
SKIPPED_REPORT = "skipped.jsonl"
# Examples buffered per Arrow record batch: bounds a worker's memory (60 s at 500 Hz: 1.4 MB each).
WRITE_BATCH = 32


class Source(Protocol):
    """What the writer needs from a reader; rows and the source itself must be picklable."""

    name: str

    def features(self) -> Features: ...

    def rows(self) -> Sequence[dict]: ...

    def example(self, row: dict) -> dict: ...

    def identity(self) -> dict: ...


class RowTable(Sequence):
    """Rows of a metadata table (cells as text), turned into dicts one slice at a time.

    A corpus of 800,000 records keeps its metadata as one compact table (pandas' Arrow-backed
    strings), not as 800,000 dicts; `copies` lists the table that many times (row i of copy k
    gets `_replica` k) and every row gets `_line`, its line in the CSV file.
    """

    def __init__(self, frame: pd.DataFrame, copies: int = 1):
        self.frame = frame.reset_index(drop=True)
        self.copies = copies

    def __len__(self) -> int:
        return len(self.frame) * self.copies

    def __getitem__(self, index):
        if not isinstance(index, slice):
            return self[index : index + 1][0] if index >= 0 else self[len(self) + index]
        positions = range(*index.indices(len(self)))
        n = len(self.frame)
        records = self.frame.iloc[[i % n for i in positions]].to_dict("records")
        return [{**row, "_line": i % n + 2, "_replica": i // n} for i, row in zip(positions, records, strict=True)]


def skip_entry(err: RecordError) -> dict:
    ecg_id = getattr(
        err, "ecg_id", err.record if isinstance(err, RecordError) and isinstance(err.record, int) else None
    )
    return {
        "ecg_id": ecg_id,
        "record": str(err.record),
        "reason": "missing" if err.missing else "invalid",
        "problem": err.problem,
    }


def _flag_hint(err: RecordError) -> RecordError:
    """The same error, telling the user which flag would skip it."""
    flag = "--skip-missing / skip_missing=True" if err.missing else "--skip-invalid / skip_invalid=True"
    hinted = _copy_error(err)
    hinted.problem = f"{err.problem} (pass {flag} to skip and report it)"
    hinted.args = (str(err).replace(err.problem, hinted.problem),)
    return hinted


def _copy_error(err: RecordError) -> RecordError:
    copy = type(err).__new__(type(err))
    copy.__dict__.update(err.__dict__)
    copy.args = err.args
    return copy


# The source a worker process serves, set once per process by the pool's initializer.
_SOURCE: Source | None = None


def _init_worker(source: Source) -> None:
    global _SOURCE
    _SOURCE = source


def _unit_file(index: int) -> str:
    return f"unit-{index:05d}.arrow"


def _unit_key(index: int) -> str:
    return f"{index:05d}"


def _write_unit(output_dir: str, index: int, rows: list[dict], skip_missing: bool, skip_invalid: bool) -> dict:
    """Worker: read a unit's records, stream them to per-split Arrow files moved into place when complete.

    Returns what the journal records (the main process commits it), or `{"index", "error"}`."""
    source = _SOURCE
    out = Path(output_dir)
    features = source.features()
    writers: dict[str, ArrowWriter] = {}
    tmp_paths: dict[str, Path] = {}
    skipped: list[dict] = []
    closed: set[str] = set()
    try:
        for row in rows:
            try:
                example = source.example(row)
            except RecordError as err:
                if not (skip_missing if err.missing else skip_invalid):
                    return {"index": index, "error": _flag_hint(err)}
                skipped.append(skip_entry(err))
                continue
            split = split_of(example["strat_fold"])
            if split not in writers:
                tmp_paths[split] = temporary_path(out / split / _unit_file(index))
                writers[split] = ArrowWriter(
                    features=features, path=str(tmp_paths[split]), writer_batch_size=WRITE_BATCH
                )
            writers[split].write(example)
        counts = {}
        for split, writer in writers.items():
            counts[split], _ = writer.finalize()
            writer.close()
            closed.add(split)
        for split, tmp in tmp_paths.items():
            os.replace(tmp, out / split / _unit_file(index))
        return {"index": index, "rows": counts, "skipped": skipped}
    finally:
        for split, writer in writers.items():
            if split not in closed:
                writer.close()
        for tmp in tmp_paths.values():
            tmp.unlink(missing_ok=True)


def _clear_for_run(folder: RunFolder, resume: bool) -> None:
    """Check that the folder may hold this run; a fresh run empties an earlier prepared dataset (as save_to_disk)."""
    out = folder.root
    if not (out.exists() and any(out.iterdir())):
        return
    resumable = (out / STATE_DIR).is_dir()
    if not resumable and not (out / "dataset_dict.json").is_file():
        raise FileExistsError(f"{out} is not empty and holds no prepared dataset; choose an empty directory")
    if resume and not resumable:
        raise FileExistsError(f"{out} holds a finished dataset without a resumable run; run without --resume")
    if not resume:
        folder.clear()


def _finalize(out: Path, features: Features, commits: dict[int, dict], config: dict) -> None:
    """Write `save_to_disk`'s metadata over the committed unit files, and skipped.jsonl."""
    for split in SPLIT_FOLDS:
        files = [_unit_file(i) for i in sorted(commits) if commits[i]["rows"].get(split)]
        if not files:  # load_from_disk needs at least one file per split
            with ArrowWriter(features=features, path=str(out / split / "empty.arrow")) as writer:
                writer.finalize()
            files = ["empty.arrow"]
        fingerprint = hashlib.sha256(json.dumps([config, split, files], sort_keys=True).encode()).hexdigest()[:16]
        state = {
            "_data_files": [{"filename": f} for f in files],
            "_fingerprint": fingerprint,
            "_format_columns": None,
            "_format_kwargs": {},
            "_format_type": None,
            "_output_all_columns": False,
            "_split": None,
        }
        write_json_atomic(out / split / "state.json", state)
        write_json_atomic(out / split / "dataset_info.json", {"features": features.to_dict()})
    skipped = sorted((e for c in commits.values() for e in c["skipped"]), key=lambda e: (str(e["ecg_id"]), e["record"]))
    with open(out / SKIPPED_REPORT, "w") as f:
        f.writelines(json.dumps(entry) + "\n" for entry in skipped)
    write_json_atomic(out / "dataset_dict.json", {"splits": list(SPLIT_FOLDS)})


def _run_units(
    source: Source, out: Path, todo: Iterator[tuple[int, list[dict]]], options: PrepareOptions
) -> Iterator[dict]:
    """Commits of `todo` as they finish; at most 2 units per process in flight (bounded memory)."""
    args = (options.skip_missing, options.skip_invalid)
    num_proc = options.num_proc or default_num_proc()
    if num_proc <= 1:
        _init_worker(source)
        for index, rows in todo:
            yield _write_unit(str(out), index, rows, *args)
        return
    with ProcessPoolExecutor(num_proc, initializer=_init_worker, initargs=(source,)) as pool:
        queue = iter(todo)
        pending = set()
        try:
            while True:
                while len(pending) < 2 * num_proc:
                    item = next(queue, None)
                    if item is None:
                        break
                    pending.add(pool.submit(_write_unit, str(out), item[0], item[1], *args))
                if not pending:
                    return
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    yield future.result()
        finally:
            for future in pending:
                future.cancel()


def prepare_source(source: Source, output_dir: str | os.PathLike | None, options: PrepareOptions) -> DatasetDict:
    """Prepare `source` into `output_dir` (None: a temporary folder, returned in memory).

    Raises:
        RecordError: naming the record and the problem, for a record no skip flag covers.
    """
    if output_dir is None:
        with tempfile.TemporaryDirectory(prefix=f".prepare-{source.name}-") as scratch:
            prepare_source(source, Path(scratch) / "prepared", options)
            return load_from_disk(str(Path(scratch) / "prepared"), keep_in_memory=True)
    out = Path(output_dir)
    rows = source.rows()  # a sequence whose slices are materialised one unit at a time
    bounds = [(start, min(start + options.unit_size, len(rows))) for start in range(0, len(rows), options.unit_size)]
    config = {
        "source": source.identity(),
        "unit_size": options.unit_size,
        "skip_missing": options.skip_missing,
        "skip_invalid": options.skip_invalid,
        "num_shards": options.num_shards,
        "shard_index": options.shard_index,
        "num_rows": len(rows),
    }
    folder = RunFolder(out, STATE_DIR, UNIT_FILE_RE)
    _clear_for_run(folder, options.resume)
    mine = [i for i in range(len(bounds)) if i % options.num_shards == options.shard_index]
    with folder.run(config, options.resume) as done:
        (out / "dataset_dict.json").unlink(missing_ok=True)  # loadable only once every unit is committed
        for split in SPLIT_FOLDS:
            (out / split).mkdir(exist_ok=True)
        commits = {i: done[_unit_key(i)] for i in mine if _unit_key(i) in done}
        pending = [i for i in mine if i not in commits]
        todo = ((i, rows[slice(*bounds[i])]) for i in pending)
        total = sum(bounds[i][1] - bounds[i][0] for i in mine)
        initial = total - sum(bounds[i][1] - bounds[i][0] for i in pending)
        with tqdm(total=total, initial=initial, unit="rec", desc=source.name) as bar:
            for commit in _run_units(source, out, todo, options):
                if "error" in commit:
                    raise commit["error"]
                index = commit["index"]
                folder.record(_unit_key(index), [f"{s}/{_unit_file(index)}" for s in commit["rows"]], commit)
                commits[index] = commit
                bar.update(sum(commit["rows"].values()) + len(commit["skipped"]))
        _finalize(out, source.features(), commits, config)
    skipped = sum(len(c["skipped"]) for c in commits.values())
    if skipped:
        logger.warning("skipped %d of %d records; listed in %s", skipped, total, out / SKIPPED_REPORT)
    return load_from_disk(str(out))
