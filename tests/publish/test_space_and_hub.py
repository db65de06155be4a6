"""The repository as a Hugging Face Space, and model ids that name a Hub repo rather than a folder."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

from tests.helpers import REPO_ROOT


def test_readme_front_matter_makes_a_gradio_space_whose_app_file_serves_demo():
    meta = yaml.safe_load((REPO_ROOT / "README.md").read_text().split("---\n")[1])
    assert meta["sdk"] == "gradio" and meta["license"] == "apache-2.0"
    app = REPO_ROOT / meta["app_file"]
    tree = ast.parse(app.read_text())
    assert any(isinstance(n, ast.Assign) and any(getattr(t, "id", "") == "demo" for t in n.targets) for n in tree.body)
    (gradio_spec,) = re.findall(r'^app = \[.*"(gradio[^"]*)"', (REPO_ROOT / "pyproject.toml").read_text(), re.M)
    major = int(str(meta["sdk_version"]).split(".")[0])
    assert f">={major}" in gradio_spec or f"<{major + 1}" in gradio_spec, (meta["sdk_version"], gradio_spec)
    requirements = [
        line for line in (REPO_ROOT / "requirements.txt").read_text().splitlines() if line and not line.startswith("#")
    ]
    assert requirements == [".[app]"]


def test_a_hub_repo_id_resolves_to_its_cached_snapshot_offline(tmp_path):
    # The layout huggingface_hub keeps in its cache; offline, snapshot_download must serve it from there.
    repo = tmp_path / "hub" / "models--someone--esi-tiny"
    snapshot = repo / "snapshots" / "0123456789abcdef0123456789abcdef01234567"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(snapshot.name)
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1"}
    code = (
        "from esi.hub import resolve_model_dir;"
        f"print(resolve_model_dir('someone/esi-tiny@{snapshot.name}'));"
        "print(resolve_model_dir('outputs/demo/pretraining/model'))"
    )
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    resolved, local = result.stdout.split()
    assert Path(resolved) == snapshot and (Path(resolved) / "config.json").is_file()
    assert local == "outputs/demo/pretraining/model"  # a relative path stays a path, even if it does not exist
