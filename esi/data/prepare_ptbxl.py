"""Turn a PTB-XL folder (PhysioNet layout) into a `datasets.DatasetDict` saved with `save_to_disk`.

    python dataset_scripts/prepare_ptbxl.py --ptbxl-dir ../shared/ptb-xl --output-dir outputs/ptbxl-100 \
        --sampling-rate 100

Splits follow PTB-XL's recommendation: strat_fold 1-8 train, 9 validation, 10 test. Columns are
listed in docs/CONTRACTS.md. Records that cannot be read cleanly stop the run with an error naming
the ecg_id, unless `--skip-missing` (absent WFDB files) or `--skip-invalid` (anything else) is given;
skipped records are then listed with their reason in OUTPUT_DIR/skipped.jsonl.

Research software, not a diagnostic device.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from datasets import Dataset, DatasetDict, load_from_disk
from datasets.arrow_writer import ArrowWriter
from tqdm.auto import tqdm

from esi.data.ptbxl import (
    LEAD_NAMES,
    SAMPLING_RATES,
    SPLIT_FOLDS,
    MissingRecordFileError,
    PtbxlLabeler,
    PtbxlRecordError,
    load_database,
    load_statements,
    ptbxl_features,
    read_signal,
    record_metadata,
    record_path,
    split_of,
)

logger = logging.getLogger(__name__)

# Records handed to the pool at a time; two windows are in flight, which bounds memory
# (500 Hz: 2 x 512 x 240 kB) while keeping workers busy.
READ_WINDOW = 512
WRITE_BATCH = 256
SKIPPED_REPORT = "skipped.jsonl"


def default_num_proc() -> int:
    """CPUs this process may run on (the affinity mask where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _read_one(task: tuple[str, int, str, int]) -> np.ndarray | PtbxlRecordError:
    """Pool worker: returns the error instead of raising, so one bad record does not end `map`."""
    try:
        return read_signal(*task)
    except PtbxlRecordError as err:
        return err


def _read_signals(tasks: list[tuple[str, int, str, int]], num_proc: int) -> Iterator[np.ndarray | PtbxlRecordError]:
    """Signals (or errors) in the order of `tasks`, read by `num_proc` processes."""
    if num_proc <= 1:
        yield from map(_read_one, tasks)
        return
    chunksize = max(1, min(32, READ_WINDOW // (4 * num_proc)))
    with ProcessPoolExecutor(max_workers=num_proc) as pool:
        pending: Iterator | None = None
        for start in range(0, len(tasks), READ_WINDOW):
            # `map` submits its whole window at once; yielding the previous one meanwhile keeps
            # the pool fed.
            submitted = pool.map(_read_one, tasks[start : start + READ_WINDOW], chunksize=chunksize)
            if pending is not None:
                yield from pending
            pending = submitted
        if pending is not None:
            yield from pending


class _SplitWriter:
    """Buffers examples column-wise and writes them to one Arrow file per split in batches."""

    def __init__(self, features, path: Path):
        self.writer = ArrowWriter(features=features, path=str(path), writer_batch_size=WRITE_BATCH)
        self.path = path
        self.columns: dict[str, list] = {name: [] for name in features}

    def add(self, example: dict) -> None:
        for name, values in self.columns.items():
            values.append(example[name])
        if len(self.columns["ecg_id"]) >= WRITE_BATCH:
            self.flush()

    def flush(self) -> None:
        if self.columns["ecg_id"]:
            self.writer.write_batch(self.columns)
            self.columns = {name: [] for name in self.columns}

    def finalize(self) -> None:
        self.flush()
        self.writer.finalize()


def _handle(err: PtbxlRecordError, skip_missing: bool, skip_invalid: bool, skipped: list[dict]) -> None:
    missing = isinstance(err, MissingRecordFileError)
    if not (skip_missing if missing else skip_invalid):
        flag = "--skip-missing / skip_missing=True" if missing else "--skip-invalid / skip_invalid=True"
        raise type(err)(err.ecg_id, f"{err.problem} (pass {flag} to skip and report it)") from err
    skipped.append({"ecg_id": err.ecg_id, "reason": "missing" if missing else "invalid", "problem": err.problem})
    logger.debug("skipping %s", err)


def prepare_ptbxl(
    ptbxl_dir: str | os.PathLike,
    output_dir: str | os.PathLike | None = None,
    sampling_rate: int = 100,
    num_proc: int | None = None,
    limit: int | None = None,
    skip_missing: bool = False,
    skip_invalid: bool = False,
) -> DatasetDict:
    """Prepare PTB-XL as a DatasetDict (train / validation / test).

    Args:
        ptbxl_dir: folder with `ptbxl_database.csv`, `scp_statements.csv`, `records100/`, `records500/`.
        output_dir: where to `save_to_disk` (plus `skipped.jsonl`); None keeps the result in memory.
        sampling_rate: 100 or 500; signals are (12, 10 * sampling_rate) float32, leads x time, mV.
        num_proc: reader processes (default: all CPUs this process may use).
        limit: only the first `limit` rows of `ptbxl_database.csv`.
        skip_missing: skip records whose WFDB files are absent instead of raising.
        skip_invalid: skip records with bad metadata or signals instead of raising.

    Raises:
        PtbxlRecordError: naming the ecg_id and the problem, for a record not covered by a skip flag.
    """
    if sampling_rate not in SAMPLING_RATES:
        raise ValueError(f"sampling_rate must be one of {SAMPLING_RATES}, got {sampling_rate}")
    ptbxl_dir = Path(ptbxl_dir)
    num_proc = num_proc or default_num_proc()
    statements = load_statements(ptbxl_dir)
    features = ptbxl_features(statements, sampling_rate)
    labeler = PtbxlLabeler(statements)
    rows = load_database(ptbxl_dir, limit).to_dict("records")

    skipped: list[dict] = []
    examples, tasks = [], []
    for row in rows:
        try:
            examples.append(record_metadata(row, labeler))
            tasks.append((str(ptbxl_dir), examples[-1]["ecg_id"], record_path(row, sampling_rate), sampling_rate))
        except PtbxlRecordError as err:
            _handle(err, skip_missing, skip_invalid, skipped)

    constant = {"sampling_rate": sampling_rate, "lead_names": LEAD_NAMES}
    scratch_parent = Path(output_dir).parent if output_dir is not None else None
    if scratch_parent is not None:
        scratch_parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=scratch_parent, prefix=".prepare_ptbxl-") as scratch:
        writers = {split: _SplitWriter(features, Path(scratch) / f"{split}.arrow") for split in SPLIT_FOLDS}
        signals = _read_signals(tasks, num_proc)
        for example, signal in tqdm(
            zip(examples, signals, strict=True), total=len(tasks), desc=f"PTB-XL {sampling_rate} Hz"
        ):
            if isinstance(signal, PtbxlRecordError):
                _handle(signal, skip_missing, skip_invalid, skipped)
                continue
            writers[split_of(example["strat_fold"])].add({**example, **constant, "signal": signal})
        for writer in writers.values():
            writer.finalize()
        in_memory = output_dir is None
        dataset_dict = DatasetDict(
            {split: Dataset.from_file(str(w.path), in_memory=in_memory) for split, w in writers.items()}
        )
        if output_dir is not None:
            # datasets writes an empty split as zero shards, which load_from_disk cannot read back.
            empty = {split: 1 for split, dataset in dataset_dict.items() if dataset.num_rows == 0}
            dataset_dict.save_to_disk(str(output_dir), num_shards=empty)

    if output_dir is not None:
        with open(Path(output_dir) / SKIPPED_REPORT, "w") as f:
            f.writelines(json.dumps(entry) + "\n" for entry in sorted(skipped, key=lambda e: e["ecg_id"]))
        dataset_dict = load_from_disk(str(output_dir))
    if skipped:
        where = f"; listed in {Path(output_dir) / SKIPPED_REPORT}" if output_dir is not None else ""
        logger.warning("skipped %d of %d records%s", len(skipped), len(rows), where)
    return dataset_dict


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ptbxl-dir", type=Path, required=True, help="PTB-XL folder in PhysioNet's layout")
    parser.add_argument("--output-dir", type=Path, required=True, help="save_to_disk target")
    parser.add_argument("--sampling-rate", type=int, choices=SAMPLING_RATES, default=100)
    parser.add_argument("--num-proc", type=int, default=None, help="reader processes (default: all CPUs)")
    parser.add_argument("--limit", type=int, default=None, help="only the first N database rows")
    parser.add_argument("--skip-missing", action="store_true", help="skip (and report) records without files")
    parser.add_argument("--skip-invalid", action="store_true", help="skip (and report) malformed records")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        dataset_dict = prepare_ptbxl(
            args.ptbxl_dir,
            args.output_dir,
            sampling_rate=args.sampling_rate,
            num_proc=args.num_proc,
            limit=args.limit,
            skip_missing=args.skip_missing,
            skip_invalid=args.skip_invalid,
        )
    except PtbxlRecordError as err:
        sys.exit(f"error: {err}")
    with open(args.output_dir / SKIPPED_REPORT) as f:
        num_skipped = sum(1 for _ in f)
    total = sum(d.num_rows for d in dataset_dict.values())
    print(f"wrote {total} records to {args.output_dir}; skipped {num_skipped} (see {SKIPPED_REPORT})")


if __name__ == "__main__":
    main()
