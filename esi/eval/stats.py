"""Scores and bootstrap statistics over test records: the one home for AUROC and resampling.

Pure numpy / scikit-learn (no `datasets`), so light runners can use it as well as the local
`evaluate` modules in `metrics/`. Every interval is a percentile bootstrap over records,
resampled with replacement from a seeded generator; a paired bootstrap draws the same rows
for both systems, so the interval of a difference reflects only how the two disagree.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from sklearn.metrics import roc_auc_score

Metric = Callable[..., float]


def per_class_auroc(references: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """AUROC of each column; nan where the references of a column hold a single value."""
    aurocs = np.full(references.shape[1], np.nan)
    for k in range(references.shape[1]):
        if 0 < references[:, k].sum() < len(references):
            aurocs[k] = roc_auc_score(references[:, k], scores[:, k])
    return aurocs


def macro_auroc(references: np.ndarray, scores: np.ndarray) -> float:
    """Unweighted mean of the defined per-class AUROCs (nan if none is defined)."""
    aurocs = per_class_auroc(references, scores)
    return float(np.nanmean(aurocs)) if np.isfinite(aurocs).any() else float("nan")


def resample_rows(num_rows: int, samples: int, seed: int) -> np.ndarray:
    """(samples, num_rows) row indices drawn with replacement; the same seed gives the same draws."""
    if num_rows < 1:
        raise ValueError("bootstrap needs at least one record")
    return np.random.default_rng(seed).integers(0, num_rows, (samples, num_rows))


def percentile_interval(draws: np.ndarray, confidence_level: float = 0.95) -> list[float]:
    """[low, high] percentiles of the finite draws (nan draws, e.g. a resample without a positive, are left out)."""
    alpha = (1 - confidence_level) / 2
    return [float(v) for v in np.nanquantile(np.asarray(draws, dtype=np.float64), [alpha, 1 - alpha])]


def bootstrap_interval(
    metric: Metric, *arrays: np.ndarray, samples: int = 1000, confidence_level: float = 0.95, seed: int = 0
) -> list[float]:
    """Percentile interval of `metric(*arrays)` over records (axis 0 of every array)."""
    rows = resample_rows(len(arrays[0]), samples, seed)
    return percentile_interval(np.array([metric(*(a[r] for a in arrays)) for r in rows]), confidence_level)


def paired_bootstrap(
    metric: Metric,
    references: np.ndarray,
    scores_a: np.ndarray,
    scores_b: np.ndarray,
    samples: int = 1000,
    confidence_level: float = 0.95,
    seed: int = 0,
) -> dict[str, float | list[float] | bool | int]:
    """Difference `metric(references, a) - metric(references, b)` on the same test records.

    Returns the observed difference, the mean of the resampled differences, their percentile
    interval, and `shown`: False when the interval contains 0 (the data cannot tell a and b apart).
    """
    references, scores_a, scores_b = np.asarray(references), np.asarray(scores_a), np.asarray(scores_b)
    if not len(references) == len(scores_a) == len(scores_b):
        raise ValueError(
            f"paired bootstrap needs the same records: {len(references)} references, "
            f"{len(scores_a)} and {len(scores_b)} scores"
        )
    rows = resample_rows(len(references), samples, seed)
    draws = np.array([metric(references[r], scores_a[r]) - metric(references[r], scores_b[r]) for r in rows])
    low, high = percentile_interval(draws, confidence_level)
    return {
        "difference": float(metric(references, scores_a) - metric(references, scores_b)),
        "mean": float(np.nanmean(draws)),
        "ci": [low, high],
        "shown": bool(low > 0 or high < 0),
        "samples": int(samples),
    }
