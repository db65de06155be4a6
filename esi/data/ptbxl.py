"""Read a PTB-XL folder (PhysioNet layout) and derive the PTB-XL benchmark labels.

PTB-XL (Wagner et al., Scientific Data 2020) ships `ptbxl_database.csv` (one row per ECG),
`scp_statements.csv` (the 71 SCP-ECG statements and how they aggregate) and WFDB records
under `records100/` and `records500/`. Labels follow the benchmark of Strodthoff et al.
(IEEE JBHI 2021): every SCP code listed for a record counts, whatever its likelihood, and
is mapped to the task's classes through `scp_statements.csv`.

Research software, not a diagnostic device.
"""

from __future__ import annotations

import ast
import importlib.resources
import json
import math
import os
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import wfdb
from datasets import DatasetDict, Features

from esi.constants import PTBXL_AGE_OVER_89, TASKS
from esi.constants import PTBXL_SAMPLING_RATES as SAMPLING_RATES
from esi.data.prepare import RowTable
from esi.data.schema import LEAD_NAMES, RecordError, bounded_cell, prepared_features, refuse_duplicate_ids
from esi.data.wfdb_record import (
    Header,
    bad_checksums,
    check_header,
    inside,
    read_digital,
    read_header,
    to_physical,
)

DURATION_S = 10
# PTB-XL's statement table and licence ship as package data (CC BY 4.0, see the folder's README).
PTBXL_RESOURCES = Path(str(importlib.resources.files("esi.data") / "resources" / "ptbxl"))
SEX_NAMES = {0: "male", 1: "female"}
DATABASE_COLUMNS = (
    "ecg_id",
    "patient_id",
    "age",
    "sex",
    "report",
    "scp_codes",
    "heart_axis",
    "strat_fold",
    "filename_lr",
    "filename_hr",
)
# scp_codes lists a handful of codes; a longer cell is not PTB-XL's (and literal_eval of it is costly).
MAX_SCP_CODES_CHARS = 10_000
# Replicated rows (benchmarks only) get ids shifted by multiples of this.
REPLICA_ID_OFFSET = 10_000_000


class PtbxlRecordError(RecordError):
    """A PTB-XL record that cannot be turned into a clean example.

    Carries the record's `ecg_id` (or, when the ecg_id itself is unusable, the CSV line `row`)
    and a human-readable `problem`.
    """

    def __init__(self, ecg_id: int | None, problem: str, row: int | None = None, missing: bool = False):
        if isinstance(ecg_id, int):
            super().__init__(ecg_id, problem, missing=missing, source="PTB-XL ecg_id")
        else:
            super().__init__(f"line {row}", problem, missing=missing, source="PTB-XL ptbxl_database.csv")
        self.ecg_id = ecg_id
        self.row = row


class MissingRecordFileError(PtbxlRecordError):
    """The record's WFDB files are absent (e.g. a 500 Hz file in a subset that ships only 100 Hz)."""

    def __init__(self, ecg_id: int | None, problem: str, row: int | None = None, missing: bool = True):
        super().__init__(ecg_id, problem, row=row, missing=True)


def load_statements(ptbxl_dir: str | os.PathLike) -> pd.DataFrame:
    """`scp_statements.csv` indexed by SCP code (71 rows in PTB-XL)."""
    path = Path(ptbxl_dir) / "scp_statements.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: is {ptbxl_dir} a PTB-XL folder?")
    statements = pd.read_csv(path, index_col=0)
    missing = {"diagnostic", "form", "rhythm", "diagnostic_class", "diagnostic_subclass"} - set(statements.columns)
    if missing:
        raise ValueError(f"{path} lacks columns {sorted(missing)}")
    return statements


def load_database(ptbxl_dir: str | os.PathLike, limit: int | None = None, as_text: bool = False) -> pd.DataFrame:
    """The first `limit` rows (all when None) of `ptbxl_database.csv`, in file order.

    `as_text` reads every cell as text ("" when empty) for per-row parsing (`record_metadata`): one bad
    cell must fail only its record, not turn a whole column into text and fail every record.
    """
    path = Path(ptbxl_dir) / "ptbxl_database.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: is {ptbxl_dir} a PTB-XL folder?")
    text = {"dtype": str, "keep_default_na": False} if as_text else {}
    database = pd.read_csv(path, usecols=lambda column: column in DATABASE_COLUMNS, nrows=limit, **text)
    missing = set(DATABASE_COLUMNS) - set(database.columns)
    if missing:
        raise ValueError(f"{path} lacks columns {sorted(missing)}")
    refuse_duplicate_ids(database["ecg_id"].tolist(), "ecg_id", path)
    return database


