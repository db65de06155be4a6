"""ECG augmentations for contrastive pretraining, designed around the model's preprocessing and its text.

The rule: an augmentation never changes what the paired text states. Captions quote the heart rate,
intervals (PR, QRS, QT) and amplitudes in mV (voltage criteria, ST deviation), so nothing here touches
the time axis (no time stretch: a 10% stretch moves a stated 70 bpm to 64-78 bpm and every interval with
it) or the amplitude scale (no amplitude scaling; the feature extractor's per-lead z-score would remove it
anyway). What remains changes the signal without changing those facts:

- crop: a random window, returned SHORTER; the collator pads it and the attention mask marks the
  padding as not-signal (no synthetic tail the model would never see at test time);
  padding as not-signal (no synthetic tail the model would never see at test time); rate and
  morphology are those of the record (tests: the measured heart rate stays within 2 bpm of the text's);
- baseline wander: one slow sinusoid with one frequency and phase for the whole ECG (respiration
  moves every electrode together), its amplitude drawn per independent lead; at or below the 0.5 Hz
  cut-off of the high-pass filter the measurements apply before reading intervals and amplitudes;
- noise: white noise drawn per independent lead (0.02 mV; the median beat the measurements read averages it).

Relations between leads survive: the limb leads III, aVR, aVL and aVF are linear in I and II
(Einthoven: III = II - I; Goldberger: aVR = -(I + II)/2, aVL = I - II/2, aVF = II - I/2), so additive
perturbations are drawn for I, II and V1-V6 only and derived for the other four; the crop cuts every
lead alike. Each transform draws from the `numpy.random.Generator` it
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
    baseline_wander_mv: float = 0.1  # maximum amplitude of the drift (0.15-0.5 Hz)
    noise_std_mv: float = 0.02  # white noise
    probability: float = 0.8  # each transform is applied with this probability

    @classmethod
    def disabled(cls) -> EcgAugmentConfig:
        return cls(min_crop_fraction=1.0, baseline_wander_mv=0.0, noise_std_mv=0.0)


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


def augment_ecg(
    signal: np.ndarray,
    sampling_rate: float,
    lead_names: Sequence[str],
    config: EcgAugmentConfig,
    rng: np.random.Generator,
) -> np.ndarray:
    """Return an augmented copy of `signal` (leads, time), possibly shorter; the input is not modified."""
    out = signal.astype(np.float32, copy=True)
    if config.min_crop_fraction < 1.0 and rng.random() < config.probability:
        window = int(out.shape[1] * rng.uniform(config.min_crop_fraction, 1.0))
        start = int(rng.integers(0, out.shape[1] - window + 1))
        out = out[:, start : start + window]
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
