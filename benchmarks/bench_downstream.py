"""Does ESI pretraining help downstream? All encoders, one run, same data, folds and seeds.

    .venv/bin/python -m benchmarks.bench_downstream --quick          # embedded 300-record sample, minutes
    .venv/bin/python -m benchmarks.bench_downstream                  # ../shared/ptb-xl, about an hour on 2 cores

Encoders (same architecture, `--config` size):
  ESI               pretrained with train.py, contrastive + caption loss (default weights 1 and 2)
  contrastive only  --caption-loss-weight 0
  caption only      --contrastive-loss-weight 0
  random init       the same encoder, randomly initialised, never trained
  supervised        trained from scratch on the labels (finetune.py --method supervised_scratch)

Each pretrained or random encoder: linear probe at 1%, 10%, 100% of training patients (several seeds
for the small fractions), LoRA and full fine-tuning at 100%, subject identification; the text-side
models also zero-shot classification. Task: superdiagnostic, test fold 10, macro AUROC. Pretraining
uses the CQA template captions (cqa_generate.py --backend template) of the training folds.

Writes REPORT_DIR/downstream{_quick}.json, .md, _label_efficiency.png, _roc.png and
downstream{_quick}_summary.json (for esi.train.model_card.write_model_card(..., downstream=...)).
Research software, not a diagnostic device.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import shlex
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from esi.eval.classification import (  # noqa: E402
    SPLITS,
    TrainConfig,
    encoder_features,
    load_classifier,
    load_task,
    make_loader,
    run_classification,
)
from esi.eval.report import DISCLAIMER, markdown_table, plot_roc, write_json  # noqa: E402
from esi.eval.subject_id import subject_identification  # noqa: E402
from modeling_esi import EsiFeatureExtractor  # noqa: E402

PACKAGES = ("torch", "transformers", "datasets", "accelerate", "peft", "evaluate", "scikit-learn", "numpy")
PRETRAINED = {
    "ESI": [],
    "contrastive only": ["--caption-loss-weight", "0"],
    "caption only": ["--contrastive-loss-weight", "0"],
}
RANDOM = "random init"
SCRATCH = "supervised (scratch)"
FRACTIONS = (0.01, 0.1, 1.0)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="embedded sample, few steps (CI size)")
    p.add_argument("--ptbxl-dir", default=None, help="default: data/ptbxl_sample with --quick, else ../shared/ptb-xl")
    p.add_argument("--cache-dir", default=None, help="prepared data, captions and pretrained models")
    p.add_argument("--report-dir", default=str(REPO / "benchmarks" / "reports"))
    p.add_argument("--task", default="superdiagnostic")
    p.add_argument("--config", default="atto", help="ECG encoder size preset for train.py")
    p.add_argument("--pretrain-steps", type=int, default=None, help="default: 10 with --quick, else 300")
    p.add_argument("--pretrain-batch-size", type=int, default=32)
    p.add_argument("--max-text-length", type=int, default=128)
    p.add_argument(
        "--freeze-text-tower", action="store_true", help="keep MiniLM fixed while pretraining (about 3x faster on CPU)"
    )
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="seeds for 1%% and 10%% (default 0 1 2)")
    p.add_argument("--finetune-epochs", type=int, default=None, help="LoRA/full/scratch (default 2 quick, 8 full)")
    p.add_argument("--bootstrap-samples", type=int, default=200)
    p.add_argument("--finetune-fraction", type=float, default=1.0, help="label fraction for LoRA and full FT")
    p.add_argument("--scratch-fractions", type=float, nargs="+", default=list(FRACTIONS))
    p.add_argument(
        "--finetune-encoders", nargs="+", default=None, help="encoders that also get LoRA and full FT (default: all)"
    )
    return p.parse_args(argv)


def prepare_data(ptbxl_dir: Path, cache: Path) -> tuple[Path, Path]:
    """Prepared 100 Hz dataset and template captions, built once into the cache."""
    from esi.cqa.run import generate_captions
    from esi.data.prepare_ptbxl import prepare_ptbxl

    # Folder names carry the source's name: datasets' cache keys a Parquet folder by its name.
    prepared, captions = cache / f"prepared-100hz-{ptbxl_dir.name}", cache / f"captions-template-{ptbxl_dir.name}"
    if not (prepared / "dataset_dict.json").exists():
        prepare_ptbxl(ptbxl_dir, prepared, sampling_rate=100, num_proc=2)
    if not any(captions.glob("**/*.parquet")):
        generate_captions(prepared, captions, backend="template")
    return prepared, captions


def pretrain(
    name: str, extra: list[str], prepared: Path, captions: Path, cache: Path, args
) -> tuple[Path, float | None]:
    """train.main for one loss variant and its seconds; reused (None seconds) when the same settings already ran."""
    from esi.train import pretrain as train

    settings = f"{args.config}-{args.pretrain_steps}steps-b{args.pretrain_batch_size}-t{args.max_text_length}"
    out = (
        cache / "pretrained" / f"{name.replace(' ', '_')}-{settings}{'-frozen_text' if args.freeze_text_tower else ''}"
    )
    model = out / "model"
    if (model / "config.json").exists():
        return model, None
    argv = [
        *["--signals", str(prepared), "--captions", str(captions), "--output-dir", str(out)],
        *["--config", args.config, "--max-steps", str(args.pretrain_steps), "--seed", "0"],
        *["--per-device-batch-size", str(args.pretrain_batch_size), "--max-text-length", str(args.max_text_length)],
        *["--warmup-steps", str(max(1, args.pretrain_steps // 10)), "--report-to", "none", "--eval-split", "none"],
        *["--checkpointing-steps", str(args.pretrain_steps), "--checkpoints-total-limit", "1", *extra],
        *(["--freeze-text-tower"] if args.freeze_text_tower else []),
    ]
    started = time.perf_counter()
    return train.main(argv), time.perf_counter() - started


def short(result: dict) -> dict:
    keep = ("method", "random_init", "label_fraction", "seed", "train_records", "train_patients", "macro_auroc")
    return {k: result[k] for k in keep} | {
        k: result[k] for k in ("macro_auroc_ci", "macro_f1", "macro_f1_ci", "per_class_auroc", "epochs_run")
    }


def evaluate_encoder(name: str, model_dir: Path, data, random_init: bool, args, seeds) -> tuple[list, dict, dict]:
    """Linear probes (shared embeddings), LoRA, full fine-tuning and subject identification for one encoder."""
    started = time.perf_counter()
    extractor = EsiFeatureExtractor.from_pretrained(model_dir)
    encoder = load_classifier(model_dir, len(data.class_names), random_init, seed=0)
    features = {s: encoder_features(encoder, make_loader(data.splits[s], extractor, 64)) for s in SPLITS}
    subject = subject_identification(
        np.concatenate([features[s] for s in SPLITS]),
        np.concatenate([data.splits[s]["patient_id"] for s in SPLITS]),
        np.concatenate([data.splits[s]["ecg_id"] for s in SPLITS]),
    )
    runs, test_scores = [], {}
    for fraction in FRACTIONS:
        for seed in seeds if fraction < 1 else seeds[:1]:
            config = TrainConfig(epochs=200, batch_size=64, lr=3e-3, patience=20, seed=seed)
            run = run_classification(
                model_dir, data, "linear_probe", fraction, config, random_init, 64, args.bootstrap_samples, features
            )
            runs.append({"encoder": name, **short(run.result)})
            if fraction == 1.0:
                test_scores["linear_probe"] = run.scores["test"]
    methods = {"lora": 1e-3} if random_init else {"lora": 1e-3, "full": 3e-4}  # full from random init = scratch
    if args.finetune_encoders and name not in args.finetune_encoders:
        methods = {}
    for method, lr in methods.items():
        config = TrainConfig(epochs=args.finetune_epochs, batch_size=32, lr=lr, patience=3, seed=seeds[0])
        run = run_classification(
            model_dir, data, method, args.finetune_fraction, config, random_init, 64, args.bootstrap_samples
        )
        runs.append({"encoder": name, **short(run.result)})
        test_scores[method] = run.scores["test"]
    print(f"{name}: evaluated in {time.perf_counter() - started:.0f} s", flush=True)
    return runs, subject, test_scores


def evaluate_scratch(model_dir: Path, data, args, seeds) -> list[dict]:
    runs = []
    for fraction in args.scratch_fractions:
        for seed in seeds if fraction < 1 else seeds[:1]:
            config = TrainConfig(epochs=args.finetune_epochs, batch_size=32, lr=1e-3, patience=3, seed=seed)
            run = run_classification(
                model_dir, data, "supervised_scratch", fraction, config, True, 64, args.bootstrap_samples
            )
            runs.append({"encoder": SCRATCH, **short(run.result)})
    return runs


def zero_shot(model_dir: Path, data, args) -> dict:
    from esi.eval.classification import score_predictions
    from esi.eval.finetune import load_pretrained
    from esi.eval.zero_shot import class_prompts, zero_shot_scores
    from esi.knowledge import load_knowledge_base

    prompts, _ = class_prompts(data.class_names, load_knowledge_base())
    keep = [k for k, n in enumerate(data.class_names) if n in prompts]
    names = [data.class_names[k] for k in keep]
    model, tokenizer = load_pretrained(str(model_dir))
    extractor = EsiFeatureExtractor.from_pretrained(model_dir)
    scores = {
        s: zero_shot_scores(model, tokenizer, [prompts[n] for n in names], make_loader(data.splits[s], extractor, 64))
        for s in ("validation", "test")
    }
    labels = {s: data.labels[s][:, keep] for s in scores}
    metrics = score_predictions(
        labels["validation"], scores["validation"], labels["test"], scores["test"], names, args.bootstrap_samples
    )
    return {k: metrics[k] for k in ("macro_auroc", "macro_auroc_ci", "per_class_auroc")}


def aggregate(runs: list[dict]) -> dict[tuple[str, str, float], dict]:
    """(encoder, method, fraction) -> mean, sd and count of test macro AUROC over seeds."""
    groups: dict[tuple[str, str, float], list[float]] = {}
    for r in runs:
        groups.setdefault((r["encoder"], r["method"], r["label_fraction"]), []).append(r["macro_auroc"])
    return {k: {"mean": float(np.mean(v)), "sd": float(np.std(v)), "n": len(v)} for k, v in groups.items()}


def check_targets(table: dict, finetune_fraction: float) -> list[list[str]]:
    def get(encoder, method, fraction):
        return table.get((encoder, method, fraction), {}).get("mean", float("nan"))

    esi_lp, rnd_lp = get("ESI", "linear_probe", 1.0), get(RANDOM, "linear_probe", 1.0)
    con_lp = get("contrastive only", "linear_probe", 1.0)
    lora, esi_ft = get("ESI", "lora", finetune_fraction), get("ESI", "linear_probe", finetune_fraction)
    esi_10, scratch_10 = get("ESI", "linear_probe", 0.1), get(SCRATCH, "supervised_scratch", 0.1)
    rows = [  # (target, measured gap, required gap, strictly greater)
        ("ESI linear probe >= random init + 0.05 (100%)", esi_lp - rnd_lp, 0.05, False),
        ("ESI linear probe > contrastive only (100%)", esi_lp - con_lp, 0.0, True),
        ("ESI linear probe 10% >= supervised scratch 10% + 0.03", esi_10 - scratch_10, 0.03, False),
        (f"ESI LoRA >= ESI linear probe ({finetune_fraction:.0%})", lora - esi_ft, 0.0, False),
    ]
    return [
        [
            name,
            f"{gap:+.3f}",
            "not run" if np.isnan(gap) else "met" if (gap > need if strict else gap >= need) else "NOT met",
        ]
        for name, gap, need, strict in rows
    ]


def plot_label_efficiency(path: Path, table: dict) -> None:
    fig, ax = plt.subplots(figsize=(6, 4))
    for encoder, method in [(e, "linear_probe") for e in [*PRETRAINED, RANDOM]] + [(SCRATCH, "supervised_scratch")]:
        points = [(f, table[(encoder, method, f)]) for f in FRACTIONS if (encoder, method, f) in table]
        if points:
            fractions, stats = zip(*points, strict=True)
            means, sds = np.array([s["mean"] for s in stats]), np.array([s["sd"] for s in stats])
            ax.errorbar(
                np.array(fractions) * 100, means, yerr=sds, marker="o", capsize=3, label=f"{encoder} ({method})"
            )
    ax.set_xscale("log")
    ax.set_xlabel("training labels used (% of patients)")
    ax.set_ylabel("test macro AUROC")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    started = time.perf_counter()
    quick = args.quick
    ptbxl_dir = Path(args.ptbxl_dir or (REPO / "data" / "ptbxl_sample" if quick else REPO.parent / "shared" / "ptb-xl"))
    cache = Path(args.cache_dir or REPO / "outputs" / ("bench_downstream_quick" if quick else "bench_downstream"))
    args.pretrain_steps = args.pretrain_steps or (10 if quick else 300)
    args.finetune_epochs = args.finetune_epochs or (2 if quick else 8)
    seeds = args.seeds or [0, 1, 2]
    stem = "downstream_quick" if quick else "downstream"
    report_dir = Path(args.report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)

    prepared, captions = prepare_data(ptbxl_dir, cache)
    data = load_task(prepared, args.task)
    pretrained, pretrain_seconds = {}, {}
    for name, extra in PRETRAINED.items():
        pretrained[name], pretrain_seconds[name] = pretrain(name, extra, prepared, captions, cache, args)
        print(f"pretrained {name}: {pretrained[name]}", flush=True)

    runs, subject, roc_scores = [], {}, {}
    encoders = [(name, path, False) for name, path in pretrained.items()] + [(RANDOM, pretrained["ESI"], True)]
    for name, path, random_init in encoders:
        encoder_runs, subject[name], scores = evaluate_encoder(name, path, data, random_init, args, seeds)
        runs += encoder_runs
        roc_scores[f"{name} (linear probe)"] = (data.labels["test"], scores["linear_probe"])
    runs += evaluate_scratch(pretrained["ESI"], data, args, seeds)
    zero = {name: zero_shot(pretrained[name], data, args) for name in ("ESI", "contrastive only")}

    table = aggregate(runs)
    targets = check_targets(table, args.finetune_fraction)
    plot_label_efficiency(report_dir / f"{stem}_label_efficiency.png", table)
    plot_roc(report_dir / f"{stem}_roc.png", roc_scores, data.class_names, f"{args.task}, test fold, linear probe 100%")

    command = "python -m benchmarks.bench_downstream " + shlex.join(argv if argv is not None else sys.argv[1:])
    versions = {p: importlib.metadata.version(p) for p in PACKAGES}
    main_rows = [
        [enc, method, f"{frac:.0%}", f"{s['mean']:.3f}" + (f" ± {s['sd']:.3f}" if s["n"] > 1 else ""), s["n"]]
        for (enc, method, frac), s in table.items()
    ]
    main_table = markdown_table(["encoder", "method", "labels", "test macro AUROC (mean ± sd)", "seeds"], main_rows)
    subject_table = markdown_table(
        ["encoder", "patients", "probes", "top-1", "top-5"],
        [
            [n, s["patients"], s["probes"], f"{s['top1_accuracy']:.3f}", f"{s['top5_accuracy']:.3f}"]
            for n, s in subject.items()
        ],
    )
    zero_table = markdown_table(
        ["model", "zero-shot macro AUROC [95% CI]"],
        [
            [n, f"{z['macro_auroc']:.3f} [{z['macro_auroc_ci'][0]:.3f}, {z['macro_auroc_ci'][1]:.3f}]"]
            for n, z in zero.items()
        ],
    )
    elapsed = time.perf_counter() - started
    pretrain_times = {k: "cached" if v is None else round(v) for k, v in pretrain_seconds.items()}
    esi_keys = [key for key in table if key[0] == "ESI"]
    summary_rows = [
        {
            "name": f"PTB-XL {args.task}, {method.replace('_', ' ')}, {fraction:.0%} labels",
            "value": table[(enc, method, fraction)]["mean"],
            "dataset": "PTB-XL sample (300 records)" if quick else "PTB-XL subset (3,477 records)",
        }
        for enc, method, fraction in esi_keys
    ]
    random_means = [table.get((RANDOM, m, f), {}).get("mean") for _, m, f in esi_keys]
    summary_md = markdown_table(
        ["downstream (test fold 10, macro AUROC)", "ESI", "random init"],
        [
            [row["name"], f"{row['value']:.3f}", "-" if rnd is None else f"{rnd:.3f}"]
            for row, rnd in zip(summary_rows, random_means, strict=True)
        ],
    )
    markdown = f"""# Downstream benchmark: does ESI pretraining help?

