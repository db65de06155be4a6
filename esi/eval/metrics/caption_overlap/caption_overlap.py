"""Word overlap between generated and reference captions: token F1 and ROUGE-L (F-measure)."""

import datasets
import evaluate

from esi.eval.text_overlap import caption_overlap

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
        return caption_overlap(predictions, references)
