"""Every python block of the README and of docs/ that uses a model runs as written, from the repository root: blocks
naming the released encoder (`model_cards/esi-ecg-encoder`) against a tiny exported encoder, blocks naming an
`esi-train` output (`out/run/model`) against a tiny saved full model."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from esi.constants import RELEASED_ENCODER_DIR
from esi.release import export_encoder
from tests.helpers import REPO_ROOT, save_tiny_esi

FULL_MODEL = "out/run/model"
ENCODER = str(RELEASED_ENCODER_DIR)


def _blocks(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.S)


README_BLOCKS = [b for b in _blocks(REPO_ROOT / "README.md") if ENCODER in b]
DOCS_BLOCKS = [b for page in sorted((REPO_ROOT / "docs").glob("*.md")) for b in _blocks(page) if FULL_MODEL in b]
BLOCKS = README_BLOCKS + DOCS_BLOCKS


def test_the_readme_shows_embeddings_classification_and_lora_on_the_released_encoder():
    assert len(README_BLOCKS) == 3
    assert "ecg_embeds" in README_BLOCKS[0] and "freeze_encoder" in README_BLOCKS[1]
    assert "get_peft_model" in README_BLOCKS[2] and len(DOCS_BLOCKS) >= 4


@pytest.fixture(scope="module")
def tiny_folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    full = save_tiny_esi(tmp_path_factory.mktemp("readme") / "model")
    return {FULL_MODEL: full, ENCODER: export_encoder(full, tmp_path_factory.mktemp("readme") / "encoder")}


@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_snippet_runs(index: int, tiny_folders: dict[str, Path], tmp_path: Path):
    code = BLOCKS[index]
    for name, folder in tiny_folders.items():
        code = code.replace(name, str(folder))
    env = {
        **os.environ,
        "HF_MODULES_CACHE": str(tmp_path / "modules"),
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": str(REPO_ROOT),
    }
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, f"snippet {index}:\n{code}\n{result.stderr[-3000:]}"
