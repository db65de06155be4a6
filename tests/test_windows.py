"""Windows of variable-length ECGs: random crops for training, covering windows for evaluation, masks on padding."""

import numpy as np
import pytest

from esi.data.windows import eval_windows, random_window


def _ecg(samples: int) -> np.ndarray:
    return np.arange(12 * samples, dtype=np.float32).reshape(12, samples)


def test_random_window_is_a_real_slice_with_full_mask():
    signal = _ecg(6000)
    rng = np.random.default_rng(0)
    starts = set()
    for _ in range(20):
        window, mask = random_window(signal, 1000, rng)
        start = int(window[0, 0])
        np.testing.assert_array_equal(window, signal[:, start : start + 1000])
        assert mask.sum() == 1000
        starts.add(start)
    assert len(starts) > 10 and max(starts) <= 5000


def test_short_record_is_padded_and_masked():
    signal = _ecg(600)
    window, mask = random_window(signal, 1000, np.random.default_rng(0))
    np.testing.assert_array_equal(window[:, :600], signal)
    assert not window[:, 600:].any() and mask.tolist() == [1] * 600 + [0] * 400
    windows, masks = eval_windows(signal, 1000)
    assert windows.shape == (1, 12, 1000) and masks[0].sum() == 600


@pytest.mark.parametrize(
    ("samples", "stride", "starts"), [(2500, None, [0, 1000, 1500]), (3000, 500, [0, 500, 1000, 1500, 2000])]
)
def test_eval_windows_cover_the_whole_record(samples, stride, starts):
    windows, masks = eval_windows(_ecg(samples), 1000, stride)
    assert [int(w[0, 0]) for w in windows] == starts
    assert int(windows[-1][0, -1]) == samples - 1 and masks.all()
