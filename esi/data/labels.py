"""Labels shared by the non-PTB-XL sources: demographics from text, SCP crosswalk, PTB-XL task labels.

Every source fills PTB-XL's task columns (`all`, `superdiagnostic`, ...) from the SCP-ECG codes
it can name, so `finetune.py` and the CQA (which describe SCP statements) work on any source.
A statement with no SCP equivalent stays in `statements` (its own code and text) and simply
adds no label.
"""

from __future__ import annotations

import json
import math
from functools import cache

from esi.constants import TASKS
from esi.data.ptbxl import PTBXL_RESOURCES, PtbxlLabeler, load_statements, task_class_names
from esi.data.schema import LEAD_NAMES, RecordError
from esi.data.wfdb_record import WfdbSignal

MISSING_TEXT = {"", "nan", "none", "unknown", "n/a", "na", "-"}
SEX_WORDS = {"male": "male", "m": "male", "female": "female", "f": "female"}


@cache
def scp_reference() -> tuple[PtbxlLabeler, dict[str, list[str]], dict[str, str]]:
    """PTB-XL's statement table shipped with the package: labeler, class names per task, descriptions."""
    statements = load_statements(PTBXL_RESOURCES)
    class_names = {task: task_class_names(statements, task) for task in TASKS}
    descriptions = {str(c): str(d) for c, d in statements["description"].items()}
    return PtbxlLabeler(statements), class_names, descriptions


def parse_age(record: object, text: str | None, source: str) -> float | None:
    """An age in years from text; None when not recorded; an error for anything else."""
    value = (text or "").strip()
    if value.lower() in MISSING_TEXT:
        return None
    try:
        age = float(value) if len(value) < 20 else math.nan
    except ValueError:
        age = math.nan
    if not math.isfinite(age) or not 0 <= age <= 150:
        raise RecordError(record, f"age {value[:40]!r} is not a number of years (0-150) or 'Unknown'", source=source)
    return age


def parse_sex(record: object, text: str | None, source: str) -> str | None:
    """ "male" / "female" from Male/M/Female/F (any case); None when not recorded; an error otherwise."""
    value = (text or "").strip()
    if value.lower() in MISSING_TEXT:
        return None
    if value.lower() not in SEX_WORDS:
        raise RecordError(record, f"sex {value[:40]!r} is not Male/Female (or M/F, Unknown)", source=source)
    return SEX_WORDS[value.lower()]


def wfdb_example(
    read: WfdbSignal, *, ecg_id: int, patient_id: int, scp_codes: dict[str, float], report: str = "", **columns
) -> dict:
    """A prepared example from a WFDB signal: the common columns, PTB-XL task labels from `scp_codes`,
    and `columns` (age, sex, strat_fold, source, record_name, statements, source-specific ones)."""
    return {
        "ecg_id": ecg_id,
        "patient_id": patient_id,
        "signal": read.signal,
        "sampling_rate": read.sampling_rate,
        "lead_names": LEAD_NAMES,
        "report": report,
        "scp_codes": json.dumps(scp_codes),
        "heart_axis": "",
        "original_sampling_rate": read.original_sampling_rate,
        **columns,
        **scp_reference()[0](ecg_id, scp_codes),
    }
