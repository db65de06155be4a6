"""Pretraining reads the prepared corpus row by row from the memory-mapped Arrow files, each process its own
part: a real 2-process gloo run of train.py's data path, and the in-memory option it is measured against
(benchmarks/bench_streaming.py measures throughput and memory)."""

from __future__ import annotations

import json
import os
import subprocess

import datasets
import pytest
from transformers import AutoTokenizer

from esi.data.torch_dataset import is_memory_mapped
from esi.train.arguments import parse_args
from esi.train.data import build_data
from modeling_esi import EsiFeatureExtractor
from tests.helpers import REPO_ROOT, TWO_PROCESS_LAUNCHER, tiny_train_args


@pytest.mark.parametrize("keep_in_memory", [False, True])
def test_signals_are_memory_mapped_unless_kept_in_memory(
    prepared_sample, sample_captions, tiny_text_model, tmp_path, keep_in_memory
):
    extra = ["--keep-in-memory"] if keep_in_memory else []
    data_args, _, optim_args, _ = parse_args(
        tiny_train_args(prepared_sample, sample_captions, tiny_text_model, tmp_path, *extra)
    )
    data = build_data(data_args, optim_args, EsiFeatureExtractor(), AutoTokenizer.from_pretrained(tiny_text_model))
    assert is_memory_mapped(data.train_set.signals) is not keep_in_memory
    assert is_memory_mapped(data.eval_loader.dataset.ecgs.signals) is not keep_in_memory


@pytest.mark.slow
def test_two_gloo_processes_read_disjoint_parts_covering_each_epoch(
    prepared_sample, sample_captions, tiny_text_model, tmp_path
):
    args = tiny_train_args(prepared_sample, sample_captions, tiny_text_model, tmp_path / "run")
    command = [
        *TWO_PROCESS_LAUNCHER,
        str(REPO_ROOT / "tests" / "train" / "read_shards_worker.py"),
        str(tmp_path),
        "2",
        *args,
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    reports = [json.loads((tmp_path / f"process-{k}.json").read_text()) for k in range(2)]
    assert [r["process_index"] for r in reports] == [0, 1]
    assert all(r["num_processes"] == 2 and r["memory_mapped"] for r in reports)
    assert all("gloo" in r["backend"] or r["backend"] == "DistributedType.MULTI_CPU" for r in reports)

    # 240 training ECGs, batch 8 per process: 15 batches each, so the two parts cover the whole epoch.
    train_ids = set(datasets.load_from_disk(str(prepared_sample))["train"]["ecg_id"])
    assert len(train_ids) == 240
    for epoch in range(2):
        first, second = (r["epochs"][epoch] for r in reports)
        assert len(first) == len(set(first)) == len(second) == len(set(second)) == 120
        assert not set(first) & set(second), f"epoch {epoch}: both processes read some records"
        assert set(first) | set(second) == train_ids, f"epoch {epoch}: records no process read"
    assert reports[0]["epochs"][0] != reports[0]["epochs"][1]  # reshuffled each epoch
