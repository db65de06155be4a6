"""The local `evaluate` metric modules in metrics/ agree with scikit-learn and behave on edge cases."""

from __future__ import annotations

import evaluate
import numpy as np
import pytest
from sklearn.metrics import f1_score, roc_auc_score

from tests.helpers import REPO_ROOT

METRICS = REPO_ROOT / "esi" / "eval" / "metrics"


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    labels = (rng.random((120, 4)) < [0.5, 0.3, 0.2, 0.1]).astype(int)
    labels[:2] = 1  # every class has positives
    scores = labels * rng.normal(0.8, 1.0, labels.shape) + rng.normal(0, 1.0, labels.shape)
    return labels, scores


@pytest.fixture(scope="module")
def auroc():
    return evaluate.load(str(METRICS / "multilabel_auroc"))


@pytest.fixture(scope="module")
def f1():
    return evaluate.load(str(METRICS / "multilabel_f1"))


def test_auroc_matches_sklearn(auroc, data):
    labels, scores = data
    result = auroc.compute(predictions=scores, references=labels)
    assert result["macro_auroc"] == pytest.approx(roc_auc_score(labels, scores, average="macro"), abs=1e-6)
    expected = roc_auc_score(labels, scores, average=None)
    np.testing.assert_allclose(result["per_class_auroc"], expected, atol=1e-6)
    assert "macro_auroc_ci" not in result


def test_auroc_bootstrap_is_seeded_and_brackets_the_estimate(auroc, data):
    labels, scores = data
    a = auroc.compute(predictions=scores, references=labels, bootstrap_samples=200, seed=3)
    b = auroc.compute(predictions=scores, references=labels, bootstrap_samples=200, seed=3)
    c = auroc.compute(predictions=scores, references=labels, bootstrap_samples=200, seed=4)
    assert a["macro_auroc_ci"] == b["macro_auroc_ci"] != c["macro_auroc_ci"]
    low, high = a["macro_auroc_ci"]
    assert low < a["macro_auroc"] < high
    narrow = auroc.compute(predictions=scores, references=labels, bootstrap_samples=200, confidence_level=0.5)
    assert narrow["macro_auroc_ci"][1] - narrow["macro_auroc_ci"][0] < high - low


def test_auroc_single_valued_class_is_nan_and_left_out(auroc, data):
    labels, scores = data
    labels = labels.copy()
    labels[:, 3] = 0
    result = auroc.compute(predictions=scores, references=labels)
    assert np.isnan(result["per_class_auroc"][3])
    assert result["macro_auroc"] == pytest.approx(roc_auc_score(labels[:, :3], scores[:, :3], average="macro"))


def test_f1_matches_sklearn_at_given_thresholds(f1, data):
    labels, scores = data
    thresholds = [0.0, 0.3, 0.6, 1.0]
    result = f1.compute(predictions=scores, references=labels, thresholds=thresholds, bootstrap_samples=50)
    decisions = (scores >= np.array(thresholds)).astype(int)
    assert result["macro_f1"] == pytest.approx(f1_score(labels, decisions, average="macro", zero_division=0))
    np.testing.assert_allclose(result["per_class_f1"], f1_score(labels, decisions, average=None, zero_division=0))
    assert result["macro_f1_ci"][0] <= result["macro_f1"] <= result["macro_f1_ci"][1]
    default = f1.compute(predictions=scores, references=labels)
    assert default["macro_f1"] == pytest.approx(f1_score(labels, (scores >= 0.5).astype(int), average="macro"))
    with pytest.raises(ValueError, match="thresholds"):
        f1.compute(predictions=scores, references=labels, thresholds=[0.5])


def test_caption_overlap_known_values():
    overlap = evaluate.load(str(METRICS / "caption_overlap"))
    same = overlap.compute(predictions=["Sinus rhythm, 72 bpm."], references=["sinus rhythm 72 bpm"])
    assert same == {"token_f1": 1.0, "rouge_l": 1.0}
    # tokens: pred [a, b, c, d], ref [b, a, d]; bag overlap 3, LCS 2 (e.g. "a d")
    result = overlap.compute(predictions=["a b c d", "x"], references=["b a d", "y"])
    token_f1 = 2 * (3 / 4) * (3 / 3) / (3 / 4 + 1)
    rouge_l = 2 * (2 / 4) * (2 / 3) / (2 / 4 + 2 / 3)
    assert result["token_f1"] == pytest.approx(token_f1 / 2)
    assert result["rouge_l"] == pytest.approx(rouge_l / 2)
