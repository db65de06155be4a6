"""The wheel, installed (not editable) into a fresh virtual environment, works from a folder outside the repository.

Dependencies come from the project's own environment through a path entry, so the test needs no network and
exercises exactly what the wheel ships: its packages, package data (statement table, knowledge base, card
templates, metrics) and console scripts.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
ENTRY_POINTS = (
    "esi-prepare",
    "esi-prepare-source",
    "esi-cqa",
    "esi-train",
    "esi-finetune",
    "esi-publish",
    "esi-app",
    "esi-demo",
)
SAMPLE = REPO_ROOT / "data" / "ptbxl_sample"


def _run(args: list, cwd: Path, timeout: int = 600) -> str:
    result = subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{args[0]} failed:\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}"
    return result.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """bin/ of a fresh venv with the wheel installed."""
    work = tmp_path_factory.mktemp("wheel")
    source = work / "src"
    tracked = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    for name in tracked:  # the working tree as it is, without build outputs or venvs
        if (REPO_ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO_ROOT / name, source / name)
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", work / "dist", source], work)
    (wheel,) = (work / "dist").glob("esi_ecg-*.whl")

    env_dir = work / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    site = Path(sysconfig.get_paths(vars={"base": str(env_dir), "platbase": str(env_dir)})["purelib"])
    # A plain path line: the project's dependencies, but not its editable-install hook (.pth files there are
    # not processed from a path line).
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    python = env_dir / "bin" / "python"
    _run([sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--ignore-installed", wheel], work)
    return env_dir / "bin"


@pytest.mark.slow
def test_wheel_installs_one_namespace_and_every_entry_point_answers(installed, tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    probe = (
        "import importlib.util, json, esi, modeling_esi;"
        "print(json.dumps({'esi': esi.__file__, 'modeling_esi': modeling_esi.__file__,"
        "'leaked': [m for m in ('train', 'finetune', 'cqa_generate', 'app', 'cqa', 'training', 'evaluation',"
        "'benchmarks', 'model_cards', 'metrics', 'dataset_scripts') if importlib.util.find_spec(m)]}))"
    )
    seen = __import__("json").loads(_run([installed / "python", "-c", probe], outside).strip().splitlines()[-1])
    assert str(installed.parent) in seen["esi"] and str(installed.parent) in seen["modeling_esi"], seen
    assert seen["leaked"] == []
    for command in ENTRY_POINTS:
        assert "usage" in _run([installed / command, "--help"], outside).lower(), command


@pytest.mark.slow
def test_wheel_prepares_and_captions_from_outside_the_repository(installed, tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    _run([installed / "esi-prepare", "--ptbxl-dir", SAMPLE, "--output-dir", "prepared", "--limit", "40"], outside)
    _run(
        [installed / "esi-cqa", "--dataset", "prepared", "--output-dir", "captions", "--splits", "test",
         "--num-samples", "2", "--num-workers", "1", "--encoder-path", "none"],
        outside,
    )  # fmt: skip
    card = (outside / "captions" / "README.md").read_text()
    assert "CC BY 4.0" in card or "Creative Commons" in (outside / "captions" / "LICENSE.txt").read_text()
    assert len(list((outside / "captions" / "data").glob("test-*.parquet"))) == 1
