"""Frozen text tower with each caption's embedding computed once and looked up afterwards.

With `--freeze-text-tower` the BERT tower is a fixed function (eval mode: no dropout), so its
output for a caption never changes; recomputing it every epoch is most of a step's cost. The
caption decoder still trains on the token ids, so only the tower is cached.

`EsiModel` pools the tower's `last_hidden_state` with a masked mean; the cache stores that pooled
vector (hidden_size floats per caption) and hands it back broadcast over the tokens, which the
masked mean returns unchanged. The real tower is kept outside the module tree (the frozen weights
are not trained, so checkpoints need not carry them) and is put back by `restore` before saving.

The cache can also be filled from a file of precomputed embeddings (`--text-embeddings`), so that
runs sharing captions (a grid of arms and seeds) embed them once, and a machine without the tower's
weights can train: then a caption missing from the file is an error, never a call of the tower.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from torch import nn
from transformers.modeling_outputs import BaseModelOutput

from modeling_esi.modeling_esi import masked_mean


class CachedTextTower(nn.Module):
    def __init__(self, tower: nn.Module, complete: bool = False):
        super().__init__()
        self._tower = (tower.eval(),)  # a tuple: not a registered submodule
        self._cache: dict[bytes, torch.Tensor] = {}
        self.complete = complete  # filled from a file: a missing caption is an error, the tower is never run

    @property
    def tower(self) -> nn.Module:
        return self._tower[0]

    def __len__(self) -> int:
        return len(self._cache)

    @staticmethod
    def _key(ids: torch.Tensor, mask: torch.Tensor) -> bytes:
        return ids[mask.bool()].cpu().numpy().tobytes()

    def store(self, ids: torch.Tensor, mask: torch.Tensor, vector: torch.Tensor, caption: str) -> None:
        """Put one caption's precomputed embedding in the cache; two captions that read as the same tokens
        (cut at the same length) must have the same embedding, or the file was computed on other text."""
        key = self._key(ids, mask)
        if key in self._cache and not torch.allclose(self._cache[key], vector, atol=1e-5):
            raise ValueError(
                f"caption {caption[:120]!r} reads as the same tokens as another caption but has another precomputed "
                "embedding: embed each caption's first max_text_length tokens, as the tower reads it"
            )
        self._cache[key] = vector.float()

    @torch.no_grad()
    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs) -> BaseModelOutput:
        if kwargs.get("output_hidden_states"):
            raise ValueError("cached text embeddings have no hidden states; use the real tower")
        mask = attention_mask if attention_mask is not None else torch.ones_like(input_ids)
        keys = [self._key(ids, m) for ids, m in zip(input_ids, mask, strict=True)]
        missing = [row for row, key in enumerate(keys) if key not in self._cache]
        if missing and self.complete:
            raise ValueError(
                f"{len(missing)} caption(s) of this batch are not among the precomputed text embeddings "
                f"(first token ids: {input_ids[missing[0]][:12].tolist()})"
            )
        if missing:
            # The tower is not a registered submodule, so it stays where it was built (CPU): run it there.
            device = next(self.tower.parameters()).device
            rows_ids, rows_mask = input_ids[missing].to(device), mask[missing].to(device)
            hidden = self.tower(input_ids=rows_ids, attention_mask=rows_mask).last_hidden_state
            for row, vector in zip(missing, masked_mean(hidden, rows_mask), strict=True):
                self._cache[keys[row]] = vector.detach().float().cpu()
        pooled = torch.stack([self._cache[key] for key in keys]).to(input_ids.device)
        return BaseModelOutput(last_hidden_state=pooled.unsqueeze(1).expand(-1, input_ids.shape[1], -1))


def load_text_embeddings(path: str | Path, max_length: int) -> dict[str, np.ndarray]:
    """caption -> float32 embedding from a .npz with arrays `captions` (strings) and `embeddings` (N, width), and
    optionally `max_text_length` (the tokens each caption was cut to), which must then equal `max_length`."""
    with np.load(path, allow_pickle=False) as saved:
        lacking = {"captions", "embeddings"} - set(saved.files)
        if lacking:
            raise ValueError(f"text embeddings file {path} lacks array(s) {sorted(lacking)}; has {saved.files}")
        if "max_text_length" in saved.files and int(saved["max_text_length"]) != max_length:
            raise ValueError(
                f"text embeddings file {path} embeds the first {int(saved['max_text_length'])} tokens of each "
                f"caption, but this run reads {max_length} (--max-text-length): recompute it or match the length"
            )
        captions, embeddings = [str(c) for c in saved["captions"]], saved["embeddings"].astype(np.float32)
    if embeddings.ndim != 2 or len(embeddings) != len(captions):
        raise ValueError(
            f"text embeddings file {path}: {len(captions)} captions but embeddings of shape {embeddings.shape}"
        )
    bad = np.flatnonzero(~np.isfinite(embeddings).all(1))
    if len(bad):
        raise ValueError(f"text embeddings file {path}: non-finite embedding for caption {captions[bad[0]]!r}")
    return dict(zip(captions, embeddings, strict=True))


def use_cached_text_tower(
    model: nn.Module,
    tokenizer,
    captions: list[str],
    max_length: int,
    batch_size: int = 64,
    precomputed: Mapping[str, np.ndarray] | None = None,
) -> CachedTextTower:
    """Swap `model.text_model` for a cache filled with every caption's embedding (tokenised as the collator does):
    computed by the tower, or taken from `precomputed` (caption -> embedding) without running it."""
    cached = CachedTextTower(model.text_model, complete=precomputed is not None)
    distinct = list(dict.fromkeys(captions))
    if precomputed is not None:
        lacking = [c for c in distinct if c not in precomputed]
        if lacking:
            raise ValueError(
                f"{len(lacking)} of {len(distinct)} distinct captions have no precomputed text embedding "
                f"(e.g. {lacking[0][:120]!r}); recompute the embeddings file from these captions"
            )
    for start in range(0, len(distinct), batch_size):
        chunk = distinct[start : start + batch_size]
        text = tokenizer(chunk, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        if precomputed is None:
            cached(text["input_ids"], text["attention_mask"])
            continue
        for caption, ids, mask in zip(chunk, text["input_ids"], text["attention_mask"], strict=True):
            cached.store(ids, mask, torch.from_numpy(precomputed[caption]), caption)
    model.text_model = cached
    return cached


def restore_text_tower(model: nn.Module) -> None:
    if isinstance(model.text_model, CachedTextTower):
        model.text_model = model.text_model.tower
