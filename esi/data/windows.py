"""Fixed-length windows of variable-length ECGs, with masks (docs/CONTRACTS.md, "Windows").

Records of 6-60 s (CPSC 2018) are stored whole; a model reads `length` samples at a time:
- training: one random window per record and epoch (`random_window`);
- evaluation: every window with a stride (`eval_windows`), the last one aligned to the record's
  end so no sample is left out; predictions are averaged over a record's windows, as the PTB-XL
  benchmark literature does (Strodthoff et al. 2021).
A record shorter than `length` is right-padded with zeros and its mask is 0 there (1 on signal).
"""

from __future__ import annotations

import numpy as np


def _pad(signal: np.ndarray, length: int) -> tuple[np.ndarray, np.ndarray]:
    leads, samples = signal.shape
    window = np.zeros((leads, length), dtype=signal.dtype)
    window[:, :samples] = signal
    mask = np.zeros(length, dtype=np.int64)
    mask[:samples] = 1
    return window, mask


def random_window(signal: np.ndarray, length: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One window of `length` samples at a uniformly random start: ((leads, length), mask (length,))."""
    samples = signal.shape[-1]
    if samples <= length:
        return _pad(signal, length)
    start = int(rng.integers(0, samples - length + 1))
    return signal[:, start : start + length], np.ones(length, dtype=np.int64)


def eval_windows(signal: np.ndarray, length: int, stride: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """All windows of `length` samples every `stride` (default `length`), the last ending at the record's end.

    Returns:
        windows (n, leads, length) and masks (n, length); n = 1 for a record no longer than `length`.
    """
    stride = stride or length
    if stride <= 0 or length <= 0:
        raise ValueError(f"length and stride must be positive, got {length} and {stride}")
    samples = signal.shape[-1]
    if samples <= length:
        window, mask = _pad(signal, length)
        return window[None], mask[None]
    starts = list(range(0, samples - length + 1, stride))
    if starts[-1] != samples - length:
        starts.append(samples - length)
    windows = np.stack([signal[:, s : s + length] for s in starts])
    return windows, np.ones((len(starts), length), dtype=np.int64)
