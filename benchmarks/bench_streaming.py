"""Pretraining from the memory-mapped corpus vs. from a copy in RAM: samples/s and peak memory at N and 4N records.

    python -m benchmarks.bench_streaming          # N = 1000, 3 repeats; writes benchmarks/results/streaming.json
    python -m benchmarks.bench_streaming --records 500 --repeats 1

Corpora: the first N records of ../shared/ptb-xl-pretrain prepared at 100 Hz, and the same rows listed 4 times
under new ids (4N records, bench_prepare's replication: `PtbxlSource(replicas=4)`), built once in --cache-dir.
Captions are each record's report text (the benchmark times the data path, not caption quality).

Each measurement is a fresh process that builds train.py's training loader with `esi.train.data.build_data`
(default recipe: augmentations on, batch 32, the offline MiniLM tokenizer, the model's feature extractor)
either memory-mapped (the default) or with `--keep-in-memory`, then reads one whole epoch. It reports
samples/s over that epoch (the data path a training step waits for: a model step adds the same time to
both modes, so the ratio of whole training steps is closer to 1 than this one), the time to build the
loader, and peak memory sampled every 10 ms from /proc/self/status:
- `peak_rss_anon_mib`: private memory (heap, arrays): what the process needs;
- `peak_rss_file_mib`: file pages mapped and touched (the memory-mapped Arrow files): page cache that the
  kernel drops under memory pressure, so a corpus larger than RAM still trains;
- `peak_rss_mib`: their sum as `ps` shows it (VmHWM).
Modes run interleaved (memmap, in-memory, memmap, ...) so load from other jobs hits both alike; each
figure is the median over --repeats. Targets: memory-mapped samples/s within 10% of in-memory, and
private memory at 4N within 20% of that at N.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED = REPO_ROOT.parent / "shared"
DEFAULT_OUTPUT = REPO_ROOT / "benchmarks" / "results" / "streaming.json"
MODES = ("memory-mapped", "in-memory")
BATCH = 32
SEED = 42


def build_corpus(records: int, replicas: int, cache: Path) -> tuple[Path, Path]:
    """Prepared signals and a captions Parquet folder for `records` pool rows x `replicas`; built once."""
    import datasets

    from esi.data.prepare import PrepareOptions, prepare_source
    from esi.data.ptbxl import PtbxlSource

    prepared = cache / f"pool-{records}x{replicas}-100hz"
    captions = cache / f"pool-{records}x{replicas}-captions"
    if not (prepared / "dataset_dict.json").exists():
        source = PtbxlSource(SHARED / "ptb-xl-pretrain", 100, limit=records, replicas=replicas)
        prepare_source(source, prepared, PrepareOptions(num_proc=2))
    if not (captions / "data").is_dir():
        signals = datasets.load_from_disk(str(prepared))
        rows = {"ecg_id": [], "caption": []}
        for split in signals.values():
            rows["ecg_id"] += split["ecg_id"]
            rows["caption"] += [report.strip() or "ECG" for report in split["report"]]
        (captions / "data").mkdir(parents=True)
        datasets.Dataset.from_dict(rows).to_parquet(str(captions / "data" / "train-00000-of-00001.parquet"))
    return prepared, captions


class PeakMemory:
    """Peaks of VmRSS, RssAnon and RssFile of this process, sampled every `interval` seconds."""

    FIELDS = {"VmRSS": "peak_rss_mib", "RssAnon": "peak_rss_anon_mib", "RssFile": "peak_rss_file_mib"}

    def __init__(self, interval: float = 0.01):
        self.interval = interval
        self.peaks = dict.fromkeys(self.FIELDS.values(), 0.0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> None:
        for line in Path("/proc/self/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in self.FIELDS:
                name = self.FIELDS[key]
                self.peaks[name] = max(self.peaks[name], int(value.split()[0]) / 1024)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def __enter__(self) -> PeakMemory:
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()


def measure(mode: str, prepared: Path, captions: Path) -> dict:
    """One epoch of train.py's training loader in this process: samples/s and peak memory."""
    import torch
    from transformers import AutoTokenizer

    from esi.data.torch_dataset import is_memory_mapped
    from esi.text_encoder import default_text_model_path
    from esi.train.arguments import parse_args
    from esi.train.data import build_data
    from modeling_esi import EsiFeatureExtractor

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as scratch, PeakMemory() as memory:
        argv = ["--signals", str(prepared), "--captions", str(captions), "--output-dir", scratch,
                "--per-device-batch-size", str(BATCH), "--eval-split", "none", "--seed", str(SEED)]  # fmt: skip
        if mode == "in-memory":
            argv.append("--keep-in-memory")
        data_args, _, optim_args, _ = parse_args(argv)
        started = time.perf_counter()
        tokenizer = AutoTokenizer.from_pretrained(default_text_model_path())
        data = build_data(data_args, optim_args, EsiFeatureExtractor(), tokenizer)
        load_s = time.perf_counter() - started
        baseline = dict(memory.peaks)
        started, samples = time.perf_counter(), 0
        for batch in data.train_loader:
            samples += len(batch["ecg_ids"])
        epoch_s = time.perf_counter() - started
    return {
        "mode": mode,
        "memory_mapped": is_memory_mapped(data.train_set.signals),
        "train_records": len(data.train_set),
        "samples": samples,
        "samples_per_s": round(samples / epoch_s, 1),
        "epoch_s": round(epoch_s, 2),
        "load_s": round(load_s, 2),
        **{k: round(v, 1) for k, v in memory.peaks.items()},
        "rss_anon_after_load_mib": round(baseline["peak_rss_anon_mib"], 1),
        "load_average": round(os.getloadavg()[0], 2),
    }


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True).stdout.strip()


