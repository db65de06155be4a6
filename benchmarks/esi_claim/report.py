"""Generate `benchmarks/reports/esi_claim.md` (claim verdicts, exploratory comparisons, learning curve, costs)
from the result files of protocol `crossfit-paired-v2` only.

    python -m benchmarks.esi_claim.report [--results-dir benchmarks/results/esi_claim/v2] \
        [--output benchmarks/reports/esi_claim.md]

Every number comes from a JSON (and its scores file) written by `benchmarks.esi_claim.run`; none is typed
here. Files of another protocol (the first grid's, under `benchmarks/results/esi_claim/cpu`) are never read:
the default folder holds none, and a file without this protocol's name is skipped wherever it lies. Each
profile folder gets its own section; the `tiny` profile is a smoke run and is labelled as one.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import zlib
from collections import Counter, defaultdict
from datetime import datetime
from pathlib import Path

import numpy as np

from benchmarks.esi_claim.crossfit import STANDARD_TEST_FOLD
from benchmarks.esi_claim.paired import ArmScores, holm, paired_difference
from benchmarks.esi_claim.pretraining import ARMS
from benchmarks.esi_claim.profiles import (
    CLAIM_BASELINES,
    CLAIM_FRACTIONS,
    EQUIVALENCE_MARGIN,
    PROTOCOL,
    RESULTS_ROOT,
    TASKS,
)
from esi.constants import DISCLAIMER

CLAIM_ARM = "esi_full"
ORDER = (
    "esi_full",
    "statements_only",
    "supervised_pool",
    "esi_no_knowledge",
    "measurements_only",
    "contrastive_only",
    "caption_only",
    "ssl_two_views",
    "random_init",
    "esi_full_one_positive",
    "statements_only_one_positive",
    "esi_full_tower",
    "statements_only_tower",
)

# Each text arm against its twin trained with CLIP's one positive per ECG (identical captions as negatives).
ONE_POSITIVE_TWINS = (("esi_full", "esi_full_one_positive"), ("statements_only", "statements_only_one_positive"))
CURVE_FLAT = 0.01  # AUROC: a curve whose every task moves less than this after the grid's step count has flattened


def load_runs(folder: Path) -> list[dict]:
    runs = []
    for path in sorted(folder.glob("*.json")):
        run = json.loads(path.read_text())
        if run.get("protocol") != PROTOCOL:
            continue
        if "scores_file" in run:
            with np.load(folder / run["scores_file"]) as saved:
                run["_scores"] = {k: saved[k] for k in saved.files}
        runs.append(run)
    return runs


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def signed(value: float) -> str:
    return f"{value:+.3f}"


def interval(ci: list[float]) -> str:
    return f"[{ci[0]:+.3f}, {ci[1]:+.3f}]"


ARM_TEXT = {arm.name: arm.variant for arm in ARMS if arm.kind == "esi"}  # the text variant each text arm reads


class Section:
    """One profile folder's runs, grouped for paired comparisons."""

    def __init__(self, name: str, runs: list[dict], samples: int):
        checks = [r for r in runs if r["kind"] == "data_checks"]
        self.data_checks = checks[0] if checks else None
        self.name, self.runs, self.samples = name, [r for r in runs if r["kind"] != "data_checks"], samples
        self.pretrains = [r for r in runs if r["kind"] == "pretrain"]
        self.probes = [r for r in runs if r["kind"] == "probe"]
        self.smoke = any(r.get("smoke") for r in runs)
        self.grid_steps = self.choose_grid_steps()
        self.tasks = [t for t in TASKS if any(r["task"] == t for r in self.probes)]
        self._compared: dict[tuple, dict | None] = {}  # the answer sentence and the claim table share each bootstrap
        self._scores: dict[tuple, ArmScores | None] = {}

    def choose_grid_steps(self) -> int | None:
        """The step count at which the claim arm has the most pretraining seeds (the larger on a tie)."""
        seeds = defaultdict(set)
        for run in self.pretrains:
            if run["arm"] == CLAIM_ARM:
                seeds[run["pretrain_steps"]].add(run["pretrain_seed"])
        return max(seeds, key=lambda n: (len(seeds[n]), n)) if seeds else None

    def steps_of(self, arm: str) -> int | None:
        return 0 if arm == "random_init" else self.grid_steps

    def scores(self, arm: str, task: str, fraction: float, steps: int | None) -> ArmScores | None:
        key = (arm, task, fraction, steps)
        if key not in self._scores:  # one object per cell: it keeps the resamples it was scored on
            self._scores[key] = self._collect_scores(*key)
        return self._scores[key]

    def _collect_scores(self, arm: str, task: str, fraction: float, steps: int | None) -> ArmScores | None:
        by_seed: dict[int, list[np.ndarray]] = defaultdict(list)
        labels = None
        for run in sorted(self.probes, key=lambda r: r["probe_seed"]):
            if (run["arm"], run["task"], run["label_fraction"], run["pretrain_steps"]) != (arm, task, fraction, steps):
                continue
            by_seed[run["pretrain_seed"]].append(run["_scores"]["scores"].astype(np.float64))
            labels = run["_scores"]["labels"]
        return ArmScores(labels, dict(by_seed)) if by_seed else None

    def folds(self, task: str) -> np.ndarray:
        run = next(r for r in self.probes if r["task"] == task)
        return run["_scores"]["folds"]

    def compare(self, a: str, b: str, task: str, fraction: float, fold10: bool = False) -> dict | None:
        key = (a, b, task, fraction, fold10)
        if key not in self._compared:
            self._compared[key] = self._paired(a, b, task, fraction, fold10)
        return self._compared[key]

    def _paired(self, a: str, b: str, task: str, fraction: float, fold10: bool) -> dict | None:
        sa, sb = (self.scores(x, task, fraction, self.steps_of(x)) for x in (a, b))
        if sa is None or sb is None:
            return None
        if b == "random_init":  # one model per seed, pretraining 0 steps: paired on the seeds both have
            sb = ArmScores(sb.labels, {s: sb.by_seed[s] for s in sb.by_seed if s in sa.by_seed} or sb.by_seed)
            if not set(sa.by_seed) & set(sb.by_seed):
                return None
        subset = self.folds(task) == STANDARD_TEST_FOLD if fold10 else None
        seed = zlib.crc32(f"{task}-{fraction:g}".encode())  # every comparison of a cell draws the same records
        return paired_difference(sa, sb, self.samples, seed, EQUIVALENCE_MARGIN, subset)


