"""ECG augmentations for contrastive pretraining.

Each transform works on one (leads, time) signal in millivolts and draws from the
`numpy.random.Generator` it is given, so a sample's augmentation depends only on the
seed passed in (seed, epoch, index), never on global RNG state: an interrupted run that
resumes mid-epoch sees exactly the augmentations the uninterrupted run saw.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class EcgAugmentConfig:
    crop_fraction: float = 0.9  # keep a random window of this fraction, zero-pad back to length
    scale_range: tuple[float, float] = (0.8, 1.2)  # per-lead amplitude scaling
    baseline_wander_mv: float = 0.1  # amplitude of a slow sinusoidal drift (0.05-0.5 Hz)
    noise_std_mv: float = 0.01  # white noise
    probability: float = 0.8  # each transform is applied with this probability

    @classmethod
    def disabled(cls) -> EcgAugmentConfig:
        return cls(crop_fraction=1.0, scale_range=(1.0, 1.0), baseline_wander_mv=0.0, noise_std_mv=0.0, probability=0.0)


def augment_ecg(
    signal: np.ndarray, sampling_rate: float, config: EcgAugmentConfig, rng: np.random.Generator
) -> np.ndarray:
    """Return an augmented copy of `signal` (leads, time); the input is not modified."""
    leads, length = signal.shape
    out = signal.astype(np.float32, copy=True)
    if config.crop_fraction < 1.0 and rng.random() < config.probability:
        window = int(length * config.crop_fraction)
        start = int(rng.integers(0, length - window + 1))
        cropped = np.zeros_like(out)
        cropped[:, :window] = out[:, start : start + window]
        out = cropped
    if config.scale_range != (1.0, 1.0) and rng.random() < config.probability:
        out *= rng.uniform(*config.scale_range, size=(leads, 1)).astype(np.float32)
    if config.baseline_wander_mv > 0 and rng.random() < config.probability:
        t = np.arange(length) / sampling_rate
        freq = rng.uniform(0.05, 0.5)
        phase = rng.uniform(0, 2 * np.pi, size=(leads, 1))
        out += (config.baseline_wander_mv * np.sin(2 * np.pi * freq * t + phase)).astype(np.float32)
    if config.noise_std_mv > 0 and rng.random() < config.probability:
        out += rng.normal(0.0, config.noise_std_mv, size=out.shape).astype(np.float32)
    return out