def _statement_class_names(statements: pd.DataFrame, task: str) -> list[str]:
    diagnostic = statements[statements["diagnostic"] == 1]
    if task == "all":
        names = statements.index
    elif task == "diagnostic":
        names = diagnostic.index
    elif task == "subdiagnostic":
        names = diagnostic["diagnostic_subclass"].dropna()
    elif task == "superdiagnostic":
        names = diagnostic["diagnostic_class"].dropna()
    elif task in ("form", "rhythm"):
        names = statements.index[statements[task] == 1]
    else:
        raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")
    # Sorted, like the benchmark's MultiLabelBinarizer, so column order matches published code.
    return sorted(set(names))


def task_class_names(features_or_statements: Features | pd.DataFrame | str | os.PathLike, task: str) -> list[str]:
    """Class names of `task`, from a prepared dataset's `Features`, a statements table, or a PTB-XL folder."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")
    if isinstance(features_or_statements, Features):
        return list(features_or_statements[task].feature.names)
    if isinstance(features_or_statements, pd.DataFrame):
        return _statement_class_names(features_or_statements, task)
    return _statement_class_names(load_statements(features_or_statements), task)


class PtbxlLabeler:
    """Maps a record's SCP codes to class indices for every benchmark task."""

    def __init__(self, statements: pd.DataFrame):
        self.class_names = {task: _statement_class_names(statements, task) for task in TASKS}
        index = {task: {name: i for i, name in enumerate(names)} for task, names in self.class_names.items()}
        self._classes_of: dict[str, dict[str, tuple[int, ...]]] = {}
        for code, row in statements.iterrows():
            targets = {"all": [code]}
            if row["diagnostic"] == 1:
                targets["diagnostic"] = [code]
                targets["subdiagnostic"] = [row["diagnostic_subclass"]]
                targets["superdiagnostic"] = [row["diagnostic_class"]]
            for task in ("form", "rhythm"):
                if row[task] == 1:
                    targets[task] = [code]
            self._classes_of[code] = {
                task: tuple(index[task][name] for name in names if isinstance(name, str))
                for task, names in targets.items()
            }

    def __call__(self, ecg_id: int, scp_codes: Mapping[str, float]) -> dict[str, list[int]]:
        """Sorted positive class indices per task."""
        labels: dict[str, set[int]] = {task: set() for task in TASKS}
        for code in scp_codes:
            if code not in self._classes_of:
                raise PtbxlRecordError(ecg_id, f"unknown SCP code {code!r} (not in scp_statements.csv)")
            for task, indices in self._classes_of[code].items():
                labels[task].update(indices)
        return {task: sorted(indices) for task, indices in labels.items()}


def parse_scp_codes(ecg_id: int, cell: object) -> dict[str, float]:
    """Parse a `scp_codes` cell (a Python dict literal, code -> likelihood in 0-100) without `eval`."""
    if not isinstance(cell, str):
        raise PtbxlRecordError(ecg_id, f"scp_codes is empty or not text: {cell!r}")
    try:
        codes = ast.literal_eval(cell)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as err:
        raise PtbxlRecordError(ecg_id, f"malformed scp_codes {cell!r}: {err}") from None
    if not isinstance(codes, dict):
        raise PtbxlRecordError(ecg_id, f"scp_codes is not a dict: {cell!r}")
    for code, likelihood in codes.items():
        if not isinstance(code, str) or isinstance(likelihood, bool) or not isinstance(likelihood, (int, float)):
            raise PtbxlRecordError(ecg_id, f"scp_codes entry {code!r}: {likelihood!r} is not code -> number")
        if not 0 <= likelihood <= 100:
            raise PtbxlRecordError(ecg_id, f"scp_codes likelihood {likelihood!r} for {code!r} is outside 0-100")
    return {code: float(likelihood) for code, likelihood in codes.items()}


