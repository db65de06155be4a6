"""EsiProcessor: the ECG feature extractor and the caption tokenizer behind one call, as CLIPProcessor does."""

from collections.abc import Sequence

from transformers import BatchFeature, ProcessorMixin


class EsiProcessor(ProcessorMixin):
    r"""
    Wraps an [`EsiFeatureExtractor`] and ESI's BERT tokenizer: `model(**processor(ecgs=..., text=...,
    sampling_rate=..., lead_names=..., return_tensors="pt"))` feeds [`EsiModel`] directly.

    Returns `input_values` and `ecg_attention_mask` for the ECGs, `input_ids`, `attention_mask` (and the
    tokenizer's `token_type_ids`) for the texts. Texts are padded to the longest and truncated to
    `max_text_length` tokens (the caption decoder's position limit when saved beside a model).
    """

    def __init__(self, feature_extractor=None, tokenizer=None, max_text_length: int | None = None, **kwargs):
        self.max_text_length = max_text_length
        super().__init__(feature_extractor, tokenizer, **kwargs)

    def __call__(
        self,
        ecgs=None,
        text: str | Sequence[str] | None = None,
        sampling_rate: int | None = None,
        lead_names: Sequence[str] | None = None,
        return_tensors: str | None = None,
        max_length: int | None = None,
        **ecg_kwargs,
    ) -> BatchFeature:
        r"""
        ecgs: what [`EsiFeatureExtractor`] takes (one ECG or a batch), with its `sampling_rate` and `lead_names`;
            further keyword arguments (`padding`, `channels_first`, `allow_missing_leads`, ...) go to it.
        text: a caption / class prompt or a list of them. max_length: tokens (defaults to `max_text_length`).
        """
        if ecgs is None and text is None:
            raise ValueError("pass ecgs, text or both")
        data = {}
        if text is not None:
            max_length = max_length if max_length is not None else self.max_text_length
            data.update(
                self.tokenizer(
                    text, padding=True, truncation=True, max_length=max_length, return_tensors=return_tensors
                )
            )
        if ecgs is not None:
            data.update(
                self.feature_extractor(
                    ecgs, sampling_rate=sampling_rate, lead_names=lead_names, return_tensors=return_tensors,
                    **ecg_kwargs,
                )
            )  # fmt: skip
        return BatchFeature(data, tensor_type=return_tensors)

    def batch_decode(self, *args, **kwargs) -> list[str]:
        """Caption token ids -> texts (the tokenizer's `batch_decode`)."""
        return self.tokenizer.batch_decode(*args, **kwargs)

    def decode(self, *args, **kwargs) -> str:
        return self.tokenizer.decode(*args, **kwargs)

    @property
    def model_input_names(self) -> list[str]:
        return list(dict.fromkeys(self.tokenizer.model_input_names + self.feature_extractor.model_input_names))


EsiProcessor.register_for_auto_class("AutoProcessor")

__all__ = ["EsiProcessor"]
