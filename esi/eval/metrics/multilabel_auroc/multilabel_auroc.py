"""Macro and per-class AUROC for multi-label classification, with a bootstrap confidence interval."""

import datasets
import evaluate
import numpy as np
from sklearn.metrics import roc_auc_score

_DESCRIPTION = """
Area under the ROC curve of each class (one-vs-rest on multi-hot references) and their unweighted
mean (macro AUROC), the headline metric of the PTB-XL benchmark. Computed with scikit-learn.
A class whose references hold a single value has no AUROC (nan) and is left out of the mean.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list[list[float]]`): (N, K) scores, any monotone scale (logits or probabilities).
    references (`list[list[int]]`): (N, K) multi-hot labels.
    bootstrap_samples (`int`, defaults to 0): resamples of the N records for the confidence interval.
    confidence_level (`float`, defaults to 0.95).
    seed (`int`, defaults to 0): seeds the resampling.
Returns:
    macro_auroc (`float`), per_class_auroc (`list[float]`), and with bootstrap_samples > 0
    macro_auroc_ci (`[low, high]`).
Example:
    >>> auroc = evaluate.load("metrics/multilabel_auroc")
    >>> scores = [[0.9, 0.1], [0.2, 0.8], [0.7, 0.6], [0.4, 0.9]]
    >>> auroc.compute(predictions=scores, references=[[1, 0], [0, 1], [0, 0], [1, 1]])
    {'macro_auroc': 0.875, 'per_class_auroc': [0.75, 1.0]}
"""


def per_class_auroc(references: np.ndarray, scores: np.ndarray) -> np.ndarray:
    aurocs = np.full(references.shape[1], np.nan)
    for k in range(references.shape[1]):
        if 0 < references[:, k].sum() < len(references):
            aurocs[k] = roc_auc_score(references[:, k], scores[:, k])
    return aurocs


def macro_auroc(references: np.ndarray, scores: np.ndarray) -> float:
    aurocs = per_class_auroc(references, scores)
    return float(np.nanmean(aurocs)) if np.isfinite(aurocs).any() else float("nan")


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class MultilabelAuroc(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Value("float32")),
                    "references": datasets.Sequence(datasets.Value("int32")),
                }
            ),
            reference_urls=["https://scikit-learn.org/stable/modules/generated/sklearn.metrics.roc_auc_score.html"],
        )

    def _compute(self, predictions, references, bootstrap_samples=0, confidence_level=0.95, seed=0):
        scores, labels = np.asarray(predictions, dtype=np.float64), np.asarray(references, dtype=np.int64)
        per_class = per_class_auroc(labels, scores)
        result = {
            "macro_auroc": float(np.nanmean(per_class)) if np.isfinite(per_class).any() else float("nan"),
            "per_class_auroc": [float(v) for v in per_class],
        }
        if bootstrap_samples:
            rng = np.random.default_rng(seed)
            rows = rng.integers(0, len(labels), (bootstrap_samples, len(labels)))
            draws = [macro_auroc(labels[r], scores[r]) for r in rows]
            alpha = (1 - confidence_level) / 2
            result["macro_auroc_ci"] = [float(v) for v in np.nanquantile(draws, [alpha, 1 - alpha])]
        return result
