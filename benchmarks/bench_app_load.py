"""Load on the demo app: `app.py` on 127.0.0.1, N concurrent analyses of real uploads (PTB-XL WFDB, Philips
XML, the DICOM example) plus one hostile upload (a header declaring 10^5 signals, the one that held the
app 172 s before issue 14). Prints and writes to benchmarks/results/ the normal requests' latency and the
server's peak memory (server plus its worker processes), and checks them against the stated bounds.

    .venv/bin/python -m benchmarks.bench_app_load                      # 20 analyses, no model
    .venv/bin/python -m benchmarks.bench_app_load --model outputs/demo/pretraining/model
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil
import pydicom.examples
from gradio_client import Client, handle_file

from benchmarks.provenance import git_commit, utc_timestamp

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
PTBXL_RECORDS = REPO / "data" / "ptbxl_sample" / "records100"
PHILIPS = SHARED / "vendor-ecg" / "philips-xml" / "129DYPRG.XML"
# Stated bounds (2 workers, a 2-core machine shared with other jobs, no model): generous on purpose.
MAX_LATENCY_S = 240.0
MAX_PEAK_RSS_MB = 4096.0


@dataclass
class LoadResult:
    requests: int
    workers: int
    model: str | None
    latencies_s: list[float] = field(default_factory=list)
    normal_ok: int = 0
    failures: list[str] = field(default_factory=list)
    server_log_tail: str = ""
    hostile_status: str = ""
    hostile_latency_s: float = 0.0
    peak_rss_mb: float = 0.0
    idle_rss_mb: float = 0.0
    uploads_left_after_stop: int = -1
    upload_folders_left_after_stop: int = -1

    @property
    def max_latency_s(self) -> float:
        return max(self.latencies_s) if self.latencies_s else float("inf")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tree_rss_mb(process: psutil.Process) -> float:
    total = 0
    for p in [process, *process.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total / 2**20


def hostile_record(folder: Path, signals: int = 100_000) -> list[Path]:
    lines = [f"hostile {signals} 500 5000"] + [f"hostile.dat 16 200 16 0 0 0 0 X{i}" for i in range(signals)]
    header = folder / "hostile.hea"
    header.write_text("\n".join(lines) + "\n")
    dat = folder / "hostile.dat"
    dat.write_bytes(b"\0" * 1000)
    return [header, dat]


def normal_uploads(i: int, folder: Path) -> list[Path]:
    """Request i's upload, distinct as different users' ECGs are (Gradio stores uploads by content): a
    different real PTB-XL record, or the Philips XML / DICOM example with an XML comment / patient id added."""
    folder = folder / f"request_{i}"
    folder.mkdir(parents=True, exist_ok=True)
    kind = i % 3
    if kind == 0:
        record = sorted(PTBXL_RECORDS.glob("*/*.hea"))[i]
        return [Path(shutil.copy(record, folder)), Path(shutil.copy(record.with_suffix(".dat"), folder))]
    if kind == 1:
        xml = folder / PHILIPS.name
        xml.write_bytes(PHILIPS.read_bytes() + f"<!-- request {i} -->\n".encode())
        return [xml]
    dataset = pydicom.dcmread(pydicom.examples.get_path("waveform"))
    dataset.PatientID = f"request-{i}"
    dataset.save_as(folder / "waveform_ecg.dcm")
    return [folder / "waveform_ecg.dcm"]


def start_server(model: Path | None, work: Path, workers: int, timeout_s: float) -> tuple[subprocess.Popen, str]:
    port = free_port()
    (work / "tmp").mkdir()
    env = {
        **os.environ,
        "ESI_MODEL": str(model or work / "no-model"),
        "ESI_SAMPLES": str(REPO / "data" / "ptbxl_sample"),
        "ESI_CACHE": str(work / "cache"),
        "ESI_APP_WORKERS": str(workers),
        "ESI_ANALYSIS_TIMEOUT_S": str(timeout_s),
        "GRADIO_SERVER_NAME": "127.0.0.1",
        "GRADIO_SERVER_PORT": str(port),
        "GRADIO_ANALYTICS_ENABLED": "False",
        "TMPDIR": str(work / "tmp"),  # the server makes its private upload folder here
        "HF_HUB_OFFLINE": "1",
    }
    log = (work / "server.log").open("w")
    server = subprocess.Popen([sys.executable, "app.py"], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"app.py exited: {(work / 'server.log').read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return server, url
        except OSError:
            time.sleep(1)
    server.kill()
    raise RuntimeError(f"app.py did not answer within 300 s: {(work / 'server.log').read_text()[-3000:]}")


def analyse(url: str, files: list[Path]) -> tuple[str, float]:
    started = time.monotonic()
    client = Client(url, verbose=False)
    status = client.predict([handle_file(str(f)) for f in files], api_name="/analyse_upload")[0]
    return status, time.monotonic() - started


def run_load(requests: int = 20, workers: int = 2, model: Path | None = None, timeout_s: float = 60) -> LoadResult:
    result = LoadResult(requests, workers, str(model) if model else None)
    with tempfile.TemporaryDirectory(prefix="esi_load_") as tmp:
        work = Path(tmp)
        server, url = start_server(model, work, workers, timeout_s)
        process = psutil.Process(server.pid)
        stop = threading.Event()

        def sample_memory() -> None:
            while not stop.is_set():
                result.peak_rss_mb = max(result.peak_rss_mb, tree_rss_mb(process))
                time.sleep(0.2)

        try:
            # Warm up: one analysis per worker, so the figures are for a running server, not its start.
            with ThreadPoolExecutor(workers) as pool:
                list(pool.map(lambda i: analyse(url, normal_uploads(requests + i, work)), range(workers)))
            result.idle_rss_mb = tree_rss_mb(process)
            sampler = threading.Thread(target=sample_memory, daemon=True)
            sampler.start()
            hostile = hostile_record(work)
            with ThreadPoolExecutor(requests + 1) as pool:
                hostile_future = pool.submit(analyse, url, hostile)
                futures = [pool.submit(analyse, url, normal_uploads(i, work)) for i in range(requests)]
                for future in futures:
                    status, latency = future.result()
                    result.latencies_s.append(latency)
                    result.normal_ok += status.startswith("**Showing:**")
                    if not status.startswith("**Showing:**"):
                        result.failures.append(status)
                result.hostile_status, result.hostile_latency_s = hostile_future.result()
            stop.set()
            sampler.join()
        finally:
            stop.set()
            server.terminate()
            server.wait(timeout=60)
            if result.failures:
                result.server_log_tail = (work / "server.log").read_text()[-4000:]
        # The server's upload folder (and everything in it) must be gone once it has stopped.
        result.uploads_left_after_stop = sum(1 for p in (work / "tmp").rglob("esi_app_uploads_*/**/*") if p.is_file())
        result.upload_folders_left_after_stop = len(list((work / "tmp").glob("esi_app_uploads_*")))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--output", type=Path, default=REPO / "benchmarks" / "results" / "app_load.json")
    args = parser.parse_args()
    commit = git_commit()
    result = run_load(args.requests, args.workers, args.model)
    latencies = sorted(result.latencies_s)
    summary = {
        "command": " ".join([Path(sys.executable).name, "-m", "benchmarks.bench_app_load", *sys.argv[1:]]),
        "git_commit": commit,
        "date_utc": utc_timestamp(),
        "seed": None,  # no randomness: fixed real files
        "model_checksum": None if args.model is None else "see the app log (sha256 shown on the page)",
        **asdict(result),
        "median_latency_s": latencies[len(latencies) // 2],
        "max_latency_s": result.max_latency_s,
        "bounds": {"max_latency_s": MAX_LATENCY_S, "max_peak_rss_mb": MAX_PEAK_RSS_MB},
        "within_bounds": result.max_latency_s <= MAX_LATENCY_S and result.peak_rss_mb <= MAX_PEAK_RSS_MB,
        "cpu_count": os.cpu_count(),
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"{result.normal_ok}/{result.requests} normal analyses answered; hostile upload answered in "
          f"{result.hostile_latency_s:.1f} s: {result.hostile_status}")  # fmt: skip
    print(f"latency median {summary['median_latency_s']:.1f} s, max {result.max_latency_s:.1f} s "
          f"(bound {MAX_LATENCY_S:.0f} s)")  # fmt: skip
    print(f"server peak RSS {result.peak_rss_mb:.0f} MB with workers (idle {result.idle_rss_mb:.0f} MB; bound "
          f"{MAX_PEAK_RSS_MB:.0f} MB); uploads left after stop: {result.uploads_left_after_stop}")  # fmt: skip
    print(f"written to {args.output}")
    if not summary["within_bounds"] or result.normal_ok != result.requests:
        sys.exit(1)


if __name__ == "__main__":
    main()
