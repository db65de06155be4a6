"""Benchmark of CQA retrieval: does every retrieved passage fit its record, and what does fitting cost?

    python -m benchmarks.bench_retrieval [--ptbxl-dir ../shared/ptb-xl] [--cache-dir outputs/bench_cqa]

Captions every record of the PTB-XL folder (template backend, the path `cqa_generate.py` runs) with the shipped
selection and with the selection it replaced (the record's statements first, then the best-scoring other passages
up to k = 4, "filler"), and labels every retrieved passage from the record's own statements and measurements:

- matched-by-code: the passage is about one of the record's statements, or a supported_if condition made only of
  the record's statements holds (the bundle-branch-block overview for a CLBBB record);
- supported-by-measurement: a supported_if condition with a measurement holds (the tachycardia passage at 124 bpm);
- contradicting: the record meets one of the passage's contradicted_if conditions (the tachycardia passage at
  71 bpm, the AF passage on a sinus rhythm);
- other-relevant: none of these.

Also: how many records with a statement that has a knowledge-base entry got that entry; which statement codes of
the shared data have no entry (PTB-XL's, and the Challenge's through the package's SNOMED-CT mapping); and the
caption throughput of both selections in the same run (measurements computed once beforehand, so the ratio is that
of retrieval and writing; passes alternate to share the load). Writes benchmarks/results/retrieval-<UTC stamp>.json.
"""

from __future__ import annotations

import ast
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

from benchmarks.bench_cqa import caption_benchmark_parser, prepared_dataset
from benchmarks.provenance import git_commit, utc_timestamp
from esi.cqa.retrieval import HybridRetriever, RetrievedPassage
from esi.knowledge import KnowledgeEntry, RecordFacts

BASELINE_K = 4  # the selection's k before passages had to fit
LABELS = ("matched-by-code", "supported-by-measurement", "other-relevant", "contradicting")


class FillingRetriever(HybridRetriever):
    """The replaced selection (the baseline): the record's statements' passages first, then the best-scoring
    others up to ``k``, whether or not they fit the record."""

    def _select(self, fused: np.ndarray, k: int, facts: RecordFacts, excluded: set[str]) -> list[RetrievedPassage]:
        order = [i for i in np.argsort(-fused, kind="stable") if not excluded.intersection(self.entries[i].scp_codes)]
        own = [i for i in order if facts.codes.intersection(self.entries[i].scp_codes)]
        rest = [i for i in order if not facts.codes.intersection(self.entries[i].scp_codes)]
        return [
            RetrievedPassage(self.entries[i].id, self.entries[i].title, self.entries[i].text, float(fused[i]), "filler")
            for i in (own + rest)[:k]
        ]


def label(entry: KnowledgeEntry, facts: RecordFacts) -> tuple[str, str]:
    """(one of LABELS, the statement or condition that decided it)."""
    stated = facts.codes.intersection(entry.scp_codes)
    if stated:
        return "matched-by-code", f"statement {min(stated)}"
    contradiction = entry.contradicted_by(facts)
    if contradiction is not None:
        return "contradicting", contradiction.text
    support = entry.supported_by(facts)
    if support is None:
        return "other-relevant", ""
    return ("matched-by-code" if support.statements_only else "supported-by-measurement"), support.text


