"""Pretraining benchmarks: throughput of the training recipes on the pool, and a short real pretraining run.

    python -m benchmarks.bench_train --speedup [--baseline REV] [--rounds 2] [--steps 4] [--time-demo]
    python -m benchmarks.bench_train --profile-step [--profile-recipe demo] [--steps 3] [--threads N]
    python -m benchmarks.bench_train --pool [--records 320] [--steps 6]
    python -m benchmarks.bench_train [--steps 150] [--config atto]

`--speedup`: samples/s of pretraining runs through `esi.train.pretrain` (the code behind `esi-train`), by this
checkout and by the code of commit `--baseline` (its `esi/` and `modeling_esi/`, extracted with `git archive`),
each run in a fresh process, the arms of a comparison alternated `--rounds` times so that load drifts hit all
alike (`COMPARISONS`). The demo: the baseline code and this code on the demo's previous recipe (esi-train's
4 x 256 caption decoder over the whole vocabulary), and this code on the demo's recipe
(`esi.demo.pretraining_arguments` on the embedded sample), giving the code-only ratio, the recipe change's and
both together. The claim benchmark's caption arm (esi_full's losses at the claim cpu profile's sizes, on the pool
slice): both code versions. One more step per arm without augmentations sees the same seed, initial weights and
batch, so the losses of two code versions on one recipe are compared too (`fixed_batch_losses`). `--time-demo`
also times `python -m esi.demo` end to end (fresh output folder). Writes
benchmarks/results/bench_train_speedup-<time>.json (command, git commit, seed, load averages, figures).

`--profile-step`: where a step of one of those recipes spends its time, by part of the step (data, each part
of the model forward and backward, optimizer) and by operator, through torch.profiler (`benchmarks.train_profile`).
Writes benchmarks/results/bench_train_profile-<time>.json.

`--pool`: prepares the first `--records` records of the pretraining pool (../shared/ptb-xl-pretrain) at
100 Hz, captions them with the template backend, and runs train.py's default recipe three ways, each in
a fresh process: text tower trainable, frozen, and frozen with each caption embedded once and cached.
For each it measures samples/s over `--steps` optimizer steps after one warm-up step (a few hundred
samples), the peak memory (max RSS of that process) and, extrapolated from samples/s (not timed), the
seconds per epoch over the whole 6,000-record pool (for the cached recipe plus the one-off embedding of
6,000 captions, scaled from the slice). It also measures which share of caption tokens each
`--max-text-length` cuts off. Writes benchmarks/results/bench_train_pool-<time>.json (command, git
commit, seed, figures) and benchmarks/reports/train_pool.md.

Without `--pool`: pretrains on the pool slice and reports ECG<->text retrieval recall@1/5/10 on fold 9 of
../shared/ptb-xl (the evaluation corpus, patient-disjoint from the pool) for the pretrained model and for
the identical model before training (same seed, same initialisation). Writes benchmarks/reports/train.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import multiprocessing
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

from benchmarks.provenance import changed_files, git_commit, resolve_commit

REPO = Path(__file__).resolve().parent.parent
POOL_RECORDS = 6000
RECIPES = {
    "text tower trainable": {},
    "text tower frozen": {"freeze_text_tower": True},
    "frozen, cached text embeddings": {"freeze_text_tower": True, "cache_text_embeddings": True},
}
TEXT_LENGTHS = (128, 192, 256, 320, 384, 448, 512)


def prepare_slice(source: Path, records: int, cache: Path) -> tuple[Path, Path]:
    """The first `records` rows of a PTB-XL-layout folder, prepared at 100 Hz and captioned; built once."""
    from esi.cqa.run import generate_captions
    from esi.data.prepare_ptbxl import prepare_ptbxl

    prepared = cache / f"prepared-100hz-{source.name}-{records}"
    captions = cache / f"captions-template-{source.name}-{records}"
    if not (prepared / "dataset_dict.json").exists():
        prepare_ptbxl(source, prepared, sampling_rate=100, num_proc=2, limit=records)
    if not any(captions.glob("**/*.parquet")):
        generate_captions(prepared, captions, backend="template")
    return prepared, captions


def run_recipe(arguments: tuple) -> dict:
    """One pretraining run in this (fresh) process; its summary plus this process's peak RSS."""
    from esi.train.pretrain import pretrain

    model_dir = pretrain(*arguments)
    summary = json.loads((model_dir / "training_summary.json").read_text())
    summary["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    summary["model_sha256"] = hashlib.sha256((model_dir / "model.safetensors").read_bytes()).hexdigest()
    return summary


def in_fresh_process(arguments: tuple) -> dict:
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(run_recipe, (arguments,))


def recipe_arguments(
    prepared: Path, captions: Path, out: Path, steps: int, seed: int, batch_size: int = 32, **model_overrides
) -> tuple:
    from esi.train.arguments import DataArguments, ModelArguments, OptimizationArguments, RunArguments

    return (
        DataArguments(signals=str(prepared), captions=str(captions), eval_split="none"),
        replace(ModelArguments(), **model_overrides),
        OptimizationArguments(max_steps=steps, seed=seed, per_device_batch_size=batch_size),
        RunArguments(output_dir=str(out), logging_steps=1, report_to="none", checkpointing_steps=10**9),
    )


# The last commit before dynamic caption padding, target-only caption logits and fused AdamW.
BASELINE_REV = "5b0831f"
# Runs `esi.train.pretrain.pretrain` from the argument groups in argv[1] (JSON), with whichever `esi` package
# comes first on sys.path (the working directory); fields that code version does not know are left out.
RECIPE_RUNNER = """
import dataclasses, json, resource, sys
from esi.train.arguments import ARGUMENT_CLASSES
from esi.train.pretrain import pretrain
spec = json.loads(sys.argv[1])
groups = [cls(**{k: v for k, v in spec[cls.__name__].items() if k in {f.name for f in dataclasses.fields(cls)}})
          for cls in ARGUMENT_CLASSES]
model_dir = pretrain(*groups)
peak_rss_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
print(json.dumps({"model_dir": str(model_dir), "peak_rss_gib": peak_rss_gib}))
"""


def throughput(summary: dict, batch_size: int) -> float:
    """Samples/s between the end of the first (warm-up) step and the last step."""
    history = summary["log_history"]
    return (len(history) - 1) * batch_size / (history[-1]["elapsed_s"] - history[0]["elapsed_s"])


def pool_benchmark(args: argparse.Namespace) -> dict:
    from transformers import AutoTokenizer

    from esi.data.torch_dataset import load_dataset_folder
    from esi.text_encoder import default_text_model_path
    from esi.train.data import caption_truncation

    started = time.perf_counter()
    prepared, captions = prepare_slice(args.pool_dir, args.records, args.cache_dir)
    run_root = args.cache_dir / f"bench_train_pool-{time.strftime('%Y%m%d-%H%M%S')}"
    results = {}
    for name, overrides in RECIPES.items():
        arguments = recipe_arguments(
            prepared, captions, run_root / name.replace(" ", "_").replace(",", ""), args.steps + 1, args.seed,
            args.batch_size, **overrides,
        )  # fmt: skip
        summary = in_fresh_process(arguments)
        batch = arguments[2].per_device_batch_size
        samples_per_s = throughput(summary, batch)
        cache_s = summary.get("text_cache_seconds") or 0.0
        results[name] = {
            "samples_per_s": round(samples_per_s, 3),
            "measured_samples": args.steps * batch,
            "pool_epoch_seconds_extrapolated": round(
                POOL_RECORDS / samples_per_s + cache_s * POOL_RECORDS / summary["train_ecgs"], 1
            ),
            "text_cache_seconds_on_slice": summary.get("text_cache_seconds"),
            "peak_rss_gib": round(summary["peak_rss_gib"], 3),
            "model_sha256": summary["model_sha256"],
            "caption_truncation": summary["caption_truncation"],
        }
        print(f"{name}: {json.dumps(results[name])}", flush=True)
    recipe = arguments
    tokenizer = AutoTokenizer.from_pretrained(default_text_model_path())
    from esi.data.torch_dataset import join_captions

    train = load_dataset_folder(prepared)["train"]
    texts = join_captions(train, load_dataset_folder(captions), "train")
    lengths = {str(n): caption_truncation(tokenizer, texts, n) for n in TEXT_LENGTHS}
    return {
        "benchmark": "bench_train --pool",
        "command": "python -m benchmarks.bench_train " + shlex.join(sys.argv[1:]),
        "git": {"commit": git_commit(), "dirty_files": changed_files()},
        "seed": args.seed,
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}",
        "pool": str(args.pool_dir),
        "records_prepared": args.records,
        "train_ecgs": summary["train_ecgs"],
        "recipe": {
            "config": recipe[1].config,
            "per_device_batch_size": recipe[2].per_device_batch_size,
            "max_text_length": recipe[0].max_text_length,
            "decoder": f"{recipe[1].decoder_layers} layers x {recipe[1].decoder_width}",
            "text_model": "all-MiniLM-L6-v2",
        },
        "note": (
            f"samples/s measured over {args.steps} steps after one warm-up step per recipe; pool epoch seconds "
            f"extrapolated to {POOL_RECORDS} records from that rate (not timed)"
        ),
        "recipes": results,
        "caption_tokens_cut_by_max_text_length": lengths,
        "wall_seconds": round(time.perf_counter() - started, 1),
        # Other jobs share this CPU: the figures above are only comparable under a similar load.
        "load_average_1_5_15_min_at_end": [round(x, 2) for x in os.getloadavg()],
    }


