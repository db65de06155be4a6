"""Throughput and peak memory of preparation: the PTB-XL pool, the pool replicated 4x, the Challenge samples.

    python -m benchmarks.bench_prepare                      # all runs, writes benchmarks/results/prepare.json
    python -m benchmarks.bench_prepare --runs pool pool-x4  # a subset

Runs (each in its own process, so peak memory is that run's):
- `pool`: ../shared/ptb-xl-pretrain, 6,000 records at 100 Hz;
- `pool-x4`: the same rows listed 4 times under new ecg_ids (24,000 records; the same files are read,
  nothing is copied);
- `cinc2021`, `cpsc2018`: the Challenge samples (50 and 150 records, 500 Hz resampled to 100 Hz).
Targets (2 CPU cores): pool under 40 s and 2 GiB; peak RSS of pool-x4 within 20% of pool's.
Peak memory is the run's main process peak RSS plus the largest peak RSS among its reader processes
(`ru_maxrss` of RUSAGE_SELF + RUSAGE_CHILDREN): an upper bound on what was resident at once.
Timings depend on what else shares the machine's cores (the load average is recorded).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.provenance import git_commit, utc_timestamp

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED = REPO_ROOT.parent / "shared"
RUNS = ("pool", "pool-x4", "cinc2021", "cpsc2018")
DEFAULT_OUTPUT = REPO_ROOT / "benchmarks" / "results" / "prepare.json"


def _source(run: str):
    from esi.data.challenge import ChallengeSource
    from esi.data.ptbxl import PtbxlSource

    if run == "pool":
        return PtbxlSource(SHARED / "ptb-xl-pretrain", 100)
    if run == "pool-x4":
        return PtbxlSource(SHARED / "ptb-xl-pretrain", 100, replicas=4)
    if run == "cinc2021":
        return ChallengeSource(SHARED / "cinc2021-sample", 100)
    if run == "cpsc2018":
        return ChallengeSource(SHARED / "cpsc2018-sample", 100)
    raise ValueError(f"unknown run {run!r}; expected one of {RUNS}")


def measure(run: str, num_proc: int) -> dict:
    """Prepare one run into a temporary folder; wall time, records/s, peak memory, size on disk."""
    from esi.data.prepare import PrepareOptions, prepare_source

    with tempfile.TemporaryDirectory(prefix="bench_prepare-") as scratch:
        start = time.perf_counter()
        prepared = prepare_source(_source(run), Path(scratch) / "prepared", PrepareOptions(num_proc=num_proc))
        elapsed = time.perf_counter() - start
        on_disk = sum(f.stat().st_size for f in Path(scratch).rglob("*") if f.is_file())
        records = sum(split.num_rows for split in prepared.values())
    usage = {who: resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)}
    self_peak, child_peak = (usage[who].ru_maxrss / 2**20 for who in usage)  # KiB -> GiB
    return {
        "run": run,
        "records": records,
        "wall_s": round(elapsed, 2),
        "records_per_s": round(records / elapsed, 1),
        "cpu_s": round(sum(u.ru_utime + u.ru_stime for u in usage.values()), 1),
        "peak_rss_main_gib": round(self_peak, 3),
        "peak_rss_largest_reader_gib": round(child_peak, 3),
        "peak_rss_gib": round(self_peak + child_peak, 3),
        "on_disk_mib": round(on_disk / 2**20, 1),
        "num_proc": num_proc,
        "load_average_end": round(os.getloadavg()[0], 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", nargs="+", choices=RUNS, default=list(RUNS))
    parser.add_argument("--num-proc", type=int, default=2)
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="result JSON")
    parser.add_argument("--one", choices=RUNS, help=argparse.SUPPRESS)  # child mode: one run, JSON on stdout
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args.num_proc)))
        return

    results = []
    for run in args.runs:
        child = subprocess.run(
            [sys.executable, "-m", "benchmarks.bench_prepare", "--one", run, "--num-proc", str(args.num_proc)],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
        result = json.loads(child.stdout.strip().splitlines()[-1])
        results.append(result)
        print(
            f"{run}: {result['records']} records in {result['wall_s']} s -> {result['records_per_s']} records/s; "
            f"peak RSS {result['peak_rss_gib']} GiB (main {result['peak_rss_main_gib']} + reader "
            f"{result['peak_rss_largest_reader_gib']}); {result['on_disk_mib']} MiB on disk"
        )
    by_run = {r["run"]: r for r in results}
    summary = {}
    if "pool" in by_run:
        summary["pool_under_40_s"] = by_run["pool"]["wall_s"] < 40
        summary["pool_under_2_gib"] = by_run["pool"]["peak_rss_gib"] < 2
    if {"pool", "pool-x4"} <= by_run.keys():
        ratio = by_run["pool-x4"]["peak_rss_gib"] / by_run["pool"]["peak_rss_gib"]
        summary["peak_rss_ratio_x4_over_pool"] = round(ratio, 3)
        summary["x4_within_20_percent"] = ratio <= 1.2
    print(json.dumps(summary))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(
        json.dumps(
            {
                "command": "python -m benchmarks.bench_prepare " + " ".join(sys.argv[1:]),
                "git_commit": git_commit(),
                "cpus": os.cpu_count(),
                "date_utc": utc_timestamp(),
                "results": results,
                "summary": summary,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
