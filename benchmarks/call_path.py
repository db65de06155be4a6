"""How often a CQA run's walk of `--output_dir` goes back into a module it already left.

    python -m benchmarks.call_path [--num-samples 4]

Prepares the first 40 records of the embedded sample, then runs `esi.cqa.cli:main` (template backend,
`--num_samples` records per split, 3 units) under `sys.setprofile`. A *stop* is a call of a function of `esi`
that receives the output folder: as an argument (a path equal to it or inside it) or as an attribute of an
argument (the parsed command line, an object holding the folder). Consecutive stops in one module are one
*entry* into it; a *re-entry* is an entry into a module the walk has already left once. Resumed generators (a
context manager's exit) are not new calls. Counted twice: over every stop (`trace`: a loop over units repeats
its stops), and over the *call path* (`path`: each function at its first stop only, the code a reader follows).

Writes benchmarks/results/call_path-<UTC stamp>.json: the command, git commit, date, load average, the stops in
order, entries per module and re-entries of both counts. To measure another checkout's code (the code before a
change), run this file with that checkout first on PYTHONPATH: `PYTHONPATH=OTHER python benchmarks/call_path.py`.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import sys
import tempfile
from collections import Counter
from itertools import groupby
from pathlib import Path

from benchmarks.provenance import git_commit, utc_timestamp

REPO_ROOT = Path(__file__).resolve().parent.parent
SAMPLE = REPO_ROOT / "data" / "ptbxl_sample"


def _is_under(value: object, root: str) -> bool:
    if not isinstance(value, (str, os.PathLike)) or isinstance(value, bytes):
        return False
    path = os.path.abspath(os.fspath(value))
    return path == root or path.startswith(root + os.sep)


def _carries(value: object, root: str) -> bool:
    """Whether `value` is the folder (or a path inside it) or holds it as an attribute."""
    if _is_under(value, root):
        return True
    fields = getattr(value, "__dict__", None)
    return isinstance(fields, dict) and not isinstance(value, type) and any(_is_under(v, root) for v in fields.values())


def trace_stops(run, output_dir: Path, package_dir: str) -> list[str]:
    """`module:function` of every call of a function under `package_dir` that receives `output_dir`, in order."""
    root = os.path.abspath(output_dir)
    stops: list[str] = []
    started: list = []  # generator frames already called (kept alive so that their ids stay theirs)

    def profile(frame, event, arg):
        if event != "call" or not frame.f_code.co_filename.startswith(package_dir):
            return
        code = frame.f_code
        if code.co_flags & (inspect.CO_GENERATOR | inspect.CO_COROUTINE):
            if any(f is frame for f in started):
                return  # a generator resumed, not called
            started.append(frame)
        names = code.co_varnames[: code.co_argcount + code.co_kwonlyargcount]
        values = [frame.f_locals.get(n) for n in names]
        if any(_carries(v, root) for v in values):
            stops.append(f"{frame.f_globals.get('__name__')}:{code.co_qualname}")

    sys.setprofile(profile)
    try:
        run()
    finally:
        sys.setprofile(None)
    return stops


def entries(stops: list[str]) -> Counter[str]:
    """Entries per module: runs of consecutive stops in that module."""
    return Counter(module for module, _ in groupby(s.split(":")[0] for s in stops))


def counts(stops: list[str]) -> dict:
    per_module = entries(stops)
    return {
        "num_stops": len(stops),
        "entries_per_module": dict(per_module.most_common()),
        "most_entries": max(per_module.values(), default=0),
        "re_entries": sum(per_module.values()) - len(per_module),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num-samples", type=int, default=4, help="records captioned per split")
    parser.add_argument("--results-dir", type=Path, default=REPO_ROOT / "benchmarks" / "results")
    args = parser.parse_args()

    import esi
    from esi.cqa.cli import main as cqa_main
    from esi.data.prepare_ptbxl import prepare_ptbxl

    with tempfile.TemporaryDirectory(prefix="call_path-") as scratch:
        prepared, output_dir = Path(scratch) / "prepared", Path(scratch) / "captions"
        prepare_ptbxl(SAMPLE, prepared, sampling_rate=100, num_proc=1, limit=40)
        argv = ["--dataset", str(prepared), "--output_dir", str(output_dir), "--backend", "template"]
        argv += ["--num_samples", str(args.num_samples), "--num_workers", "1", "--encoder_path", "none"]
        stops = trace_stops(lambda: cqa_main(argv), output_dir, str(Path(esi.__file__).parent) + os.sep)
    path = list(dict.fromkeys(stops))
    commit, stamp = git_commit(), utc_timestamp(for_file_name=True)
    result = {
        "command": " ".join([f"PYTHONPATH={os.environ.get('PYTHONPATH', '')}", Path(sys.executable).name, *sys.argv]),
        "git_commit": commit,
        "date": stamp,
        "load_average": os.getloadavg()[0],
        "seed": None,  # a deterministic walk (template backend)
        "cqa_argv": argv,
        "esi_imported_from": str(Path(esi.__file__).parent),
        "stops": stops,
        "trace": counts(stops),
        "path": counts(path),
    }
    args.results_dir.mkdir(parents=True, exist_ok=True)
    out = args.results_dir / f"call_path-{stamp}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    for name in ("trace", "path"):
        found = result[name]
        print(f"{name}: {found['num_stops']} stops, entries {found['entries_per_module']}, ", end="")
        print(f"{found['re_entries']} re-entries")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
