"""train.py end to end: multi-process training, kill-and-resume, and refusal of bad input."""

from __future__ import annotations

import json
import logging
import os
import resource
import shutil
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
from esi.train.checkpoints import CheckpointLoadError
from esi.train.retrieval_eval import retrieval_recall
from tests.helpers import (
    PTBXL_SAMPLE,
    REPO_ROOT,
    TWO_PROCESS_LAUNCHER,
    finetune_in_process,
    pretrain_in_process,
    tiny_train_args,
)


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
    common = ("--max-steps", "4", "--logging-steps", "1", "--warmup-steps", "2")
    args = tiny_train_args(prepared_sample, sample_captions, tiny_text_model, tmp_path, *common)
    finish(run_train(args, TWO_PROCESS_LAUNCHER))
    single = tmp_path / "single"
    finish(run_train(tiny_train_args(prepared_sample, sample_captions, tiny_text_model, single, *common)))

    summary = json.loads((tmp_path / "model" / "training_summary.json").read_text())
    assert summary["num_processes"] == 2
    assert summary["steps"] == 4
    # The schedule follows optimizer steps, not processes x steps (Accelerate's prepared scheduler ran 2x fast).
    one = json.loads((single / "model" / "training_summary.json").read_text())["log_history"]
    assert [h["lr"] for h in summary["log_history"]] == pytest.approx([h["lr"] for h in one], abs=1e-12)
    assert len(one) == 4 and one[-1]["lr"] == 0.0
    assert all(0.0 <= v <= 1.0 for v in summary["validation"].values())
    from transformers import AutoModel

    model = AutoModel.from_pretrained(tmp_path / "model", trust_remote_code=True)
    assert type(model).__name__ == "EsiModel"
    assert (tmp_path / "model" / "README.md").read_text().count("not a medical device") == 1


@pytest.mark.slow
@pytest.mark.parametrize(
    "accumulation,max_steps,every",
    # 240 ECGs / batch 8 = 30 batches per epoch; with 4 micro-batches per step, 30 % 4 = 2: the 8th step of
    # each epoch is short, so step 9 (the kill point) lies 4 batches into the second epoch, not 6.
    [(1, 6, 2), (4, 12, 9)],
)
def test_killed_run_resumes_to_the_same_weights(
    prepared_sample, sample_captions, tiny_text_model, tmp_path, accumulation, max_steps, every
):
    common = (
        "--max-steps", str(max_steps), "--checkpointing-steps", str(every), "--checkpoints-total-limit", "3",
        "--gradient-accumulation-steps", str(accumulation), "--eval-split", "none",
    )  # fmt: skip
    straight = tmp_path / "straight"
    finish(run_train(tiny_train_args(prepared_sample, sample_captions, tiny_text_model, straight, *common)))

    resumed = tmp_path / "resumed"
    args = tiny_train_args(prepared_sample, sample_captions, tiny_text_model, resumed, *common)
    process = run_train(args, start_new_session=True)
    deadline = time.monotonic() + 300
    while not (resumed / "checkpoints" / f"step_{every}").is_dir():
        assert process.poll() is None, "run ended before it could be killed"
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert not (resumed / "model").exists()

    output = finish(run_train(args + ["--resume-from-checkpoint", "latest"]))
    assert "resumed at step" in output
    expected, actual = weights(straight / "model"), weights(resumed / "model")
    assert expected.keys() == actual.keys()
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], rtol=0, atol=1e-6, msg=name)
    # The digests that pair runs survive the kill: the same initial encoder, the same batches in the same order.
    summaries = [json.loads((d / "model" / "training_summary.json").read_text()) for d in (straight, resumed)]
    assert summaries[1]["resumed_from_step"] == every and summaries[0]["resumed_from_step"] == 0
    for key in ("initial_ecg_encoder_sha256", "batch_ecg_ids_sha256"):
        assert summaries[0][key] == summaries[1][key], key


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
        pretrain_in_process(
            tiny_train_args(prepared_sample, bad, tiny_text_model, tmp_path / "run", "--max-steps", "1")
        )


