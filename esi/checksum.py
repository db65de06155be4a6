"""The identity of a file (model weights, packed inputs): its sha256, read in blocks."""

from __future__ import annotations

import hashlib
from pathlib import Path


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def weights_sha256(model_dir: str | Path) -> str:
    """sha256 of the folder's `model.safetensors`: the identity result files name their model by."""
    path = Path(model_dir) / "model.safetensors"
    if not path.exists():
        raise FileNotFoundError(f"{model_dir} has no model.safetensors to identify the model by")
    return sha256_file(path)
