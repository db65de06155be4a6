"""Byte identity of what the pipeline writes: prepare and caption the embedded sample, list every file's sha256.

    python -m benchmarks.sample_identity --work-dir /tmp/sample_identity              # writes a manifest
    python -m benchmarks.sample_identity --work-dir /tmp/after --reference MANIFEST   # also compares to one

The sample (data/ptbxl_sample, 300 records) is prepared at 100 Hz (`esi-prepare`'s code path) and captioned
with the template backend (`esi-cqa`'s). The manifest maps every file of the prepared dataset and of the
captioned dataset (run state under `.prepare/` and `.cqa/` left out: it names folders and process ids) to its
sha256. With `--reference`, the result file lists the files that differ, are missing or are new; a change
that should not alter behaviour must leave that list empty. Writes
benchmarks/results/sample_identity-<UTC stamp>.json (command, git commit, date, load average).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

from benchmarks.provenance import git_commit, utc_timestamp
from esi.checksum import sha256_file

REPO_ROOT = Path(__file__).resolve().parent.parent
SAMPLE = REPO_ROOT / "data" / "ptbxl_sample"
STATE_DIRS = (".prepare", ".cqa")


def manifest(folder: Path) -> dict[str, str]:
    """sha256 of every file under `folder` by relative path, run-state folders left out."""
    return {
        str(path.relative_to(folder)): sha256_file(path)
        for path in sorted(folder.rglob("*"))
        if path.is_file() and not set(path.relative_to(folder).parts) & set(STATE_DIRS)
    }


def build(work_dir: Path) -> dict[str, str]:
    """Prepare and caption the sample under `work_dir`; the manifest of both outputs."""
    from esi.cqa.run import generate_captions
    from esi.data.prepare_ptbxl import prepare_ptbxl

    shutil.rmtree(work_dir, ignore_errors=True)
    prepared, captions = work_dir / "prepared", work_dir / "captions"
    prepare_ptbxl(SAMPLE, prepared, sampling_rate=100, num_proc=2)
    generate_captions(prepared, captions, backend="template", num_workers=2)
    return {f"prepared/{k}": v for k, v in manifest(prepared).items()} | {
        f"captions/{k}": v for k, v in manifest(captions).items()
    }


def compare(files: dict[str, str], reference: dict[str, str]) -> dict[str, list[str]]:
    return {
        "differ": sorted(k for k in files.keys() & reference.keys() if files[k] != reference[k]),
        "missing": sorted(reference.keys() - files.keys()),
        "new": sorted(files.keys() - reference.keys()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work-dir", type=Path, required=True, help="scratch folder (emptied first)")
    parser.add_argument("--reference", type=Path, default=None, help="a result file of an earlier run to compare to")
    parser.add_argument("--results-dir", type=Path, default=REPO_ROOT / "benchmarks" / "results")
    args = parser.parse_args()

    files = build(args.work_dir)
    commit, stamp = git_commit(), utc_timestamp(for_file_name=True)
    result = {
        "command": " ".join([Path(sys.executable).name, "-m", "benchmarks.sample_identity", *sys.argv[1:]]),
        "git_commit": commit,
        "date": stamp,
        "load_average": os.getloadavg()[0],
        "seed": None,  # nothing random: the template backend and preparation are deterministic
        "files": files,
    }
    if args.reference is not None:
        reference = json.loads(args.reference.read_text())
        result["reference"] = {"file": str(args.reference), "git_commit": reference["git_commit"]}
        result["comparison"] = compare(files, reference["files"])
        result["identical"] = not any(result["comparison"].values())
    args.results_dir.mkdir(parents=True, exist_ok=True)
    path = args.results_dir / f"sample_identity-{stamp}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{len(files)} files; identical to reference: {result.get('identical', 'n/a')}; wrote {path}")
    if result.get("identical") is False:
        sys.exit(f"outputs differ from {args.reference}: {result['comparison']}")


if __name__ == "__main__":
    main()