def label_passages(inputs: list, by_id: dict[str, KnowledgeEntry]) -> dict:
    """Label counts, examples of contradicting passages, and statement-entry coverage for one selection."""
    from esi.cqa.facts import record_facts

    counts: Counter[str] = Counter()
    examples: Counter[str] = Counter()
    pairs = pairs_hit = records = records_hit = measured_disagree = related = 0
    per_record = Counter()
    for x in inputs:
        facts = record_facts([s.scp for s in x.statements if s.scp], x.measurements)
        per_record[len(x.passages)] += 1
        for p in x.passages:
            entry = by_id[p.id]
            name, why = label(entry, facts)
            counts[name] += 1
            if name == "contradicting":
                examples[f"{p.id} ({why})"] += 1
            elif name == "matched-by-code" and not entry.scp_codes:
                related += 1  # a general entry about a related statement
            elif name == "matched-by-code" and entry.scp_codes and entry.contradicted_by(facts):
                measured_disagree += 1  # the statement outranks a measurement that disagrees with it
        wanted = {f"scp:{code}" for code in facts.codes} & by_id.keys()
        got = wanted & {p.id for p in x.passages}
        if wanted:
            records += 1
            records_hit += got == wanted
            pairs += len(wanted)
            pairs_hit += len(got)
    total = sum(counts.values())
    return {
        "passages": total,
        "counts": {name: counts[name] for name in LABELS},
        "fractions": {name: counts[name] / total if total else 0.0 for name in LABELS},
        "neither_code_nor_measurement": (counts["other-relevant"] + counts["contradicting"]) / total if total else 0.0,
        "matched_by_related_statement": related,
        "contradicting_examples": dict(examples.most_common(15)),
        "own_passage_with_disagreeing_measurement": measured_disagree,
        "passages_per_record": {str(n): per_record[n] for n in sorted(per_record)},
        "records_with_a_statement_entry": records,
        "records_with_every_statement_entry": records_hit / records if records else 0.0,
        "statement_entries_retrieved": pairs_hit / pairs if pairs else 0.0,
    }


def _challenge_codes(shared: Path) -> Counter[str]:
    """Dx codes of the Challenge-format sample folders next to the PTB-XL folder (2021 SNOMED-CT or 2020
    abbreviations), by the system they are written in."""
    from esi.data.challenge import ABBREVIATION_SYSTEM, SNOMED_SYSTEM

    codes: Counter[str] = Counter()
    for header in sorted(shared.glob("*/*.hea")):
        for line in header.read_text(errors="replace").splitlines():
            if line.lstrip("# ").lower().startswith("dx:"):
                for code in line.split(":", 1)[1].split(","):
                    code = code.strip()
                    if code:
                        codes[(SNOMED_SYSTEM if code.isdigit() else ABBREVIATION_SYSTEM) + "\t" + code] += 1
    return codes


def coverage(ptbxl_dir: Path, by_id: dict[str, KnowledgeEntry]) -> dict:
    """Statement codes of the shared data without a knowledge-base entry."""
    import pandas as pd

    from esi.data.challenge import SNOMED_TO_SCP, load_dx_mapping, scp_equivalent

    ptbxl: Counter[str] = Counter()
    for folder in (ptbxl_dir, ptbxl_dir.parent / "ptb-xl-pretrain"):
        if (folder / "ptbxl_database.csv").is_file():
            for codes in pd.read_csv(folder / "ptbxl_database.csv")["scp_codes"]:
                ptbxl.update(ast.literal_eval(codes))
    names = load_dx_mapping()[0]
    challenge = _challenge_codes(ptbxl_dir.parent)
    unmapped = {}
    for key, n in sorted(challenge.items()):
        system, code = key.split("\t")
        scp = scp_equivalent(system, code)
        if scp is None or f"scp:{scp}" not in by_id:
            unmapped[code] = {"records": n, "name": names.get(code, code), "scp": scp}
    return {
        "ptbxl_codes": len(ptbxl),
        "ptbxl_codes_without_entry": sorted(c for c in ptbxl if f"scp:{c}" not in by_id),
        "challenge_mapped_scp_codes_without_entry": sorted(
            {c for c in SNOMED_TO_SCP.values() if f"scp:{c}" not in by_id}
        ),
        "challenge_sample_codes": len(challenge),
        "challenge_sample_codes_without_entry": unmapped,
    }