def claim_table(section: Section) -> str:
    rows, missing = [], []
    for baseline in CLAIM_BASELINES:
        for task in TASKS:
            for fraction in CLAIM_FRACTIONS:
                result = section.compare(CLAIM_ARM, baseline, task, fraction)
                if result is None:
                    missing.append(f"{baseline} {task} {fraction:.0%}")
                    continue
                fold10 = section.compare(CLAIM_ARM, baseline, task, fraction, fold10=True)
                ratio = fold10["se"] / result["se"] if result["se"] > 0 else float("nan")
                rows.append(
                    [
                        f"{CLAIM_ARM} - {baseline}",
                        task,
                        f"{fraction:.0%}",
                        f"{result['a']:.3f} / {result['b']:.3f}",
                        signed(result["difference"]),
                        interval(result["ci95"]),
                        f"{result['mdd']:.3f}",
                        f"{result['se']:.4f}",
                        f"{fold10['se']:.4f} ({ratio:.1f}x)",
                        str(len(result["seeds"])),
                        "no verdict (smoke run)" if section.smoke else f"**{result['verdict']}**",
                    ]
                )
    header = [
        "comparison", "task", "labels", "AUROC a / b", "paired difference", "95% interval",
        "min. detectable (a=0.05, power 0.8)", "SE (cross-fitted)", "SE fold 10 only (ratio)", "seeds", "verdict",
    ]  # fmt: skip
    return table(header, rows) + (f"\n\nCells without runs: {', '.join(missing)}." if missing else "")


def holm_table(family: list[tuple[str, str, float, dict]], smoke: bool, raw_p: bool) -> str:
    """One exploratory family, (comparison, task, fraction, paired result) each, Holm-adjusted over the table;
    `raw_p` adds the unadjusted p-value column."""
    adjusted = holm([r["p"] for *_, r in family])
    rows = []
    for (comparison, task, fraction, r), p in zip(family, adjusted, strict=True):
        verdict = "smoke run" if smoke else ("shown (Holm)" if p < 0.05 else "not shown (Holm)")
        rows.append(
            [comparison, task, f"{fraction:.0%}", signed(r["difference"]), interval(r["ci95"])]
            + ([f"{r['p']:.3f}"] if raw_p else [])
            + [f"{p:.3f}", str(len(r["seeds"])), verdict]
        )
    header = ["comparison", "task", "labels", "paired difference", "95% interval"]
    return table(header + (["p"] if raw_p else []) + ["Holm p", "seeds", "exploratory"], rows)


