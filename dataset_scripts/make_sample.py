"""Cut the small PTB-XL sample that ships inside the repository.

The sample keeps PTB-XL's folder layout, so every tool that reads a full PTB-XL
download reads it unchanged. Selection is deterministic: for each of the 10 folds,
records are taken round-robin over the five diagnostic superclasses plus a few
rhythm/conduction statements the measurement checks need (AFIB, SBRAD, STACH,
CLBBB, CRBBB, 1AVB); a handful of the records that have a 500 Hz file are added.

    python dataset_scripts/make_sample.py --ptbxl-dir path/to/ptb-xl --output-dir data/ptbxl_sample
"""

from __future__ import annotations

import argparse
import ast
import csv
import shutil
from collections import defaultdict
from pathlib import Path

GROUPS = ["NORM", "MI", "STTC", "CD", "HYP", "AFIB", "SBRAD", "STACH", "CLBBB", "CRBBB", "1AVB"]


def record_groups(scp_codes: dict, superclass_of: dict[str, str]) -> set[str]:
    groups = {superclass_of[c] for c in scp_codes if c in superclass_of}
    return groups | (set(scp_codes) & set(GROUPS))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ptbxl-dir", type=Path, required=True)
    parser.add_argument("--output-dir", type=Path, required=True)
    parser.add_argument("--per-fold", type=int, default=30, help="100 Hz records per fold")
    parser.add_argument("--num-500hz", type=int, default=12, help="records that also get their 500 Hz file")
    args = parser.parse_args()

    with open(args.ptbxl_dir / "scp_statements.csv", newline="") as f:
        superclass_of = {r[""]: r["diagnostic_class"] for r in csv.DictReader(f) if r["diagnostic_class"]}
    with open(args.ptbxl_dir / "ptbxl_database.csv", newline="") as f:
        reader = csv.DictReader(f)
        fieldnames = reader.fieldnames
        rows = list(reader)

    by_fold_group: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for row in rows:
        for group in sorted(record_groups(ast.literal_eval(row["scp_codes"]), superclass_of)):
            by_fold_group[(row["strat_fold"], group)].append(row)

    chosen: dict[str, dict] = {}
    for fold in sorted({r["strat_fold"] for r in rows}, key=int):
        picked = 0
        depth = 0
        while picked < args.per_fold and depth < 1000:
            for group in GROUPS:
                candidates = by_fold_group.get((fold, group), [])
                if depth < len(candidates) and candidates[depth]["ecg_id"] not in chosen and picked < args.per_fold:
                    chosen[candidates[depth]["ecg_id"]] = candidates[depth]
                    picked += 1
            depth += 1
    with_hr = [r for r in rows if (args.ptbxl_dir / (r["filename_hr"] + ".dat")).exists()]
    hr_ids = {r["ecg_id"] for r in with_hr[: args.num_500hz]}
    for row in with_hr[: args.num_500hz]:
        chosen.setdefault(row["ecg_id"], row)

    args.output_dir.mkdir(parents=True, exist_ok=True)
    selected = sorted(chosen.values(), key=lambda r: int(r["ecg_id"]))
    with open(args.output_dir / "ptbxl_database.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fieldnames)
        writer.writeheader()
        writer.writerows(selected)
    for name in ("scp_statements.csv", "LICENSE.txt"):
        shutil.copy2(args.ptbxl_dir / name, args.output_dir / name)
    for row in selected:
        names = [row["filename_lr"]] + ([row["filename_hr"]] if row["ecg_id"] in hr_ids else [])
        for name in names:
            for ext in (".hea", ".dat"):
                target = args.output_dir / (name + ext)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(args.ptbxl_dir / (name + ext), target)
    print(f"wrote {len(selected)} records ({len(hr_ids)} with 500 Hz files) to {args.output_dir}")


if __name__ == "__main__":
    main()
