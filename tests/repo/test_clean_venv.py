"""tests/repo/clean_venv_check.py, run as a user would meet ESI: the wheel in a clean venv (base dependencies only,
no network), a LoRA adapter from `esi-finetune`, and a fresh process importing only torch, numpy, transformers
and peft. Every item the script checks must be reported, and pass."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO_ROOT

ITEMS = {"features", "attention", "outputs", "bf16", "pipeline", "adapter"}


@pytest.mark.slow
def test_clean_venv_check_passes_every_item(tmp_path: Path):
    result = subprocess.run(
        [sys.executable, "-m", "tests.repo.clean_venv_check", str(tmp_path / "work")],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=1500,
    )  # fmt: skip
    checks = {
        line.split(" ", 2)[1]: json.loads(line.split(" ", 2)[2])
        for line in result.stdout.splitlines()
        if line.startswith("CHECK ")
    }
    assert set(checks) == ITEMS, (checks, result.stderr[-4000:])
    failed = {name: check for name, check in checks.items() if not check["ok"]}
    assert not failed and result.returncode == 0, (failed, result.stderr[-4000:])
    assert checks["bf16"]["min_cosine"] >= 0.999 and checks["attention"]["max_abs_difference"] <= 1e-5
    assert not Path(checks["adapter"]["base_model_name_or_path"]).is_absolute()