def exploratory_table(section: Section) -> str:
    arms = {r["arm"] for r in section.probes}
    family = []
    for other in ORDER[1:]:
        if other not in arms:
            continue
        for task in section.tasks:
            for fraction in sorted({r["label_fraction"] for r in section.probes}):
                if other in CLAIM_BASELINES and fraction in CLAIM_FRACTIONS:
                    continue  # pre-declared: in the claim table
                result = section.compare(CLAIM_ARM, other, task, fraction)
                if result is not None:
                    family.append((f"{CLAIM_ARM} - {other}", task, fraction, result))
    return holm_table(family, section.smoke, raw_p=True)


def one_seed_note(section: Section) -> str:
    """What the interval of a one-seed row leaves out: how much a paired difference moves between pretraining
    seeds, measured on the claim's multi-seed cells."""
    spreads = [
        float(np.std(result["per_seed_difference"], ddof=1))
        for baseline in CLAIM_BASELINES
        for task in section.tasks
        for fraction in CLAIM_FRACTIONS
        if (result := section.compare(CLAIM_ARM, baseline, task, fraction)) is not None and len(result["seeds"]) > 1
    ]
    if not spreads:
        return "A row with 1 seed resamples the evaluation records only, not the pretraining seeds."
    return (
        "A row with 1 seed resamples the evaluation records only: its interval leaves out how much the difference "
        "moves between pretraining seeds. In the claim's cells that spread is measured: the paired difference has a "
        f"standard deviation over pretraining seeds of {np.median(spreads):.3f} (median of {len(spreads)} cells; "
        f"largest {max(spreads):.3f}). A one-seed 'shown' speaks for that seed's encoders, not for the arm."
    )


def same_text_table(section: Section) -> str:
    """What same-text positives change: each arm minus its one-positive twin, paired on their common seeds."""
    family = [
        (f"{arm} - {twin}", task, fraction, result)
        for arm, twin in ONE_POSITIVE_TWINS
        for task in section.tasks
        for fraction in sorted({r["label_fraction"] for r in section.probes})
        if (result := section.compare(arm, twin, task, fraction)) is not None
    ]
    if not family:
        return "No one-positive twin has run yet."
    return holm_table(family, section.smoke, raw_p=False)


def arm_table(section: Section) -> str:
    fractions = sorted({r["label_fraction"] for r in section.probes})
    rows = []
    for arm in [a for a in ORDER if a in {r["arm"] for r in section.probes}]:
        cells = []
        for task in section.tasks:
            for fraction in fractions:
                scores = section.scores(arm, task, fraction, section.steps_of(arm))
                cells.append(f"{np.mean(list(scores.per_seed().values())):.3f}" if scores else "")
        seeds = {r["pretrain_seed"] for r in section.pretrains if r["arm"] == arm}
        rows.append([arm, str(len(seeds)), *cells])
    header = ["arm", "seeds", *[f"{t} {f:.0%}" for t in section.tasks for f in fractions]]
    return table(header, rows)


def pretrain_table(section: Section) -> str:
    rows = []
    for run in sorted(
        section.pretrains, key=lambda r: (ORDER.index(r["arm"]), r["pretrain_steps"], r["pretrain_seed"])
    ):
        training = run["training"]
        trained = training["steps"]
        cpu = training.get("train_cpu_seconds")  # over the whole run, resumed parts included
        per_1000 = f"{1000 * cpu / trained:.0f}" if cpu and trained else ""
        loss = (training.get("final_losses") or {}).get("loss")
        rows.append(
            [
                run["arm"], str(run["pretrain_seed"]), str(training["steps"]),
                f"{run['embedding']['effective_rank']:.1f}", "" if loss is None else f"{loss:.3f}", per_1000,
                f"`{training['initial_ecg_encoder_sha256'][:12]}`",
                f"`{training.get('batch_ecg_ids_sha256', '')[:12]}`",
            ]
        )  # fmt: skip
    header = ["arm", "seed", "steps", "effective rank", "final loss", "CPU s / 1,000 steps", "initial encoder",
              "batches"]  # fmt: skip
    return table(header, rows)


