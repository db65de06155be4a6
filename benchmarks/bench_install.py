"""What a model user's install costs, and how fast every command answers `--help` there.

    python -m benchmarks.bench_install      # -> benchmarks/results/install.json, benchmarks/reports/install.md

Builds the wheel from the working tree, creates a fresh virtual environment, installs torch (the local CPU wheel,
`torch==2.13.0`) and then the wheel with its base requirements only, timing each and measuring the environment's
size after each. Then every console command's `--help` is timed there (median of 3 runs; a fresh process each)
and checked not to import torch. The machine's load average is recorded before and after: on a shared machine
the wall times move with it, the package sizes do not.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import venv
from pathlib import Path

import tomllib

from benchmarks.provenance import git_commit, utc_timestamp

REPO = Path(__file__).resolve().parent.parent
RESULT = REPO / "benchmarks" / "results" / "install.json"
REPORT = REPO / "benchmarks" / "reports" / "install.md"
TORCH = "torch==2.13.0"
HELP_REPEATS = 3
# Runs a console script's `--help` in this process, then says whether torch was imported.
TORCH_PROBE = """
import runpy, sys
script = sys.argv[1]
sys.argv = [script, "--help"]
try:
    runpy.run_path(script, run_name="__main__")
except SystemExit:
    pass
print("torch" in sys.modules)
"""


def _size_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


def _timed(args: list, cwd: Path) -> float:
    started = time.perf_counter()
    subprocess.run([str(a) for a in args], cwd=cwd, check=True, capture_output=True, env=_clean_env())
    return time.perf_counter() - started


def _clean_env() -> dict[str, str]:
    return {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "VIRTUAL_ENV")}


def build_wheel(work: Path) -> Path:
    source = work / "src"
    tracked = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split()
    for name in tracked:
        if (REPO / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, source / name)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", work / "dist", source],
        check=True,
        capture_output=True,
    )
    (wheel,) = (work / "dist").glob("esi_ecg-*.whl")
    return wheel


def help_timings(bin_dir: Path, scripts: list[str], cwd: Path) -> dict[str, dict]:
    """Per command: median wall seconds of `COMMAND --help` and whether the process imported torch."""
    timings = {}
    for command in scripts:
        seconds = [_timed([bin_dir / command, "--help"], cwd) for _ in range(HELP_REPEATS)]
        imported = (
            subprocess.run(
                [bin_dir / "python", "-c", TORCH_PROBE, bin_dir / command],
                cwd=cwd,
                capture_output=True,
                text=True,
                env=_clean_env(),
            )
            .stdout.strip()
            .splitlines()[-1]
        )
        timings[command] = {"median_s": round(statistics.median(seconds), 3), "imports_torch": imported == "True"}
    return timings


def run(work: Path) -> dict:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    load_before = os.getloadavg()[0]
    wheel = build_wheel(work)
    env_dir = work / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    pip = [env_dir / "bin" / "python", "-m", "pip", "install", "-q"]
    empty = _size_bytes(env_dir)
    torch_s = _timed([*pip, TORCH], work)
    with_torch = _size_bytes(env_dir)
    wheel_s = _timed([*pip, wheel], work)
    installed = _size_bytes(env_dir)
    return {
        "command": "python -m benchmarks.bench_install",
        "git_commit": git_commit(),
        "date": utc_timestamp(),
        "seed": None,
        "load_average_before": load_before,
        "direct_dependencies": project["dependencies"],
        "wheel_bytes": wheel.stat().st_size,
        "install_torch_s": round(torch_s, 1),
        "install_wheel_with_base_requirements_s": round(wheel_s, 1),
        "venv_bytes": {"empty": empty, "with_torch": with_torch, "with_wheel": installed},
        "help": help_timings(env_dir / "bin", sorted(project["scripts"]), work),
        "load_average_after": os.getloadavg()[0],
    }


def report(result: dict) -> str:
    mib = 1024 * 1024
    sizes = result["venv_bytes"]
    rows = "\n".join(
        f"| `{name} --help` | {t['median_s']:.2f} s | {'yes' if t['imports_torch'] else 'no'} |"
        for name, t in result["help"].items()
    )
    load = f"load average {result['load_average_before']:.1f} before, {result['load_average_after']:.1f} after"
    wheel_row = (
        f"| `pip install esi_ecg-*.whl` (base requirements) | {result['install_wheel_with_base_requirements_s']:.1f} s "
        f"| {sizes['with_wheel'] / mib:.0f} MiB (+{(sizes['with_wheel'] - sizes['with_torch']) / mib:.0f} MiB) |"
    )
    return f"""# Install cost and `--help` speed

Generated by `{result["command"]}` from `benchmarks/results/install.json` ({load}; commit and date in the
result file).

Base install: {len(result["direct_dependencies"])} direct dependencies ({", ".join(result["direct_dependencies"])}).

| step | wall time | environment size after |
| --- | --- | --- |
| fresh venv | | {sizes["empty"] / mib:.0f} MiB |
| `pip install {TORCH}` (local CPU wheel) | {result["install_torch_s"]:.1f} s | {sizes["with_torch"] / mib:.0f} MiB |
{wheel_row}

The wheel itself: {result["wheel_bytes"] / 1024:.0f} KiB. Times depend on the package cache and the machine's load.

| command | median of {HELP_REPEATS} | imports torch |
| --- | --- | --- |
{rows}
"""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-install-") as work:
        result = run(Path(work))
    RESULT.write_text(json.dumps(result, indent=2) + "\n")
    REPORT.write_text(report(result))
    print(REPORT.read_text())


if __name__ == "__main__":
    main()
