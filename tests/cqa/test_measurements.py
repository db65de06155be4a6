"""esi.cqa.measurements on real PTB-XL records from the embedded sample (data/ptbxl_sample)."""

from __future__ import annotations

import json

import neurokit2 as nk
import numpy as np
import pytest
import wfdb

from esi.cqa.measurements import (
    INTERVAL_NAMES,
    STANDARD_LEADS,
    EcgMeasurements,
    _clean,
    _peak_agreement,
    axis_category_ptbxl,
    combine_leads,
    measure_ecg,
    reliable_value,
)
from tests.helpers import PTBXL_SAMPLE


def read(ecg_id: int, rate: int = 100) -> tuple[np.ndarray, list[str]]:
    """(12, T) mV signal and lead names of a sample record."""
    folder, suffix = ("records100", "lr") if rate == 100 else ("records500", "hr")
    record = wfdb.rdrecord(str(PTBXL_SAMPLE / folder / "00000" / f"{ecg_id:05d}_{suffix}"))
    return record.p_signal.T, list(record.sig_name)


@pytest.fixture(scope="module")
def norm() -> EcgMeasurements:
    signal, leads = read(3)  # PTB-XL: NORM, SR
    return measure_ecg(signal, 100, leads, ecg_id=3)


def test_norm_record_is_plausible(norm: EcgMeasurements) -> None:
    assert norm.missing == {}
    assert 50 <= norm.heart_rate_bpm <= 100
    assert norm.rr_irregular is False and norm.p_wave_absent is False
    assert 120 <= norm.pr_interval_ms <= 200
    assert 60 <= norm.qrs_duration_ms < 120
    assert 320 <= norm.qt_interval_ms <= 460 and 340 <= norm.qtc_bazett_ms <= 460
    assert norm.qtc_fridericia_ms == pytest.approx(norm.qt_interval_ms / (60 / norm.heart_rate_bpm) ** (1 / 3))
    assert norm.qrs_axis_category == "normal" and -30 <= norm.qrs_axis_deg <= 90
    assert 0.5 < norm.sokolow_lyon_mv < 3.5 and norm.low_voltage is False
    assert set(norm.st_deviation_mv) == set(STANDARD_LEADS)
    assert all(abs(v) < 0.1 for v in norm.st_deviation_mv.values())


@pytest.mark.parametrize("ecg_id", [286, 195])  # CLBBB, CRBBB
def test_bundle_branch_block_has_wide_qrs(ecg_id: int) -> None:
    signal, leads = read(ecg_id)
    assert measure_ecg(signal, 100, leads, ecg_id).qrs_duration_ms >= 120


@pytest.mark.parametrize("ecg_id", [321, 351])  # AFIB
def test_atrial_fibrillation_is_irregular_without_p(ecg_id: int) -> None:
    signal, leads = read(ecg_id)
    m = measure_ecg(signal, 100, leads, ecg_id)
    assert m.rr_irregular is True and m.p_wave_absent is True
    assert m.pr_interval_ms is None and "P wave" in m.missing["pr_interval_ms"]


@pytest.mark.parametrize("ecg_id", [1, 6, 9])
def test_100_and_500_hz_agree(ecg_id: int) -> None:
    (low_signal, leads), (high_signal, _) = read(ecg_id, 100), read(ecg_id, 500)
    low = measure_ecg(low_signal, 100, leads, ecg_id)
    high = measure_ecg(high_signal, 500, leads, ecg_id)
    assert abs(low.heart_rate_bpm - high.heart_rate_bpm) <= 2
    assert abs(low.qrs_duration_ms - high.qrs_duration_ms) <= 20
    assert abs(low.qt_interval_ms - high.qt_interval_ms) <= 30
    assert abs(low.qrs_axis_deg - high.qrs_axis_deg) <= 15


@pytest.mark.parametrize("rate", [100, 500])
def test_cleaning_equals_neurokit2(rate: int) -> None:
    signal, _ = read(2, rate)
    expected = np.vstack([nk.ecg_clean(lead, sampling_rate=rate, method="neurokit") for lead in signal])
    np.testing.assert_allclose(_clean(signal, rate), expected, rtol=1e-9, atol=1e-9)


def test_lead_order_is_by_name(norm: EcgMeasurements) -> None:
    signal, leads = read(3)
    order = [1, 0, 5, 4, 3, 2, 11, 10, 9, 8, 7, 6]
    shuffled = measure_ecg(signal[order], 100, [leads[i] for i in order], ecg_id=3)
    assert shuffled.to_columns() == norm.to_columns()


def test_flat_and_noise_signals_give_reasons_not_numbers() -> None:
    rng = np.random.default_rng(0)
    for name, signal in (("flat", np.zeros((12, 1000))), ("noise", rng.normal(0, 0.3, (12, 1000)))):
        m = measure_ecg(signal, 100, STANDARD_LEADS, ecg_id=name)
        assert m.heart_rate_bpm is None and m.qrs_duration_ms is None and m.st_deviation_mv is None, name
        assert set(m.missing) == set(EcgMeasurements.__dataclass_fields__) - {"missing", "low_confidence"}, name
        assert all(reason for reason in m.missing.values())


