"""`esi-prepare`: any supported ECG source -> the prepared dataset (a `datasets` `save_to_disk` folder).

    esi-prepare --input path/to/ptb-xl --output_dir outputs/ptbxl-100                # PTB-XL, the default source
    esi-prepare --source challenge --input path/to/challenge-2021 --output_dir outputs/cinc2021
    esi-prepare --source mimic --input PATH/mimic-iv-ecg --output_dir outputs/mimic
    esi-prepare --source wfdb-folder --input RECORDS_DIR --labels labels.csv --output_dir outputs/records
    esi-prepare prepare.json                                                          # the same options as JSON

Sources: `ptbxl` (PhysioNet layout; `--ptbxl-dir` names the same folder as `--input`), `challenge` (CinC
2020/2021: .hea + .mat, Dx codes), `mimic` (record_list.csv, machine_measurements.csv, files/),
`wfdb-folder` (WFDB records and a labels CSV). All write the same prepared dataset (docs/CONTRACTS.md);
PTB-XL's splits follow its recommendation (strat_fold 1-8 train, 9 validation, 10 test). A record that cannot
be read cleanly stops the run with an error naming it, unless `--skip_missing` (absent files) or
`--skip_invalid` (anything else) is given; skipped records are listed with their reason in
OUTPUT_DIR/skipped.jsonl. Preparation streams, runs in parallel, resumes (`--resume`) and splits across
machines (`--num_shards/--shard_index`), see `esi.data.prepare`.

Research software, not a diagnostic device.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path

from esi.command_line import parse_command_line
from esi.data.options import PrepareOptions
from esi.data.sources import SOURCES
from esi.disk_errors import exit_on_full_disk
from esi.extras import require_extra


@dataclass
class SourceArguments:
    """What is read and where the prepared dataset goes."""

    input: str = field(metadata={"help": "the source's folder", "aliases": ["--ptbxl-dir", "--ptbxl_dir"]})
    output_dir: str = field(metadata={"help": "prepared dataset folder (plus skipped.jsonl)"})
    source: str = field(default="ptbxl", metadata={"help": "the source's layout", "choices": list(SOURCES)})
    labels: str | None = field(default=None, metadata={"help": "labels CSV (--source wfdb-folder)"})
    sampling_rate: int = field(default=100, metadata={"help": "rate of the prepared signals (Hz)"})
    limit: int | None = field(default=None, metadata={"help": "only the first N rows (ptbxl, mimic)"})


def report(output_dir: Path, num_records: int) -> str:
    from esi.data.prepare import SKIPPED_REPORT

    with open(output_dir / SKIPPED_REPORT) as f:
        num_skipped = sum(1 for _ in f)
    return f"wrote {num_records} records to {output_dir}; skipped {num_skipped} (see {SKIPPED_REPORT})"


def main(argv: list[str] | None = None) -> None:
    description, epilog = __doc__.split("\n\n", 1)
    args, options = parse_command_line((SourceArguments, PrepareOptions), argv, description, epilog)
    require_extra("esi-prepare", "data")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from esi.data.prepare import prepare_source
    from esi.data.schema import RecordError
    from esi.data.sources import make_source
    from esi.run_folder import RunFolderError

    output_dir = Path(args.output_dir)
    labels = Path(args.labels) if args.labels else None
    try:
        source = make_source(args.source, Path(args.input), args.sampling_rate, labels, args.limit)
        with exit_on_full_disk("esi-prepare", "rerun the same command with --resume"):
            dataset_dict = prepare_source(source, output_dir, options)
    except (RecordError, RunFolderError, FileExistsError, FileNotFoundError, ValueError) as err:
        sys.exit(f"error: {err}")
    print(report(output_dir, sum(d.num_rows for d in dataset_dict.values())))


if __name__ == "__main__":
    main()
