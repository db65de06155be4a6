"""LLM caption backends with a tiny random Llama and a real GPT-2 tokenizer: transformers in-process, vLLM for real.

A random model writes gibberish, so every caption must be rejected by the faithfulness check,
regenerated ``max_retries`` times and replaced by the template text; provenance columns must
still name the model and the exact prompt.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from datasets import load_dataset

from benchmarks.bench_cqa import build_tiny_chat_model
from esi.cqa.backends import CaptionBackend, TransformersBackend
from esi.cqa.captioner import Captioner
from esi.cqa.options import GenerationOptions
from esi.cqa.prompts import build_request
from esi.cqa.run import generate_captions
from tests.helpers import REPO_ROOT

CACHE_DIR = REPO_ROOT / "outputs" / ".cache" / "cqa-tests"  # the npm-fetched tokenizer files survive sessions
FEW = dict(num_samples=2, splits=["validation", "test"], num_workers=1, batch_size=4)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    return build_tiny_chat_model(tmp_path_factory.mktemp("llm") / "tiny-llama", CACHE_DIR)


@pytest.fixture(scope="module")
def template_rows(prepared_sample, tmp_path_factory) -> dict[int, dict]:
    out = tmp_path_factory.mktemp("cqa-llm") / "template"
    generate_captions(prepared_sample, out, backend="template", **FEW)
    return _rows(out)


def _rows(output_dir: Path) -> dict[int, dict]:
    loaded = load_dataset(str(output_dir), download_mode="force_redownload")  # no stale cache of a same-named folder
    return {row["ecg_id"]: row for split in loaded.values() for row in split}


def _check_fallback_rows(rows: dict[int, dict], template_rows: dict[int, dict], backend: str) -> None:
    assert rows.keys() == template_rows.keys() and len(rows) == 4
    for ecg_id, row in rows.items():
        assert row["backend"] == backend and row["model_id"] == "tiny-llama"
        assert row["prompt_hash"] == template_rows[ecg_id]["prompt_hash"]  # same prompt whatever the backend
        assert row["faithfulness"] == "template_fallback"
        attempts = {issue.split(":")[0] for issue in row["faithfulness_issues"]}
        assert attempts == {"attempt 1", "attempt 2", "attempt 3"}
        assert row["caption"] == template_rows[ecg_id]["caption"]


@pytest.mark.slow
def test_transformers_backend_left_padding_and_fallback(tiny_model, prepared_sample, template_rows, tmp_path):
    out = tmp_path / "transformers"
    summary = generate_captions(
        prepared_sample, out, backend="transformers", model=str(tiny_model), max_new_tokens=12, **FEW
    )
    assert summary["faithfulness"] == {"template_fallback": 4}
    _check_fallback_rows(_rows(out), template_rows, "transformers")

    # Greedy decoding in a left-padded batch gives what each prompt gives alone.
    backend = TransformersBackend(tiny_model, batch_size=4, max_new_tokens=8, temperature=0.0)
    captioner = Captioner(Path(prepared_sample), GenerationOptions(encoder_path=None))
    requests = _requests(captioner, prepared_sample, 3)
    prompts = [backend.tokenizer.apply_chat_template(r.messages, tokenize=False) for r in requests]
    lengths = {len(backend.tokenizer(p)["input_ids"]) for p in prompts}
    assert len(lengths) > 1, "the prompts should differ in length so the batch needs padding"
    batched = backend.generate(requests)
    assert batched == [backend.generate([r])[0] for r in requests]


def _requests(captioner: Captioner, prepared_sample: Path, n: int):
    from datasets import load_from_disk

    from esi.cqa.measurements import measure_ecg

    split = load_from_disk(str(prepared_sample))["test"]
    rows = split.with_format("numpy", columns=["signal"], output_all_columns=True)[0:n]
    args = zip(rows["signal"], rows["sampling_rate"], rows["lead_names"], rows["ecg_id"], strict=True)
    measured = [measure_ecg(*a) for a in args]
    return [build_request(x) for x in captioner.inputs(rows, measured)]


class _FaithfulOnRetry(CaptionBackend):
    """Test double for the retry loop only: gibberish first, then text the checker accepts."""

    name = "scripted"
    model_id = "scripted"

    def __init__(self, writer) -> None:
        self.writer = writer
        self.attempts: list[int] = []

    def generate(self, requests):
        self.attempts += [r.attempt for r in requests]
        return ["lorem ipsum" if r.attempt == 0 else self.writer.write(r.inputs) for r in requests]


def test_retry_then_pass(prepared_sample):
    captioner = Captioner(Path(prepared_sample), GenerationOptions(encoder_path=None))
    captioner.backend = _FaithfulOnRetry(captioner.writer)
    results = captioner.captions(_requests(captioner, prepared_sample, 2))
    assert [outcome for _, outcome, _ in results] == ["pass_after_retry"] * 2
    assert all(issues and issues[0].startswith("attempt 1: ") for _, _, issues in results)
    assert captioner.backend.attempts == [0, 0, 1, 1]


@pytest.mark.slow
@pytest.mark.vllm
def test_vllm_backend_real_engine(tiny_model, prepared_sample, template_rows, tmp_path):
    out = tmp_path / "vllm"
    summary = generate_captions(
        prepared_sample, out, backend="vllm", model=str(tiny_model), max_new_tokens=12, max_model_len=4096, **FEW
    )
    assert summary["complete"] and summary["faithfulness"] == {"template_fallback": 4}
    _check_fallback_rows(_rows(out), template_rows, "vllm")
    assert "model id `tiny-llama`" in (out / "README.md").read_text()
