"""Paired differences between arms, with the two sources of noise a claim must survive.

At a pretraining seed, the arms start from the same ECG encoder and see the same batches, so their difference
is taken seed by seed (paired), then averaged. Its uncertainty is a two-level bootstrap: evaluation records are
resampled (the same rows for every arm and seed: the records are shared) and, independently, the pretraining
seeds (the same seeds for both arms: the pairing). The standard error is the draws' spread; the minimum
detectable difference is what a two-sided test at alpha 0.05 finds with power 0.8 at that standard error; the
equivalence verdict is two one-sided tests at the margin (equivalent when the 90% interval lies inside it).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from math import erf, sqrt

import numpy as np

from esi.eval.stats import macro_auroc, metric_draws, resample_rows

Z_ALPHA = 1.959964  # two-sided 0.05
Z_POWER = 0.841621  # power 0.8
VERDICTS = ("better", "worse", "equivalent within {margin:g}", "too noisy to say")


@dataclass
class ArmScores:
    """One arm's out-of-fold scores in a cell: {pretraining seed: [scores of each probe seed]} on shared records."""

    labels: np.ndarray
    by_seed: dict[int, list[np.ndarray]]
    # An arm meets several others on the same records and resamples: its subsets and draws are computed once.
    _subsets: dict[str, ArmScores] = field(default_factory=dict, repr=False, compare=False)
    _draws: dict[tuple, dict[int, np.ndarray]] = field(default_factory=dict, repr=False, compare=False)

    def restrict(self, subset: np.ndarray | None) -> ArmScores:
        """The same arm on the records where `subset` (boolean, per record) is true; all of them for None."""
        if subset is None:
            return self
        key = hashlib.sha256(np.packbits(subset)).hexdigest()
        if key not in self._subsets:
            runs = {s: [x[subset] for x in runs] for s, runs in self.by_seed.items()}
            self._subsets[key] = ArmScores(self.labels[subset], runs)
        return self._subsets[key]

    def per_seed(self) -> dict[int, float]:
        """Macro AUROC per pretraining seed (mean over probe seeds)."""
        return {s: float(np.mean([macro_auroc(self.labels, x) for x in runs])) for s, runs in self.by_seed.items()}

    def seed_draws(self, rows: np.ndarray, rows_seed: int) -> dict[int, np.ndarray]:
        """(samples,) macro AUROC per pretraining seed on each record resample `rows` (samples, records), which
        `resample_rows` drew with `rows_seed`."""
        key = (rows.shape, rows_seed)
        if key not in self._draws:
            self._draws[key] = {
                s: np.mean([metric_draws(macro_auroc, self.labels, x, rows) for x in runs], 0)
                for s, runs in self.by_seed.items()
            }
        return self._draws[key]


def normal_p(difference: float, se: float) -> float:
    if not se > 0:
        return 0.0 if difference else 1.0
    return float(1 - erf(abs(difference) / se / sqrt(2)))


def verdict(ci95: list[float], ci90: list[float], margin: float) -> str:
    if ci95[0] > 0:
        return VERDICTS[0]
    if ci95[1] < 0:
        return VERDICTS[1]
    if -margin < ci90[0] and ci90[1] < margin:
        return VERDICTS[2].format(margin=margin)
    return VERDICTS[3]


def paired_difference(
    a: ArmScores,
    b: ArmScores,
    samples: int,
    seed: int,
    margin: float,
    subset: np.ndarray | None = None,
) -> dict:
    """a - b over their common pretraining seeds, on all records or the `subset` rows (e.g. fold 10 only)."""
    seeds = sorted(set(a.by_seed) & set(b.by_seed))
    if not seeds:
        raise ValueError("the two arms share no pretraining seed: a paired difference needs at least one")
    a, b = a.restrict(subset), b.restrict(subset)
    rows = resample_rows(len(a.labels), samples, seed)  # the same records for both arms and every seed
    a_draws, b_draws = a.seed_draws(rows, seed), b.seed_draws(rows, seed)
    per_seed_diff = np.stack([a_draws[s] - b_draws[s] for s in seeds])  # (seeds, samples)
    pick = np.random.default_rng(seed + 1).integers(0, len(seeds), (samples, len(seeds)))
    draws = per_seed_diff[pick, np.arange(samples)[:, None]].mean(1)
    a_point, b_point = a.per_seed(), b.per_seed()
    difference = float(np.mean([a_point[s] - b_point[s] for s in seeds]))
    se = float(np.nanstd(draws, ddof=1))
    ci95 = [float(v) for v in np.nanquantile(draws, [0.025, 0.975])]
    ci90 = [float(v) for v in np.nanquantile(draws, [0.05, 0.95])]
    return {
        "seeds": seeds,
        "a": float(np.mean([a_point[s] for s in seeds])),
        "b": float(np.mean([b_point[s] for s in seeds])),
        "difference": difference,
        "per_seed_difference": [a_point[s] - b_point[s] for s in seeds],
        "se": se,
        "ci95": ci95,
        "ci90": ci90,
        "mdd": (Z_ALPHA + Z_POWER) * se,
        "p": normal_p(difference, se),
        "verdict": verdict(ci95, ci90, margin),
        "records": int(len(a.labels)),
    }


def holm(p_values: list[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (step-down, kept monotone), in the input order."""
    order = np.argsort(p_values)
    adjusted, running = np.empty(len(p_values)), 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - rank) * p_values[index]))
        adjusted[index] = running
    return adjusted.tolist()
