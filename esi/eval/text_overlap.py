"""Word overlap between generated and reference captions (token F1, ROUGE-L); numpy only."""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

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


def pair_scores(prediction: str, reference: str) -> tuple[float, float]:
    """(token F1, ROUGE-L F-measure) of one pair."""
    pred, ref = tokens(prediction), tokens(reference)
    common = sum(min(pred.count(t), ref.count(t)) for t in set(pred))
    return f_measure(common, len(pred), len(ref)), f_measure(lcs_length(pred, ref), len(pred), len(ref))


def caption_overlap(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Means over pairs of token F1 and ROUGE-L."""
    scores = np.array([pair_scores(p, r) for p, r in zip(predictions, references, strict=True)])
    return {"token_f1": float(scores[:, 0].mean()), "rouge_l": float(scores[:, 1].mean())}
