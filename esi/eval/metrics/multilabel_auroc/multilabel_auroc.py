"""Macro and per-class AUROC for multi-label classification, with a bootstrap confidence interval."""

import datasets
import evaluate
import numpy as np

from esi.eval.stats import bootstrap_interval, macro_auroc, per_class_auroc

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
            result["macro_auroc_ci"] = bootstrap_interval(
                macro_auroc, labels, scores, samples=bootstrap_samples, confidence_level=confidence_level, seed=seed
            )
        return result
