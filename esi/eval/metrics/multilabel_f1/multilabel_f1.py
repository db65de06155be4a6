"""Macro and per-class F1 for multi-label classification at given per-class thresholds, with a bootstrap CI."""

import datasets
import evaluate
import numpy as np
from sklearn.metrics import f1_score

from esi.eval.stats import bootstrap_interval

_DESCRIPTION = """
F1 of each class after thresholding its scores (score >= threshold is positive) and their
unweighted mean (macro F1). Thresholds should be chosen on a validation split, never on the
split being scored. Computed with scikit-learn (zero_division=0).
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list[list[float]]`): (N, K) scores.
    references (`list[list[int]]`): (N, K) multi-hot labels.
    thresholds (`list[float]`, *optional*): K thresholds on the scores' scale; defaults to 0.5 for all.
    bootstrap_samples (`int`, defaults to 0), confidence_level (`float`, defaults to 0.95), seed (`int`, defaults to 0).
Returns:
    macro_f1 (`float`), per_class_f1 (`list[float]`), and with bootstrap_samples > 0 macro_f1_ci (`[low, high]`).
Example:
    >>> f1 = evaluate.load("metrics/multilabel_f1")
    >>> f1.compute(predictions=[[0.9, 0.1], [0.2, 0.8]], references=[[1, 0], [0, 1]], thresholds=[0.5, 0.5])
    {'macro_f1': 1.0, 'per_class_f1': [1.0, 1.0]}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class MultilabelF1(evaluate.Metric):
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
            reference_urls=["https://scikit-learn.org/stable/modules/generated/sklearn.metrics.f1_score.html"],
        )

    def _compute(self, predictions, references, thresholds=None, bootstrap_samples=0, confidence_level=0.95, seed=0):
        scores, labels = np.asarray(predictions, dtype=np.float64), np.asarray(references, dtype=np.int64)
        thresholds = np.full(labels.shape[1], 0.5) if thresholds is None else np.asarray(thresholds, dtype=np.float64)
        if thresholds.shape != (labels.shape[1],):
            raise ValueError(f"expected {labels.shape[1]} thresholds, got shape {thresholds.shape}")
        decisions = (scores >= thresholds).astype(np.int64)
        per_class = f1_score(labels, decisions, average=None, zero_division=0)
        result = {"macro_f1": float(per_class.mean()), "per_class_f1": [float(v) for v in per_class]}
        if bootstrap_samples:
            result["macro_f1_ci"] = bootstrap_interval(
                lambda y, d: f1_score(y, d, average="macro", zero_division=0),
                labels,
                decisions,
                samples=bootstrap_samples,
                confidence_level=confidence_level,
                seed=seed,
            )
        return result