def claim_answer(section: Section) -> str:
    """The claim table in one sentence per baseline: how many cells got each verdict, and the largest gain."""
    sentences = []
    for baseline in CLAIM_BASELINES:
        results = [
            r
            for task in TASKS
            for fraction in CLAIM_FRACTIONS
            if (r := section.compare(CLAIM_ARM, baseline, task, fraction)) is not None
        ]
        if not results:
            continue
        counts = Counter(r["verdict"] for r in results)
        seeds = sorted({len(r["seeds"]) for r in results})
        best = max(results, key=lambda r: r["ci95"][0])
        margin_met = [r for r in results if r["ci95"][0] >= EQUIVALENCE_MARGIN]
        tally = ", ".join(f"{verdict}: {counts[verdict]}" for verdict in sorted(counts, key=counts.get, reverse=True))
        sentences.append(
            f"{CLAIM_ARM} against {baseline} ({len(results)} cells, {'/'.join(map(str, seeds))} paired seed(s)), "
            f"verdicts {tally}; a gain of at least +{EQUIVALENCE_MARGIN} (the paper's hoped-for margin) is "
            + (
                f"shown in {len(margin_met)} cell(s)."
                if margin_met
                else f"shown in no cell (the highest lower bound is {signed(best['ci95'][0])})."
            )
        )
    return " ".join(sentences) or "No claim cell has results yet."


def data_checks(section: Section) -> str:
    """Overlap of pool and evaluation records, and what each text variant can teach (data_checks.py)."""
    checks = section.data_checks
    if checks is None:
        return "No data checks: run `python -m benchmarks.esi_claim.data_checks`."
    o = checks["overlap"]
    lines = [
        f"Pretraining pool: {o['pool_records']:,} records of {o['pool_patients']:,} patients; evaluation: "
        f"{o['evaluation_records']:,} records of {o['evaluation_patients']:,} patients; shared: "
        f"{o['shared_records']} records, {o['shared_patients']} patients (`{checks['command']}`).",
        "",
        table(
            ["text variant", "distinct texts", "most common text's share of the pool", "text embedding effective rank"],
            [
                [
                    name,
                    f"{v['distinct_texts']:,}",
                    f"{v['most_common_text_share']:.1%}",
                    f"{v['text_embedding_effective_rank']:.1f}",
                ]
                for name, v in checks["text_variants"].items()
            ],
        ),  # fmt: skip
    ]
    return "\n".join(lines)


def target_facts(section: Section, arm: str) -> str:
    """What an arm was trained to match, from data_checks.py: its texts, or supervised_pool's statement labels."""
    checks = section.data_checks or {}
    variant = checks.get("text_variants", {}).get(ARM_TEXT.get(arm))
    if variant:
        return (
            f"its texts: {variant['distinct_texts']:,} distinct, the most common "
            f"{variant['most_common_text_share']:.1%} of the pool, text-embedding effective rank "
            f"{variant['text_embedding_effective_rank']:.1f}"
        )
    targets = checks.get("statement_targets")
    if arm == "supervised_pool" and targets:
        return (
            f"its targets: {targets['distinct_statement_sets']:,} distinct statement sets over "
            f"{targets['statements']} statements, label-matrix effective rank "
            f"{targets['label_matrix_effective_rank']:.1f}"
        )
    return "no text target"


