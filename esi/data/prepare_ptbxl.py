"""Turn a PTB-XL folder (PhysioNet layout) into the prepared dataset (a `save_to_disk` folder), from Python.

    prepare_ptbxl("path/to/ptb-xl", "outputs/ptbxl-100", sampling_rate=100, num_proc=4)

The command line is `esi-prepare --input path/to/ptb-xl --output_dir outputs/ptbxl-100` (`esi.data.cli`).
Splits follow PTB-XL's recommendation: strat_fold 1-8 train, 9 validation, 10 test. Columns are
listed in docs/CONTRACTS.md. Records that cannot be read cleanly stop the run with an error naming
the ecg_id (or the CSV line), unless `skip_missing` (absent WFDB files) or `skip_invalid` (anything
else) is given; skipped records are then listed with their reason in OUTPUT_DIR/skipped.jsonl. Missing
age or sex are kept as empty (None). Preparation streams and resumes (`resume=True`), see `esi.data.prepare`.

Research software, not a diagnostic device.
"""

from __future__ import annotations

import dataclasses
import os
from typing import TYPE_CHECKING

from esi.data.options import PrepareOptions

# The readers (datasets, pandas, wfdb) are imported when a preparation runs.
if TYPE_CHECKING:
    from datasets import DatasetDict

__all__ = ["prepare_ptbxl"]


def prepare_ptbxl(
    ptbxl_dir: str | os.PathLike,
    output_dir: str | os.PathLike | None = None,
    sampling_rate: int = 100,
    limit: int | None = None,
    replicas: int = 1,
    options: PrepareOptions | None = None,
    **overrides,
) -> DatasetDict:
    """Prepare PTB-XL as a DatasetDict (train / validation / test); `overrides` replace fields of `options`.

    Args:
        ptbxl_dir: folder with `ptbxl_database.csv`, `scp_statements.csv`, `records100/`, `records500/`.
        output_dir: the prepared folder (plus `skipped.jsonl`); None keeps the result in memory.
        sampling_rate: 100 or 500; signals are (12, 10 * sampling_rate) float32, leads x time, mV.
        limit: only the first `limit` rows of `ptbxl_database.csv`.
        replicas: benchmarks only, see `PtbxlSource`.
        options: readers, unit size, skipping, resume and sharding (`esi.data.options.PrepareOptions`).

    Raises:
        PtbxlRecordError: naming the ecg_id (or CSV line) and the problem, for a record no skip flag covers.
    """
    from esi.data.prepare import prepare_source
    from esi.data.ptbxl import PtbxlSource

    options = dataclasses.replace(options or PrepareOptions(), **overrides)
    return prepare_source(PtbxlSource(ptbxl_dir, sampling_rate, limit, replicas), output_dir, options)
