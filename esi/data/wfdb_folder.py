"""A folder of WFDB records plus a labels CSV (the generic case a user brings) as a prepared source.

The CSV has one row per ECG. Required column: `record` (the WFDB record name relative to the folder,
no extension). Optional columns: `ecg_id` (integer; default: the row's position, 1-based),
`patient_id` (integer; default: ecg_id), `age`, `sex` (Male/Female/M/F, empty or Unknown for
missing), `statements` (free text, several separated by `;`), `scp_codes` (PTB-XL SCP-ECG codes
separated by `;`, used for the PTB-XL task labels and the CQA), `fold` (1-10; default: a stable
hash of patient_id). Records keep their full length; leads are matched by name.

Research software, not a diagnostic device.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
from datasets import Features

from esi.data.labels import parse_age, parse_sex, scp_reference, wfdb_example
from esi.data.prepare import RowTable
from esi.data.record_text import clean_record_text
from esi.data.schema import RecordError, bounded_cell, hash_fold, prepared_features, refuse_duplicate_ids
from esi.data.wfdb_record import inside, read_wfdb

SOURCE = "labels CSV"
OPTIONAL_COLUMNS = ("ecg_id", "patient_id", "age", "sex", "statements", "scp_codes", "fold")


def _optional_int(record: object, column: str, text: str, low: int, high: int) -> int | None:
    value = text.strip()
    if not value:
        return None
    if not value.isdigit() or not low <= int(value) <= high:
        raise RecordError(record, f"column {column!r} is not an integer {low}-{high}: {value[:40]!r}", source=SOURCE)
    return int(value)


class WfdbFolderSource:
    """`folder` of WFDB records described by `labels_csv`, for `esi.data.prepare.prepare_source`."""

    name = "wfdb-folder"

    def __init__(self, folder: str | os.PathLike, labels_csv: str | os.PathLike, sampling_rate: int = 100):
        self.folder = Path(folder)
        self.labels_csv = Path(labels_csv)
        self.sampling_rate = sampling_rate

    def identity(self) -> dict:
        return {
            "name": self.name,
            "dir": str(self.folder.resolve()),
            "labels": str(self.labels_csv.resolve()),
            "sampling_rate": self.sampling_rate,
        }

    def features(self) -> Features:
        return prepared_features(None, scp_reference()[1])

    def rows(self) -> RowTable:
        if not self.labels_csv.is_file():
            raise FileNotFoundError(f"labels CSV {self.labels_csv} not found")
        table = pd.read_csv(self.labels_csv, dtype=str, keep_default_na=False)
        if "record" not in table.columns:
            raise ValueError(f"{self.labels_csv} lacks the required column 'record' (WFDB record name)")
        # The id each row will get (its own, else its position), so a stated id cannot collide with a default one.
        stated = table["ecg_id"].str.strip() if "ecg_id" in table.columns else pd.Series([""] * len(table))
        ids = [str(int(v)) if v.isdigit() else v or str(position + 1) for position, v in enumerate(stated)]
        refuse_duplicate_ids(ids, "ecg_id", self.labels_csv)
        return RowTable(table[["record"] + [c for c in OPTIONAL_COLUMNS if c in table.columns]])

    def example(self, row: dict) -> dict:
        line = row["_line"]
        record = f"line {line}"
        ecg_id = _optional_int(record, "ecg_id", row.get("ecg_id", ""), 1, 2**31 - 1) or line - 1
        name = bounded_cell(record, "record", row["record"], SOURCE, 1000).strip()
        record = f"line {line} ({name[:80]!r})"
        patient_id = _optional_int(record, "patient_id", row.get("patient_id", ""), 0, 2**31 - 1)
        patient_id = ecg_id if patient_id is None else patient_id
        fold = _optional_int(record, "fold", row.get("fold", ""), 1, 10) or hash_fold(str(patient_id))
        cell = bounded_cell(record, "statements", row.get("statements"), SOURCE)
        texts = [clean_record_text(t) for t in cell.split(";")]
        codes = [c.strip() for c in bounded_cell(record, "scp_codes", row.get("scp_codes"), SOURCE).split(";")]
        codes = [c for c in codes if c]
        _, _, descriptions = scp_reference()
        unknown = [c for c in codes if c not in descriptions]
        if unknown:
            raise RecordError(record, f"column 'scp_codes' lists unknown SCP-ECG code(s) {unknown}", source=SOURCE)
        read = read_wfdb(inside(self.folder, name, record, SOURCE), record, SOURCE, self.sampling_rate)
        return wfdb_example(
            read,
            ecg_id=ecg_id,
            patient_id=patient_id,
            scp_codes=dict.fromkeys(codes, 100.0),
            age=parse_age(record, row.get("age"), SOURCE),
            sex=parse_sex(record, row.get("sex"), SOURCE),
            strat_fold=fold,
            source="wfdb-folder",
            record_name=name,
            statements=[{"system": "labels CSV", "code": "", "text": t} for t in texts if t]
            + [{"system": "SCP-ECG", "code": c, "text": descriptions[c]} for c in codes],
        )
