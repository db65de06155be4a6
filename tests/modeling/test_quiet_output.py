"""Expected differences are not reported as problems: starting the text tower from all-MiniLM-L6-v2 leaves its
pooler unused (ESI mean-pools), and that must not print transformers' load-report table."""

import os
import subprocess
import sys

from tests.helpers import REPO_ROOT

LOAD_TEXT_TOWER = """
from esi.text_encoder import default_text_model_path
from modeling_esi import EsiConfig, EsiModel
config = EsiConfig(ecg_config={"depths": [1, 1], "hidden_sizes": [16, 32]})
model = EsiModel.from_text_pretrained(str(default_text_model_path()), config)
print("loaded", sum(p.numel() for p in model.text_model.parameters()))
"""


def test_starting_from_minilm_prints_no_load_report():
    result = subprocess.run(
        [sys.executable, "-c", LOAD_TEXT_TOWER],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    output = result.stdout + result.stderr
    assert "loaded" in output and "LOAD REPORT" not in output and "UNEXPECTED" not in output, output[-2000:]