@pytest.mark.slow
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
        pretrain_in_process(args)
    assert not (tmp_path / "model").exists()


@pytest.mark.slow
@pytest.mark.parametrize("failing_file", ["model.safetensors", "optimizer.bin"])
def test_failed_checkpoint_write_keeps_the_previous_one(
    prepared_sample, sample_captions, tiny_text_model, tmp_path, failing_file
):
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
    # A file-size limit fails writes past it with EFBIG, as a full disk or quota would (Python ignores SIGXFSZ).
    # Below the weights' size the weights fail (safetensors' error); between the weights and the optimizer state
    # (written next, by torch.save: a RuntimeError) only the optimizer state fails.
    assert before["optimizer.bin"] > before["model.safetensors"] > 2**20
    limit = (
        before["model.safetensors"] // 2
        if failing_file == "model.safetensors"
        else ((before["model.safetensors"] + before["optimizer.bin"]) // 2)
    )

    def limit_file_size() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    more = [a if a != "2" or i != first.index("--max-steps") + 1 else "4" for i, a in enumerate(first)]
    process = run_train(more + ["--resume-from-checkpoint", "latest"], preexec_fn=limit_file_size)
    output, _ = process.communicate(timeout=600)
    assert process.returncode != 0
    assert "writing the checkpoint for step 4 failed" in output and "step_2 is intact" in output, output[-3000:]
    assert "Free disk space" in output
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step_2"]  # no .partial left
    assert {p.name: p.stat().st_size for p in checkpoint.iterdir()} == before

    finish(run_train(more + ["--resume-from-checkpoint", "latest"]))
    assert (tmp_path / "model" / "model.safetensors").exists()


@pytest.mark.slow
def test_resume_from_an_older_step_and_from_a_damaged_latest(
    prepared_sample, sample_captions, tiny_text_model, tmp_path
):
    common = (
        "--checkpointing-steps", "2", "--checkpoints-total-limit", "3", "--eval-split", "none", "--logging-steps", "1",
    )  # fmt: skip
    args = tiny_train_args(prepared_sample, sample_captions, tiny_text_model, tmp_path, "--max-steps", "6", *common)
    finish(run_train(args))
    first = weights(tmp_path / "model")
    checkpoints = tmp_path / "checkpoints"
    (checkpoints / "step_8.partial").mkdir()  # what a run killed while saving leaves

    # Back to step 2: the later checkpoints are set aside (kept), not collided with (ENOTEMPTY) or lost.
    output = finish(run_train(args + ["--resume-from-checkpoint", str(checkpoints / "step_2")]))
    assert "resumed at step 2" in output and "removing incomplete checkpoint" in output
    abandoned = [d for d in checkpoints.iterdir() if d.name.startswith("abandoned-")]
    assert len(abandoned) == 1 and sorted(p.name for p in abandoned[0].iterdir()) == ["step_4", "step_6"]
    assert sorted(p.name for p in checkpoints.glob("step_*")) == ["step_2", "step_4", "step_6"]
    for name, tensor in weights(tmp_path / "model").items():  # the same trajectory again
        torch.testing.assert_close(tensor, first[name], rtol=0, atol=1e-6, msg=name)

    # A damaged latest checkpoint: named, and the previous one is used instead.
    damaged = checkpoints / "step_6" / "model.safetensors"
    damaged.write_bytes(damaged.read_bytes()[:1000])
    longer = tiny_train_args(prepared_sample, sample_captions, tiny_text_model, tmp_path, "--max-steps", "8", *common)
    output = finish(run_train(longer + ["--resume-from-checkpoint", "latest"]))
    assert "step_6 is damaged" in output and "falling back" in output and "resumed at step 4" in output
    summary = json.loads((tmp_path / "model" / "training_summary.json").read_text())
    # The summary covers the whole run: the steps before the resume come from the checkpoint's training state.
    assert summary["steps"] == 8 and [h["step"] for h in summary["log_history"]] == list(range(1, 9))

    # Asking for a damaged checkpoint by name: a clear error with the way out.
    aside = next(p for p in checkpoints.glob("abandoned-*/step_6") if (p / "model.safetensors").stat().st_size == 1000)
    with pytest.raises(CheckpointLoadError, match=r"step_6.*--resume-from-checkpoint latest"):
        pretrain_in_process(longer + ["--resume-from-checkpoint", str(aside)])


@pytest.mark.slow
def test_pretraining_on_evaluation_records_is_reported_loudly(
    prepared_sample, sample_captions, tiny_text_model, tmp_path, caplog
):
    args = tiny_train_args(
        prepared_sample, sample_captions, tiny_text_model, tmp_path, "--max-steps", "1", "--eval-split", "none",
        "--evaluation-records", str(prepared_sample), "--freeze-text-tower", "--cache-text-embeddings",
    )  # fmt: skip
    with caplog.at_level(logging.INFO, logger="esi.train"):
        model_dir = pretrain_in_process(args)
    messages = "\n".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert "PRETRAINING ON EVALUATION DATA: 240 record(s)" in messages
    assert "cuts off" in messages  # --max-text-length 64 cuts most caption tokens
    summary = json.loads((model_dir / "training_summary.json").read_text())
    assert summary["evaluation_overlap"]["shared_records"] == summary["train_ecgs"] == 240
    assert summary["caption_truncation"]["truncated_token_share"] > 0.05 and summary["text_cache_seconds"] >= 0
    card = (model_dir / "README.md").read_text()
    assert "WARNING: pretrained on evaluation data" in card and "caption tokens were cut off" in card


@pytest.mark.slow
def test_same_named_caption_folders_do_not_break_train_and_finetune(
    prepared_sample, sample_captions, tiny_text_model, tiny_esi, tmp_path
):
    """Captions for a large set in A/cap, then for a 200-record set in B/cap: B/cap must train and evaluate."""
    from esi.cqa.run import generate_captions
    from esi.data.prepare_ptbxl import prepare_ptbxl
    from esi.data.torch_dataset import load_dataset_folder

    shutil.copytree(sample_captions, tmp_path / "A" / "cap")
    assert sum(len(s) for s in load_dataset_folder(tmp_path / "A" / "cap").values()) == 300
    small = prepare_ptbxl(PTBXL_SAMPLE, tmp_path / "B" / "prepared", sampling_rate=100, num_proc=2, limit=200)
    generate_captions(tmp_path / "B" / "prepared", tmp_path / "B" / "cap", backend="template")

    args = tiny_train_args(
        tmp_path / "B" / "prepared", tmp_path / "B" / "cap", tiny_text_model, tmp_path / "run", "--max-steps", "1"
    )
    summary = json.loads((pretrain_in_process(args) / "training_summary.json").read_text())
    assert summary["train_ecgs"] == len(small["train"]) < 240
    result = finetune_in_process([
        "--model", str(tiny_esi), "--dataset", str(tmp_path / "B" / "prepared"), "--output-dir", str(tmp_path / "ft"),
        "--method", "captioning", "--captions", str(tmp_path / "B" / "cap"), "--max-records", "2",
        "--max-new-tokens", "4",
    ])  # fmt: skip
    assert result["records"] == 2


def test_retrieval_recall_is_pessimistic_about_ties():
    perfect = torch.eye(12)
    assert retrieval_recall(perfect, perfect)["ecg_to_text_recall@1"] == 1.0
    collapsed = torch.ones(12, 4)
    metrics = retrieval_recall(collapsed, collapsed, ks=(1, 5, 10))
    assert metrics["ecg_to_text_recall@1"] == 0.0 and metrics["text_to_ecg_recall@10"] == 0.0
    shifted = torch.roll(perfect, 1, dims=0)  # every ECG's best match is its neighbour's text
    assert retrieval_recall(perfect, shifted, ks=(1, 2))["ecg_to_text_recall@1"] == 0.0
