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
import json
import math
import os
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import wfdb
from datasets import Array2D, ClassLabel, DatasetDict, Features, List, Value

from esi.constants import STANDARD_LEADS, TASKS

LEAD_NAMES = list(STANDARD_LEADS)
DURATION_S = 10
SAMPLING_RATES = (100, 500)
SPLIT_FOLDS = {"train": tuple(range(1, 9)), "validation": (9,), "test": (10,)}
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
# Format 16 (16-bit two's complement) is the only WFDB format PTB-XL uses.
BYTES_PER_SAMPLE = {"16": 2}


class PtbxlRecordError(ValueError):
    """A PTB-XL record that cannot be turned into a clean example.

    Carries the record's `ecg_id` and a human-readable `problem`; picklable so it can cross
    process boundaries unchanged.
    """

    def __init__(self, ecg_id: int, problem: str):
        super().__init__(f"PTB-XL ecg_id {ecg_id}: {problem}")
        self.ecg_id = ecg_id
        self.problem = problem

    def __reduce__(self):
        return type(self), (self.ecg_id, self.problem)


class MissingRecordFileError(PtbxlRecordError):
    """The record's WFDB files are absent (e.g. a 500 Hz file in a subset that ships only 100 Hz)."""


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


def load_database(ptbxl_dir: str | os.PathLike, limit: int | None = None) -> pd.DataFrame:
    """The first `limit` rows (all when None) of `ptbxl_database.csv`, in file order."""
    path = Path(ptbxl_dir) / "ptbxl_database.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: is {ptbxl_dir} a PTB-XL folder?")
    database = pd.read_csv(path, usecols=lambda column: column in DATABASE_COLUMNS, nrows=limit)
    missing = set(DATABASE_COLUMNS) - set(database.columns)
    if missing:
        raise ValueError(f"{path} lacks columns {sorted(missing)}")
    duplicated = database["ecg_id"][database["ecg_id"].duplicated()]
    if len(duplicated):
        raise ValueError(f"{path} repeats ecg_id {sorted(set(duplicated.tolist()))[:10]}")
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


def record_metadata(row: Mapping[str, object], labeler: PtbxlLabeler) -> dict[str, object]:
    """One database row -> the example's non-signal columns (see docs/CONTRACTS.md)."""
    ecg_id = int(row["ecg_id"])
    scp_codes = parse_scp_codes(ecg_id, row["scp_codes"])
    patient_id, sex, fold, age = row["patient_id"], row["sex"], row["strat_fold"], row["age"]
    if not isinstance(patient_id, (int, float)) or not math.isfinite(patient_id):
        raise PtbxlRecordError(ecg_id, f"patient_id is missing or not a number: {patient_id!r}")
    if sex not in SEX_NAMES:
        raise PtbxlRecordError(ecg_id, f"sex {sex!r} is not 0 (male) or 1 (female)")
    if fold not in range(1, 11):
        raise PtbxlRecordError(ecg_id, f"strat_fold {fold!r} is not 1-10")
    if not isinstance(age, (int, float)):
        raise PtbxlRecordError(ecg_id, f"age is not a number: {age!r}")
    text = {key: row[key] if isinstance(row[key], str) else "" for key in ("report", "heart_axis")}
    return {
        "ecg_id": ecg_id,
        "patient_id": int(patient_id),
        "age": None if math.isnan(age) else float(age),
        "sex": SEX_NAMES[int(sex)],
        **text,
        "scp_codes": json.dumps(scp_codes),
        "strat_fold": int(fold),
        **labeler(ecg_id, scp_codes),
    }


def split_of(strat_fold: int) -> str:
    return next(split for split, folds in SPLIT_FOLDS.items() if strat_fold in folds)


def record_path(row: Mapping[str, object], sampling_rate: int) -> str:
    """Relative WFDB record name (no extension) for `sampling_rate`."""
    if sampling_rate not in SAMPLING_RATES:
        raise ValueError(f"sampling_rate must be one of {SAMPLING_RATES}, got {sampling_rate}")
    return str(row["filename_lr" if sampling_rate == 100 else "filename_hr"])


