"""Preparation streams into committed units: a SIGKILLed run resumes with no record lost or duplicated."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from datasets import load_from_disk

from esi.data.prepare_ptbxl import prepare_ptbxl
from tests.helpers import REPO_ROOT

POOL = REPO_ROOT.parent / "shared" / "ptb-xl-pretrain"
LIMIT = 300
UNIT = 15

pytestmark = pytest.mark.skipif(not POOL.is_dir(), reason="needs ../shared/ptb-xl-pretrain")


def _ids(prepared) -> list[int]:
    return sorted(i for split in prepared.values() for i in split["ecg_id"])


def _expected_ids() -> list[int]:
    return sorted(pd.read_csv(POOL / "ptbxl_database.csv", usecols=["ecg_id"], nrows=LIMIT)["ecg_id"].tolist())


def _start(out: Path, resume: bool = False) -> subprocess.Popen:
    args = [
        sys.executable,
        "-m",
        "esi.data.cli",
        "--ptbxl-dir",
        str(POOL),
        "--output-dir",
        str(out),
        "--limit",
        str(LIMIT),
        "--unit-size",
        str(UNIT),
        "--num-proc",
        "2",
    ] + (["--resume"] if resume else [])
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        args, cwd=REPO_ROOT, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def _kill_after(process: subprocess.Popen, out: Path, units: int, timeout: float = 240) -> int:
    """SIGKILL the run's whole process group once `units` units are committed; returns how many were."""
    deadline = time.monotonic() + timeout
    committed = 0
    while time.monotonic() < deadline and process.poll() is None:
        journal = out / ".prepare" / "journal.jsonl"
        committed = journal.read_text().count("\n") if journal.exists() else 0
        if committed >= units:
            break
        time.sleep(0.05)
    assert process.poll() is None, "the run finished before it could be killed"
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    return committed


@pytest.mark.slow
def test_sigkill_twice_then_resume_loses_and_duplicates_nothing(tmp_path):
    out = tmp_path / "pool"
    first = _kill_after(_start(out), out, units=3)
    assert not (out / "dataset_dict.json").exists()
    second = _kill_after(_start(out, resume=True), out, units=first + 4)
    assert second > first
    finished = _start(out, resume=True)
    assert finished.wait(timeout=300) == 0
    assert not list(out.glob("*/.unit-*.tmp-*"))
    ids = _ids(load_from_disk(str(out)))
    assert ids == _expected_ids()  # sorted equality: none lost, none twice


def test_resume_redoes_a_damaged_unit_and_refuses_other_options(tmp_path):
    out = tmp_path / "pool"
    prepare_ptbxl(POOL, out, num_proc=1, limit=60, unit_size=20)
    damaged = sorted((out / "train").glob("unit-*.arrow"))[0]
    damaged.write_bytes(damaged.read_bytes()[:1000])
    stray = out / "train" / ".unit-00001.arrow.tmp-999"
    stray.write_bytes(b"half written")
    prepared = prepare_ptbxl(POOL, out, num_proc=1, limit=60, unit_size=20, resume=True)
    assert _ids(prepared) == sorted(pd.read_csv(POOL / "ptbxl_database.csv", nrows=60)["ecg_id"].tolist())
    assert not stray.exists()
    with pytest.raises(ValueError, match=r"cannot resume .*: num_rows was 60, now 61; source was "):
        prepare_ptbxl(POOL, out, num_proc=1, limit=61, unit_size=20, resume=True)


def test_shards_partition_the_corpus(tmp_path):
    parts = [
        _ids(prepare_ptbxl(POOL, tmp_path / f"s{k}", num_proc=1, limit=50, unit_size=10, num_shards=3, shard_index=k))
        for k in range(3)
    ]
    assert all(parts) and sum(len(p) for p in parts) == 50
    assert sorted(i for p in parts for i in p) == sorted(pd.read_csv(POOL / "ptbxl_database.csv", nrows=50)["ecg_id"])