def main() -> None:
    parser = caption_benchmark_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=2, help="timed passes of each selection, alternating")
    args = parser.parse_args()

    import torch
    from datasets import load_from_disk

    from esi.cqa.captioner import Captioner
    from esi.cqa.measurements import MeasurePool, measure_batch
    from esi.cqa.options import GenerationOptions
    from esi.data.options import default_num_proc
    from esi.knowledge import load_knowledge_base

    load_start = os.getloadavg()[0]
    prepared = prepared_dataset(args.ptbxl_dir, args.cache_dir)
    splits = load_from_disk(str(prepared))
    options = GenerationOptions(backend="template")
    blocks = []  # (split, rows, measurements) in the run's units of records_per_file records
    with MeasurePool(args.num_workers) as pool:
        for name, split in splits.items():
            table = split.with_format("numpy", columns=["signal"], output_all_columns=True)
            for start in range(0, len(split), options.records_per_file):
                rows = table[start : start + options.records_per_file]
                blocks.append(
                    (
                        name,
                        rows,
                        measure_batch(
                            list(rows["signal"]), rows["sampling_rate"], rows["lead_names"], rows["ecg_id"], pool=pool
                        ),
                    )
                )
    torch.set_num_threads(1)  # as cqa_generate runs the captioner
    captioner = Captioner(prepared, options, encode_threads=default_num_proc())
    knowledge = load_knowledge_base()
    arms = {"fitting": (HybridRetriever, options.retrieval_k), "filling": (FillingRetriever, BASELINE_K)}
    seconds: dict[str, list[float]] = {arm: [] for arm in arms}
    outcomes: dict[str, Counter] = {arm: Counter() for arm in arms}
    for _ in range(args.repeats):
        for arm, (retriever_class, k) in arms.items():
            # A fresh retriever per pass: no pass profits from another's cache of fused scores.
            captioner.retriever = retriever_class(knowledge, encoder_path="default", encode_threads=default_num_proc())
            captioner.options.retrieval_k = k
            started = time.perf_counter()
            for name, rows, measured in blocks:
                outcomes[arm].update(r["faithfulness"] for r in captioner.rows(name, rows, measured))
            seconds[arm].append(time.perf_counter() - started)
    n = sum(len(rows["ecg_id"]) for _, rows, _ in blocks)
    by_id = {entry.id: entry for entry in knowledge}
    selections = {}
    for arm, (retriever_class, k) in arms.items():
        captioner.retriever = retriever_class(knowledge, encoder_path="default", encode_threads=default_num_proc())
        captioner.options.retrieval_k = k
        inputs = [x for _, rows, measured in blocks for x in captioner.inputs(rows, measured)]
        selections[arm] = {"k": k, **label_passages(inputs, by_id)}
    fitting, filling = min(seconds["fitting"]), min(seconds["filling"])
    stamp = utc_timestamp(for_file_name=True)
    result = {
        "command": "python -m benchmarks.bench_retrieval " + " ".join(sys.argv[1:]),
        "git_commit": git_commit(),
        "date": stamp,
        "seed": None,  # nothing is random: retrieval and the template writer are deterministic
        "cpus": len(os.sched_getaffinity(0)),
        "load_average_start": load_start,
        "load_average_end": os.getloadavg()[0],
        "records": n,
        "knowledge_entries": len(knowledge),
        "selections": selections,
        "caption_seconds": seconds,
        "caption_records_per_s": {"fitting": n / fitting, "filling": n / filling},
        "throughput_fitting_over_filling": filling / fitting,
        "faithfulness": {arm: dict(counts) for arm, counts in outcomes.items()},
        "coverage": coverage(args.ptbxl_dir, by_id),
    }
    args.results_dir.mkdir(parents=True, exist_ok=True)
    path = args.results_dir / f"retrieval-{stamp}.json"
    path.write_text(json.dumps(result, indent=1))
    for arm, s in selections.items():
        fractions = ", ".join(f"{name} {share:.1%}" for name, share in s["fractions"].items())
        print(f"{arm} (k={s['k']}): {s['passages']} passages; {fractions}; every statement entry for "
              f"{s['records_with_every_statement_entry']:.1%} of records")  # fmt: skip
    print(f"caption throughput fitting / filling: {filling / fitting:.3f} (best of {args.repeats} passes each)")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