def _number(ecg_id: int | None, line: int, column: str, cell: str, integer: bool, required: bool) -> float | None:
    """A numeric cell: None when empty (and allowed); integers may be written as `15709.0` (PTB-XL does)."""
    text = cell.strip()
    if not text:
        if required:
            raise PtbxlRecordError(ecg_id, f"line {line}, column {column!r} is empty", row=line)
        return None
    try:
        value = float(text) if len(text) < 40 else math.nan
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or (integer and value != int(value)):
        kind = "an integer" if integer else "a number"
        raise PtbxlRecordError(ecg_id, f"line {line}, column {column!r} is not {kind}: {text[:60]!r}", row=line)
    return value


def record_metadata(row: Mapping[str, object], labeler: PtbxlLabeler, line: int | None = None) -> dict[str, object]:
    """One database row (cells as text) -> the example's non-signal columns (see docs/CONTRACTS.md).

    `line` is the row's line in ptbxl_database.csv, used to name a row whose ecg_id is unusable.
    """
    line = line if line is not None else int(row.get("_line", 0))
    cells = {
        key: "" if row[key] is None or (isinstance(row[key], float) and math.isnan(row[key])) else str(row[key])
        for key in DATABASE_COLUMNS
    }
    raw_id = _number(None, line, "ecg_id", cells["ecg_id"], integer=True, required=True)
    if not 1 <= raw_id < 2**31:
        raise PtbxlRecordError(None, f"line {line}, column 'ecg_id' is out of range: {cells['ecg_id']!r}", row=line)
    ecg_id = int(raw_id)
    patient_id = _number(ecg_id, line, "patient_id", cells["patient_id"], integer=True, required=True)
    if not 0 <= patient_id < 2**31:
        raise PtbxlRecordError(ecg_id, f"line {line}, column 'patient_id' is out of range: {cells['patient_id']!r}")
    fold = _number(ecg_id, line, "strat_fold", cells["strat_fold"], integer=True, required=True)
    if fold not in range(1, 11):
        raise PtbxlRecordError(ecg_id, f"line {line}, column 'strat_fold' {cells['strat_fold']!r} is not 1-10")
    age = _number(ecg_id, line, "age", cells["age"], integer=False, required=False)
    if age is not None and not 0 <= age <= PTBXL_AGE_OVER_89:
        raise PtbxlRecordError(ecg_id, f"line {line}, column 'age' {cells['age']!r} is not 0-{PTBXL_AGE_OVER_89}")
    sex = _number(ecg_id, line, "sex", cells["sex"], integer=True, required=False) if cells["sex"].strip() else None
    if sex is not None and sex not in SEX_NAMES:
        raise PtbxlRecordError(ecg_id, f"line {line}, column 'sex' {cells['sex']!r} is not 0 (male) or 1 (female)")
    try:
        scp_text = bounded_cell(ecg_id, "scp_codes", cells["scp_codes"], "PTB-XL ecg_id", MAX_SCP_CODES_CHARS)
        text = {key: bounded_cell(ecg_id, key, cells[key], "PTB-XL ecg_id") for key in ("report", "heart_axis")}
    except RecordError as err:
        raise PtbxlRecordError(ecg_id, err.problem) from None
    scp_codes = parse_scp_codes(ecg_id, scp_text or None)
    return {
        "ecg_id": ecg_id,
        "patient_id": int(patient_id),
        "age": age,
        "sex": SEX_NAMES[int(sex)] if sex is not None else None,
        **text,
        "scp_codes": json.dumps(scp_codes),
        "strat_fold": int(fold),
        **labeler(ecg_id, scp_codes),
    }


def record_path(row: Mapping[str, object], sampling_rate: int, ptbxl_dir: str | os.PathLike | None = None) -> str:
    """Relative WFDB record name (no extension) for `sampling_rate`; refuses paths that leave `ptbxl_dir`."""
    if sampling_rate not in SAMPLING_RATES:
        raise ValueError(f"sampling_rate must be one of {SAMPLING_RATES}, got {sampling_rate}")
    column = "filename_lr" if sampling_rate == 100 else "filename_hr"
    name = str(row[column])
    if ptbxl_dir is not None:
        try:
            inside(Path(ptbxl_dir), name, row["ecg_id"], "PTB-XL ecg_id")
        except RecordError as err:
            raise PtbxlRecordError(int(row["ecg_id"]), f"column {column!r}: {err.problem}") from None
    return name


