"""PR and QRS boundaries on real PTB-XL records of ../shared/ptb-xl: normal ECGs are not given a first-degree
AV block's PR, a long PR stays long, and a PR whose P wave may begin in the previous T wave is not stated."""

from __future__ import annotations

import pytest

from esi.cqa.measurements import measure_ecg
from tests.helpers import read_shared_ptbxl


# NORM, sinus rhythm, no 1AVB/LPR statement; the PR was called 206 ms (8096, 17938) and 216 ms (98 at 500 Hz):
# the P onset came from the earliest lead of the agreeing group, whose tangent (broad, low P wave in V2)
# met a baseline below the level the P wave rises from.
@pytest.mark.parametrize(("ecg_id", "rate"), [(8096, 100), (17938, 100), (98, 500)])
def test_normal_ecg_pr_is_not_that_of_av_block(ecg_id: int, rate: int) -> None:
    signal, leads = read_shared_ptbxl(ecg_id, rate)
    m = measure_ecg(signal, rate, leads, ecg_id)
    assert m.quality("pr_interval_ms")[0] == "measured"
    assert 120 <= m.pr_interval_ms <= 195, m.pr_interval_ms


@pytest.mark.parametrize("ecg_id", [141, 209, 6450])  # 1AVB: PR near 300 ms
def test_first_degree_av_block_keeps_its_long_pr(ecg_id: int) -> None:
    signal, leads = read_shared_ptbxl(ecg_id)
    m = measure_ecg(signal, 100, leads, ecg_id)
    assert m.quality("pr_interval_ms")[0] == "measured"
    assert m.pr_interval_ms > 250, m.pr_interval_ms


@pytest.mark.parametrize("ecg_id", [5158, 21630])  # 1AVB: the P wave runs into the previous T wave
def test_p_onset_at_the_previous_t_end_makes_pr_low_confidence(ecg_id: int) -> None:
    # The P search starts after the previous T wave; a P onset right there may lie earlier, so the PR
    # (stated as fact before) is a lower bound only.
    signal, leads = read_shared_ptbxl(ecg_id)
    m = measure_ecg(signal, 100, leads, ecg_id)
    flag, reason = m.quality("pr_interval_ms")
    assert flag == "low_confidence" and "previous T wave" in reason


def test_qrs_variants_bracket_the_summed_slope_duration() -> None:
    signal, leads = read_shared_ptbxl(3)  # NORM
    m = measure_ecg(signal, 100, leads, 3)
    variants = m.qrs_variants_ms
    assert variants["median_lead"] <= m.qrs_duration_ms <= variants["global"]
    assert 80 <= m.qrs_duration_ms <= 110
    assert not any(key.startswith("qrs_variants") for key in m.to_columns())


def test_pr_variants_hold_the_standards_global_pr_and_the_median_lead() -> None:
    signal, leads = read_shared_ptbxl(141)  # 1AVB: every way of combining the leads finds a long PR
    m = measure_ecg(signal, 100, leads, 141)
    assert set(m.pr_variants_ms) == {"global", "median_lead"}
    assert all(value > 250 for value in m.pr_variants_ms.values()), m.pr_variants_ms
    assert not any(key.startswith("pr_variants") for key in m.to_columns())


# NORM, sinus rhythm; the PR was stated as fact though the leads' own P-to-QRS intervals disagreed with it by
# more than 40 ms: 10396 (215 ms, a first-degree AV block's PR; the leads' own median 170 ms) and 443 (95 ms,
# a pre-excitation's short PR; the leads' own median 190 ms).
@pytest.mark.parametrize("ecg_id", [10396, 443])
def test_pr_the_leads_disagree_on_is_not_stated(ecg_id: int) -> None:
    signal, leads = read_shared_ptbxl(ecg_id)
    m = measure_ecg(signal, 100, leads, ecg_id)
    flag, reason = m.quality("pr_interval_ms")
    assert flag == "low_confidence" and "leads' own PR" in reason, (m.pr_interval_ms, reason)
    assert abs(m.pr_variants_ms["median_lead"] - m.pr_interval_ms) > 40
