"""Pretraining from the memory-mapped corpus vs. from a copy in RAM: samples/s and peak memory at N and 4N records.

    python -m benchmarks.bench_streaming          # N = 500, 4 repeats; writes benchmarks/results/streaming.json
    python -m benchmarks.bench_streaming --records 200 --repeats 1   # a quick look

Corpora: the first N records of ../shared/ptb-xl-pretrain prepared at 100 Hz, and the same rows listed 4 times
under new ids (4N records, bench_prepare's replication: `PtbxlSource(replicas=4)`), built once in --cache-dir.
Captions are each record's report text (the benchmark times the data path, not caption quality).

Each measurement is a fresh process that builds train.py's training loader with `esi.train.data.build_data`
(default recipe: augmentations on, batch 32, the offline MiniLM tokenizer, the model's feature extractor)
either memory-mapped (the default) or with `--keep-in-memory`, then reads two whole epochs. It reports
samples/s of the first epoch including the loader's construction (an in-memory run reads the whole corpus
there) and of the second epoch alone: the data path a training step waits for (a model step adds the same
time to both modes, so the ratio of whole training steps is closer to 1 than this one), and peak memory
sampled every 10 ms from /proc/self/status:
- `peak_rss_anon_mib`: private memory (heap, arrays): what the process needs;
- `peak_rss_file_mib`: file pages mapped and touched (the memory-mapped Arrow files): page cache that the
  kernel drops under memory pressure, so a corpus larger than RAM still trains;
- `peak_rss_mib`: their sum as `ps` shows it (VmHWM).
Modes run back to back within each repeat (memory-mapped, then in-memory) so load from other jobs hits
both alike; a throughput ratio is the median over repeats of the within-repeat ratio (wall-clock and per
CPU second of the process). Targets: memory-mapped samples/s within 10% of in-memory, and
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

from benchmarks.provenance import git_commit, utc_timestamp

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
    """Two epochs of train.py's training loader in this process: samples/s and peak memory."""
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
        started, cpu_started = time.perf_counter(), time.process_time()
        tokenizer = AutoTokenizer.from_pretrained(default_text_model_path())
        data = build_data(data_args, optim_args, EsiFeatureExtractor(), tokenizer)
        load_s, load_cpu_s = time.perf_counter() - started, time.process_time() - cpu_started
        epochs_s, epochs_cpu_s, samples = [], [], 0
        for epoch in range(2):
            data.train_set.set_epoch(epoch)
            started, cpu_started, samples = time.perf_counter(), time.process_time(), 0
            for batch in data.train_loader:
                samples += len(batch["ecg_ids"])
            epochs_s.append(time.perf_counter() - started)
            epochs_cpu_s.append(time.process_time() - cpu_started)
    return {
        "mode": mode,
        "memory_mapped": is_memory_mapped(data.train_set.signals),
        "train_records": len(data.train_set),
        "samples_per_epoch": samples,
        # The first epoch with the loader's construction (an in-memory run reads the whole corpus there).
        "first_epoch_samples_per_s": round(samples / (load_s + epochs_s[0]), 1),
        "second_epoch_samples_per_s": round(samples / epochs_s[1], 1),
        # Per CPU second of this process: less disturbed by other jobs on the machine than wall time, but
        # blind to time spent waiting for the disk (none here: the corpus is in the page cache).
        "first_epoch_samples_per_cpu_s": round(samples / (load_cpu_s + epochs_cpu_s[0]), 1),
        "second_epoch_samples_per_cpu_s": round(samples / epochs_cpu_s[1], 1),
        "load_s": round(load_s, 2),
        "epochs_s": [round(s, 2) for s in epochs_s],
        **{k: round(v, 1) for k, v in memory.peaks.items()},
        "load_average": round(os.getloadavg()[0], 2),
    }


def summarise(runs: list[dict], sizes: dict[str, int]) -> dict:
    """Medians per corpus and mode; throughput ratios as the median over repeats of the ratio within one
    repeat (its two runs ran back to back, so a load change on the machine hits both)."""
    rates = (
        "first_epoch_samples_per_s",
        "second_epoch_samples_per_s",
        "first_epoch_samples_per_cpu_s",
        "second_epoch_samples_per_cpu_s",
    )
    memory = ("load_s", "peak_rss_mib", "peak_rss_anon_mib", "peak_rss_file_mib")
    run = {(r["corpus"], r["repeat"], r["mode"]): r for r in runs}
    repeats = sorted({r["repeat"] for r in runs})
    summary: dict = {"median_over_repeats": {}}
    for label in sizes:
        for mode in MODES:
            mine = [run[label, k, mode] for k in repeats]
            summary["median_over_repeats"][f"{label} {mode}"] = {
                key: statistics.median(r[key] for r in mine) for key in rates + memory
            }
        for rate in rates:
            ratios = [run[label, k, "memory-mapped"][rate] / run[label, k, "in-memory"][rate] for k in repeats]
            summary[f"{rate}_ratio_memory_mapped_over_in_memory_{label}"] = round(statistics.median(ratios), 3)
            summary[f"{rate}_ratios_per_repeat_{label}"] = [round(x, 3) for x in ratios]
    median = summary["median_over_repeats"]
    small, large = sizes
    for mode in MODES:
        ratio = median[f"{large} {mode}"]["peak_rss_anon_mib"] / median[f"{small} {mode}"]["peak_rss_anon_mib"]
        summary[f"peak_rss_anon_ratio_{large}_over_{small}_{mode}"] = round(ratio, 3)
    summary["targets"] = {
        "memory_mapped_within_10_percent_of_in_memory": all(
            summary[f"{rate}_ratio_memory_mapped_over_in_memory_{label}"] >= 0.9 for rate in rates for label in sizes
        ),
        "memory_mapped_private_memory_4n_within_20_percent": summary[
            f"peak_rss_anon_ratio_{large}_over_{small}_memory-mapped"
        ]
        <= 1.2,
    }
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=500, help="N: pool records of the small corpus")
    parser.add_argument("--repeats", type=int, default=4)
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
                    f"{label} ({run['train_records']} train records) {mode}: first epoch with loading "
                    f"{run['first_epoch_samples_per_s']} samples/s, second {run['second_epoch_samples_per_s']}, "
                    f"peak private {run['peak_rss_anon_mib']} MiB, file-backed {run['peak_rss_file_mib']} MiB",
                    flush=True,
                )
    summary = summarise(runs, sizes)
    print(json.dumps(summary, indent=2))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    result = {
        "benchmark": "bench_streaming",
        "command": "python -m benchmarks.bench_streaming " + " ".join(sys.argv[1:]),
        "git_commit": git_commit(),
        "date_utc": utc_timestamp(),
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
