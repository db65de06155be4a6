"""train.py end to end: multi-process training, kill-and-resume, and refusal of bad input."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import datasets
import pytest
import torch
from safetensors.torch import load_file

from esi.data.torch_dataset import join_captions
from esi.train import pretrain as train
from esi.train.retrieval_eval import retrieval_recall
from tests.conftest import REPO_ROOT, tiny_train_args


def run_train(args: list[str], launcher: list[str] | None = None, **popen) -> subprocess.Popen:
    command = (launcher or [sys.executable]) + [str(REPO_ROOT / "train.py"), *args]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        command, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen
    )


def finish(process: subprocess.Popen, timeout: float = 600) -> str:
    output, _ = process.communicate(timeout=timeout)
    assert process.returncode == 0, output[-4000:]
    return output


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


@pytest.mark.slow
def test_two_cpu_processes_train_and_save_a_loadable_model(prepared_sample, sample_captions, tiny_text_model, tmp_path):
    # On a machine without CUDA, train.py turns `--multi_gpu` processes into gloo CPU processes.
    launcher = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
    ]
    args = tiny_train_args(prepared_sample, sample_captions, tiny_text_model, tmp_path, "--max-steps", "3")
    finish(run_train(args, launcher))

    summary = json.loads((tmp_path / "model" / "training_summary.json").read_text())
    assert summary["num_processes"] == 2
    assert summary["steps"] == 3
    assert all(0.0 <= v <= 1.0 for v in summary["validation"].values())
    from transformers import AutoModel

    model = AutoModel.from_pretrained(tmp_path / "model", trust_remote_code=True)
    assert type(model).__name__ == "EsiModel"
    assert (tmp_path / "model" / "README.md").read_text().count("not a medical device") == 1


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_weights(prepared_sample, sample_captions, tiny_text_model, tmp_path):
    common = ("--max-steps", "6", "--checkpointing-steps", "2", "--checkpoints-total-limit", "3")
    straight = tmp_path / "straight"
    finish(run_train(tiny_train_args(prepared_sample, sample_captions, tiny_text_model, straight, *common)))

    resumed = tmp_path / "resumed"
    args = tiny_train_args(prepared_sample, sample_captions, tiny_text_model, resumed, *common)
    process = run_train(args, start_new_session=True)
    deadline = time.monotonic() + 300
    while not (resumed / "checkpoints" / "step_2").is_dir():
        assert process.poll() is None, "run ended before it could be killed"
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert not (resumed / "model").exists()

    output = finish(run_train(args + ["--resume-from-checkpoint", "latest"]))
    assert "resumed from" in output
    expected, actual = weights(straight / "model"), weights(resumed / "model")
    assert expected.keys() == actual.keys()
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], rtol=0, atol=1e-6, msg=name)


def test_mismatched_captions_are_refused(prepared_sample, tmp_path):
    signals = datasets.load_from_disk(str(prepared_sample))["train"]
    ids = signals["ecg_id"]
    half = datasets.Dataset.from_dict({"ecg_id": ids[: len(ids) // 2], "caption": ["text"] * (len(ids) // 2)})
    with pytest.raises(ValueError, match=rf"{len(ids) - len(ids) // 2} of {len(ids)} ECGs have no caption"):
        join_captions(signals, half, "train")
    other = datasets.Dataset.from_dict({"ecg_id": [-1, -2], "caption": ["a", "b"]})
    with pytest.raises(ValueError, match="no ecg_id in common"):
        join_captions(signals, other, "train")
    no_column = datasets.Dataset.from_dict({"ecg_id": ids, "text": ["a"] * len(ids)})
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['caption'\]"):
        join_captions(signals, no_column, "train")
    with pytest.raises(ValueError, match="is empty"):
        join_captions(signals.select([]), half, "train")


def test_captions_without_a_caption_column_stop_train_py(prepared_sample, tiny_text_model, tmp_path):
    bad = tmp_path / "captions"
    datasets.DatasetDict({"train": datasets.Dataset.from_dict({"ecg_id": [1], "text": ["x"]})}).save_to_disk(str(bad))
    with pytest.raises(ValueError, match="caption"):
        train.main(tiny_train_args(prepared_sample, bad, tiny_text_model, tmp_path / "run", "--max-steps", "1"))


def test_diverging_loss_stops_with_step_and_batch_ids(prepared_sample, sample_captions, tiny_text_model, tmp_path):
    args = tiny_train_args(
        prepared_sample,
        sample_captions,
        tiny_text_model,
        tmp_path,
        "--max-steps",
        "20",
        "--learning-rate",
        "1e30",
        "--warmup-steps",
        "0",
        "--max-grad-norm",
        "0",
    )
    with pytest.raises(train.NonFiniteLossError, match=r"at step \d+ .*batch ecg_ids \[\d+"):
        train.main(args)
    assert not (tmp_path / "model").exists()


def _limit_file_size() -> None:
    # Any write past 3 MB fails with EFBIG, as a full disk or quota would (Python ignores SIGXFSZ).
    resource.setrlimit(resource.RLIMIT_FSIZE, (3 * 2**20, 3 * 2**20))


@pytest.mark.slow
def test_failed_checkpoint_write_keeps_the_previous_one(prepared_sample, sample_captions, tiny_text_model, tmp_path):
    first = tiny_train_args(
        prepared_sample,
        sample_captions,
        tiny_text_model,
        tmp_path,
        "--max-steps",
        "2",
        "--checkpointing-steps",
        "2",
        "--eval-split",
        "none",
    )
    finish(run_train(first))
    checkpoint = tmp_path / "checkpoints" / "step_2"
    before = {p.name: p.stat().st_size for p in checkpoint.iterdir()}
    assert max(before.values()) > 3 * 2**20, "the test needs a checkpoint file larger than the size limit"

    more = [a if a != "2" or i != first.index("--max-steps") + 1 else "4" for i, a in enumerate(first)]
    process = run_train(more + ["--resume-from-checkpoint", "latest"], preexec_fn=_limit_file_size)
    output, _ = process.communicate(timeout=600)
    assert process.returncode != 0
    assert "writing the checkpoint for step 4 failed" in output and "step_2 is intact" in output, output[-3000:]
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step_2"]
    assert {p.name: p.stat().st_size for p in checkpoint.iterdir()} == before

    finish(run_train(more + ["--resume-from-checkpoint", "latest"]))
    assert (tmp_path / "model" / "model.safetensors").exists()


def test_retrieval_recall_is_pessimistic_about_ties():
    perfect = torch.eye(12)
    assert retrieval_recall(perfect, perfect)["ecg_to_text_recall@1"] == 1.0
    collapsed = torch.ones(12, 4)
    metrics = retrieval_recall(collapsed, collapsed, ks=(1, 5, 10))
    assert metrics["ecg_to_text_recall@1"] == 0.0 and metrics["text_to_ecg_recall@10"] == 0.0
    shifted = torch.roll(perfect, 1, dims=0)  # every ECG's best match is its neighbour's text
    assert retrieval_recall(perfect, shifted, ks=(1, 2))["ecg_to_text_recall@1"] == 0.0