def pool_report(result: dict) -> str:
    lines = [
        "# Pretraining throughput on the pool (CPU)",
        "",
        f"Command: `{result['command']}` (commit {result['git']['commit'][:10]}, seed {result['seed']}); "
        f"{result['machine']}. Recipe: {json.dumps(result['recipe'])}.",
        f"{result['note']}.",
        "",
        "| recipe | samples/s | pool epoch (6,000 ECGs, extrapolated) | peak RSS |",
        "|---|---|---|---|",
        *(
            f"| {name} | {r['samples_per_s']:.2f} | {r['pool_epoch_seconds_extrapolated'] / 60:.1f} min | "
            f"{r['peak_rss_gib']:.2f} GiB |"
            for name, r in result["recipes"].items()
        ),
        "",
        "Share of caption tokens cut off, by `--max-text-length` (template captions of the pool slice):",
        "",
        "| max text length | tokens cut | captions truncated |",
        "|---|---|---|",
        *(
            f"| {n} | {t['truncated_token_share']:.1%} | {t['truncated_caption_share']:.1%} |"
            for n, t in result["caption_tokens_cut_by_max_text_length"].items()
        ),
    ]
    return "\n".join(lines)


def fold9_recall(model, prepared: Path, captions: Path, max_text_length: int, batch_size: int = 64) -> dict[str, float]:
    from accelerate import Accelerator
    from transformers import AutoTokenizer

    from esi.data.torch_dataset import EcgCollator, EcgDataset, join_captions, load_dataset_folder
    from esi.text_encoder import default_text_model_path
    from esi.train.retrieval_eval import embed_ecg_text, retrieval_recall
    from modeling_esi import EsiFeatureExtractor

    signals = load_dataset_folder(prepared)["validation"]
    dataset = EcgDataset(signals, join_captions(signals, load_dataset_folder(captions), "validation"))
    tokenizer = AutoTokenizer.from_pretrained(default_text_model_path())
    collator = EcgCollator(EsiFeatureExtractor(), dataset.sampling_rate, dataset.lead_names, tokenizer, max_text_length)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, collate_fn=collator)
    return retrieval_recall(*embed_ecg_text(model, loader, Accelerator(cpu=True)))


