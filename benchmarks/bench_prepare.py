"""Throughput and peak memory of `prepare_ptbxl` on a whole PTB-XL folder.

    python -m benchmarks.bench_prepare --ptbxl-dir ../shared/ptb-xl --sampling-rate 100

Target (3,477-record subset, 100 Hz, 2 CPU cores): under 60 s and under 2 GiB peak memory.
Peak memory is the parent's peak RSS plus the largest peak RSS among the reader processes
(`ru_maxrss` of RUSAGE_SELF + RUSAGE_CHILDREN), an upper bound on what was resident at once.
Timings depend on what else shares the machine's cores; report them with that caveat.
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from pathlib import Path

from esi.data.prepare_ptbxl import default_num_proc, prepare_ptbxl

REPO_ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ptbxl-dir", type=Path, default=REPO_ROOT.parent / "shared" / "ptb-xl")
    parser.add_argument("--sampling-rate", type=int, choices=(100, 500), default=100)
    parser.add_argument("--num-proc", type=int, default=None, help="reader processes (default: all CPUs)")
    parser.add_argument("--skip-missing", action="store_true", help="needed at 500 Hz on the 3,477-record subset")
    args = parser.parse_args()

    num_proc = args.num_proc or default_num_proc()
    with tempfile.TemporaryDirectory(prefix="bench_prepare-") as scratch:
        start = time.perf_counter()
        prepared = prepare_ptbxl(
            args.ptbxl_dir,
            Path(scratch) / "prepared",
            sampling_rate=args.sampling_rate,
            num_proc=num_proc,
            skip_missing=args.skip_missing,
        )
        elapsed = time.perf_counter() - start
        on_disk = sum(f.stat().st_size for f in Path(scratch).rglob("*") if f.is_file())

    usage = {who: resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)}
    cpu_s = sum(u.ru_utime + u.ru_stime for u in usage.values())
    # ru_maxrss is in KiB on Linux.
    self_peak, child_peak = (usage[who].ru_maxrss / 2**20 for who in usage)
    records = sum(split.num_rows for split in prepared.values())
    splits = ", ".join(f"{name} {split.num_rows}" for name, split in prepared.items())
    print(f"records: {records} at {args.sampling_rate} Hz ({splits})")
    print(f"wall time: {elapsed:.1f} s -> {records / elapsed:.0f} records/s (num_proc={num_proc})")
    print(f"CPU time (all processes, incl. imports): {cpu_s:.1f} s -> {1000 * cpu_s / records:.1f} ms per record")
    print(f"load average at end: {os.getloadavg()[0]:.1f} (other work on these cores slows the wall time)")
    print(f"peak RSS: main {self_peak:.2f} + largest reader {child_peak:.2f} = {self_peak + child_peak:.2f} GiB")
    print(f"on disk: {on_disk / 2**20:.0f} MiB")


if __name__ == "__main__":
    main()
