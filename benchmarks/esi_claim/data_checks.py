"""What the pack's data allows the claim to say: overlap between pretraining and evaluation, and how much the
text of each variant can spread the embeddings it is aligned with.

    python -m benchmarks.esi_claim.data_checks --profile cpu

Writes `<results>/data_checks.json` (kind `data_checks`, with command, commit and the pack's checksum):
- records and patients the pretraining pool shares with the evaluation records (the check `esi-train
  --evaluation-records` makes, on the ids the grid's runs were given);
- per text variant: distinct texts, the share of the pool its most common text covers, and the effective rank of
  the frozen text tower's embeddings of the pool's texts. The contrastive loss pulls each ECG embedding towards its
  text's; a variant whose texts span few directions cannot teach the ECG encoder many more;
- the same facts of supervised_pool's target, the pool's statement labels (one multi-hot row per record).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

from benchmarks.esi_claim.profiles import PROFILES, PROTOCOL, RESULTS_ROOT
from benchmarks.esi_claim.run import Pack, embedding_spread, git_commit


def overlap(pack: Pack) -> dict:
    pool_ids, pool_patients = {r["ecg_id"] for r in pack.pool}, {r["patient_id"] for r in pack.pool}
    shared_ids = pool_ids & set(pack.ecg_ids.tolist())
    shared_patients = pool_patients & set(pack.patients.tolist())
    return {
        "pool_records": len(pool_ids),
        "pool_patients": len(pool_patients),
        "evaluation_records": len(pack.eval),
        "evaluation_patients": len(set(pack.patients.tolist())),
        "shared_records": len(shared_ids),
        "shared_patients": len(shared_patients),
        "example_shared_ecg_ids": sorted(shared_ids)[:10],
    }


def text_variant(pack: Pack, variant: str) -> dict:
    """Distinct texts (by token ids, as the same-text positives count them) and the text embeddings' spread."""
    ids = np.load(pack.folder / f"text_ids_{variant}.npy")
    embeddings = np.load(pack.folder / f"text_emb_{variant}.npy")
    counts = Counter(row.tobytes() for row in ids)
    return {
        "distinct_texts": len(counts),
        "most_common_text_share": max(counts.values()) / len(ids),
        "text_embedding_effective_rank": embedding_spread(embeddings)["effective_rank"],
    }


def statement_targets(pack: Pack) -> dict:
    """supervised_pool's targets: distinct statement sets and the effective rank of the multi-hot label matrix."""
    table = pack.pool_statements()
    counts = Counter(row.tobytes() for row in table)
    return {
        "statements": table.shape[1],
        "distinct_statement_sets": len(counts),
        "most_common_set_share": max(counts.values()) / len(table),
        "label_matrix_effective_rank": embedding_spread(table)["effective_rank"],
    }


def main(argv: list[str] | None = None) -> Path:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--profile", choices=sorted(PROFILES), default="cpu")
    p.add_argument("--pack", type=Path, default=None, help="default: outputs/esi_claim/<pack_name>/pack")
    p.add_argument("--results-dir", type=Path, default=None, help=f"default: {RESULTS_ROOT}/<profile>")
    args = p.parse_args(argv)
    profile = PROFILES[args.profile]
    pack = Pack(args.pack or Path("outputs/esi_claim") / profile.pack_name / "pack")
    result = {
        "protocol": PROTOCOL,
        "kind": "data_checks",
        "profile": profile.name,
        "command": shlex.join(["python", "-m", "benchmarks.esi_claim.data_checks", *sys.argv[1:]]),
        "git_commit": git_commit(),
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "pack": {"meta_sha256": pack.meta_sha256},
        "overlap": overlap(pack),
        "text_variants": {variant: text_variant(pack, variant) for variant in pack.meta["text_variants"]},
        "statement_targets": statement_targets(pack),
    }
    out = (args.results_dir or Path(RESULTS_ROOT) / profile.name) / "data_checks.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    return out


if __name__ == "__main__":
    main()