def retrieval_benchmark(args: argparse.Namespace) -> dict:
    from accelerate.utils import set_seed
    from transformers import AutoModel

    from esi.text_encoder import default_text_model_path
    from esi.train.pretrain import build_model, pretrain

    pool, pool_captions = prepare_slice(args.pool_dir, args.records, args.cache_dir)
    evaluation, evaluation_captions = prepare_slice(args.ptbxl_dir, 10**9, args.cache_dir)
    data, model_args, optim, run = recipe_arguments(
        pool, pool_captions, args.cache_dir / f"bench_train-{args.steps}steps-{time.strftime('%Y%m%d-%H%M%S')}",
        args.steps, args.seed,
    )  # fmt: skip
    data = replace(data, evaluation_records=str(evaluation))
    optim = replace(optim, warmup_steps=max(1, args.steps // 10))
    run = replace(run, logging_steps=10)
    set_seed(args.seed)  # the untrained twin: the same construction under the same seed, before any step
    untrained = build_model(model_args, data.max_text_length, default_text_model_path())
    before = fold9_recall(untrained, evaluation, evaluation_captions, data.max_text_length)
    del untrained
    model_dir = pretrain(data, model_args, optim, run)
    summary = json.loads((model_dir / "training_summary.json").read_text())
    after = fold9_recall(
        AutoModel.from_pretrained(model_dir, trust_remote_code=True), evaluation, evaluation_captions,
        data.max_text_length,
    )  # fmt: skip
    lines = [
        "# Pretraining benchmark",
        "",
        f"Command: `python -m benchmarks.bench_train {shlex.join(sys.argv[1:])}`; pretrained on "
        f"{summary['train_ecgs']} ECGs of {args.pool_dir} for {summary['steps']} steps, evaluated on fold 9 of "
        f"{args.ptbxl_dir} (overlap: {summary['evaluation_overlap']}).",
        "",
        "| metric | untrained | pretrained |",
        "|---|---|---|",
        *(f"| {k} | {before[k]:.3f} | {after[k]:.3f} |" for k in before),
    ]
    report = "\n".join(lines)
    print(report)
    (REPO / "benchmarks" / "reports" / "train.md").write_text(report + "\n")
    return {"before": before, "after": after, "summary": summary}


def timing_spec(arguments: tuple, steps: int, seed: int, output_dir: Path, augment: bool = True) -> dict:
    """A recipe's argument groups as JSON, set for timing: `steps` steps each logged, no evaluation or checkpoint."""
    data, model_args, optim, run = arguments
    groups = (
        replace(data, eval_split="none", augment=augment and data.augment),
        model_args,
        replace(optim, max_steps=steps, seed=seed),
        replace(run, output_dir=str(output_dir), logging_steps=1, report_to="none", checkpointing_steps=10**9,
                resume_from_checkpoint=None),
    )  # fmt: skip
    return {type(group).__name__: dataclasses.asdict(group) for group in groups}


def baseline_tree(rev: str, cache: Path) -> Path:
    """The `esi` and `modeling_esi` packages of commit `rev`, extracted once under `cache`."""
    tree = cache / f"baseline-{resolve_commit(rev)[:12]}"
    if not (tree / "esi").exists():
        tree.mkdir(parents=True, exist_ok=True)
        packages = ["git", "archive", rev, "esi", "modeling_esi"]
        archive = subprocess.run(packages, cwd=REPO, capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", str(tree)], input=archive.stdout, check=True)
    return tree


def timed_run(tree: Path, spec: dict) -> dict:
    """One pretraining run by the code in `tree`, in a fresh process: samples/s, step losses, peak RSS."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    done = subprocess.run(
        [sys.executable, "-c", RECIPE_RUNNER, json.dumps(spec)], cwd=tree, env=env, capture_output=True, text=True
    )
    if done.returncode:
        raise RuntimeError(f"pretraining run in {tree} failed:\n{done.stderr[-4000:]}")
    run = json.loads(done.stdout.strip().splitlines()[-1])
    summary = json.loads((Path(run["model_dir"]) / "training_summary.json").read_text())
    batch = spec["OptimizationArguments"]["per_device_batch_size"]
    history = summary["log_history"]
    return {
        "samples_per_s": round(throughput(summary, batch), 4) if len(history) > 1 else None,
        "first_step_losses": {k: history[0][k] for k in ("loss", "contrastive_loss", "caption_loss")},
        "step_losses": [round(entry["loss"], 7) for entry in history],
        "text_cache_seconds": summary.get("text_cache_seconds"),
        "peak_rss_gib": round(run["peak_rss_gib"], 3),
        "model_sha256": hashlib.sha256((Path(run["model_dir"]) / "model.safetensors").read_bytes()).hexdigest(),
        "load_average_1min_after": round(os.getloadavg()[0], 2),
    }


# The demo's recipe before it trained a smaller caption decoder over the trimmed vocabulary (the baseline's one):
# esi-train's 4-layer, 256-wide decoder over the whole vocabulary.
PREVIOUS_DEMO = "demo (previous recipe)"


def previous_demo_model(model_args):
    """The demo's model arguments as they were before: esi-train's default caption decoder, whole vocabulary."""
    defaults = type(model_args)()
    return replace(
        model_args,
        trim_vocabulary=False,
        decoder_layers=defaults.decoder_layers,
        decoder_width=defaults.decoder_width,
    )


def speedup_recipes(args: argparse.Namespace) -> dict[str, tuple]:
    """The timed recipes: the demo's (today's and its previous one, `PREVIOUS_DEMO`), and the
    claim benchmark's caption arm through esi-train."""
    from benchmarks.esi_claim.profiles import PROFILES
    from esi.demo import pretraining_arguments
    from esi.train.arguments import DataArguments, ModelArguments, OptimizationArguments, RunArguments

    sample, sample_captions = prepare_slice(args.sample_dir, 10**9, args.cache_dir)
    pool, pool_captions = prepare_slice(args.pool_dir, args.records, args.cache_dir)
    claim = PROFILES["cpu"]
    demo = pretraining_arguments(sample, sample_captions, args.cache_dir / "unused")
    return {
        "demo": demo,
        PREVIOUS_DEMO: (demo[0], previous_demo_model(demo[1]), *demo[2:]),
        "claim caption arm": (
            DataArguments(signals=str(pool), captions=str(pool_captions), max_text_length=claim.max_text_length),
            ModelArguments(
                config=claim.encoder_size, freeze_text_tower=True, cache_text_embeddings=True,
                decoder_layers=claim.decoder_layers, decoder_width=claim.decoder_width,
                contrastive_loss_weight=1.0, caption_loss_weight=2.0,
            ),
            OptimizationArguments(per_device_batch_size=claim.batch_size, learning_rate=claim.learning_rate),
            RunArguments(output_dir=str(args.cache_dir / "unused")),
        ),
    }  # fmt: skip


def time_demo(args: argparse.Namespace) -> dict:
    output_dir = args.cache_dir / f"demo-{time.strftime('%Y%m%d-%H%M%S')}"
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "esi.demo", "--ptbxl-dir", str(args.sample_dir), "--output-dir", str(output_dir)],
        cwd=REPO, check=True, env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    summary = json.loads((output_dir / "pretraining" / "model" / "training_summary.json").read_text())
    history = summary["log_history"]
    return {
        "wall_seconds": round(time.perf_counter() - started, 1),
        "pretraining_seconds": summary["train_seconds"],
        "steps": summary["steps"],
        "first_and_last_logged_loss": [history[0]["loss"], history[-1]["loss"]],
        "load_average_1_5_15_min_after": [round(x, 2) for x in os.getloadavg()],
    }


# What --speedup times: per comparison, its arms (code version, recipe), and its ratios (numerator arm, denominator
# arm). A code-only ratio compares two code versions on one recipe, so its fixed-batch losses must agree; the
# recipe change trains another model (a smaller decoder and softmax), so it is a separate figure, never loss-identical.
COMPARISONS = {
    "demo": {
        "arms": {
            "baseline code, previous recipe": ("baseline", PREVIOUS_DEMO),
            "this code, previous recipe": ("this checkout", PREVIOUS_DEMO),
            "this code, demo recipe": ("this checkout", "demo"),
        },
        "speedups": {
            "code only (previous recipe)": ("this code, previous recipe", "baseline code, previous recipe"),
            "recipe change (this code)": ("this code, demo recipe", "this code, previous recipe"),
            "code and recipe change": ("this code, demo recipe", "baseline code, previous recipe"),
        },
    },
    "claim caption arm": {
        "arms": {
            "baseline code": ("baseline", "claim caption arm"),
            "this code": ("this checkout", "claim caption arm"),
        },
        "speedups": {"code only": ("this code", "baseline code")},
    },
}


def compare(args: argparse.Namespace, comparison: dict, recipes: dict, trees: dict, run_root: Path) -> dict:
    """Alternated timed runs of a comparison's arms, their fixed-batch losses, and its ratios."""
    arms = comparison["arms"]
    runs = {arm: [] for arm in arms}
    for round_index in range(args.rounds):  # alternated: a load change hits every arm alike
        for arm, (code, recipe) in arms.items():
            out = run_root / f"{arm}-{round_index}".replace(" ", "_").replace(",", "")
            runs[arm].append(timed_run(trees[code], timing_spec(recipes[recipe], args.steps + 1, args.seed, out)))
            print(f"{arm} / round {round_index}: {json.dumps(runs[arm][-1])}", flush=True)
    rate = {arm: statistics.median(r["samples_per_s"] for r in rs) for arm, rs in runs.items()}
    # One more step per arm without augmentations (the baseline's include a time stretch the current code no
    # longer draws): the same seed, initial weights and batch, before any update.
    first_loss = {}
    for arm, (code, recipe) in arms.items():
        out = run_root / f"{arm}-loss".replace(" ", "_").replace(",", "")
        first_loss[arm] = timed_run(trees[code], timing_spec(recipes[recipe], 1, args.seed, out, False))[
            "first_step_losses"
        ]
    code_only = {
        f"{new} vs {old}": {k: abs(first_loss[new][k] - first_loss[old][k]) for k in first_loss[old]}
        for new, old in comparison["speedups"].values()
        if arms[new][1] == arms[old][1]
    }
    return {
        "arms": {arm: {"code": code, "recipe": recipe} for arm, (code, recipe) in arms.items()},
        "recipes": {
            recipe: timing_spec(recipes[recipe], args.steps + 1, args.seed, run_root) for _, recipe in arms.values()
        },
        "median_samples_per_s": rate,
        "speedups": {name: round(rate[new] / rate[old], 3) for name, (new, old) in comparison["speedups"].items()},
        "per_round_speedups": {
            name: [round(n["samples_per_s"] / o["samples_per_s"], 3) for o, n in zip(runs[old], runs[new], strict=True)]
            for name, (new, old) in comparison["speedups"].items()
        },
        "fixed_batch_losses": first_loss,
        "fixed_batch_loss_abs_difference": code_only,
        "runs": runs,
    }


def speedup_benchmark(args: argparse.Namespace) -> dict:
    started = time.perf_counter()
    load_before = [round(x, 2) for x in os.getloadavg()]
    trees = {"baseline": baseline_tree(args.baseline, args.cache_dir), "this checkout": REPO}
    run_root = args.cache_dir / f"speedup-{time.strftime('%Y%m%d-%H%M%S')}"
    recipes = speedup_recipes(args)
    comparisons = {
        name: compare(args, comparison, recipes, trees, run_root / name.replace(" ", "_"))
        for name, comparison in COMPARISONS.items()
    }
    result = {
        "benchmark": "bench_train --speedup",
        "command": "python -m benchmarks.bench_train " + shlex.join(sys.argv[1:]),
        "git": {"commit": git_commit(), "dirty_files": changed_files()},
        "baseline": {"rev": args.baseline, "tree": str(trees["baseline"])},
        "seed": args.seed,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}",
        "note": (
            f"samples/s over {args.steps} steps after one warm-up step, median of {args.rounds} alternated runs "
            "per arm, each in a fresh process; a speedup is a ratio of those medians (same run, same machine). "
            "'code only' compares two code versions on one recipe (fixed-batch losses must agree); 'recipe change' "
            "trains a smaller caption decoder (2 x 128, the CPU claim profile's) over the trimmed vocabulary: another "
            "model and a smaller softmax, so its losses differ by design"
        ),
        "comparisons": comparisons,
        "demo": time_demo(args) if args.time_demo else None,
        "wall_seconds": round(time.perf_counter() - started, 1),
        # Other jobs share this CPU: the ratios are same-run, but absolute rates depend on the load.
        "load_average_1_5_15_min_before": load_before,
        "load_average_1_5_15_min_at_end": [round(x, 2) for x in os.getloadavg()],
    }
    out = REPO / "benchmarks" / "results" / f"bench_train_speedup-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({name: {k: c[k] for k in ("median_samples_per_s", "speedups", "fixed_batch_loss_abs_difference")}
                      for name, c in comparisons.items()}, indent=2))  # fmt: skip
    print(f"wrote {out}")
    return result


