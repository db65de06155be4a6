"""The trained ESI model behind the app, loaded once: embeddings, class probabilities, generated captions.

The released encoder (ECG tower only) gives embeddings; zero-shot probabilities and captions need a full model.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from transformers import AutoFeatureExtractor, AutoModel, AutoModelForSequenceClassification, AutoTokenizer

from esi.knowledge import load_knowledge_base
from esi.knowledge.prompts import class_prompts

from .records import EcgRecord

CLASSIFIER_ARCHITECTURE = "EsiForEcgClassification"
HASHED_FILES = ("config.json", "preprocessor_config.json", "*.safetensors", "*.bin")
SUPERCLASSES = ("NORM", "MI", "STTC", "CD", "HYP")  # PTB-XL diagnostic superclasses
PROMPT_MAX_TOKENS = 128


@dataclass
class Predictions:
    method: str  # how the probabilities were obtained, shown next to them
    probabilities: dict[str, float]


def model_hash(folder: Path) -> str:
    """sha256 over the files that decide the model's outputs (weights, config, preprocessing)."""
    digest = hashlib.sha256()
    for pattern in HASHED_FILES:
        for path in sorted(folder.glob(pattern)):
            digest.update(path.name.encode())
            with path.open("rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
    return digest.hexdigest()


def find_classifier(folder: Path) -> Path | None:
    """A fine-tuned `EsiForEcgClassification` saved in a sub-folder of the model folder, if any."""
    for config in sorted(folder.glob("*/config.json")):
        if CLASSIFIER_ARCHITECTURE in json.loads(config.read_text()).get("architectures", []):
            return config.parent
    return None


class EsiPredictor:
    def __init__(self, model_dir: str | Path) -> None:
        self.model_dir = Path(model_dir)
        self.model = AutoModel.from_pretrained(self.model_dir, trust_remote_code=True).eval()
        self.feature_extractor = AutoFeatureExtractor.from_pretrained(self.model_dir, trust_remote_code=True)
        # A full ESI model has a text tower and a caption decoder; the released encoder has neither.
        self.has_text = hasattr(self.model, "zero_shot_logits")
        self.hash = model_hash(self.model_dir)
        classifier_dir = find_classifier(self.model_dir)
        self.classifier = (
            AutoModelForSequenceClassification.from_pretrained(classifier_dir, trust_remote_code=True).eval()
            if classifier_dir
            else None
        )
        self.classifier_dir = classifier_dir
        if self.has_text:
            self.tokenizer = AutoTokenizer.from_pretrained(self.model_dir, trust_remote_code=True)
            self.class_prompts, _ = class_prompts(SUPERCLASSES, load_knowledge_base())
            self.class_tokens = self.tokenizer(
                list(self.class_prompts.values()),
                padding=True,
                truncation=True,
                max_length=PROMPT_MAX_TOKENS,
                return_tensors="pt",
            )

    @property
    def predicts(self) -> bool:
        """Whether `predict` has a way to give probabilities (a classifier head, or zero-shot through the text)."""
        return self.classifier is not None or self.has_text

    def inputs(self, records: list[EcgRecord]) -> dict[str, torch.Tensor]:
        """Model inputs for records sharing one sampling rate."""
        batch = self.feature_extractor(
            [r.signal for r in records],
            sampling_rate=records[0].sampling_rate,
            lead_names=list(records[0].lead_names),
            channels_first=True,
            record_names=[r.name for r in records],
            return_tensors="pt",
        )
        return {"input_values": batch["input_values"], "ecg_attention_mask": batch["ecg_attention_mask"]}

    @torch.no_grad()
    def embed(self, records: list[EcgRecord]) -> np.ndarray:
        """L2-normalised ECG embeddings (len(records), projection_dim)."""
        features = self.model.get_ecg_features(**self.inputs(records)).pooler_output
        return torch.nn.functional.normalize(features, dim=-1).numpy()

    @torch.no_grad()
    def predict(self, record: EcgRecord) -> Predictions | None:
        """The classifier's probabilities, else zero-shot ones; None for a model with neither (see `predicts`)."""
        if not self.predicts:
            return None
        inputs = self.inputs([record])
        if self.classifier is not None:
            logits = self.classifier(**inputs).logits[0]
            config = self.classifier.config
            single = config.problem_type == "single_label_classification"
            probs = logits.softmax(-1) if single else logits.sigmoid()
            kind = "softmax" if single else "independent sigmoid per class"
            method = f"Fine-tuned classifier ({self.classifier_dir.name}/, {kind})"
            return Predictions(method, {config.id2label[i]: float(p) for i, p in enumerate(probs)})
        logits = self.model.zero_shot_logits(
            inputs["input_values"],
            self.class_tokens["input_ids"],
            self.class_tokens["attention_mask"],
            ecg_attention_mask=inputs["ecg_attention_mask"],
        )[0]
        method = (
            "Zero-shot: similarity between the ECG embedding and a knowledge-base description of each PTB-XL "
            "superclass (softmax over the 5 classes; no classifier was trained)"
        )
        return Predictions(method, dict(zip(self.class_prompts, logits.softmax(-1).tolist(), strict=True)))

    @torch.no_grad()
    def caption(self, record: EcgRecord, max_new_tokens: int = 96) -> str | None:
        """The model's own caption; None for a model without a caption decoder."""
        if not self.has_text:
            return None
        inputs = self.inputs([record])
        # The BOS token takes one of the decoder's positions; a small model cannot write 96 more.
        max_new_tokens = min(max_new_tokens, self.model.config.decoder_config.max_position_embeddings - 1)
        ids = self.model.generate_caption(
            inputs["input_values"],
            max_new_tokens=max_new_tokens,
            num_beams=1,
            ecg_attention_mask=inputs["ecg_attention_mask"],
        )
        return self.tokenizer.decode(ids[0], skip_special_tokens=True).strip()
