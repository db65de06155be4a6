"""Pretraining throughput and a short real pretraining run against the same model untrained.

    python -m benchmarks.bench_train [--ptbxl-dir ../shared/ptb-xl] [--steps 150] [--config atto]

Prepares the PTB-XL folder at 100 Hz and captions it with the template backend (cached,
shared with bench_downstream), pretrains on folds 1-8 and prints, in one run:
samples/s, share of time waiting for data, peak memory, and ECG<->text retrieval
recall@1/5/10 on fold 9 for the pretrained model and for the identical model before
training (same seed, same initialisation). Writes benchmarks/reports/train.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import time
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from transformers import AutoModel, AutoTokenizer

from benchmarks.bench_downstream import prepare_data
from esi.data.torch_dataset import EcgCollator, EcgDataset, join_captions, load_dataset_folder
from esi.text_encoder import default_text_model_path
from esi.train import pretrain as train
from esi.train.retrieval_eval import embed_ecg_text, retrieval_recall
from modeling_esi import EsiFeatureExtractor

REPO = Path(__file__).resolve().parent.parent


def fold9_recall(model, prepared: Path, captions: Path, max_text_length: int, batch_size: int = 64) -> dict[str, float]:
    signals = load_dataset_folder(prepared)["validation"]
    dataset = EcgDataset(signals, join_captions(signals, load_dataset_folder(captions), "validation"))
    tokenizer = AutoTokenizer.from_pretrained(default_text_model_path())
    extractor = EsiFeatureExtractor()
    collator = EcgCollator(extractor, dataset.sampling_rate, dataset.lead_names, tokenizer, max_text_length)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, collate_fn=collator)
    accelerator = Accelerator(cpu=True)
    return retrieval_recall(*embed_ecg_text(model, loader, accelerator))


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ptbxl-dir", type=Path, default=REPO.parent / "shared" / "ptb-xl")
    p.add_argument("--cache-dir", type=Path, default=REPO / "outputs" / "bench_downstream")
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--config", default="atto")
    p.add_argument("--max-text-length", type=int, default=128)
    p.add_argument("--freeze-text-tower", action="store_true")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--report", type=Path, default=REPO / "benchmarks" / "reports" / "train.md")
    args = p.parse_args(argv)

    prepared, captions = prepare_data(args.ptbxl_dir, args.cache_dir)
    run_dir = args.cache_dir / f"bench_train-{args.config}-{args.steps}steps-{time.strftime('%Y%m%d-%H%M%S')}"
    train_args = [
        "--signals", str(prepared), "--captions", str(captions), "--output-dir", str(run_dir),
        "--config", args.config, "--max-steps", str(args.steps), "--per-device-batch-size", str(args.batch_size),
        "--max-text-length", str(args.max_text_length), "--seed", str(args.seed), "--warmup-steps", "15",
        "--checkpointing-steps", str(args.steps), "--eval-split", "none", "--report-to", "none",
    ] + (["--freeze-text-tower"] if args.freeze_text_tower else [])  # fmt: skip

    # The untrained twin: train.py's model construction under the same seed, before any step.
    set_seed(args.seed)
    untrained = train.build_model(train.parse_args(train_args), default_text_model_path())
    before = fold9_recall(untrained, prepared, captions, args.max_text_length)
    del untrained

    model_dir = train.main(train_args)
    summary = json.loads((model_dir / "training_summary.json").read_text())
    pretrained = AutoModel.from_pretrained(model_dir, trust_remote_code=True)
    after = fold9_recall(pretrained, prepared, captions, args.max_text_length)
    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20

    samples_per_s = summary["steps"] * args.batch_size / summary["train_seconds"]
    lines = [
        "# Pretraining benchmark",
        "",
        f"Command: `python -m benchmarks.bench_train --ptbxl-dir {args.ptbxl_dir} --steps {args.steps} "
        f"--config {args.config} --batch-size {args.batch_size} --max-text-length {args.max_text_length}"
        f"{' --freeze-text-tower' if args.freeze_text_tower else ''}`",
        f"Machine: {platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}; "
        f"{summary['train_ecgs']} training ECGs (folds 1-8).",
        "",
        "| throughput | value |",
        "|---|---|",
        f"| samples/s | {samples_per_s:.2f} |",
        f"| seconds/step (batch {args.batch_size}) | {summary['train_seconds'] / summary['steps']:.2f} |",
        f"| share of time waiting for data | {summary['data_wait_fraction']:.1%} |",
        f"| peak memory (RSS) | {peak_gib:.2f} GiB |",
        "",
        f"Retrieval on fold 9 ({len(load_dataset_folder(prepared)['validation'])} ECG-caption pairs), "
        "untrained vs after pretraining, same initialisation:",
        "",
        "| metric | untrained | pretrained |",
        "|---|---|---|",
        *(f"| {k} | {before[k]:.3f} | {after[k]:.3f} |" for k in before),
        "",
        f"Final training losses: {json.dumps({k: round(v, 3) for k, v in (summary['final_losses'] or {}).items()})}",
    ]
    report = "\n".join(lines)
    print(report)
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text(report + "\n")
    return {"before": before, "after": after, "samples_per_s": samples_per_s, "summary": summary}


if __name__ == "__main__":
    main()
