"""One command for every source: `python dataset_scripts/prepare.py --source NAME --input DIR --output-dir OUT`.

    --source ptbxl        --input path/to/ptb-xl
    --source challenge    --input path/to/challenge-2021        (CinC 2020/2021: .hea + .mat, Dx codes)
    --source mimic        --input PATH/mimic-iv-ecg               (record_list.csv, machine_measurements.csv, files/)
    --source wfdb-folder  --input RECORDS_DIR --labels labels.csv

All write the same prepared dataset (docs/CONTRACTS.md); preparation streams, runs in parallel,
resumes (`--resume`) and splits across machines (`--num-shards/--shard-index`), see `esi.data.prepare`.

Research software, not a diagnostic device.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from esi.data.prepare_ptbxl import add_prepare_arguments, options_from_args, report
from esi.disk_errors import exit_on_full_disk
from esi.extras import require_extra

# The readers are imported when a preparation runs, not for `--help`.
if TYPE_CHECKING:
    from esi.data.prepare import Source

SOURCES = ("ptbxl", "challenge", "mimic", "wfdb-folder")


def make_source(
    name: str, folder: Path, sampling_rate: int, labels: Path | None = None, limit: int | None = None
) -> Source:
    """The reader for source `name` over `folder`."""
    from esi.data.challenge import ChallengeSource
    from esi.data.mimic import MimicEcgSource
    from esi.data.ptbxl import PtbxlSource
    from esi.data.wfdb_folder import WfdbFolderSource

    if name == "ptbxl":
        return PtbxlSource(folder, sampling_rate, limit)
    if name == "challenge":
        return ChallengeSource(folder, sampling_rate)
    if name == "mimic":
        return MimicEcgSource(folder, sampling_rate, limit)
    if name == "wfdb-folder":
        if labels is None:
            raise ValueError("--source wfdb-folder needs --labels (a CSV with a 'record' column)")
        return WfdbFolderSource(folder, labels, sampling_rate)
    raise ValueError(f"unknown source {name!r}; expected one of {SOURCES}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", choices=SOURCES, required=True)
    parser.add_argument("--input", type=Path, required=True, help="the source's folder")
    parser.add_argument("--labels", type=Path, default=None, help="labels CSV (--source wfdb-folder)")
    parser.add_argument("--sampling-rate", type=int, default=100, help="rate of the prepared signals (Hz)")
    parser.add_argument("--limit", type=int, default=None, help="only the first N rows (ptbxl, mimic)")
    add_prepare_arguments(parser)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    require_extra("esi-prepare-source", "data")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from esi.data.prepare import prepare_source
    from esi.data.schema import RecordError

    try:
        source = make_source(args.source, args.input, args.sampling_rate, args.labels, args.limit)
        with exit_on_full_disk("esi-prepare-source", "rerun the same command with --resume"):
            dataset_dict = prepare_source(source, args.output_dir, options_from_args(args))
    except (RecordError, FileExistsError, FileNotFoundError, ValueError) as err:
        sys.exit(f"error: {err}")
    print(report(args.output_dir, dataset_dict))


if __name__ == "__main__":
    main()
