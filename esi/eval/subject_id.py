"""ECG-based subject identification (as in the ESI paper): is a patient recognised from another ECG?

Patients with two or more records take part. Each patient's earliest record (lowest ecg_id) is
enrolled in the gallery; every other record is a probe, matched against the whole gallery by
cosine similarity of encoder embeddings. Top-k accuracy: the share of probes whose own patient is
among the k most similar gallery entries. Ties count against the probe.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def gallery_and_probes(patient_ids: Sequence[int], ecg_ids: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Row indices of the gallery (one per patient with >= 2 records) and of the probes."""
    patient_ids, ecg_ids = np.asarray(patient_ids), np.asarray(ecg_ids)
    order = np.lexsort((ecg_ids, patient_ids))
    patients, first, counts = np.unique(patient_ids[order], return_index=True, return_counts=True)
    repeated = counts >= 2
    gallery = order[first[repeated]]
    in_repeated = np.isin(patient_ids, patients[repeated])
    probes = np.setdiff1d(np.flatnonzero(in_repeated), gallery)
    return gallery, probes


def probe_ranks(embeddings: np.ndarray, patient_ids: Sequence[int], ecg_ids: Sequence[int]) -> np.ndarray:
    """For each probe (see `gallery_and_probes`), the rank of its own patient's gallery entry (0 = first)."""
    patient_ids = np.asarray(patient_ids)
    gallery, probes = gallery_and_probes(patient_ids, ecg_ids)
    if len(probes) == 0:
        raise ValueError("subject identification needs at least one patient with two or more records")
    unit = embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
    similarity = unit[probes] @ unit[gallery].T  # (probes, gallery)
    own = patient_ids[probes][:, None] == patient_ids[gallery][None, :]
    correct = similarity[own]  # exactly one gallery entry per probe's patient
    return (similarity >= correct[:, None]).sum(axis=1) - 1


def subject_identification(
    embeddings: np.ndarray, patient_ids: Sequence[int], ecg_ids: Sequence[int], ks: Sequence[int] = (1, 5)
) -> dict[str, float | int]:
    """Top-k identification accuracy over all probes (see the module docstring)."""
    rank = probe_ranks(embeddings, patient_ids, ecg_ids)
    gallery, _ = gallery_and_probes(patient_ids, ecg_ids)
    result: dict[str, float | int] = {"patients": int(len(gallery)), "probes": int(len(rank))}
    for k in ks:
        result[f"top{k}_accuracy"] = float((rank < k).mean())
    return result
