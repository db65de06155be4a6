"""Scores and bootstrap statistics over test records: the one home for AUROC and resampling.

Pure numpy / scikit-learn (no `datasets`), so light runners can use it as well as the local
`evaluate` modules in `metrics/`. Every interval is a percentile bootstrap over records,
resampled with replacement from a seeded generator; a paired bootstrap draws the same rows
for both systems, so the interval of a difference reflects only how the two disagree.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from scipy.stats import rankdata

Metric = Callable[..., float]


def per_class_auroc(references: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """AUROC of each column; nan where the references of a column hold a single value.

    Computed as the Mann-Whitney statistic on tie-averaged ranks, all columns at once: equal to
    scikit-learn's `roc_auc_score` and about 100x faster, which is what makes 1,000-resample
    bootstraps over many runs affordable.
    """
    references = np.asarray(references).astype(bool)
    ranks = rankdata(np.asarray(scores, dtype=np.float64), axis=0)
    positives = references.sum(0).astype(np.float64)
    negatives = len(references) - positives
    rank_sum = np.where(references, ranks, 0.0).sum(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        aurocs = (rank_sum - positives * (positives + 1) / 2) / (positives * negatives)
    return np.where((positives > 0) & (negatives > 0), aurocs, np.nan)


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


def _runs(scores: np.ndarray | Sequence[np.ndarray]) -> list[np.ndarray]:
    return [np.asarray(scores)] if isinstance(scores, np.ndarray) else [np.asarray(s) for s in scores]


def mean_over_runs(metric: Metric, references: np.ndarray, runs: Sequence[np.ndarray]) -> float:
    """The metric of each run (seeds of one system) on the same records, averaged."""
    return float(np.mean([metric(references, run) for run in runs]))


def paired_bootstrap(
    metric: Metric,
    references: np.ndarray,
    scores_a: np.ndarray | Sequence[np.ndarray],
    scores_b: np.ndarray | Sequence[np.ndarray],
    samples: int = 1000,
    confidence_level: float = 0.95,
    seed: int = 0,
) -> dict[str, float | list[float] | bool | int]:
    """Difference `metric(references, a) - metric(references, b)` on the same test records.

    `scores_a` / `scores_b` are one array of scores, or a list of them (one per seed of that system,
    all on the same records): each resample draws one set of records and scores every run on it, so
    the interval covers both record sampling and the spread over seeds. Returns the observed
    difference, the mean of the resampled differences, their percentile interval, and `shown`:
    False when the interval contains 0 (the data cannot tell a and b apart).
    """
    references = np.asarray(references)
    runs_a, runs_b = _runs(scores_a), _runs(scores_b)
    for run in runs_a + runs_b:
        if len(run) != len(references):
            raise ValueError(
                f"paired bootstrap needs the same records: {len(references)} references, a run with {len(run)} scores"
            )
    rows = resample_rows(len(references), samples, seed)
    draws = np.array(
        [
            mean_over_runs(metric, references[r], [a[r] for a in runs_a])
            - mean_over_runs(metric, references[r], [b[r] for b in runs_b])
            for r in rows
        ]
    )
    low, high = percentile_interval(draws, confidence_level)
    return {
        "difference": mean_over_runs(metric, references, runs_a) - mean_over_runs(metric, references, runs_b),
        "mean": float(np.nanmean(draws)),
        "ci": [low, high],
        "shown": bool(low > 0 or high < 0),
        "samples": int(samples),
        "runs": [len(runs_a), len(runs_b)],
    }