def summarise(runs: list[dict], sizes: dict[str, int]) -> dict:
    by = {}
    for label in sizes:
        for mode in MODES:
            mine = [r for r in runs if r["corpus"] == label and r["mode"] == mode]
            by[label, mode] = {
                key: statistics.median(r[key] for r in mine)
                for key in ("samples_per_s", "load_s", "peak_rss_mib", "peak_rss_anon_mib", "peak_rss_file_mib")
            }
    summary = {"median_over_repeats": {f"{label} {mode}": v for (label, mode), v in by.items()}}
    for label in sizes:
        ratio = by[label, "memory-mapped"]["samples_per_s"] / by[label, "in-memory"]["samples_per_s"]
        summary[f"samples_per_s_ratio_memory_mapped_over_in_memory_{label}"] = round(ratio, 3)
        summary[f"memory_mapped_within_10_percent_{label}"] = ratio >= 0.9
    small, large = sizes
    for mode in MODES:
        ratio = by[large, mode]["peak_rss_anon_mib"] / by[small, mode]["peak_rss_anon_mib"]
        summary[f"peak_rss_anon_ratio_{large}_over_{small}_{mode}"] = round(ratio, 3)
    summary["memory_mapped_private_memory_flat"] = (
        summary[f"peak_rss_anon_ratio_{large}_over_{small}_memory-mapped"] <= 1.2
    )
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=1000, help="N: pool records of the small corpus")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cache-dir", type=Path, default=Path(tempfile.gettempdir()) / "esi-bench-streaming")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--one", nargs=3, metavar=("MODE", "PREPARED", "CAPTIONS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        mode, prepared, captions = args.one
        print(json.dumps(measure(mode, Path(prepared), Path(captions))))
        return

    sizes = {"N": args.records, "4N": 4 * args.records}
    corpora = {label: build_corpus(args.records, replicas, args.cache_dir) for label, replicas in (("N", 1), ("4N", 4))}
    runs = []
    for repeat in range(args.repeats):
        for label, (prepared, captions) in corpora.items():
            for mode in MODES:
                child = subprocess.run(
                    [sys.executable, "-m", "benchmarks.bench_streaming", "--one", mode, str(prepared), str(captions)],
                    cwd=REPO_ROOT,
                    capture_output=True,
                    text=True,
                )
                if child.returncode:
                    raise RuntimeError(f"{label} {mode} failed:\n{child.stderr[-3000:]}")
                run = {"corpus": label, "repeat": repeat, **json.loads(child.stdout.strip().splitlines()[-1])}
                runs.append(run)
                print(
                    f"{label} ({run['train_records']} train records) {mode}: {run['samples_per_s']} samples/s, "
                    f"load {run['load_s']} s, peak private {run['peak_rss_anon_mib']} MiB, "
                    f"file-backed {run['peak_rss_file_mib']} MiB"
                )
    summary = summarise(runs, sizes)
    print(json.dumps(summary, indent=2))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    result = {
        "benchmark": "bench_streaming",
        "command": "python -m benchmarks.bench_streaming " + " ".join(sys.argv[1:]),
        "git_commit": git("rev-parse", "HEAD"),
        "git_dirty": bool(git("status", "--porcelain")),
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "seed": SEED,
        "cpus": os.cpu_count(),
        "corpus": "first N records of ../shared/ptb-xl-pretrain at 100 Hz; 4N = the same rows x4 under new ids",
        "records": sizes,
        "batch_size": BATCH,
        "recipe": "train.py's training loader (build_data): augmentations on, MiniLM tokenizer, max text length 320",
        "runs": runs,
        "summary": summary,
    }
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
