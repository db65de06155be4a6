"""transformers pipelines for a saved ESI folder: `pipeline(task, model=folder, trust_remote_code=True)`.

Tasks (registered in the saved config's `custom_pipelines`): `feature-extraction` (the Hub's standard task name)
or its alias `ecg-feature-extraction` (an embedding per ECG), `zero-shot-ecg-classification` (scores for label
texts) and `ecg-captioning` (generated text). Each takes one ECG or a list: an array (leads x time or time x
leads) with `sampling_rate=` and `lead_names=`, a dict with `signal`, `sampling_rate` and `lead_names`, or the
path of a WFDB record (needs the optional `wfdb` package). transformers infers no task for a folder with several
custom tasks: `pipeline(model=folder)` asks for one of them by name.
Research software, not a diagnostic device.
"""

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from transformers import Pipeline

_FEATURE_EXTRACTION = {"impl": "pipeline_esi.EcgFeatureExtractionPipeline", "pt": ["AutoModel"]}
ESI_CUSTOM_PIPELINES = {
    "feature-extraction": _FEATURE_EXTRACTION,
    "ecg-feature-extraction": _FEATURE_EXTRACTION,
    "zero-shot-ecg-classification": {"impl": "pipeline_esi.ZeroShotEcgClassificationPipeline", "pt": ["AutoModel"]},
    "ecg-captioning": {"impl": "pipeline_esi.EcgCaptioningPipeline", "pt": ["AutoModel"]},
}


def read_ecg_input(ecg, sampling_rate: int | None, lead_names: Sequence[str] | None) -> dict:
    """One pipeline input -> {"signal", "sampling_rate", "lead_names", "name"}."""
    if isinstance(ecg, str):
        try:
            import wfdb
        except ImportError as error:
            raise ImportError(f"{ecg}: reading a WFDB record needs the `wfdb` package (pip install wfdb)") from error
        record = wfdb.rdrecord(ecg.removesuffix(".hea").removesuffix(".dat"))
        return {"signal": record.p_signal, "sampling_rate": record.fs, "lead_names": record.sig_name, "name": ecg}
    if isinstance(ecg, dict):
        return {"name": "ECG", **ecg}
    if sampling_rate is None or lead_names is None:
        raise ValueError("an ECG array needs sampling_rate= and lead_names= (its rate in Hz and its lead order)")
    return {"signal": ecg, "sampling_rate": sampling_rate, "lead_names": lead_names, "name": "ECG"}


class _EcgPipeline(Pipeline):
    """Shared input handling: ECG -> the feature extractor's `input_values` and `ecg_attention_mask`."""

    _load_processor = False
    _load_image_processor = False
    _load_feature_extractor = True
    _load_tokenizer = True

    def _sanitize_parameters(self, sampling_rate=None, lead_names=None, **kwargs):
        preprocess = {"sampling_rate": sampling_rate, "lead_names": lead_names}
        return preprocess, {}, {}

    def _ecg_features(self, ecg, sampling_rate, lead_names) -> dict:
        item = read_ecg_input(ecg, sampling_rate, lead_names)
        return dict(
            self.feature_extractor(
                item["signal"],
                sampling_rate=item["sampling_rate"],
                lead_names=list(item["lead_names"]),
                record_names=[item["name"]],
                return_tensors="pt",
            )
        )


class EcgFeatureExtractionPipeline(_EcgPipeline):
    """ECG -> its ESI embedding (list of `projection_dim` floats, L2-normalised unless `normalize=False`)."""

    _load_tokenizer = False  # no text: also runs on the released encoder, which has no tokenizer

    def _sanitize_parameters(self, sampling_rate=None, lead_names=None, normalize=None, **kwargs):
        preprocess, _, _ = super()._sanitize_parameters(sampling_rate, lead_names)
        return preprocess, {}, {"normalize": True if normalize is None else normalize}

    def preprocess(self, ecg, sampling_rate=None, lead_names=None):
        return self._ecg_features(ecg, sampling_rate, lead_names)

    def _forward(self, model_inputs):
        return {
            "embedding": self.model.get_ecg_features(
                model_inputs["input_values"], model_inputs["ecg_attention_mask"]
            ).pooler_output
        }

    def postprocess(self, model_outputs, normalize=True):
        embedding = model_outputs["embedding"][0].float()
        return (F.normalize(embedding, dim=-1) if normalize else embedding).tolist()