@pytest.mark.parametrize(
    ("signal", "leads", "message"),
    [
        (np.full((12, 1000), np.nan), STANDARD_LEADS, "NaN"),
        (np.zeros((1000, 12)), STANDARD_LEADS, "shape"),
        (np.zeros((12, 1000)), [*STANDARD_LEADS[:11], "V7"], "unknown lead"),
        (np.zeros((12, 100)), STANDARD_LEADS, "long"),
    ],
)
def test_bad_input_names_the_record(signal: np.ndarray, leads, message: str) -> None:
    with pytest.raises(ValueError, match=rf"record 4711.*{message}"):
        measure_ecg(signal, 100, leads, ecg_id=4711)


def test_columns_are_unit_named_and_identical_for_every_record(norm: EcgMeasurements) -> None:
    flat = measure_ecg(np.zeros((12, 1000)), 100, STANDARD_LEADS, ecg_id="flat")
    a, b = norm.to_columns(), flat.to_columns()
    assert list(a) == list(b)
    assert {"heart_rate_bpm", "pr_interval_ms", "qrs_duration_ms", "qtc_bazett_ms", "sokolow_lyon_mv"} <= set(a)
    assert [k for k in a if k.startswith("st_deviation_")] == [f"st_deviation_{lead}_mv" for lead in STANDARD_LEADS]
    assert json.loads(a["measurement_missing"]) == {}
    assert "heart_rate_bpm" in json.loads(b["measurement_missing"])
    assert all(b[k] is None for k in b if k not in ("measurement_missing", "measurement_quality"))
    assert all(isinstance(a[k], float) for k in a if k.endswith(("_ms", "_mv", "_deg", "_bpm")))


def test_axis_categories() -> None:
    assert [axis_category_ptbxl(a) for a in (-45, -5, 0, 60, 90, 120)] == [
        "left",
        "left",
        "normal",
        "normal",
        "normal",
        "right",
    ]


@pytest.mark.parametrize("ecg_id", [26, 28, 257, 329])  # sinus rhythm at 88-92 bpm, no long-QT statement
def test_qt_stops_before_the_next_p_wave(ecg_id: int) -> None:
    # The T-end search used to run into the next beat's P wave (QT 610-632 ms, "P absent"). Now the
    # QT is plausible, or (flat T waves of digitalis effect in record 28) not measured, with the reason.
    signal, leads = read(ecg_id)
    m = measure_ecg(signal, 100, leads, ecg_id)
    assert 80 <= m.heart_rate_bpm <= 95
    assert m.p_wave_absent is False
    if m.qt_interval_ms is None:
        assert "search bound" in m.missing["qt_interval_ms"]
    else:
        assert 280 <= m.qt_interval_ms <= 450 and m.qtc_bazett_ms < 520, m.qt_interval_ms


def test_combine_leads_takes_earliest_or_latest_agreeing_lead_and_ignores_outliers() -> None:
    ends = [400.0, 405.0, 412.0, 420.0, 520.0]  # 520: one lead nobody confirms
    assert combine_leads(ends, tol=15, latest=True) == (420.0, 4)
    assert combine_leads(ends, tol=15, latest=False) == (400.0, 4)
    assert combine_leads([400.0, 480.0], tol=15, latest=True) == (None, 1)
    assert combine_leads([], tol=15, latest=True) == (None, 0)


def test_peak_agreement_of_all_lead_pairs_at_once() -> None:
    a = np.array([10, 100, 200, 300])
    b = np.array([12, 205, 290, 600])  # 12 and 205 within 5 samples of a; 290 is 10 away
    c = np.array([], dtype=int)  # a lead without peaks agrees with nobody
    score = _peak_agreement([a, b, c, a[:2]], tol=5, length=700)
    assert score[0, 1] == score[1, 0] == 2 / 4
    assert score[0, 3] == 2 / 4 and score[3, 1] == 1 / 4  # over the longer list
    assert score[0, 0] == 1.0 and not score[2].any() and not score[:, 2].any()
    # peaks of another lead shifted by a whole record length must not be taken for neighbours
    assert _peak_agreement([np.array([690]), np.array([0])], tol=20, length=700)[0, 1] == 0.0


def test_every_interval_carries_a_quality_flag(norm: EcgMeasurements) -> None:
    quality = json.loads(norm.to_columns()["measurement_quality"])
    assert set(quality) == set(INTERVAL_NAMES)
    assert all(q == {"flag": "measured", "reason": ""} for q in quality.values())
    doubtful = EcgMeasurements(
        pr_interval_ms=450.0,
        low_confidence={"pr_interval_ms": "above 400 ms"},
        missing={"qt_interval_ms": "T-wave end not found"},
    )
    assert doubtful.quality("pr_interval_ms") == ("low_confidence", "above 400 ms")
    assert doubtful.quality("qt_interval_ms") == ("not_measurable", "T-wave end not found")
    assert reliable_value(doubtful, "pr_interval_ms") is None and reliable_value(norm, "pr_interval_ms") > 0
