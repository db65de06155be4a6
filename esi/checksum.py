"""The identity of a file (model weights, packed inputs): its sha256, read in blocks."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def state_dict_sha256(state: Mapping[str, torch.Tensor]) -> str:
    """sha256 over a state dict's names and float32 values, in name order: equal weights, equal digest."""
    digest = hashlib.sha256()
    for name in sorted(state):
        digest.update(name.encode())
        digest.update(state[name].detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def weights_sha256(model_dir: str | Path) -> str:
    """sha256 of the folder's `model.safetensors`: the identity result files name their model by."""
    path = Path(model_dir) / "model.safetensors"
    if not path.exists():
        raise FileNotFoundError(f"{model_dir} has no model.safetensors to identify the model by")
    return sha256_file(path)