def profile_benchmark(args: argparse.Namespace) -> dict:
    from benchmarks.train_profile import profile_pretraining

    started = time.perf_counter()
    load_before = [round(x, 2) for x in os.getloadavg()]
    arguments = speedup_recipes(args)[args.profile_recipe]
    output_dir = args.cache_dir / f"profile-{time.strftime('%Y%m%d-%H%M%S')}"
    spec = timing_spec(arguments, args.steps + 1, args.seed, output_dir)
    groups = tuple(type(group)(**spec[type(group).__name__]) for group in arguments)
    if args.threads:
        torch.set_num_threads(args.threads)
    profile = profile_pretraining(groups, args.steps)
    summary = json.loads((Path(profile.pop("model_dir")) / "training_summary.json").read_text())
    result = {
        "benchmark": "bench_train --profile-step",
        "command": "python -m benchmarks.bench_train " + shlex.join(sys.argv[1:]),
        "git": {"commit": git_commit(), "dirty_files": changed_files()},
        "seed": args.seed,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}",
        "recipe_name": args.profile_recipe,
        "recipe": spec,
        "note": (
            "seconds per step are profiled wall time (the profiler's own cost and other processes' load included), "
            "steps 2..N+1 of one run; compare the shares, and samples/s only through --speedup"
        ),
        **profile,
        "caption_vocabulary": summary["caption_vocabulary"],
        "text_cache_seconds": summary["text_cache_seconds"],
        "wall_seconds": round(time.perf_counter() - started, 1),
        "load_average_1_5_15_min_before": load_before,
        "load_average_1_5_15_min_at_end": [round(x, 2) for x in os.getloadavg()],
    }
    out = REPO / "benchmarks" / "results" / f"bench_train_profile-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["by_part"], indent=1))
    print(f"wrote {out}")
    return result


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pool", action="store_true", help="throughput of the recipes on the pretraining pool")
    p.add_argument("--speedup", action="store_true", help="this checkout's samples/s against --baseline's")
    p.add_argument("--baseline", default=BASELINE_REV, help="commit whose code is the baseline (--speedup)")
    p.add_argument("--rounds", type=int, default=2, help="alternated runs per code version (--speedup)")
    p.add_argument("--profile-step", action="store_true", help="profile --steps steps of --profile-recipe")
    p.add_argument("--profile-recipe", default="demo", help="which --speedup recipe --profile-step profiles")
    p.add_argument(
        "--threads", type=int, default=None, help="torch threads for --profile-step (default: torch's choice)"
    )
    p.add_argument("--time-demo", action="store_true", help="also time `python -m esi.demo` (--speedup)")
    p.add_argument("--sample-dir", type=Path, default=REPO / "data" / "ptbxl_sample", help="the demo's PTB-XL sample")
    p.add_argument("--pool-dir", type=Path, default=REPO.parent / "shared" / "ptb-xl-pretrain")
    p.add_argument("--ptbxl-dir", type=Path, default=REPO.parent / "shared" / "ptb-xl", help="evaluation corpus")
    p.add_argument("--records", type=int, default=320, help="pool records prepared and captioned (first N)")
    p.add_argument("--cache-dir", type=Path, default=REPO / "outputs" / "bench_train")
    p.add_argument("--steps", type=int, default=6, help="timed steps per recipe (--pool) or training steps")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--batch-size", type=int, default=32, help="per-device batch (train.py's default: 32)")
    args = p.parse_args(argv)
    if args.speedup:
        return speedup_benchmark(args)
    if args.profile_step:
        return profile_benchmark(args)
    if not args.pool:
        return retrieval_benchmark(args)
    result = pool_benchmark(args)
    out = REPO / "benchmarks" / "results" / f"bench_train_pool-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    report = pool_report(result)
    (REPO / "benchmarks" / "reports" / "train_pool.md").write_text(report + f"\n\nResult file: `{out.name}`.\n")
    print(report)
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()