def _check_header(ecg_id: int, header: wfdb.Record, base: Path, sampling_rate: int) -> dict[str, int]:
    """Check a parsed header against PTB-XL's conventions and the .dat file's size.

    Returns:
        Column of each lead in the file, keyed by upper-case lead name.
    """
    expected_len = DURATION_S * sampling_rate
    if header.fs != sampling_rate or header.sig_len != expected_len:
        raise PtbxlRecordError(
            ecg_id,
            f"header says {header.sig_len} samples at {header.fs:g} Hz; expected {expected_len} at {sampling_rate} Hz",
        )
    if set(header.fmt) != {"16"} or len(set(header.file_name)) != 1:
        raise PtbxlRecordError(ecg_id, f"expected one format-16 .dat file, header lists {header.fmt}")
    try:
        check_header(header, base, ecg_id, "PTB-XL ecg_id")  # signal file present, inside, of the declared size
    except RecordError as err:
        raise PtbxlRecordError(ecg_id, err.problem) from None
    by_name = {name.upper(): i for i, name in enumerate(header.sig_name)}
    missing = [lead for lead in LEAD_NAMES if lead.upper() not in by_name]
    if missing or len(by_name) != len(LEAD_NAMES) or header.n_sig != len(LEAD_NAMES):
        raise PtbxlRecordError(ecg_id, f"leads {header.sig_name} do not match {LEAD_NAMES} (missing: {missing})")
    return by_name


def read_signal(ptbxl_dir: str | os.PathLike, ecg_id: int, record_name: str, sampling_rate: int) -> np.ndarray:
    """Read one record with wfdb and check it against its header and PTB-XL's conventions.

    Returns:
        float32 array of shape (12, 10 * sampling_rate): leads in `LEAD_NAMES` order x time, mV.
        Samples equal `wfdb.rdsamp`'s (transposed, cast to float32).
    """
    try:  # also refuses a .hea or .dat that links outside the folder
        base = inside(Path(ptbxl_dir), record_name, ecg_id, "PTB-XL ecg_id")
    except RecordError as err:
        raise PtbxlRecordError(ecg_id, err.problem) from None
    for suffix in (".hea", ".dat"):
        if not base.with_name(base.name + suffix).is_file():
            raise MissingRecordFileError(ecg_id, f"{sampling_rate} Hz file {record_name}{suffix} is missing")
    try:
        header = read_header(base)
    except Exception as err:  # wfdb raises assorted types on malformed headers
        raise PtbxlRecordError(ecg_id, f"unreadable header {record_name}.hea: {err}") from None
    by_name = _check_header(ecg_id, header, base, sampling_rate)  # before reading: also checks the file size
    try:
        if isinstance(header, Header):
            digital = read_digital(base, header)
        else:
            header = wfdb.rdrecord(str(base), physical=False)
            digital = header.d_signal
    except Exception as err:  # wfdb raises assorted types on malformed files
        raise PtbxlRecordError(ecg_id, f"wfdb cannot read {record_name}: {err}") from None
    corrupt = bad_checksums(digital, header)
    # Equal to wfdb.rdsamp's samples (same float64 arithmetic), cast to float32.
    signal = to_physical(digital, header)[:, [by_name[lead.upper()] for lead in LEAD_NAMES]].T
    nan_leads = [lead for lead, row in zip(LEAD_NAMES, signal, strict=True) if not np.isfinite(row).all()]
    if nan_leads:
        count = int((~np.isfinite(signal)).sum())
        raise PtbxlRecordError(ecg_id, f"{count} NaN (invalid) samples in leads {nan_leads}")
    if corrupt:
        raise PtbxlRecordError(ecg_id, f"checksum mismatch in leads {corrupt}: {record_name}.dat is corrupt")
    return np.ascontiguousarray(signal, dtype=np.float32)


def ptbxl_features(statements: pd.DataFrame, sampling_rate: int) -> Features:
    """The prepared dataset's schema (docs/CONTRACTS.md); label names are the full statement lists."""
    class_names = {task: _statement_class_names(statements, task) for task in TASKS}
    return prepared_features(DURATION_S * sampling_rate, class_names)


