"""CPU cost of the claim grid's pretraining batches (augment + featurize), and what it implies for the gpu profile.

    python -m benchmarks.bench_claim_batches [--pack outputs/esi_claim/full/pack] [--steps 20]

On one accelerator the pretraining step of the `gpu` profile is fast, and the batch preparation on the CPU
(`benchmarks.esi_claim.run.PretrainingBatches`: seeded augmentation of 256 records, then the feature
extractor) can become the bound. This measures, on this machine, the time per prepared batch in line (one
process, one thread) and through the runner's DataLoader with 2 worker processes, in the same run, and derives
the CPU seconds the whole `gpu` grid's batches need: one measured number times a count, an estimate for the
accelerator's host (its cores were not measured). Writes benchmarks/results/claim_batches.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from benchmarks.esi_claim.profiles import MULTI_SEED_ARMS, PROFILES
from benchmarks.esi_claim.run import ARMS, Pack, PretrainingBatches, git_commit

REPO_ROOT = Path(__file__).resolve().parent.parent


def batches_per_grid(profile_name: str) -> int:
    """Prepared batches the profile's grid draws: steps x views, summed over every pretraining run."""
    profile = PROFILES[profile_name]
    total = 0
    for arm in ARMS:
        if arm.kind in ("random", "scratch"):
            continue
        seeds = len(profile.pretrain_seeds) if arm.name in MULTI_SEED_ARMS else 1
        total += seeds * profile.steps * (2 if arm.kind == "ssl" else 1)
    return total


def time_batches(pack: Pack, batch_size: int, steps: int, workers: int) -> dict:
    batches = PretrainingBatches(pack.pool_signals, pack.meta["sampling_rate"], 0, steps, batch_size, views=1)
    loader = torch.utils.data.DataLoader(
        batches, batch_size=None, num_workers=workers, prefetch_factor=4 if workers else None
    )
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in loader:
        pass
    wall = time.perf_counter() - wall
    return {
        "workers": workers,
        "steps": steps,
        "wall_ms_per_batch": round(1000 * wall / steps, 2),
        # the main process alone: with workers, their CPU time is spent elsewhere
        "main_process_cpu_ms_per_batch": round(1000 * (time.process_time() - cpu) / steps, 2),
    }


def main(argv: list[str] | None = None) -> Path:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pack", type=Path, default=REPO_ROOT / "outputs" / "esi_claim" / "full" / "pack")
    p.add_argument("--profile", default="gpu", choices=sorted(PROFILES), help="whose batch size and grid to price")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--output", type=Path, default=REPO_ROOT / "benchmarks" / "results" / "claim_batches.json")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    profile = PROFILES[args.profile]
    pack = Pack(args.pack)
    load_before = os.getloadavg()[0]
    time_batches(pack, profile.batch_size, 2, 0)  # warm-up: page in the signals, import paths
    inline = time_batches(pack, profile.batch_size, args.steps, 0)
    two_workers = time_batches(pack, profile.batch_size, args.steps, 2)
    count = batches_per_grid(args.profile)
    result = {
        "command": shlex.join(["python", "-m", "benchmarks.bench_claim_batches", *sys.argv[1:]]),
        "git_commit": git_commit(),
        "date_utc": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": {
            "cpus": os.cpu_count(),
            "load_average_before": load_before,
            "load_average_after": os.getloadavg()[0],
        },
        "profile": args.profile,
        "batch_size": profile.batch_size,
        "pack_records": pack.meta["pool_records"],
        "inline": inline,
        "dataloader_2_workers": two_workers,
        "speedup_2_workers": round(inline["wall_ms_per_batch"] / two_workers["wall_ms_per_batch"], 2),
        "grid_batches": count,
        "grid_cpu_seconds_estimate": round(count * inline["wall_ms_per_batch"] / 1000, 1),
        "note": "grid_cpu_seconds_estimate = grid_batches x the in-line time per batch measured here; divide by the "
        "profile's loader_workers for the accelerator host's wall time if its cores match these (not measured)",
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    return args.output


if __name__ == "__main__":
    main()
