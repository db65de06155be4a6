"""Captions never let the rhythm detector contradict the cardiologists' statements."""

from __future__ import annotations

import dataclasses
import json

import datasets
import numpy as np
import pandas as pd

from esi.cqa.consistency import reconcile_with_statements
from esi.cqa.measurements import measure_ecg


def _measured(prepared_sample, code: str):
    rows = datasets.load_from_disk(str(prepared_sample))["train"].with_format("numpy")
    row = next(r for r in rows if code in json.loads(r["scp_codes"]))
    return measure_ecg(np.asarray(row["signal"]), int(row["sampling_rate"]), list(row["lead_names"]), row["ecg_id"])


def test_detected_p_waves_and_regular_rr_are_withheld_under_afib(prepared_sample):
    m = dataclasses.replace(
        _measured(prepared_sample, "AFIB"), p_wave_absent=False, rr_irregular=False, pr_interval_ms=160.0
    )  # what the detector reports on a few AF records
    out = reconcile_with_statements(m, ["AFIB", "PVC"])
    assert out.p_wave_absent is None and out.rr_irregular is None and out.pr_interval_ms is None
    assert "AFIB" in out.missing["p_wave_absent"] and "AFIB" in out.missing["rr_irregular"]
    assert out.heart_rate_bpm == m.heart_rate_bpm and out.qrs_duration_ms == m.qrs_duration_ms
    assert json.loads(out.to_columns()["measurement_missing"])["pr_interval_ms"].startswith("no PR interval")


def test_absent_p_waves_are_withheld_under_sinus_rhythm_and_agreement_is_untouched(prepared_sample):
    m = _measured(prepared_sample, "SR")
    missed = dataclasses.replace(m, p_wave_absent=True)
    assert reconcile_with_statements(missed, ["SR", "NORM"]).p_wave_absent is None
    agreeing = dataclasses.replace(m, p_wave_absent=False, rr_irregular=False)
    assert reconcile_with_statements(agreeing, ["SR", "NORM"]) is agreeing


def test_sample_captions_do_not_contradict_rhythm_statements(sample_captions):
    files = sorted(sample_captions.rglob("*.parquet"))  # not load_dataset: see test_cqa_captions
    checked = 0
    for row in pd.concat([pd.read_parquet(f) for f in files]).to_dict("records"):
        if "AFIB" in list(row["statements"]):
            assert "P waves present" not in row["caption"] and ", regular." not in row["caption"], row["ecg_id"]
            checked += 1
        if "SR" in list(row["statements"]):
            assert "No consistent P waves" not in row["caption"], row["ecg_id"]
    assert checked > 20
