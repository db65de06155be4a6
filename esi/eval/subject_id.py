"""ECG-based subject identification (as in the ESI paper): is a patient recognised from another ECG?

Patients with two or more records take part. Each patient's earliest record (lowest ecg_id) is
enrolled in the gallery; every other record is a probe, matched against the whole gallery by
cosine similarity of encoder embeddings. Top-k accuracy: the share of probes whose own patient is
among the k most similar gallery entries. Ties count against the probe.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from esi.data.torch_dataset import load_dataset_folder
from esi.data.windows import parse_window_count
from esi.eval.arguments import FinetuneArguments
from esi.eval.classification import encoder_features, load_classifier, make_window_loader, per_record
from esi.eval.report import DISCLAIMER, markdown_table
from modeling_esi import EsiFeatureExtractor


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


def run_subject_id(args: FinetuneArguments, out: Path) -> dict:
    """Identify patients across every split of the dataset by encoder embeddings; writes OUT/results.md."""
    data = load_dataset_folder(args.dataset)
    model = load_classifier(args.model, 1, args.random_init, args.seed)
    feature_extractor = EsiFeatureExtractor.from_pretrained(args.model)
    embeddings, patients, ecg_ids = [], [], []
    for split in data.values():
        loader = make_window_loader(
            split, feature_extractor, args.eval_batch_size, parse_window_count(args.eval_windows)
        )
        embeddings.append(per_record(encoder_features(model, loader), loader))
        patients.extend(split["patient_id"])
        ecg_ids.extend(split["ecg_id"])
    result = {
        "method": "subject_id",
        "random_init": args.random_init,
        **subject_identification(np.concatenate(embeddings), patients, ecg_ids),
    }
    table = markdown_table(
        ["patients (>= 2 records)", "probes", "top-1", "top-5"],
        [[result["patients"], result["probes"], f"{result['top1_accuracy']:.3f}", f"{result['top5_accuracy']:.3f}"]],
    )
    (out / "results.md").write_text(f"Subject identification (all splits).\n\n{table}\n\n{DISCLAIMER}\n")
    return result