def _check_header(ecg_id: int, header: wfdb.Record, base: Path, sampling_rate: int) -> dict[str, int]:
    """Check a parsed header against PTB-XL's conventions and the .dat file's size.

    Returns:
        Column of each lead in the file, keyed by upper-case lead name.
    """
    expected_len = DURATION_S * sampling_rate
    if header.fs != sampling_rate or header.sig_len != expected_len:
        raise PtbxlRecordError(
            ecg_id,
            f"header says {header.sig_len} samples at {header.fs} Hz; expected {expected_len} at {sampling_rate} Hz",
        )
    if any(fmt not in BYTES_PER_SAMPLE for fmt in header.fmt) or len(set(header.file_name)) != 1:
        raise PtbxlRecordError(ecg_id, f"expected one format-16 .dat file, header lists {header.fmt}")
    # wfdb silently reads whatever the header declares, so compare the file size ourselves.
    dat_bytes = os.path.getsize(base.with_name(header.file_name[0]))
    declared = header.sig_len * header.n_sig * BYTES_PER_SAMPLE[header.fmt[0]]
    if dat_bytes != declared:
        raise PtbxlRecordError(
            ecg_id,
            f"{header.file_name[0]} has {dat_bytes} bytes but its header declares {header.n_sig} signals x "
            f"{header.sig_len} samples = {declared} bytes (truncated file or header mismatch)",
        )
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
    base = Path(ptbxl_dir) / record_name
    for suffix in (".hea", ".dat"):
        if not base.with_name(base.name + suffix).is_file():
            raise MissingRecordFileError(ecg_id, f"{sampling_rate} Hz file {record_name}{suffix} is missing")
    # wfdb's header parsing dominates the cost of a read, so the header is parsed once (by
    # rdrecord) and parsed again on its own only to explain a failed read.
    try:
        record = wfdb.rdrecord(str(base), physical=False)
    except Exception as read_error:  # wfdb raises assorted types on malformed files
        try:
            header = wfdb.rdheader(str(base))
        except Exception as err:
            raise PtbxlRecordError(ecg_id, f"unreadable header {record_name}.hea: {err}") from None
        _check_header(ecg_id, header, base, sampling_rate)
        raise PtbxlRecordError(ecg_id, f"wfdb cannot read {record_name}: {read_error}") from None
    by_name = _check_header(ecg_id, record, base, sampling_rate)

    bad_checksums = [
        name
        for name, got, want in zip(record.sig_name, record.calc_checksum(), record.checksum, strict=True)
        if want is not None and got != want  # checksums are optional in WFDB headers
    ]
    record.dac(expanded=False, return_res=64, inplace=True)  # exactly what rdsamp does
    signal = record.p_signal[:, [by_name[lead.upper()] for lead in LEAD_NAMES]].T
    nan_leads = [lead for lead, row in zip(LEAD_NAMES, signal, strict=True) if not np.isfinite(row).all()]
    if nan_leads:
        count = int((~np.isfinite(signal)).sum())
        raise PtbxlRecordError(ecg_id, f"{count} NaN (invalid) samples in leads {nan_leads}")
    if bad_checksums:
        raise PtbxlRecordError(ecg_id, f"checksum mismatch in leads {bad_checksums}: {record_name}.dat is corrupt")
    return np.ascontiguousarray(signal, dtype=np.float32)


def ptbxl_features(statements: pd.DataFrame, sampling_rate: int) -> Features:
    """The prepared dataset's schema (docs/CONTRACTS.md); label names are the full statement lists."""
    return Features(
        {
            "ecg_id": Value("int32"),
            "patient_id": Value("int32"),
            "signal": Array2D((len(LEAD_NAMES), DURATION_S * sampling_rate), "float32"),
            "sampling_rate": Value("int32"),
            "lead_names": List(Value("string")),
            "age": Value("float32"),
            "sex": Value("string"),
            "report": Value("string"),
            "scp_codes": Value("string"),
            "heart_axis": Value("string"),
            "strat_fold": Value("int32"),
            **{task: List(ClassLabel(names=_statement_class_names(statements, task))) for task in TASKS},
        }
    )


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
