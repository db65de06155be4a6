"""A bounded run of benchmarks/bench_app_load.py: the real app on 127.0.0.1 with 2 workers, 4 concurrent
analyses of real uploads (WFDB, Philips XML, DICOM) and one hostile upload. Asserts that every normal
request is answered with an analysis, the hostile one with a sentence, that nothing stays on disk after
the server stops, and a liveness bound only (timings are the benchmark's job)."""

from __future__ import annotations

import pytest

from benchmarks.bench_app_load import MAX_PEAK_RSS_MB, run_load

pytestmark = pytest.mark.slow

LIVENESS_S = 600


def test_app_serves_concurrent_uploads_beside_a_hostile_one():
    result = run_load(requests=4, workers=2)
    assert result.normal_ok == 4, result
    shown = result.hostile_status.replace("\\", "")  # the page's Markdown escapes punctuation in the sentence
    assert "Could not analyse this record" in shown
    assert "hostile.hea has" in shown and "limited to 64 KB" in shown
    assert result.hostile_latency_s < LIVENESS_S and result.max_latency_s < LIVENESS_S
    assert result.peak_rss_mb < MAX_PEAK_RSS_MB
    assert result.uploads_left_after_stop == 0 and result.upload_folders_left_after_stop == 0
