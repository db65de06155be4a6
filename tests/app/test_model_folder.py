"""The tiny, randomly initialised ESI model folder of the app tests loads as users load it."""

from __future__ import annotations

import torch
from transformers import AutoFeatureExtractor, AutoModel, AutoModelForSequenceClassification

from esi.app.records import STANDARD_LEADS
from tests.helpers import build_tiny_model


def test_tiny_model_folder_loads_with_auto_classes(tmp_path):
    folder = build_tiny_model(tmp_path / "model", with_classifier=True)
    model = AutoModel.from_pretrained(folder, trust_remote_code=True)
    extractor = AutoFeatureExtractor.from_pretrained(folder, trust_remote_code=True)
    classifier = AutoModelForSequenceClassification.from_pretrained(folder / "classifier", trust_remote_code=True)
    inputs = extractor(torch.zeros(12, 1000).numpy(), sampling_rate=100, lead_names=STANDARD_LEADS, return_tensors="pt")
    assert model.get_ecg_features(inputs["input_values"]).pooler_output.shape == (1, 32)
    assert classifier(inputs["input_values"]).logits.shape == (1, 5)
