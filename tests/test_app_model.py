"""A tiny, randomly initialised ESI model folder for the app tests, and a check that it loads as users load it."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoFeatureExtractor, AutoModel, AutoModelForSequenceClassification, AutoTokenizer, BertConfig

from esi_app.inference import SUPERCLASSES
from esi_app.records import STANDARD_LEADS
from modeling_esi import EsiConfig, EsiFeatureExtractor, EsiForEcgClassification, EsiModel
from training.text_encoder import default_text_model_path

TINY = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64}


def build_tiny_model(folder: Path, with_classifier: bool = False) -> Path:
    """Save a small EsiModel with its feature extractor and tokenizer (and optionally a `classifier/` head)."""
    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(default_text_model_path())
    config = EsiConfig(
        ecg_config={"size": "atto"},
        text_config=BertConfig(vocab_size=tokenizer.vocab_size, **TINY).to_dict(),
        decoder_config={**TINY, "max_position_embeddings": 64},
        projection_dim=32,
    )
    EsiModel(config).save_pretrained(folder)
    EsiFeatureExtractor(sampling_rate=100, duration_s=10.0).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    if with_classifier:
        labels = list(SUPERCLASSES)
        config.num_labels = len(labels)
        config.id2label = dict(enumerate(labels))
        config.label2id = {label: i for i, label in enumerate(labels)}
        config.problem_type = "multi_label_classification"
        EsiForEcgClassification(config).save_pretrained(folder / "classifier")
    return folder


def test_tiny_model_folder_loads_with_auto_classes(tmp_path):
    folder = build_tiny_model(tmp_path / "model", with_classifier=True)
    model = AutoModel.from_pretrained(folder, trust_remote_code=True)
    extractor = AutoFeatureExtractor.from_pretrained(folder, trust_remote_code=True)
    classifier = AutoModelForSequenceClassification.from_pretrained(folder / "classifier", trust_remote_code=True)
    inputs = extractor(torch.zeros(12, 1000).numpy(), sampling_rate=100, lead_names=STANDARD_LEADS, return_tensors="pt")
    assert model.get_ecg_features(inputs["input_values"]).shape == (1, 32)
    assert classifier(inputs["input_values"]).logits.shape == (1, 5)