def low_rank_note(section: Section) -> str:
    """The pretrained arms whose evaluation embeddings spread over fewer than 8 directions at the grid's steps, with
    their rank at every step count run (mean over seeds) and the facts of their training target (data_checks.py).
    The trend with steps is measured; no cause is claimed beyond it."""
    ranks: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for run in section.pretrains:
        if run["pretrain_steps"]:
            ranks[run["arm"]][run["pretrain_steps"]].append(run["embedding"]["effective_rank"])
    low = [
        arm for arm in ORDER if section.grid_steps in ranks.get(arm, {}) and np.mean(ranks[arm][section.grid_steps]) < 8
    ]
    if not low:
        return f"Every arm's evaluation embedding at {section.grid_steps} steps has an effective rank of at least 8."
    parts = []
    for arm in low:
        by_steps = {steps: float(np.mean(v)) for steps, v in sorted(ranks[arm].items())}
        trend = ", ".join(f"{by_steps[n]:.1f} at {n} steps" for n in by_steps)
        values = list(by_steps.values())
        rising = len(values) > 1 and all(b > a for a, b in zip(values, values[1:], strict=False))
        parts.append(
            f"- {arm}: {trend}"
            + (" (rising with every step count run)" if rising else "")
            + f"; {target_facts(section, arm)}"
        )
    return (
        f"Effective rank below 8 (the target) at {section.grid_steps} steps; mean over pretraining seeds:\n\n"
        + "\n".join(parts)
    )


def pairing_check(section: Section) -> str:
    lines = []
    for seed in sorted({r["pretrain_seed"] for r in section.pretrains}):
        same = [r for r in section.pretrains if r["pretrain_seed"] == seed]
        inits = {r["training"]["initial_ecg_encoder_sha256"] for r in same}
        trained = [r for r in same if r["pretrain_steps"] == section.grid_steps and r["training"]["steps"]]
        batches = {r["training"]["batch_ecg_ids_sha256"] for r in trained}
        lines.append(
            f"- seed {seed}: {len(same)} encoders, {len(inits)} initial ECG encoder digest(s); "
            f"{len(trained)} trained {section.grid_steps} steps on {len(batches)} batch digest(s)"
        )
    return "\n".join(lines)


def learning_curve(section: Section, plot_path: Path) -> str:
    curve = defaultdict(dict)  # (arm) -> steps -> run
    first_seed = min(r["pretrain_seed"] for r in section.pretrains)
    for run in section.pretrains:
        if run["pretrain_seed"] == first_seed and run["training"]["steps"]:
            curve[run["arm"]][run["pretrain_steps"]] = run
    if not any(len(v) > 1 for v in curve.values()):
        return "No learning curve yet (`--stage curve`)."
    fraction = 0.1 if any(r["label_fraction"] == 0.1 for r in section.probes) else section.probes[0]["label_fraction"]
    rows, series = [], defaultdict(list)
    for arm, by_steps in sorted(curve.items(), key=lambda kv: ORDER.index(kv[0])):
        for steps, run in sorted(by_steps.items()):
            aurocs = []
            for task in section.tasks:
                scores = section.scores(arm, task, fraction, steps)
                aurocs.append(scores.per_seed().get(first_seed, float("nan")) if scores else float("nan"))
            rank = run["embedding"]["effective_rank"]
            series[arm].append((steps, aurocs, rank))
            rows.append([arm, str(steps), *[f"{a:.3f}" for a in aurocs], f"{rank:.1f}"])
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(section.tasks) + 1, figsize=(4 * (len(section.tasks) + 1), 3.2))
    for arm, points in series.items():
        steps = [p[0] for p in points]
        for k, task in enumerate(section.tasks):
            axes[k].plot(steps, [p[1][k] for p in points], marker="o", label=arm)
            axes[k].set_title(f"{task}, {fraction:.0%} labels")
        axes[-1].plot(steps, [p[2] for p in points], marker="o", label=arm)
    axes[-1].set_title("effective rank of the embedding")
    for ax in axes:
        ax.set_xlabel("pretraining steps")
    axes[0].set_ylabel("cross-fitted macro AUROC")
    axes[-1].legend()
    figure.tight_layout()
    figure.savefig(plot_path, dpi=90)
    plt.close(figure)
    header = ["arm", "steps", *[f"{t} {fraction:.0%}" for t in section.tasks], "effective rank"]
    flattening = curve_flattening(section, series, fraction)
    return (
        table(header, rows) + (f"\n\n{flattening}" if flattening else "") + f"\n\n![learning curve]({plot_path.name})"
    )


