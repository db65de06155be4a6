"""Turn a PTB-XL folder (PhysioNet layout) into the prepared dataset (a `save_to_disk` folder).

    esi-prepare --ptbxl-dir path/to/ptb-xl --output-dir outputs/ptbxl-100 \
        --sampling-rate 100

Splits follow PTB-XL's recommendation: strat_fold 1-8 train, 9 validation, 10 test. Columns are
listed in docs/CONTRACTS.md. Records that cannot be read cleanly stop the run with an error naming
the ecg_id (or the CSV line), unless `--skip-missing` (absent WFDB files) or `--skip-invalid`
(anything else) is given; skipped records are then listed with their reason in
OUTPUT_DIR/skipped.jsonl. Missing age or sex are kept as empty (None). Preparation streams and
resumes (`--resume`), see `esi.data.prepare`.

Research software, not a diagnostic device.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from esi.constants import PTBXL_SAMPLING_RATES
from esi.disk_errors import exit_on_full_disk
from esi.extras import require_extra

# The readers (datasets, pandas, wfdb) are imported when a preparation runs, not for `--help`.
if TYPE_CHECKING:
    from datasets import DatasetDict

    from esi.data.prepare import PrepareOptions

__all__ = ["add_prepare_arguments", "main", "options_from_args", "prepare_ptbxl"]


def prepare_ptbxl(
    ptbxl_dir: str | os.PathLike,
    output_dir: str | os.PathLike | None = None,
    sampling_rate: int = 100,
    num_proc: int | None = None,
    limit: int | None = None,
    skip_missing: bool = False,
    skip_invalid: bool = False,
    resume: bool = False,
    num_shards: int = 1,
    shard_index: int = 0,
    replicas: int = 1,
    unit_size: int | None = None,
) -> DatasetDict:
    """Prepare PTB-XL as a DatasetDict (train / validation / test).

    Args:
        ptbxl_dir: folder with `ptbxl_database.csv`, `scp_statements.csv`, `records100/`, `records500/`.
        output_dir: the prepared folder (plus `skipped.jsonl`); None keeps the result in memory.
        sampling_rate: 100 or 500; signals are (12, 10 * sampling_rate) float32, leads x time, mV.
        num_proc: reader processes (default: all CPUs this process may use).
        limit: only the first `limit` rows of `ptbxl_database.csv`.
        skip_missing: skip records whose WFDB files are absent instead of raising.
        skip_invalid: skip records with bad metadata or signals instead of raising.
        resume: continue an interrupted run in `output_dir`.
        num_shards, shard_index: prepare only this shard's units (one machine's part of a corpus).
        replicas: benchmarks only, see `PtbxlSource`.
        unit_size: records per committed unit (the granularity of resume; default `esi.data.prepare.UNIT_SIZE`).

    Raises:
        PtbxlRecordError: naming the ecg_id (or CSV line) and the problem, for a record no skip flag covers.
    """
    from esi.data.prepare import UNIT_SIZE, PrepareOptions, default_num_proc, prepare_source
    from esi.data.ptbxl import PtbxlSource

    source = PtbxlSource(ptbxl_dir, sampling_rate, limit, replicas)
    options = PrepareOptions(
        num_proc=num_proc or default_num_proc(),
        skip_missing=skip_missing,
        skip_invalid=skip_invalid,
        resume=resume,
        num_shards=num_shards,
        shard_index=shard_index,
        unit_size=unit_size or UNIT_SIZE,
    )
    return prepare_source(source, output_dir, options)


def add_prepare_arguments(parser: argparse.ArgumentParser) -> None:
    """The options every source's command shares."""
    parser.add_argument("--output-dir", type=Path, required=True, help="prepared dataset folder")
    parser.add_argument("--num-proc", type=int, default=None, help="reader processes (default: all CPUs)")
    parser.add_argument("--skip-missing", action="store_true", help="skip (and report) records without files")
    parser.add_argument("--skip-invalid", action="store_true", help="skip (and report) malformed records")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted run in --output-dir")
    parser.add_argument("--num-shards", type=int, default=1, help="split the corpus into this many parts")
    parser.add_argument("--shard-index", type=int, default=0, help="the part this run prepares (0-based)")
    parser.add_argument("--unit-size", type=int, default=None, help="records per committed unit (resume step; 256)")


def report(output_dir: Path, dataset_dict: DatasetDict) -> str:
    from esi.data.prepare import SKIPPED_REPORT

    with open(output_dir / SKIPPED_REPORT) as f:
        num_skipped = sum(1 for _ in f)
    total = sum(d.num_rows for d in dataset_dict.values())
    return f"wrote {total} records to {output_dir}; skipped {num_skipped} (see {SKIPPED_REPORT})"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ptbxl-dir", type=Path, required=True, help="PTB-XL folder in PhysioNet's layout")
    parser.add_argument("--sampling-rate", type=int, choices=PTBXL_SAMPLING_RATES, default=100)
    parser.add_argument("--limit", type=int, default=None, help="only the first N database rows")
    add_prepare_arguments(parser)
    return parser.parse_args(argv)


def options_from_args(args: argparse.Namespace) -> PrepareOptions:
    """`PrepareOptions` from the arguments `add_prepare_arguments` defines."""
    from esi.data.prepare import UNIT_SIZE, PrepareOptions, default_num_proc

    return PrepareOptions(
        num_proc=args.num_proc or default_num_proc(),
        skip_missing=args.skip_missing,
        skip_invalid=args.skip_invalid,
        resume=args.resume,
        num_shards=args.num_shards,
        shard_index=args.shard_index,
        unit_size=args.unit_size or UNIT_SIZE,
    )


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    require_extra("esi-prepare", "data")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from esi.data.prepare import prepare_source
    from esi.data.ptbxl import PtbxlSource
    from esi.data.schema import RecordError

    try:
        source = PtbxlSource(args.ptbxl_dir, args.sampling_rate, args.limit)
        with exit_on_full_disk("esi-prepare", "rerun the same command with --resume"):
            dataset_dict = prepare_source(source, args.output_dir, options_from_args(args))
    except (RecordError, FileExistsError) as err:
        sys.exit(f"error: {err}")
    print(report(args.output_dir, dataset_dict))


if __name__ == "__main__":
    main()
