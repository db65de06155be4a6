"""ECG augmentations for contrastive pretraining, designed around the model's preprocessing.

The feature extractor z-scores every lead, so anything that only rescales a lead (per-lead or
global amplitude scaling) is removed exactly and is not offered here. What remains changes the
signal in ways the z-score keeps:

- time stretch: the whole ECG resampled by one factor (a heart-rate-like change), all leads alike;
- crop: a random window, returned SHORTER; the collator pads it and the attention mask marks the
  padding as not-signal (no synthetic tail the model would never see at test time);
- baseline wander: one slow sinusoid with one frequency and phase for the whole ECG (respiration
  moves every electrode together), its amplitude drawn per independent lead;
- noise: white noise drawn per independent lead.

Relations between leads survive: the limb leads III, aVR, aVL and aVF are linear in I and II
(Einthoven: III = II - I; Goldberger: aVR = -(I + II)/2, aVL = I - II/2, aVF = II - I/2), so additive
perturbations are drawn for I, II and V1-V6 only and derived for the other four; time transforms
apply the same operation to every lead. Each transform draws from the `numpy.random.Generator` it
is given, so a sample's augmentation depends only on (seed, epoch, index), never on global RNG
state: a resumed run sees exactly the augmentations the uninterrupted run saw.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from esi.constants import STANDARD_LEADS, map_leads_by_name

# Each derived limb lead as (coefficient of I, coefficient of II).
DERIVED_LIMB_LEADS = {"III": (-1.0, 1.0), "aVR": (-0.5, -0.5), "aVL": (1.0, -0.5), "aVF": (-0.5, 1.0)}


@dataclass
class EcgAugmentConfig:
    min_crop_fraction: float = 0.8  # keep a random window of 80-100% of the signal; the rest is masked
    max_time_stretch: float = 0.1  # resample by a factor in [1 - x, 1 + x]
    baseline_wander_mv: float = 0.1  # maximum amplitude of the drift (0.15-0.5 Hz)
    noise_std_mv: float = 0.02  # white noise
    probability: float = 0.8  # each transform is applied with this probability

    @classmethod
    def disabled(cls) -> EcgAugmentConfig:
        return cls(min_crop_fraction=1.0, max_time_stretch=0.0, baseline_wander_mv=0.0, noise_std_mv=0.0)


def lead_relations(lead_names: Sequence[str]) -> tuple[list[int], dict[int, tuple[float, float]], int, int] | None:
    """(independent lead rows, {derived row: (a, b)}, row of I, row of II), or None without leads I and II."""
    row_of = dict(zip(STANDARD_LEADS, map_leads_by_name(lead_names, STANDARD_LEADS), strict=True))
    lead_i, lead_ii = row_of["I"], row_of["II"]
    if lead_i is None or lead_ii is None:
        return None
    derived = {row_of[name]: ab for name, ab in DERIVED_LIMB_LEADS.items() if row_of[name] is not None}
    independent = [row for row in range(len(lead_names)) if row not in derived]
    return independent, derived, lead_i, lead_ii


def consistent_perturbation(independent: np.ndarray, lead_names: Sequence[str]) -> np.ndarray:
    """Spread per-lead perturbations drawn for the independent leads to all leads, derived leads derived.

    `independent`: (leads, time) with arbitrary values in every row; rows of III, aVR, aVL and aVF are
    overwritten from rows I and II, so the perturbation obeys the same linear relations as the ECG.
    """
    relations = lead_relations(lead_names)
    if relations is None:  # no limb leads to keep consistent
        return independent
    _, derived, lead_i, lead_ii = relations
    out = independent.copy()
    for row, (a, b) in derived.items():
        out[row] = a * independent[lead_i] + b * independent[lead_ii]
    return out


def time_stretch(signal: np.ndarray, factor: float) -> np.ndarray:
    """Resample every lead by `factor` (> 1 = longer, slower rhythm) with linear interpolation."""
    length = signal.shape[1]
    new_length = max(2, round(length * factor))
    positions = np.linspace(0, length - 1, new_length)
    return np.stack([np.interp(positions, np.arange(length), lead) for lead in signal]).astype(signal.dtype)


def augment_ecg(
    signal: np.ndarray,
    sampling_rate: float,
    lead_names: Sequence[str],
    config: EcgAugmentConfig,
    rng: np.random.Generator,
) -> np.ndarray:
    """Return an augmented copy of `signal` (leads, time), possibly shorter; the input is not modified."""
    out = signal.astype(np.float32, copy=True)
    length = out.shape[1]
    if config.max_time_stretch > 0 and rng.random() < config.probability:
        out = time_stretch(out, rng.uniform(1 - config.max_time_stretch, 1 + config.max_time_stretch))
    if config.min_crop_fraction < 1.0 and rng.random() < config.probability:
        window = min(int(out.shape[1] * rng.uniform(config.min_crop_fraction, 1.0)), length)
        start = int(rng.integers(0, out.shape[1] - window + 1))
        out = out[:, start : start + window]
    out = out[:, :length]  # a stretch never makes the ECG longer than the record was
    leads, samples = out.shape
    if config.baseline_wander_mv > 0 and rng.random() < config.probability:
        t = np.arange(samples) / sampling_rate
        drift = np.sin(2 * np.pi * rng.uniform(0.15, 0.5) * t + rng.uniform(0, 2 * np.pi))
        amplitude = rng.uniform(-config.baseline_wander_mv, config.baseline_wander_mv, size=(leads, 1))
        out += consistent_perturbation(amplitude * drift, lead_names).astype(np.float32)
    if config.noise_std_mv > 0 and rng.random() < config.probability:
        noise = rng.normal(0.0, config.noise_std_mv, size=(leads, samples))
        out += consistent_perturbation(noise, lead_names).astype(np.float32)
    return out
