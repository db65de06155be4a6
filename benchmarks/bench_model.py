"""Speed and memory of the ESI ECG encoder sizes on this machine's CPU, at 100 Hz x 10 s.

Per size: ECG-encoder parameters, embedding throughput (`get_ecg_features`, batch 64, inference mode), time of one
full `EsiModel` training step (both losses, backward, AdamW; batch 32, 64-token captions), and peak resident
memory. Every size runs in its own subprocess so peak memory is its own.

    python -m benchmarks.bench_model                 # all sizes
    python -m benchmarks.bench_model --sizes atto femto --threads 2

Target for the default size (atto): embed PTB-XL's 3,477 local records in under 30 s, i.e. > 116 ECG/s.
"""

import argparse
import json
import resource
import subprocess
import sys
import time

import torch

from modeling_esi import EsiConfig, EsiModel
from modeling_esi.configuration_esi import ECG_ENCODER_PRESETS

TARGET_RECORDS, TARGET_SECONDS = 3477, 30.0


def measure(size: str, infer_batch: int, train_batch: int, repeats: int) -> dict:
    torch.manual_seed(0)
    model = EsiModel(EsiConfig(ecg_config=dict(size=size)))
    samples = model.config.ecg_config.num_samples
    ecg = torch.randn(infer_batch, 12, samples)

    model.eval()
    with torch.inference_mode():
        model.get_ecg_features(ecg)  # warm-up
        start = time.perf_counter()
        for _ in range(repeats):
            model.get_ecg_features(ecg)
        ecg_per_s = repeats * infer_batch / (time.perf_counter() - start)

    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    ids = torch.randint(1000, 30000, (train_batch, 64))
    ids[:, 0], ids[:, -1] = model.config.bos_token_id, model.config.eos_token_id
    mask = torch.ones_like(ids)
    train_ecg = torch.randn(train_batch, 12, samples)
    step_times = []
    for _ in range(repeats + 1):  # the first step is a warm-up
        start = time.perf_counter()
        model(train_ecg, ids, mask).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        step_times.append(time.perf_counter() - start)
    return {
        "size": size,
        "ecg_params_m": sum(p.numel() for p in model.ecg_model.parameters()) / 1e6,
        "ecg_per_s": ecg_per_s,
        "ptbxl_embed_s": TARGET_RECORDS / ecg_per_s,
        "train_step_s": sorted(step_times[1:])[len(step_times[1:]) // 2],
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=list(ECG_ENCODER_PRESETS), choices=list(ECG_ENCODER_PRESETS))
    parser.add_argument("--infer-batch", type=int, default=64)
    parser.add_argument("--train-batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: measure one size in this process
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.one:
        print(json.dumps(measure(args.one, args.infer_batch, args.train_batch, args.repeats)))
        return

    print(f"torch {torch.__version__}, {args.threads} threads, input 12 x 1000 (100 Hz x 10 s)")
    header = f"{'size':<6} {'ECG params (M)':>14} {'ECG/s (b64)':>12} {'3,477 ECGs (s)':>15}"
    print(header + f" {'train step (s, b32)':>20} {'peak RSS (GiB)':>15}")
    for size in args.sizes:
        command = [sys.executable, "-m", "benchmarks.bench_model", "--one", size, "--threads", str(args.threads)]
        command += ["--infer-batch", str(args.infer_batch), "--train-batch", str(args.train_batch)]
        command += ["--repeats", str(args.repeats)]
        row = json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout.splitlines()[-1])
        print(
            f"{row['size']:<6} {row['ecg_params_m']:>14.2f} {row['ecg_per_s']:>12.1f} {row['ptbxl_embed_s']:>15.1f}"
            f" {row['train_step_s']:>20.2f} {row['peak_rss_gib']:>15.2f}"
        )
    print(f"target for the default size: {TARGET_RECORDS} ECGs in < {TARGET_SECONDS:.0f} s (> 116 ECG/s)")


if __name__ == "__main__":
    main()
