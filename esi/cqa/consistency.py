"""Keep signal-derived rhythm flags from contradicting the cardiologists' statements.

The measurement flags come from an automatic detector that is wrong on a few percent of
records (P waves "found" in atrial fibrillation, "absent" in sinus rhythm). A caption must
not contradict its record, and the validated statements outrank the detector, so a flag
that conflicts with them is withheld (set to None, with the reason) before any text is
written. Numbers are left alone: they are reported as measured values, not as diagnoses.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection

from esi.cqa.measurements import EcgMeasurements

ATRIAL_ACTIVITY_WITHOUT_P = {"AFIB", "AFLT"}  # no discrete P waves, so no PR interval
IRREGULAR_RHYTHMS = {"AFIB"}
SINUS_RHYTHMS = {"SR", "SBRAD", "STACH", "SARRH"}


def reconcile_with_statements(m: EcgMeasurements, statement_codes: Collection[str]) -> EcgMeasurements:
    """A copy of `m` whose rhythm flags agree with the record's statements; withheld fields say why."""
    codes = set(statement_codes)
    withheld: dict[str, str] = {}
    atrial = sorted(codes & ATRIAL_ACTIVITY_WITHOUT_P)
    if atrial and m.p_wave_absent is False:
        withheld["p_wave_absent"] = f"detector found P waves, but the record's statements include {', '.join(atrial)}"
        if m.pr_interval_ms is not None:
            withheld["pr_interval_ms"] = f"no PR interval is defined with {', '.join(atrial)}"
    irregular = sorted(codes & IRREGULAR_RHYTHMS)
    if irregular and m.rr_irregular is False:
        withheld["rr_irregular"] = f"RR intervals measured regular, but the record's statements include {irregular[0]}"
    sinus = sorted(codes & SINUS_RHYTHMS)
    if sinus and not atrial and m.p_wave_absent is True:
        withheld["p_wave_absent"] = f"detector found no P waves, but the record's statements include {sinus[0]}"
    if not withheld:
        return m
    return dataclasses.replace(m, **dict.fromkeys(withheld), missing={**m.missing, **withheld})