class ZeroShotEcgClassificationPipeline(_EcgPipeline):
    """ECG + `candidate_labels` -> [{"label", "score"}] sorted by score (softmax over the labels' cosine
    similarities x the model's logit scale, as CLIP's zero-shot classification). `hypothesis_template`
    (default `"{}"`) turns each label into the text that is embedded."""

    def _sanitize_parameters(self, sampling_rate=None, lead_names=None, candidate_labels=None,
                             hypothesis_template=None, **kwargs):  # fmt: skip
        preprocess, _, _ = super()._sanitize_parameters(sampling_rate, lead_names)
        preprocess["candidate_labels"] = candidate_labels
        preprocess["hypothesis_template"] = hypothesis_template or "{}"
        return preprocess, {}, {}

    def preprocess(self, ecg, sampling_rate=None, lead_names=None, candidate_labels=None, hypothesis_template="{}"):
        if not candidate_labels:
            raise ValueError("zero-shot ECG classification needs candidate_labels (a list of label texts)")
        inputs = self._ecg_features(ecg, sampling_rate, lead_names)
        texts = [hypothesis_template.format(label) for label in candidate_labels]
        text = self.tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
        return {**inputs, "class_input_ids": text["input_ids"], "class_attention_mask": text["attention_mask"],
                "candidate_labels": list(candidate_labels)}  # fmt: skip

    def _forward(self, model_inputs):
        logits = self.model.zero_shot_logits(
            model_inputs["input_values"],
            model_inputs["class_input_ids"],
            model_inputs["class_attention_mask"],
            ecg_attention_mask=model_inputs["ecg_attention_mask"],
        )
        return {"logits": logits, "candidate_labels": model_inputs["candidate_labels"]}

    def postprocess(self, model_outputs):
        scores = model_outputs["logits"][0].float().softmax(dim=-1).tolist()
        ranked = sorted(zip(model_outputs["candidate_labels"], scores, strict=True), key=lambda pair: -pair[1])
        return [{"label": label, "score": score} for label, score in ranked]


class EcgCaptioningPipeline(_EcgPipeline):
    """ECG -> [{"generated_text"}] through `model.generate`; generation options (`max_new_tokens`,
    `num_beams`, `do_sample`, `generation_config`, ...) pass through. Generated text is a model's guess, not a
    clinical report."""

    def _sanitize_parameters(self, sampling_rate=None, lead_names=None, **generate_kwargs):
        preprocess, _, _ = super()._sanitize_parameters(sampling_rate, lead_names)
        return preprocess, {"generate_kwargs": generate_kwargs}, {}

    def preprocess(self, ecg, sampling_rate=None, lead_names=None):
        return self._ecg_features(ecg, sampling_rate, lead_names)

    def _forward(self, model_inputs, generate_kwargs=None):
        with torch.no_grad():
            return {"ids": self.model.generate(model_inputs["input_values"], model_inputs["ecg_attention_mask"],
                                               **(generate_kwargs or {}))}  # fmt: skip

    def postprocess(self, model_outputs):
        texts = self.tokenizer.batch_decode(model_outputs["ids"], skip_special_tokens=True)
        return [{"generated_text": text} for text in texts]


__all__ = [
    "ESI_CUSTOM_PIPELINES",
    "EcgFeatureExtractionPipeline",
    "ZeroShotEcgClassificationPipeline",
    "EcgCaptioningPipeline",
    "read_ecg_input",
]