def curve_flattening(section: Section, series: dict[str, list], fraction: float) -> str:
    """How much each curve arm's probes move from the grid's step count to its longest run (first seed, points)."""
    sentences = []
    for arm, points in series.items():
        at = {steps: aurocs for steps, aurocs, _ in points}
        longest = max(at)
        if section.grid_steps not in at or longest <= section.grid_steps:
            continue
        deltas = [b - a for a, b in zip(at[section.grid_steps], at[longest], strict=True)]
        moves = ", ".join(f"{task} {d:+.3f}" for task, d in zip(section.tasks, deltas, strict=True))
        flat = all(abs(d) < CURVE_FLAT for d in deltas)
        sentences.append(
            f"{arm} from {section.grid_steps} to {longest} steps ({fraction:.0%} labels, first seed, no interval): "
            f"{moves}; "
            + (f"every task within {CURVE_FLAT}: flat." if flat else f"not flat (a task moved {CURVE_FLAT} or more).")
        )
    return " ".join(sentences)


def scratch_table(section: Section) -> str:
    runs = [r for r in section.runs if r["kind"] == "scratch"]
    rows = [
        [
            r["task"], f"{r['label_fraction']:.0%}", str(r["probe_seed"]), f"{r['metrics']['fold10_macro_auroc']:.3f}",
            str(r["optimizer_steps_to_best"]), str(r["optimizer_steps_run"]),
            "yes" if r["stopped_early"] else "no (cap)",
        ]
        for r in sorted(runs, key=lambda r: (r["task"], r["label_fraction"], r["probe_seed"]))
    ]  # fmt: skip
    header = ["task", "labels", "seed", "fold 10 macro AUROC", "steps to best", "steps run", "stopped by patience"]
    return table(header, rows) if rows else "No supervised-from-scratch runs."


def wall_time(section: Section) -> str:
    """From the files alone: first pretraining's start (its date minus its training time) to the last file."""
    grid = [r for r in section.runs if r.get("pretrain_steps") in (section.grid_steps, 0) or r["kind"] == "scratch"]
    if not grid:
        return "no grid runs"
    dates = [datetime.fromisoformat(r["date_utc"].replace("Z", "+00:00")) for r in grid]
    starts = [
        datetime.fromisoformat(r["date_utc"].replace("Z", "+00:00")).timestamp() - r["training"].get("train_seconds", 0)
        for r in grid
        if r["kind"] == "pretrain"
    ]
    start = min(starts) if starts else min(d.timestamp() for d in dates)
    hours = (max(d.timestamp() for d in dates) - start) / 3600
    loads = [r["load_average"][0] for r in grid if "load_average" in r]
    return f"{hours:.2f} h over {len(grid)} result files (1-minute load average {min(loads):.1f}-{max(loads):.1f})"


def render_section(section: Section, plot_path: Path) -> str:
    commits = sorted({r["git_commit"] for r in section.runs})
    parts = [
        f"## Profile `{section.name}`" + (" (SMOKE RUN: seconds of compute, no evidence)" if section.smoke else ""),
        f"{len(section.runs)} result files; commits {', '.join(f'`{c[:12]}`' for c in commits)}; grid step count "
        f"{section.grid_steps}. Commands: " + "; ".join(f"`{c}`" for c in sorted({r["command"] for r in section.runs})),
        "### The answer",
        claim_answer(section),
        "### The claim (pre-declared cells)",
        f"esi_full against each baseline at {section.grid_steps} pretraining steps, paired by pretraining seed. "
        f"Verdict: 'better' / 'worse' when the 95% interval excludes 0; 'equivalent within {EQUIVALENCE_MARGIN}' "
        f"when two one-sided tests at +-{EQUIVALENCE_MARGIN} reject (90% interval inside the margin); otherwise "
        "'too noisy to say'. SE fold 10 only: the same comparison on the fold-10 records alone (the former "
        "protocol's test set), and how many times larger its standard error is.",
        claim_table(section),
        "### Data",
        data_checks(section),
        "### Pairing",
        pairing_check(section),
        "### Exploratory comparisons (not pre-declared; Holm-adjusted over this table)",
        exploratory_table(section),
        one_seed_note(section),
        "### Same-text positives (exploratory; Holm-adjusted over this table)",
        "Each text arm against its twin trained with one positive per ECG (records with identical captions "
        "counted as negatives, as in CLIP), at the same seed, steps and batches; positive: same-text positives help.",
        same_text_table(section),
        "### Cross-fitted macro AUROC per arm (mean over pretraining seeds)",
        arm_table(section),
        "### Pretraining runs: effective rank, loss, cost, pairing digests",
        pretrain_table(section),
        low_rank_note(section),
        f"Grid wall time: {wall_time(section)}.",
        "### Learning curve (first seed)",
        learning_curve(section, plot_path),
        "### Supervised from scratch (standard split, exploratory)",
        scratch_table(section),
    ]
    return "\n\n".join(parts)


