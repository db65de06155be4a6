"""The wheel, installed alone into a fresh virtual environment (no dev venv, no repository on the path), works from a
folder outside the repository: the base install loads a checkpoint and fine-tunes it with LoRA, every command
answers `--help`, a command whose extra is missing names it, and with the [data] extra a preparation job runs.

torch comes from the local CPU wheel (`torch==2.13.0`), installed once per session with transformers in a clean
venv that this one reads through a path entry; the other requirements come from the package indexes pip is
configured with (or its cache).
"""

from __future__ import annotations

import json
import os
import subprocess
import sysconfig
import textwrap
import venv
from pathlib import Path

import pytest
import tomllib

from benchmarks.bench_install import build_wheel
from tests.helpers import REPO_ROOT, save_tiny_esi

SCRIPTS = sorted(tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["scripts"])
SAMPLE = REPO_ROOT / "data" / "ptbxl_sample"
BASE_INSTALL_USER = textwrap.dedent(
    """
    import importlib.metadata, json, sys
    import torch
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import AutoModel, AutoModelForSequenceClassification
    import esi, modeling_esi
    from modeling_esi import lora_target_modules

    folder = sys.argv[1]
    model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
    base = AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True, num_labels=5)
    lora = get_peft_model(base, LoraConfig(task_type=TaskType.SEQ_CLS, r=4, target_modules=lora_target_modules(base)))
    lora(input_values=torch.randn(2, 12, 1000), labels=torch.tensor([1, 3])).loss.backward()
    files = [str(f) for f in importlib.metadata.distribution("esi-ecg").files]
    print(json.dumps({
        "modules": [esi.__file__, modeling_esi.__file__],
        "embedding": list(model.get_ecg_features(torch.randn(1, 12, 1000)).pooler_output.shape),
        "licence": [f for f in files if f.endswith("LICENSE")],
        "installed": sorted(d.metadata["Name"].lower() for d in importlib.metadata.distributions()),
    }))
    """
)


def _run(args: list, cwd: Path, timeout: int = 900, ok: bool = True) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "VIRTUAL_ENV")}
    result = subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)
    if ok:
        assert result.returncode == 0, f"{args[:3]} failed:\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}"
    return result


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel built from the working tree as it is (tracked and untracked files, no build outputs or venvs)."""
    return build_wheel(tmp_path_factory.mktemp("wheel"))


def _purelib(env_dir: Path) -> Path:
    return Path(sysconfig.get_paths(vars={"base": str(env_dir), "platbase": str(env_dir)})["purelib"])


@pytest.fixture(scope="module")
def installed(wheel: Path, torch_transformers_venv: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """bin/ of a fresh venv holding the wheel with its base requirements only.

    torch and transformers come from the session's clean torch + transformers venv through a path entry (so torch
    is installed once per test session); pip installs everything else the wheel requires into this venv.
    """
    env_dir = tmp_path_factory.mktemp("venv") / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    (_purelib(env_dir) / "torch_transformers.pth").write_text(f"{_purelib(torch_transformers_venv)}\n")
    _run([env_dir / "bin" / "python", "-m", "pip", "install", "-q", wheel], env_dir)
    return env_dir / "bin"


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    return folder


@pytest.mark.slow
def test_base_install_loads_a_checkpoint_and_fine_tunes_it_with_lora(installed: Path, outside: Path):
    folder = save_tiny_esi(outside / "model")
    seen = json.loads(_run([installed / "python", "-c", BASE_INSTALL_USER, folder], outside).stdout.splitlines()[-1])
    assert all(str(installed.parent) in path for path in seen["modules"]), seen["modules"]
    assert seen["embedding"] == [1, 32] and seen["licence"], seen
    assert not {"datasets", "gradio", "pandas", "wfdb", "neurokit2", "scikit-learn"} & set(seen["installed"])


@pytest.mark.slow
def test_every_command_answers_help_and_a_missing_extra_is_named(installed: Path, outside: Path):
    for command in SCRIPTS:
        assert "usage" in _run([installed / command, "--help"], outside).stdout.lower(), command
    needs = {
        ("esi-prepare", "--ptbxl-dir", SAMPLE, "--output-dir", "prepared"): "[data]",
        ("esi-cqa", "--dataset", "prepared", "--output-dir", "captions"): "[cqa]",
        ("esi-train", "--signals", "s", "--captions", "c", "--output-dir", "o"): "[train]",
        ("esi-app",): "[app]",
    }
    for args, extra in needs.items():
        result = _run([installed / args[0], *args[1:]], outside, ok=False)
        assert result.returncode != 0 and f"needs the {extra} extra" in result.stderr, (args[0], result.stderr[-500:])
        assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_data_extra_installs_and_prepares_from_outside_the_repository(installed: Path, wheel: Path, outside: Path):
    _run([installed / "python", "-m", "pip", "install", "-q", f"{wheel}[data]"], outside)
    _run([installed / "esi-prepare", "--ptbxl-dir", SAMPLE, "--output-dir", "prepared", "--limit", "40"], outside)
    assert (outside / "prepared" / "dataset_dict.json").is_file()
