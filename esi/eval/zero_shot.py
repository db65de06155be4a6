"""Text-side evaluation of a pretrained ESI model: zero-shot classification and caption generation."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import numpy as np
import torch

_FIRST_SENTENCE = re.compile(r"^(.+?[.!?])(\s|$)")


def first_sentence(text: str) -> str:
    match = _FIRST_SENTENCE.match(text.strip())
    return match.group(1) if match else text.strip()


def class_prompts(class_names: Sequence[str], entries: Iterable) -> tuple[dict[str, str], list[str]]:
    """A prompt per class from the CQA knowledge base, and the classes it has nothing for.

    A class that is an SCP statement uses its entry `scp:CODE`: title plus first sentence. A PTB-XL
    superclass or subclass (e.g. `MI`, `LAFB/LPFB`) uses the titles of the statement entries tagged
    `class:NAME` or `subclass:NAME`.
    """
    entries = list(entries)
    by_id = {entry.id: entry for entry in entries}
    prompts, missing = {}, []
    for name in class_names:
        entry = by_id.get(f"scp:{name}")
        if entry is not None:
            prompts[name] = f"{entry.title}. {first_sentence(entry.text)}"
            continue
        members = [e.title for e in entries if f"class:{name}" in e.tags or f"subclass:{name}" in e.tags]
        if members:
            prompts[name] = "; ".join(members) + "."
        else:
            missing.append(name)
    return prompts, missing


@torch.no_grad()
def zero_shot_scores(model, tokenizer, prompts: Sequence[str], loader, max_length: int = 128) -> np.ndarray:
    """(N, K) scaled cosine similarities between each ECG of `loader` and each prompt."""
    model.eval()
    text = tokenizer(list(prompts), padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    parts = [
        model.zero_shot_logits(
            batch["input_values"], text["input_ids"], text["attention_mask"], batch["ecg_attention_mask"]
        )
        .float()
        .numpy()
        for batch in loader
    ]
    return np.concatenate(parts)


@torch.no_grad()
def generate_captions(model, tokenizer, loader, max_new_tokens: int = 64, num_beams: int = 1) -> list[str]:
    """Captions generated from each ECG of `loader`, decoded without special tokens."""
    model.eval()
    captions = []
    for batch in loader:
        ids = model.generate_caption(
            batch["input_values"],
            max_new_tokens=max_new_tokens,
            num_beams=num_beams,
            ecg_attention_mask=batch["ecg_attention_mask"],
        )
        captions.extend(tokenizer.batch_decode(ids, skip_special_tokens=True))
    return captions