def statement_entries(scp_codes: Mapping[str, float], descriptions: Mapping[str, str]) -> list[dict[str, str]]:
    """SCP codes as the prepared `statements` column: system, code and English description."""
    return [{"system": "SCP-ECG", "code": code, "text": descriptions.get(code, code)} for code in scp_codes]


class PtbxlSource:
    """PTB-XL (PhysioNet layout) as a source for `esi.data.prepare.prepare_source`.

    Args:
        replicas: list every row this many times, copy k under ecg_id and patient_id + k * 10,000,000,
            reading the same files (a benchmark of scale without copying files).
    """

    name = "ptbxl"

    def __init__(
        self, ptbxl_dir: str | os.PathLike, sampling_rate: int = 100, limit: int | None = None, replicas: int = 1
    ):
        if sampling_rate not in SAMPLING_RATES:
            raise ValueError(f"sampling_rate must be one of {SAMPLING_RATES}, got {sampling_rate}")
        self.ptbxl_dir = Path(ptbxl_dir)
        self.sampling_rate = sampling_rate
        self.limit = limit
        self.replicas = replicas
        self.statements = load_statements(self.ptbxl_dir)
        self.labeler = PtbxlLabeler(self.statements)
        self.descriptions = {str(c): str(d) for c, d in self.statements["description"].items()}

    def identity(self) -> dict:
        return {
            "name": self.name,
            "dir": str(self.ptbxl_dir.resolve()),
            "sampling_rate": self.sampling_rate,
            "limit": self.limit,
            "replicas": self.replicas,
        }

    def features(self) -> Features:
        return ptbxl_features(self.statements, self.sampling_rate)

    def rows(self) -> RowTable:
        return RowTable(load_database(self.ptbxl_dir, self.limit, as_text=True), copies=self.replicas)

    def example(self, row: dict) -> dict:
        meta = record_metadata(row, self.labeler)
        name = record_path(row, self.sampling_rate, self.ptbxl_dir)
        signal = read_signal(self.ptbxl_dir, meta["ecg_id"], name, self.sampling_rate)
        shift = row["_replica"] * REPLICA_ID_OFFSET
        return {
            **meta,
            "ecg_id": meta["ecg_id"] + shift,
            "patient_id": meta["patient_id"] + shift,
            "signal": signal,
            "sampling_rate": self.sampling_rate,
            "lead_names": LEAD_NAMES,
            "source": "ptb-xl",
            "record_name": name,
            "original_sampling_rate": float(self.sampling_rate),
            "statements": statement_entries(json.loads(meta["scp_codes"]), self.descriptions),
        }


def multi_hot(indices: Sequence[int] | Sequence[Sequence[int]], num_classes: int) -> np.ndarray:
    """Class indices -> float32 multi-hot: shape (num_classes,) for one record, (N, num_classes) for N."""
    rows = list(indices)
    batched = bool(rows) and all(isinstance(row, Iterable) for row in rows)
    rows = [list(row) for row in rows] if batched else [rows]
    out = np.zeros((len(rows), num_classes), dtype=np.float32)
    for i, row in enumerate(rows):
        if any(not 0 <= int(c) < num_classes for c in row):
            raise ValueError(f"class index out of range 0-{num_classes - 1} in {row}")
        out[i, np.asarray(row, dtype=np.int64)] = 1.0
    return out if batched else out[0]


def summarize(dataset_dict: DatasetDict) -> str:
    """Records per split, superclass counts per split, and one record's signal shape."""
    lines = []
    for split, dataset in dataset_dict.items():
        names = task_class_names(dataset.features, "superdiagnostic")
        counts = Counter(names[i] for labels in dataset["superdiagnostic"] for i in labels)
        per_class = ", ".join(f"{name} {counts[name]}" for name in names)
        lines.append(f"{split}: {dataset.num_rows} records; superdiagnostic: {per_class}")
    first = next((d for d in dataset_dict.values() if d.num_rows), None)
    if first is not None:
        row = first.with_format("numpy")[0]
        lines.append(
            f"signal of ecg_id {int(row['ecg_id'])}: shape {tuple(row['signal'].shape)} (leads x time) "
            f"at {int(row['sampling_rate'])} Hz, {row['signal'].dtype}"
        )
    return "\n".join(lines)