Data: `{ptbxl_dir}` ({sum(len(data.splits[s]) for s in SPLITS)} records; train folds 1-8 = {len(data.splits["train"])},
validation fold 9 = {len(data.splits["validation"])}, test fold 10 = {len(data.splits["test"])}). Task: **{args.task}**,
classes {data.class_names}{"; dropped " + str(data.dropped) if data.dropped else ""}.
Encoder: ConvNeXt-V2 `{args.config}`; pretraining {args.pretrain_steps} steps, batch {args.pretrain_batch_size},
template CQA captions (max {args.max_text_length} tokens).
Fine-tuning (LoRA and full at {args.finetune_fraction:.0%} labels; scratch at {args.scratch_fractions}):
up to {args.finetune_epochs}
epochs, early stopping on validation macro AUROC. Seeds for 1% and 10%: {seeds}. Total wall time {elapsed / 60:.1f} min
on {"this machine" if not quick else "the quick configuration"}.
{"**Quick mode**: 300-record sample and a few steps; these figures test the pipeline, not the method." if quick else ""}

## Classification (test fold, macro AUROC)

{main_table}

![label efficiency]({stem}_label_efficiency.png)

![ROC]({stem}_roc.png)

## Targets

{markdown_table(["target", "measured gap", "status"], targets)}

## Subject identification (all splits; earliest record per patient as gallery)

{subject_table}

## Zero-shot classification from the text side (prompts from esi/knowledge)

{zero_table}

## Reproduce

```
{command}
```

Pretraining time per variant (s): {pretrain_times}.
Packages: {versions}.

Per-run details, including per-class AUROC and bootstrap intervals (200 resamples) for every run, are in `{stem}.json`.
Results on this PTB-XL subset are not comparable to published full-PTB-XL numbers. {DISCLAIMER}
"""
    report = {
        "command": command,
        "versions": versions,
        "args": vars(args),
        "classes": data.class_names,
        "dropped_classes": data.dropped,
        "wall_seconds": elapsed,
        "pretrain_seconds": pretrain_seconds,
        "runs": runs,
        "aggregate": [{"encoder": e, "method": m, "label_fraction": f, **s} for (e, m, f), s in table.items()],
        "subject_identification": subject,
        "zero_shot": zero,
        "targets": targets,
    }
    write_json(report_dir / f"{stem}.json", report)
    (report_dir / f"{stem}.md").write_text(markdown)
    write_json(report_dir / f"{stem}_summary.json", {"results": summary_rows, "markdown": summary_md})
    print(markdown)
    return report


if __name__ == "__main__":
    main()
