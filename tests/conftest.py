"""Shared fixtures: the embedded PTB-XL sample, its prepared DatasetDict and captions, tiny models (built once per
session). Plain helper functions and constants are in tests/helpers.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import PTBXL_SAMPLE, pretrain_in_process, save_tiny_esi, tiny_train_args


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


@pytest.fixture(scope="session")
def tiny_pretrained_model(
    prepared_sample: Path, sample_captions: Path, tiny_text_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A Hub-ready ESI folder from a 4-step pretraining run with tiny towers."""
    output_dir = tmp_path_factory.mktemp("tiny_run")
    args = tiny_train_args(prepared_sample, sample_captions, tiny_text_model, output_dir, "--max-steps", "4")
    return pretrain_in_process(args)
