"""Scores and bootstrap statistics over test records: the one home for AUROC and resampling.

Pure numpy / scikit-learn (no `datasets`), so light runners can use it as well as the local
`evaluate` modules in `metrics/`. Every interval is a percentile bootstrap over records,
resampled with replacement from a seeded generator; a paired bootstrap draws the same rows
for both systems, so the interval of a difference reflects only how the two disagree.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import numpy as np

Metric = Callable[..., float]


def per_class_auroc(references: np.ndarray, scores: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """AUROC of each column; nan where the references of a column hold a single value.

    `references`, `scores`: (records, classes). `weights` (resamples, records), optional: how often each
    record occurs in each resample; the result is then (resamples, classes), the AUROC of every resample
    without materialising it. Computed as the Mann-Whitney statistic (ties count one half) over one sort
    per column: equal to scikit-learn's `roc_auc_score`, and fast enough for 1,000-resample bootstraps
    over many runs.
    """
    references = np.asarray(references).astype(bool)
    scores = np.asarray(scores, dtype=np.float64)
    if references.ndim == 1:
        references, scores = references[:, None], scores[:, None]
    single = weights is None
    weights = np.ones((1, len(references))) if single else np.asarray(weights, dtype=np.float64)
    aurocs = np.empty((len(weights), references.shape[1]))
    for column in range(references.shape[1]):
        order = np.argsort(scores[:, column], kind="stable")
        ordered = scores[order, column]
        starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])  # first position of each tie group
        positive = references[order, column]
        w = weights[:, order]
        pos = np.add.reduceat(w * positive, starts, axis=1)
        neg = np.add.reduceat(w * ~positive, starts, axis=1)
        below = np.cumsum(neg, axis=1) - neg  # negative weight strictly below each tie group
        pairs = pos.sum(1) * neg.sum(1)
        with np.errstate(divide="ignore", invalid="ignore"):
            aurocs[:, column] = np.where(pairs > 0, (pos * (below + neg / 2)).sum(1) / pairs, np.nan)
    return aurocs[0] if single else aurocs


def macro_auroc(references: np.ndarray, scores: np.ndarray) -> float:
    """Unweighted mean of the defined per-class AUROCs (nan if none is defined)."""
    aurocs = per_class_auroc(references, scores)
    return float(np.nanmean(aurocs)) if np.isfinite(aurocs).any() else float("nan")


def resample_rows(num_rows: int, samples: int, seed: int) -> np.ndarray:
    """(samples, num_rows) row indices drawn with replacement; the same seed gives the same draws."""
    if num_rows < 1:
        raise ValueError("bootstrap needs at least one record")
    return np.random.default_rng(seed).integers(0, num_rows, (samples, num_rows))


def metric_draws(metric: Metric, references: np.ndarray, scores: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """`metric(references[r], scores[r])` for every resample `r` of `rows` (samples, records).

    `macro_auroc` is computed from each record's count in each resample, all resamples at once (one sort
    per class instead of one per resample), so a report can score every run on every resample.
    """
    if metric is not macro_auroc:
        return np.array([metric(references[r], scores[r]) for r in rows], dtype=np.float64)
    samples, records = rows.shape
    counts = np.bincount((rows + records * np.arange(samples)[:, None]).ravel(), minlength=samples * records)
    aurocs = per_class_auroc(references, scores, counts.reshape(samples, records))
    with warnings.catch_warnings():  # a resample without any defined class is nan, left out of intervals
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(aurocs, -1)


def percentile_interval(draws: np.ndarray, confidence_level: float = 0.95) -> list[float]:
    """[low, high] percentiles of the finite draws (nan draws, e.g. a resample without a positive, are left out)."""
    alpha = (1 - confidence_level) / 2
    return [float(v) for v in np.nanquantile(np.asarray(draws, dtype=np.float64), [alpha, 1 - alpha])]


def bootstrap_interval(
    metric: Metric, *arrays: np.ndarray, samples: int = 1000, confidence_level: float = 0.95, seed: int = 0
) -> list[float]:
    """Percentile interval of `metric(*arrays)` over records (axis 0 of every array)."""
    rows = resample_rows(len(arrays[0]), samples, seed)
    if len(arrays) == 2:
        return percentile_interval(metric_draws(metric, *arrays, rows), confidence_level)
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
    return difference_summary(
        mean_over_runs(metric, references, runs_a) - mean_over_runs(metric, references, runs_b),
        np.mean([metric_draws(metric, references, a, rows) for a in runs_a], 0)
        - np.mean([metric_draws(metric, references, b, rows) for b in runs_b], 0),
        confidence_level,
        runs=[len(runs_a), len(runs_b)],
    )


def difference_summary(
    difference: float, draws: np.ndarray, confidence_level: float = 0.95, **extra: object
) -> dict[str, float | list[float] | bool | int]:
    """The observed difference, the mean and percentile interval of its resampled `draws`, and `shown`:
    False when the interval contains 0 (the data cannot tell the two systems apart)."""
    low, high = percentile_interval(draws, confidence_level)
    return {
        "difference": float(difference),
        "mean": float(np.nanmean(draws)),
        "ci": [low, high],
        "shown": bool(low > 0 or high < 0),
        "samples": int(len(draws)),
        **extra,
    }
