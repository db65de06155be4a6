"""Shared fixtures: the embedded PTB-XL sample and its prepared DatasetDict (built once per session)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
PTBXL_SAMPLE = REPO_ROOT / "data" / "ptbxl_sample"


@pytest.fixture(scope="session")
def ptbxl_sample_dir() -> Path:
    """The 300-record PTB-XL sample shipped in the repository (read-only: copy before corrupting)."""
    return PTBXL_SAMPLE


@pytest.fixture(scope="session")
def prepared_sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`save_to_disk` folder of the sample prepared at 100 Hz; load it with `datasets.load_from_disk`."""
    from esi.data.prepare_ptbxl import prepare_ptbxl

    output_dir = tmp_path_factory.mktemp("prepared") / "ptbxl_sample_100hz"
    prepare_ptbxl(PTBXL_SAMPLE, output_dir, sampling_rate=100, num_proc=2)
    return output_dir


@pytest.fixture(scope="session")
def sample_captions(prepared_sample: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """CQA captions (template backend) for every record of `prepared_sample`; a Parquet folder."""
    from esi.cqa.run import generate_captions

    output_dir = tmp_path_factory.mktemp("captions") / "ptbxl_sample_captions"
    generate_captions(prepared_sample, output_dir, backend="template")
    return output_dir


@pytest.fixture(scope="session")
def tiny_text_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer, 64-wide BERT with the real all-MiniLM-L6-v2 WordPiece tokenizer: a fast text tower."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    from esi.text_encoder import default_text_model_path

    folder = tmp_path_factory.mktemp("tiny_bert")
    config = BertConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128)
    BertModel(config, add_pooling_layer=False).save_pretrained(folder)
    AutoTokenizer.from_pretrained(default_text_model_path()).save_pretrained(folder)
    return folder


# `accelerate launch` of two processes; on a machine without CUDA, train.py turns them into gloo CPU processes.
TWO_PROCESS_LAUNCHER = [
    sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
    "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
]  # fmt: skip

TINY_TOWER = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64}


def save_tiny_esi(folder: Path, classifier_labels: list[str] | None = None) -> Path:
    """Save a tiny randomly initialised EsiModel as train.py saves one (weights, preprocessor, tokenizer);
    with `classifier_labels`, also an `EsiForEcgClassification` head in `folder/classifier`."""
    import torch
    from transformers import AutoTokenizer, BertConfig

    from esi.text_encoder import default_text_model_path
    from modeling_esi import EsiConfig, EsiFeatureExtractor, EsiForEcgClassification, EsiModel, EsiProcessor

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(default_text_model_path())
    config = EsiConfig(
        ecg_config={"depths": [1, 1], "hidden_sizes": [16, 32]},
        text_config=BertConfig(vocab_size=tokenizer.vocab_size, **TINY_TOWER).to_dict(),
        decoder_config={**TINY_TOWER, "max_position_embeddings": 64},
        projection_dim=32,
    )
    EsiModel(config).save_pretrained(folder)
    EsiFeatureExtractor().save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    EsiProcessor(EsiFeatureExtractor(), tokenizer, max_text_length=64).save_pretrained(folder)
    if classifier_labels:
        # A config of its own: EsiModel resolved `config`'s attention to SDPA, which the classifier (no attention)
        # does not declare.
        EsiForEcgClassification.from_pretrained(
            folder,
            num_labels=len(classifier_labels),
            id2label=dict(enumerate(classifier_labels)),
            label2id={label: i for i, label in enumerate(classifier_labels)},
            problem_type="multi_label_classification",
        ).save_pretrained(folder / "classifier")
    return folder


@pytest.fixture(scope="session")
def torch_transformers_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with nothing but torch (the local CPU wheel) and transformers: what a user who only loads the
    model has. Built once per session (installing torch is the slow part); tests must not install into it."""
    import subprocess
    import venv

    env_dir = tmp_path_factory.mktemp("torch-transformers") / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    subprocess.run(
        [env_dir / "bin" / "python", "-m", "pip", "install", "-q", "torch==2.13.0", "transformers>=5.0,<6"],
        check=True,
        capture_output=True,
        timeout=1200,
    )
    return env_dir


@pytest.fixture(scope="session")
def tiny_esi(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny randomly initialised ESI model folder (see `save_tiny_esi`)."""
    return save_tiny_esi(tmp_path_factory.mktemp("tiny_esi") / "model")


def tiny_train_args(signals: Path, captions: Path, text_model: Path, output_dir: Path, *extra: str) -> list[str]:
    """train.py arguments for a seconds-long run with tiny towers (used by several test modules)."""
    return [
        "--signals", str(signals), "--captions", str(captions), "--output-dir", str(output_dir),
        "--text-model", str(text_model), "--random-text-tower", "--config", "atto",
        "--decoder-layers", "1", "--decoder-width", "64", "--projection-dim", "32",
        "--per-device-batch-size", "8", "--max-text-length", "64", "--warmup-steps", "1",
        "--report-to", "none", "--seed", "7", *extra,
    ]  # fmt: skip


@pytest.fixture(scope="session")
def tiny_pretrained_model(
    prepared_sample: Path, sample_captions: Path, tiny_text_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A Hub-ready ESI folder from a 4-step pretraining run with tiny towers."""
    output_dir = tmp_path_factory.mktemp("tiny_run")
    args = tiny_train_args(prepared_sample, sample_captions, tiny_text_model, output_dir, "--max-steps", "4")
    return pretrain_in_process(args)


def pretrain_in_process(argv: list[str]) -> Path:
    """`train.py ARGV` in this process; returns the saved model folder."""
    from esi.train.arguments import parse_args
    from esi.train.pretrain import pretrain

    return pretrain(*parse_args(argv))


def finetune_in_process(argv: list[str]) -> dict:
    """`finetune.py ARGV` in this process; returns its results."""
    from esi.eval.arguments import parse_args
    from esi.eval.finetune import run

    return run(parse_args(argv))


def copy_challenge_records(records: dict[Path, list[str]], folder: Path) -> Path:
    """Copy real Challenge records (`.hea` + `.mat`) from each source folder into `folder`."""
    import shutil

    for source, names in records.items():
        for name in names:
            for suffix in (".hea", ".mat"):
                shutil.copyfile(source / f"{name}{suffix}", folder / f"{name}{suffix}")
    return folder
