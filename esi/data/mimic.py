"""Read MIMIC-IV-ECG (PhysioNet, ODbL) as a prepared source.

MIMIC-IV-ECG ships `record_list.csv` (subject_id, study_id, file_name, ecg_time, path),
`machine_measurements.csv` (the cart's report lines `report_0`..`report_17`, intervals and axes)
and 10 s, 500 Hz WFDB records under `files/pNNNN/pXXXXXXXX/sYYYYYYYY/YYYYYYYY` in MIMIC's lead
order (I, II, III, aVR, aVF, aVL, V1-V6; mapped by name). Both tables must carry every documented
column. The machine report becomes the record's statements (free text, also joined in `report`);
the machine's intervals and axes are kept as `machine_*` columns, a reference the CQA's own
measurements can be compared with. MIMIC-IV-ECG has no demographics (they live in MIMIC-IV's
hospital module): age and sex are None. `ecg_id` = study_id, `patient_id` = subject_id, and
`strat_fold` is a stable hash of subject_id, so a patient's ECGs share a split.

Research software, not a diagnostic device.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import pandas as pd
from datasets import Features, Value

from esi.data.labels import scp_reference, wfdb_example
from esi.data.prepare import RowTable
from esi.data.record_text import clean_record_text
from esi.data.schema import RecordError, bounded_cell, hash_fold, prepared_features, refuse_duplicate_ids
from esi.data.wfdb_record import inside, read_wfdb

SOURCE = "MIMIC-IV-ECG study_id"
RECORD_LIST_COLUMNS = ("subject_id", "study_id", "file_name", "ecg_time", "path")
REPORT_COLUMNS = tuple(f"report_{i}" for i in range(18))
# Machine measurement -> prepared column (unit in the name).
INTERVAL_COLUMNS = {
    "rr_interval": "machine_rr_interval_ms",
    "p_onset": "machine_p_onset_ms",
    "p_end": "machine_p_end_ms",
    "qrs_onset": "machine_qrs_onset_ms",
    "qrs_end": "machine_qrs_end_ms",
    "t_end": "machine_t_end_ms",
    "p_axis": "machine_p_axis_deg",
    "qrs_axis": "machine_qrs_axis_deg",
    "t_axis": "machine_t_axis_deg",
}
MEASUREMENT_COLUMNS = (
    ("subject_id", "study_id", "cart_id", "ecg_time")
    + REPORT_COLUMNS
    + ("bandwidth", "filtering")
    + tuple(INTERVAL_COLUMNS)
)
# The cart writes 29999 (and larger) where it could not measure.
MACHINE_MISSING = 29999
DURATION_S = 10


def _read_table(path: Path, columns: tuple[str, ...]) -> pd.DataFrame:
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: is {path.parent} a MIMIC-IV-ECG folder?")
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise ValueError(f"{path} lacks the documented MIMIC-IV-ECG column(s) {missing}")
    return table


def _identifier(record: object, column: str, text: str) -> int:
    value = text.strip()
    if not value.isdigit() or not 0 < int(value) < 2**31:
        raise RecordError(record, f"column {column!r} is not a positive integer id: {value[:40]!r}", source=SOURCE)
    return int(value)


def _measurement(record: object, column: str, text: str) -> float | None:
    value = text.strip()
    if not value:
        return None
    try:
        number = float(value) if len(value) < 20 else math.nan
    except ValueError:
        number = math.nan
    if not math.isfinite(number):
        raise RecordError(record, f"machine measurement {column!r} is not a number: {value[:40]!r}", source=SOURCE)
    return None if number >= MACHINE_MISSING else number


class MimicEcgSource:
    """A MIMIC-IV-ECG folder as a source for `esi.data.prepare.prepare_source`."""

    name = "mimic-iv-ecg"

    def __init__(self, folder: str | os.PathLike, sampling_rate: int = 100, limit: int | None = None):
        self.folder = Path(folder)
        self.sampling_rate = sampling_rate
        self.limit = limit

    def identity(self) -> dict:
        return {
            "name": self.name,
            "dir": str(self.folder.resolve()),
            "sampling_rate": self.sampling_rate,
            "limit": self.limit,
        }

    def features(self) -> Features:
        extra = {column: Value("float32") for column in INTERVAL_COLUMNS.values()}
        return prepared_features(DURATION_S * self.sampling_rate, scp_reference()[1], extra)

    def rows(self) -> RowTable:
        records = _read_table(self.folder / "record_list.csv", RECORD_LIST_COLUMNS)[list(RECORD_LIST_COLUMNS)]
        if self.limit is not None:
            records = records.head(self.limit)
        refuse_duplicate_ids(records["study_id"].str.strip().tolist(), "study_id", self.folder / "record_list.csv")
        machine = _read_table(self.folder / "machine_measurements.csv", MEASUREMENT_COLUMNS)
        # A row repeated word for word says nothing new; two different rows for one study would be a silent choice.
        machine = machine[list(MEASUREMENT_COLUMNS)].drop_duplicates().reset_index(drop=True)
        refuse_duplicate_ids(
            machine["study_id"].str.strip().tolist(), "study_id", self.folder / "machine_measurements.csv",
            row_name=lambda i: f"row {i + 1}",
        )  # fmt: skip
        machine.columns = [f"machine.{c}" for c in machine.columns]
        # One compact table (cells as text) for the whole corpus; rows become dicts one unit at a time.
        joined = records.merge(machine, how="left", left_on="study_id", right_on="machine.study_id", indicator=True)
        return RowTable(joined)

    def example(self, row: dict) -> dict:
        label = f"{str(row['study_id'])[:20]!r} (record_list.csv line {row['_line']})"
        study_id = _identifier(label, "study_id", row["study_id"])
        subject_id = _identifier(study_id, "subject_id", row["subject_id"])
        if row["_merge"] != "both":
            raise RecordError(study_id, "has no row in machine_measurements.csv", source=SOURCE)
        machine = {c: row[f"machine.{c}"] for c in MEASUREMENT_COLUMNS}
        if machine["subject_id"].strip() != row["subject_id"].strip():
            raise RecordError(
                study_id,
                f"subject_id {machine['subject_id']!r} in machine_measurements.csv differs from "
                f"{row['subject_id']!r} in record_list.csv",
                source=SOURCE,
            )
        lines = [clean_record_text(bounded_cell(study_id, c, machine[c], SOURCE, 1000)) for c in REPORT_COLUMNS]
        lines = [line for line in lines if line]
        path = bounded_cell(study_id, "path", row["path"], SOURCE, 1000)
        base = inside(self.folder, path, study_id, SOURCE)
        read = read_wfdb(base, study_id, SOURCE, self.sampling_rate, expected_seconds=DURATION_S)
        return wfdb_example(
            read,
            ecg_id=study_id,
            patient_id=subject_id,
            scp_codes={},
            report="; ".join(lines),
            age=None,
            sex=None,
            strat_fold=hash_fold(str(subject_id)),
            source="mimic-iv-ecg",
            record_name=path,
            statements=[{"system": "MIMIC-IV-ECG machine report", "code": "", "text": line} for line in lines],
            **{name: _measurement(study_id, column, machine[column]) for column, name in INTERVAL_COLUMNS.items()},
        )
