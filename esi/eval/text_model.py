"""The pretrained ESI model with its tokenizer, for the evaluations that use its text side (zero-shot, captioning)."""

from __future__ import annotations

from transformers import AutoTokenizer

from modeling_esi import EsiModel


def load_pretrained(model_path: str) -> tuple[EsiModel, AutoTokenizer]:
    model = EsiModel.from_pretrained(model_path)
    # Passing the config stops AutoTokenizer from reading config.json's remote-code auto_map.
    return model, AutoTokenizer.from_pretrained(model_path, config=model.config)
