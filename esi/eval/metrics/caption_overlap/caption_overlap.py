"""Word overlap between generated and reference captions: token F1 and ROUGE-L (F-measure)."""

import re

import datasets
import evaluate
import numpy as np

_DESCRIPTION = """
Two simple, transparent overlap scores between a generated caption and its reference, averaged
over pairs. Text is lower-cased and split into word and number tokens.
token_f1: F1 of the bag-of-tokens overlap (as in SQuAD). rouge_l: F-measure of the longest common
token subsequence (Lin, 2004; beta = 1). Neither judges clinical correctness.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list[str]`): generated captions.
    references (`list[str]`): reference captions, one per prediction.
Returns:
    token_f1 (`float`), rouge_l (`float`): means over the pairs, in [0, 1].
Example:
    >>> overlap = evaluate.load("metrics/caption_overlap")
    >>> overlap.compute(predictions=["sinus rhythm"], references=["sinus rhythm at 70 bpm"])
    {'token_f1': 0.5714285714285715, 'rouge_l': 0.5714285714285715}
"""

_TOKEN = re.compile(r"[a-z]+|\d+(?:\.\d+)?")


def tokens(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())


def f_measure(overlap: int, predicted: int, reference: int) -> float:
    if overlap == 0:
        return 0.0
    precision, recall = overlap / predicted, overlap / reference
    return 2 * precision * recall / (precision + recall)


def lcs_length(a: list[str], b: list[str]) -> int:
    previous = [0] * (len(b) + 1)
    for token in a:
        current = [0]
        for j, other in enumerate(b):
            current.append(previous[j] + 1 if token == other else max(previous[j + 1], current[j]))
        previous = current
    return previous[-1]


class CaptionOverlap(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
            ),
        )

    def _compute(self, predictions, references):
        token_f1, rouge_l = [], []
        for prediction, reference in zip(predictions, references, strict=True):
            pred, ref = tokens(prediction), tokens(reference)
            common = sum(min(pred.count(t), ref.count(t)) for t in set(pred))
            token_f1.append(f_measure(common, len(pred), len(ref)))
            rouge_l.append(f_measure(lcs_length(pred, ref), len(pred), len(ref)))
        return {"token_f1": float(np.mean(token_f1)), "rouge_l": float(np.mean(rouge_l))}
