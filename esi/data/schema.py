"""The prepared ECG dataset every reader writes (docs/CONTRACTS.md, "Prepared ECG dataset").

One schema for all sources, so `cqa_generate.py`, `train.py` and `finetune.py` read any of them:
PTB-XL's columns (ecg_id, patient_id, signal, sampling_rate, lead_names, age, sex, report,
scp_codes, heart_axis, strat_fold, the PTB-XL task labels) plus `source`, `record_name`,
`original_sampling_rate` and `statements` (readable text with the coding system each came from).

`signal` is leads x time, float32, mV. A source whose records all have one length stores it as
`Array2D((12, T))`; a source with records of different lengths (CPSC 2018: 6-60 s) stores the full
signal as `List(List(float32))` (12 rows of any length). Both read back as a (12, T) numpy array
with `with_format("numpy")`; `esi.data.windows` cuts fixed-length windows with masks.

Research software, not a diagnostic device.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

from datasets import Array2D, ClassLabel, Features, List, Value

from esi.constants import STANDARD_LEADS, TASKS

LEAD_NAMES = list(STANDARD_LEADS)
SPLIT_FOLDS = {"train": tuple(range(1, 9)), "validation": (9,), "test": (10,)}
# One statement: where its code comes from ("SCP-ECG", "SNOMED-CT", "CinC 2020 abbreviation",
# "MIMIC-IV-ECG machine report", "labels CSV"), the code ("" for free text) and readable text.
STATEMENT = {"system": Value("string"), "code": Value("string"), "text": Value("string")}
# No cell of a metadata table may be longer than this: a 20 MB cell once cost 2.9 GB to parse.
MAX_CELL_CHARS = 100_000


class RecordError(ValueError):
    """A record that cannot become a clean example; names the record and the problem.

    `record` is how a user finds it (ecg_id, record name or table row); `missing` marks absent
    files, which `skip_missing` covers (everything else needs `skip_invalid`). Picklable, so it
    crosses process boundaries unchanged.
    """

    def __init__(self, record: object, problem: str, missing: bool = False, source: str = "record"):
        super().__init__(f"{source} {record}: {problem}")
        self.record = record
        self.problem = problem
        self.missing = missing
        self.source = source

    def __reduce__(self):
        return _rebuild_record_error, (type(self), self.__dict__.copy(), self.args)


def _rebuild_record_error(cls, state: dict, args: tuple):
    error = cls.__new__(cls)
    ValueError.__init__(error, *args)
    error.__dict__.update(state)
    return error


def prepared_features(
    num_samples: int | None,
    class_names: dict[str, list[str]],
    extra: dict | None = None,
) -> Features:
    """The prepared schema; `num_samples` None means variable-length signals.

    Args:
        num_samples: samples per lead when every record has that many, else None.
        class_names: names of each PTB-XL task's classes (sorted), see `esi.data.ptbxl`.
        extra: source-specific columns appended after the common ones (MIMIC's machine intervals).
    """
    signal = (
        Array2D((len(LEAD_NAMES), num_samples), "float32") if num_samples is not None else List(List(Value("float32")))
    )
    return Features(
        {
            "ecg_id": Value("int32"),
            "patient_id": Value("int32"),
            "signal": signal,
            "sampling_rate": Value("int32"),
            "lead_names": List(Value("string")),
            "age": Value("float32"),
            "sex": Value("string"),
            "report": Value("string"),
            "scp_codes": Value("string"),
            "heart_axis": Value("string"),
            "strat_fold": Value("int32"),
            "source": Value("string"),
            "record_name": Value("string"),
            "original_sampling_rate": Value("float32"),
            "statements": List(STATEMENT),
            **{task: List(ClassLabel(names=class_names[task])) for task in TASKS},
            **(extra or {}),
        }
    )


def split_of(strat_fold: int) -> str:
    return next(split for split, folds in SPLIT_FOLDS.items() if strat_fold in folds)


def hash_fold(key: str) -> int:
    """A stable fold 1-10 for sources without one (keyed by patient where known, so patients stay in one split)."""
    return 1 + zlib.crc32(key.encode()) % 10


def bounded_cell(record: object, column: str, value: object, source: str, limit: int = MAX_CELL_CHARS) -> str:
    """`value` as text ("" when empty), refusing a cell longer than `limit` characters."""
    if value is None or (isinstance(value, float) and value != value):
        return ""
    text = str(value)
    if len(text) > limit:
        raise RecordError(record, f"column {column!r} holds {len(text):,} characters (limit {limit:,})", source=source)
    return text


def refuse_duplicate_ids(ids: Sequence, column: str, where: object, row_name=lambda i: f"line {i + 2}") -> None:
    """Raise ValueError when `ids` repeats a value, naming both rows that give it (`row_name(position)`; by
    default the CSV line, the header being line 1): two ECGs under one id would swap labels and captions."""
    first_at: dict = {}
    for position, value in enumerate(ids):
        if value in first_at:
            repeated = sum(1 for v in ids if v == value)
            also = f" ({repeated} rows in all)" if repeated > 2 else ""
            raise ValueError(
                f"{where}: {row_name(first_at[value])} and {row_name(position)} both give {column} {value}{also}; "
                f"every ECG needs its own {column}"
            )
        first_at[value] = position
