"""Label-fraction subsets of a training split: sampled by patient, stratified over the labels, seeded."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def patient_label_matrix(patient_ids: Sequence[int], labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unique patients (sorted) and, for each, the union of its records' multi-hot labels."""
    patients, inverse = np.unique(np.asarray(patient_ids), return_inverse=True)
    union = np.zeros((len(patients), labels.shape[1]), dtype=bool)
    np.logical_or.at(union, inverse, labels.astype(bool))
    return patients, union


def iterative_stratification(labels: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Boolean mask choosing about `fraction` of the rows so that each label's share is preserved.

    Two-way iterative stratification (Sechidis et al., ECML 2011): the rarest remaining label is
    placed first, each of its rows going to the side (chosen / rest) that still wants most of it.
    """
    n = len(labels)
    wanted_total = np.array([fraction * n, (1 - fraction) * n])
    wanted_label = np.stack([fraction * labels.sum(0), (1 - fraction) * labels.sum(0)]).astype(float)
    chosen = np.zeros(n, dtype=bool)
    unassigned = np.ones(n, dtype=bool)

    def assign(rows: np.ndarray, label: int | None) -> None:
        for row in rows:
            keys = [
                (wanted_label[s, label] if label is not None else 0.0, wanted_total[s], rng.random()) for s in (0, 1)
            ]
            side = 0 if keys[0] > keys[1] else 1
            chosen[row] = side == 0
            unassigned[row] = False
            wanted_total[side] -= 1
            wanted_label[side] -= labels[row]

    while True:
        remaining = labels[unassigned].sum(0)
        if not remaining.any():
            break
        rarest = int(np.argmin(np.where(remaining > 0, remaining, np.inf)))
        assign(rng.permutation(np.flatnonzero(unassigned & labels[:, rarest])), rarest)
    assign(rng.permutation(np.flatnonzero(unassigned)), None)
    return chosen


def sample_label_fraction(patient_ids: Sequence[int], labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Sorted row indices of the records of about `fraction` of the patients.

    Whole patients are taken (a patient's records are never split), stratified over the patients'
    label sets, and every class with a positive record gets at least one positive patient (this
    can push the subset slightly above `fraction` for tiny fractions). Deterministic in `seed`.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    patient_ids = np.asarray(patient_ids)
    if fraction == 1:
        return np.arange(len(patient_ids))
    rng = np.random.default_rng(seed)
    patients, union = patient_label_matrix(patient_ids, labels)
    chosen = iterative_stratification(union, fraction, rng)
    if not chosen.any():
        chosen[rng.integers(len(patients))] = True
    for k in np.flatnonzero(union.any(0) & ~union[chosen].any(0)):
        chosen[rng.choice(np.flatnonzero(union[:, k]))] = True
    return np.flatnonzero(np.isin(patient_ids, patients[chosen]))
