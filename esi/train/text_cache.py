"""Frozen text tower with each caption's embedding computed once and looked up afterwards.

With `--freeze-text-tower` the BERT tower is a fixed function (eval mode: no dropout), so its
output for a caption never changes; recomputing it every epoch is most of a step's cost. The
caption decoder still trains on the token ids, so only the tower is cached.

`EsiModel` pools the tower's `last_hidden_state` with a masked mean; the cache stores that pooled
vector (hidden_size floats per caption) and hands it back broadcast over the tokens, which the
masked mean returns unchanged. The real tower is kept outside the module tree (the frozen weights
are not trained, so checkpoints need not carry them) and is put back by `restore` before saving.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers.modeling_outputs import BaseModelOutput

from modeling_esi.modeling_esi import masked_mean


class CachedTextTower(nn.Module):
    def __init__(self, tower: nn.Module):
        super().__init__()
        self._tower = (tower.eval(),)  # a tuple: not a registered submodule
        self._cache: dict[bytes, torch.Tensor] = {}

    @property
    def tower(self) -> nn.Module:
        return self._tower[0]

    def __len__(self) -> int:
        return len(self._cache)

    @staticmethod
    def _key(ids: torch.Tensor, mask: torch.Tensor) -> bytes:
        return ids[mask.bool()].cpu().numpy().tobytes()

    @torch.no_grad()
    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs) -> BaseModelOutput:
        if kwargs.get("output_hidden_states"):
            raise ValueError("cached text embeddings have no hidden states; use the real tower")
        mask = attention_mask if attention_mask is not None else torch.ones_like(input_ids)
        keys = [self._key(ids, m) for ids, m in zip(input_ids, mask, strict=True)]
        missing = [row for row, key in enumerate(keys) if key not in self._cache]
        if missing:
            # The tower is not a registered submodule, so it stays where it was built (CPU): run it there.
            device = next(self.tower.parameters()).device
            rows_ids, rows_mask = input_ids[missing].to(device), mask[missing].to(device)
            hidden = self.tower(input_ids=rows_ids, attention_mask=rows_mask).last_hidden_state
            for row, vector in zip(missing, masked_mean(hidden, rows_mask), strict=True):
                self._cache[keys[row]] = vector.detach().float().cpu()
        pooled = torch.stack([self._cache[key] for key in keys]).to(input_ids.device)
        return BaseModelOutput(last_hidden_state=pooled.unsqueeze(1).expand(-1, input_ids.shape[1], -1))


def use_cached_text_tower(
    model: nn.Module, tokenizer, captions: list[str], max_length: int, batch_size: int = 64
) -> CachedTextTower:
    """Swap `model.text_model` for a cache filled with every caption's embedding (tokenised as the collator does)."""
    cached = CachedTextTower(model.text_model)
    for start in range(0, len(captions), batch_size):
        text = tokenizer(
            captions[start : start + batch_size],
            padding=True,
            truncation=True,
            max_length=max_length,
            return_tensors="pt",
        )
        cached(text["input_ids"], text["attention_mask"])
    model.text_model = cached
    return cached


def restore_text_tower(model: nn.Module) -> None:
    if isinstance(model.text_model, CachedTextTower):
        model.text_model = model.text_model.tower