def model_summary(results_dir: Path, checksum: str) -> dict:
    """The downstream summary `esi.publish --downstream` reads, for the one model whose weights have `checksum`:
    its cross-fitted probe results (mean over probe seeds), each naming that checksum."""
    runs = [
        run
        for folder in sorted(d for d in results_dir.iterdir() if d.is_dir())
        for run in load_runs(folder)
        if run["kind"] == "probe" and run["weights_sha256"] == checksum
    ]
    if not runs:
        raise ValueError(f"no probe result under {results_dir} names weights_sha256 {checksum}")
    groups: dict[tuple[str, float], list[float]] = defaultdict(list)
    for run in runs:
        groups[(run["task"], run["label_fraction"])].append(run["metrics"]["macro_auroc"])
    results = [
        {
            "name": f"PTB-XL {task}, linear probe cross-fitted over the 10 folds, {fraction:.0%} labels "
            + (f"(mean of {len(values)} probe seeds)" if len(values) > 1 else "(one probe seed)"),
            "value": float(np.mean(values)),
            "weights_sha256": checksum,
        }
        for (task, fraction), values in sorted(groups.items())
    ]
    rows = "\n".join(f"| {r['name']} | {r['value']:.3f} |" for r in results)
    return {
        "results": results,
        "markdown": "Downstream (generated by benchmarks.esi_claim.report from its result files):\n\n"
        "| evaluation | macro AUROC |\n|---|---|\n" + rows,
        "weights_sha256": checksum,
        "smoke": any(run.get("smoke") for run in runs),
    }


def main(argv: list[str] | None = None) -> Path:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results-dir", type=Path, default=Path(RESULTS_ROOT))
    p.add_argument("--output", type=Path, default=Path("benchmarks/reports/esi_claim.md"))
    p.add_argument("--bootstrap-samples", type=int, default=2000)
    p.add_argument(
        "--model-summary",
        metavar="WEIGHTS_SHA256",
        default=None,
        help="instead of the report, write the downstream summary of that model (for esi.publish)",
    )
    p.add_argument("--summary-output", type=Path, default=Path("outputs/esi_claim/model_summary.json"))
    args = p.parse_args(argv)
    if args.model_summary:
        args.summary_output.parent.mkdir(parents=True, exist_ok=True)
        args.summary_output.write_text(json.dumps(model_summary(args.results_dir, args.model_summary), indent=1))
        return args.summary_output
    command = shlex.join(["python", "-m", "benchmarks.esi_claim.report", *sys.argv[1:]])
    parts = [
        "# ESI claim benchmark",
        f"Generated by `{command}` from the result files of protocol `{PROTOCOL}` under `{args.results_dir}`; no "
        "number here is typed by hand. Pretraining on `ptb-xl-pretrain` (patient-disjoint from the evaluation "
        "set) through `esi.train`; every encoder is probed by cross-fitting over the 10 PTB-XL folds (for fold k: "
        "a label fraction of the patients of 8 other folds trains a linear probe, the fold before k chooses its "
        "epoch and thresholds, fold k is predicted) and scored on the pooled out-of-fold predictions of every "
        "labelled record. Arms and the question each answers: `benchmarks/esi_claim/pretraining.py` (ARMS). "
        + DISCLAIMER,
    ]
    folders = sorted(d for d in args.results_dir.iterdir() if d.is_dir()) if args.results_dir.exists() else []
    for folder in folders:
        runs = load_runs(folder)
        if not any(r["kind"] == "probe" for r in runs):
            continue
        plot = args.output.with_name(f"{args.output.stem}_{folder.name}_learning_curve.png")
        parts.append(render_section(Section(folder.name, runs, args.bootstrap_samples), plot))
    if len(parts) == 2:
        parts.append("No result files of this protocol yet: run `python -m benchmarks.esi_claim.run --profile cpu`.")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text("\n\n".join(parts) + "\n")
    return args.output


if __name__ == "__main__":
    main()
