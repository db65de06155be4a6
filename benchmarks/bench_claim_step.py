"""CPU cost of the claim grid's pretraining steps through `esi.train`, and the wall time it implies for the grid.

    python -m benchmarks.bench_claim_step [--pack outputs/esi_claim/full/pack] [--steps 10] [--profile cpu]

Runs `--steps` pretraining steps of each measured arm exactly as the grid does (`benchmarks.esi_claim.pretraining`:
esi_full and statements_only are `esi-train` runs with precomputed text embeddings, supervised_pool and
ssl_two_views the same trainer with their objectives), and one cross-fitted probe (10 folds) on features of the
evaluation set's size; derives the CPU seconds per 1,000 steps and the wall time of the learning curve and of the
grid on this machine. Writes benchmarks/results/claim_step.json (command, commit, seed, load average, date).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from benchmarks.esi_claim.crossfit import crossfit_probe
from benchmarks.esi_claim.pretraining import ARMS, ARMS_BY_NAME, pretrain_arm, write_train_inputs
from benchmarks.esi_claim.profiles import MULTI_SEED_ARMS, PROFILES
from benchmarks.esi_claim.run import Pack
from benchmarks.provenance import git_commit, utc_timestamp

REPO_ROOT = Path(__file__).resolve().parent.parent
MEASURED = ("esi_full", "statements_only", "supervised_pool", "ssl_two_views")
EVALUATION_RECORDS = 3477  # ../shared/ptb-xl: every record is scored once by the cross-fitted probes


def probe_seconds(profile, hidden: int, classes: int, seed: int) -> float:
    """CPU seconds of one cross-fitted probe (10 folds) on random features of the evaluation set's size."""
    rng = np.random.default_rng(seed)
    labels = (rng.random((EVALUATION_RECORDS, classes)) < 0.15).astype(np.int64)
    labels[labels.sum(1) == 0, 0] = 1
    features = (labels @ rng.normal(size=(classes, hidden)) + rng.normal(size=(EVALUATION_RECORDS, hidden))).astype(
        np.float32
    )
    folds = rng.integers(1, 11, EVALUATION_RECORDS)
    started = time.process_time()
    crossfit_probe(features, labels, [str(c) for c in range(classes)], folds, np.arange(EVALUATION_RECORDS), 0.1, seed,
                   profile.probe_epochs, profile.probe_patience)  # fmt: skip
    return time.process_time() - started


def main(argv: list[str] | None = None) -> Path:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pack", type=Path, default=REPO_ROOT / "outputs" / "esi_claim" / "full" / "pack")
    p.add_argument("--profile", default="cpu", choices=sorted(PROFILES))
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", type=Path, default=REPO_ROOT / "benchmarks" / "results" / "claim_step.json")
    args = p.parse_args(argv)
    # Checkpoints at the end only: their cost is paid every `checkpointing_steps` in the grid, not per step.
    profile = replace(PROFILES[args.profile], checkpointing_steps=args.steps)
    pack = Pack(args.pack)
    work = Path(tempfile.mkdtemp(prefix="claim_step_"))
    arms = {}
    try:
        inputs = write_train_inputs(pack, work / "inputs")
        # The same-run baseline: esi_full with the decoder over the tokenizer's whole vocabulary.
        measured = {name: (name, profile) for name in MEASURED}
        measured["esi_full_whole_vocabulary"] = ("esi_full", replace(profile, trim_vocabulary=False))
        for name, (arm, setting) in measured.items():
            _, run = pretrain_arm(ARMS_BY_NAME[arm], setting, pack, inputs, args.seed, args.steps, work / name)
            arms[name] = {
                "steps": run["steps"],
                "train_seconds": run["train_seconds"],
                "train_cpu_seconds": run["train_cpu_seconds"],
                "cpu_seconds_per_1000_steps": round(1000 * run["train_cpu_seconds"] / run["steps"], 1),
                "wall_seconds_per_1000_steps": round(1000 * run["train_seconds"] / run["steps"], 1),
            }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    probe = probe_seconds(profile, hidden=320, classes=23, seed=args.seed)
    per_step = {name: a["wall_seconds_per_1000_steps"] / 1000 for name, a in arms.items()}
    speedup = arms["esi_full_whole_vocabulary"]["train_seconds"] / arms["esi_full"]["train_seconds"]
    probes_per_encoder = len(profile.tasks) * len(profile.fractions) * len(profile.probe_seeds or (args.seed,))
    curve_hours = sum(per_step[a] * n for a in profile.curve_arms for n in profile.curve_steps) / 3600
    curve_hours += len(profile.curve_arms) * len(profile.curve_steps) * probes_per_encoder * probe / 3600

    def grid_hours(steps: int) -> float:
        seconds = 0.0
        for arm in ARMS:
            if arm.kind in ("scratch", "random") or arm.train_text_tower:
                continue
            seeds = len(profile.pretrain_seeds) if arm.name in MULTI_SEED_ARMS else 1
            step = per_step.get(arm.name, per_step["esi_full"])  # the other text arms cost what esi_full costs
            seconds += seeds * (steps * step + probes_per_encoder * probe)
        return seconds / 3600

    result = {
        "benchmark": "claim_step",
        "command": shlex.join(["python", "-m", "benchmarks.bench_claim_step", *sys.argv[1:]]),
        "git_commit": git_commit(),
        "seed": args.seed,
        "date_utc": utc_timestamp(),
        "load_average": list(os.getloadavg()),
        "cpu_count": os.cpu_count(),
        "profile": profile.name,
        "batch_size": profile.batch_size,
        "pack_meta_sha256": pack.meta_sha256,
        "pool_records": len(pack.pool),
        "arms": arms,
        "trimmed_vocabulary_speedup_esi_full": round(speedup, 2),
        "crossfit_probe_cpu_seconds": round(probe, 1),
        "probes_per_encoder": probes_per_encoder,
        "estimate_note": "wall hours on this machine at the measured load: steps x measured wall seconds per step "
        "+ probes x measured probe seconds; excludes supervised_scratch and evaluation-set embedding",
        "learning_curve_hours": round(curve_hours, 2),
        "grid_hours_by_steps": {str(n): round(grid_hours(n), 2) for n in sorted({*profile.curve_steps, profile.steps})},
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))
    return args.output


if __name__ == "__main__":
    main()
