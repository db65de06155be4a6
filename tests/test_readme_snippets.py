"""Every python block of the README that uses a model runs as written, from the repository root, against a tiny
saved model put where the snippets expect `out/run/model`."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import save_tiny_esi

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
BLOCKS = [b for b in re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S) if "out/run/model" in b]


def test_the_part_has_snippets():
    assert len(BLOCKS) >= 4 and all("out/run/model" in block for block in BLOCKS)


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_esi(tmp_path_factory.mktemp("readme") / "model")


@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_snippet_runs(index: int, tiny_folder: Path, tmp_path: Path):
    code = BLOCKS[index].replace("out/run/model", str(tiny_folder))
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules"), "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, f"snippet {index}:\n{code}\n{result.stderr[-3000:]}"
