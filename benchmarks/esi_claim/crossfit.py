"""Cross-fitted linear probes: every PTB-XL record is scored once, by a probe that never saw its fold.

For each fold k (1..10): the probe trains on a label fraction of the patients of the other folds except one,
the validation fold (the fold before k: 9 for 10, so fold 10's probe is the standard PTB-XL split), which
chooses the early-stopping epoch and the decision thresholds; it then predicts fold k. The pooled out-of-fold
predictions cover every labelled record (all 3,477 of the evaluation set, not fold 10's ~350), which is what
makes the paired differences of the report tight enough to answer.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from esi.eval.probe import TrainConfig, choose_thresholds, fit_linear_probe
from esi.eval.sampling import sample_label_fraction
from esi.eval.stats import macro_auroc

STANDARD_TEST_FOLD = 10


def validation_fold(folds: list[int], k: int) -> int:
    """The fold before k among `folds` (sorted), cyclically: never k itself (needs two folds)."""
    if len(folds) < 3:
        raise ValueError(f"cross-fitting needs at least 3 folds (train, validation, test); have {folds}")
    return folds[folds.index(k) - 1]


def task_records(labels: np.ndarray, class_names: list[str]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Records with a label for the task, and the classes with positives and negatives among them."""
    rows = np.flatnonzero(labels.sum(1) > 0)  # the PTB-XL benchmark drops records without a label for the task
    kept = labels[rows]
    keep = kept.any(0) & ~kept.all(0)
    if not keep.any():
        raise ValueError("no class of the task has both positive and negative records")
    return rows, kept[:, keep], [n for n, k in zip(class_names, keep, strict=True) if k]


def _f1(y: np.ndarray, decision: np.ndarray) -> float:
    tp = float((y & decision).sum())
    return 0.0 if tp == 0 else 2 * tp / (y.sum() + decision.sum())


def crossfit_probe(
    features: np.ndarray,
    labels: np.ndarray,
    class_names: list[str],
    folds: np.ndarray,
    patients: np.ndarray,
    fraction: float,
    seed: int,
    epochs: int,
    patience: int,
) -> dict:
    """Out-of-fold probe scores of every labelled record; `features`, `labels`, `folds`, `patients` are per record.

    The label fraction is drawn per patient inside each fold's training folds, seeded by (seed, k): the same
    records for every encoder probed with this seed, so arms are compared on the same labelled subsets.
    """
    rows, y, names = task_records(labels, class_names)
    present = sorted(int(f) for f in np.unique(folds[rows]))
    scores = np.zeros(y.shape, dtype=np.float32)
    decisions = np.zeros(y.shape, dtype=bool)
    per_fold = {}
    for k in present:
        v = validation_fold(present, k)
        test, val = rows[folds[rows] == k], rows[folds[rows] == v]
        pool = np.flatnonzero(~np.isin(folds[rows], (k, v)))
        chosen = pool[sample_label_fraction(patients[rows[pool]], y[pool], fraction, seed * 1000 + k)]
        torch.manual_seed(seed * 1000 + k)
        head = nn.Linear(features.shape[1], y.shape[1])
        y_val = y[folds[rows] == v]
        history = fit_linear_probe(
            head,
            features[rows[chosen]],
            y[chosen],
            features[val],
            y_val,
            TrainConfig(epochs=epochs, batch_size=64, lr=3e-3, patience=patience, seed=seed * 1000 + k),
        )
        with torch.no_grad():
            fold_scores, val_scores = (
                torch.sigmoid(head(torch.from_numpy(features[r]).float())).numpy() for r in (test, val)
            )
        in_fold = folds[rows] == k
        scores[in_fold] = fold_scores
        decisions[in_fold] = fold_scores >= choose_thresholds(y_val, val_scores)
        per_fold[k] = {
            "validation_fold": v,
            "train_records": int(len(chosen)),
            "train_patients": int(len(np.unique(patients[rows[chosen]]))),
            "epochs_run": len(history),
            "macro_auroc": macro_auroc(y[in_fold], fold_scores),
        }
    standard = folds[rows] == STANDARD_TEST_FOLD
    return {
        "metrics": {
            "macro_auroc": macro_auroc(y, scores),
            "fold10_macro_auroc": macro_auroc(y[standard], scores[standard]) if standard.any() else float("nan"),
            "macro_f1_at_validation_thresholds": float(
                np.mean([_f1(y[:, c], decisions[:, c]) for c in range(y.shape[1])])
            ),
        },
        "classes": names,
        "records": int(len(rows)),
        "folds": per_fold,
        "_scores": {"rows": rows, "folds": folds[rows], "labels": y, "scores": scores},
    }
