"""Generate `benchmarks/reports/esi_claim.md` (tables, paired differences, plots) from the result files only.

    python -m benchmarks.esi_claim.report [--results-dir benchmarks/results/esi_claim] \
        [--output benchmarks/reports/esi_claim.md]

Every number comes from a JSON (and its scores file) written by `benchmarks.esi_claim.run`; none is typed
here. Each profile folder under the results directory gets its own section; the `tiny` profile is a smoke
run and is labelled as one.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import zlib
from collections import defaultdict
from pathlib import Path

import numpy as np

from esi.eval.stats import (
    bootstrap_interval,
    difference_summary,
    macro_auroc,
    mean_over_runs,
    metric_draws,
    paired_bootstrap,
    percentile_interval,
    resample_rows,
)

DISCLAIMER = "Research software, not a diagnostic device."
ORDER = (
    "esi_full",
    "esi_no_knowledge",
    "statements_only",
    "measurements_only",
    "contrastive_only",
    "caption_only",
    "supervised_pool",
    "ssl_two_views",
    "random_init",
    "supervised_scratch",
)
# (arm, baseline): the differences the rows and targets ask for.
COMPARISONS = tuple(("esi_full", other) for other in ORDER[1:])
TARGETS = (
    ("statements_only", ("superdiagnostic", "subdiagnostic"), (0.1,), 0.02),
    ("supervised_pool", None, (0.01, 0.1), 0.0),
    ("ssl_two_views", None, (0.01, 0.1), 0.0),
    ("random_init", None, (0.1,), 0.05),
    ("supervised_scratch", None, (0.1,), 0.0),
)


def load_runs(folder: Path) -> list[dict]:
    runs = []
    for path in sorted(folder.glob("*.json")):
        record = json.loads(path.read_text())
        if "scores_file" in record:
            with np.load(folder / record["scores_file"]) as scores:
                record["_scores"] = {k: scores[k] for k in scores.files}
        runs.append(record)
    return runs


def fmt(value: float, ci: list[float] | None = None) -> str:
    if value != value:
        return "n/a"
    return f"{value:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")


def difference_cell(result: dict) -> str:
    cell = f"{result['difference']:+.3f} [{result['ci'][0]:+.3f}, {result['ci'][1]:+.3f}]"
    return cell if result["shown"] else f"{cell} not shown"


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


class Section:
    """One profile's results, grouped for the tables."""

    def __init__(self, profile: str, runs: list[dict], samples: int):
        self.profile, self.runs, self.samples = profile, runs, samples
        self.by_kind: dict[str, list[dict]] = defaultdict(list)
        for run in runs:
            self.by_kind[run["kind"]].append(run)
        self.config = runs[0]["config"]
        self.smoke = any(run.get("smoke") for run in runs)
        self._draws: dict[str, np.ndarray] = {}

    def classification(self) -> dict[tuple[str, str, float], list[dict]]:
        groups: dict[tuple[str, str, float], list[dict]] = defaultdict(list)
        for run in self.by_kind["probe"] + self.by_kind["scratch"]:
            groups[(run["arm"], run["task"], run["label_fraction"])].append(run)
        return groups

    @staticmethod
    def same_records(runs: list[dict]) -> tuple[np.ndarray, list[np.ndarray]]:
        first = runs[0]["_scores"]
        for run in runs[1:]:
            if not np.array_equal(run["_scores"]["test_ecg_ids"], first["test_ecg_ids"]):
                raise ValueError(f"{run['run_id']} was tested on other records than {runs[0]['run_id']}")
        return first["labels"], [r["_scores"]["scores"].astype(np.float64) for r in runs]

    def draws(self, run: dict) -> np.ndarray:
        """The run's test macro AUROC on each resample of its test records, computed once and reused by every
        cell and comparison (all runs on the same records share the resamples, so differences are paired)."""
        if run["run_id"] not in self._draws:
            labels, scores = run["_scores"]["labels"], run["_scores"]["scores"].astype(np.float64)
            rows = resample_rows(len(labels), self.samples, seed=0)
            self._draws[run["run_id"]] = metric_draws(macro_auroc, labels, scores, rows)
        return self._draws[run["run_id"]]

    def seed_draws(self, runs: list[dict]) -> np.ndarray:
        """Per resample of the test records, the mean AUROC over a resample (with replacement) of the runs'
        training seeds: pretraining seeds for probes (each seed's probe runs averaged), the run's own seed for
        supervised-from-scratch. The interval then carries the spread between pretraining runs as well as the
        test set's; with one training seed it is the test-record interval alone.

        The seeds are drawn from a generator named by the runs, so the report is the same on every run of this
        script and the two arms of a comparison draw their seeds independently."""
        groups: dict[int, list[np.ndarray]] = defaultdict(list)
        for run in runs:
            seed = run["pretrain_seed"] if run.get("pretrain_seed") is not None else run["probe_seed"]
            groups[seed].append(self.draws(run))
        per_seed = np.stack([np.mean(g, 0) for _, g in sorted(groups.items())])  # (seeds, resamples)
        if len(per_seed) == 1:
            return per_seed[0]
        rng = np.random.default_rng(zlib.crc32(",".join(sorted(r["run_id"] for r in runs)).encode()))
        pick = rng.integers(0, len(per_seed), size=(self.samples, len(per_seed)))
        return per_seed[pick, np.arange(self.samples)[:, None]].mean(1)

    def pooled(self, runs: list[dict]) -> tuple[float, list[float]]:
        labels, scores = self.same_records(runs)
        value = mean_over_runs(macro_auroc, labels, scores)
        return value, percentile_interval(self.seed_draws(runs))

    def compare(self, runs_a: list[dict], runs_b: list[dict]) -> dict:
        labels, a = self.same_records(runs_a)
        _, b = self.same_records(runs_b)
        if not np.array_equal(runs_a[0]["_scores"]["test_ecg_ids"], runs_b[0]["_scores"]["test_ecg_ids"]):
            raise ValueError(f"{runs_a[0]['run_id']} and {runs_b[0]['run_id']} were tested on other records")
        return difference_summary(
            mean_over_runs(macro_auroc, labels, a) - mean_over_runs(macro_auroc, labels, b),
            self.seed_draws(runs_a) - self.seed_draws(runs_b),
            runs=[len(runs_a), len(runs_b)],
        )


def label_efficiency_plot(section: Section, cells: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = section.config["tasks"]
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.2 * len(tasks), 3.6), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        for arm in ORDER:
            points = sorted((f, v, ci) for (a, t, f), (v, ci) in cells.items() if a == arm and t == task)
            if not points:
                continue
            x = [p[0] * 100 for p in points]
            y = np.array([p[1] for p in points])
            err = np.array([[p[1] - p[2][0], p[2][1] - p[1]] for p in points]).T
            ax.errorbar(x, y, yerr=np.clip(err, 0, None), marker="o", capsize=3, label=arm)
        ax.set_xscale("log")
        ax.set_xlabel("labelled training patients (%)")
        ax.set_title(task)
    axes[0][0].set_ylabel("test macro AUROC (95% interval)")
    axes[0][-1].legend(fontsize=7, loc="lower right")
    title = f"ESI claim benchmark, profile {section.profile}"
    fig.suptitle(title + (" (SMOKE RUN: no evidence)" if section.smoke else ""))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def render_section(section: Section, plot_path: Path, plot_link: str) -> str:
    config = section.config
    out = [f"## Profile `{section.profile}`"]
    if section.smoke:
        out.append(
            "> **SMOKE RUN.** A few optimiser steps on a handful of records, to show that the machinery runs end "
            "to end. Its numbers carry **no evidence** about ESI or any baseline; read nothing into them."
        )
    pack = section.runs[0]["pack"]
    commits = sorted({run["git_commit"] for run in section.runs})
    out.append(
        f"Scale: encoder `{config['encoder_size']}`, {config['steps']} pretraining steps of batch "
        f"{config['batch_size']} on {pack['pool_records']} pool records, evaluation on {pack['eval_records']} "
        f"PTB-XL records; probe seeds {config['probe_seeds']}, pretraining seeds {config['pretrain_seeds']} for "
        f"esi_full, statements_only and supervised_pool (the first seed for the other arms); "
        f"{section.samples} bootstrap resamples. Notes: {' '.join(config['notes'])}"
    )
    out.append(f"{len(section.runs)} result files, git commit(s) {', '.join(c[:12] for c in commits)}.")

    pre = sorted(section.by_kind["pretrain"], key=lambda r: (ORDER.index(r["arm"]), r["seed"]))
    out.append(
        "### Pretraining runs\n\nEmbedding spread: mean per-dimension standard deviation and effective rank of the "
        "evaluation records' pooled embeddings (a collapsed encoder shows values near 0 and 1; recorded by runs "
        "of the current runner only, n/a before).\n"
    )
    out.append(
        table(
            [
                "arm",
                "seed",
                "steps",
                "seconds",
                "first loss",
                "final loss",
                "embedding spread / eff. rank",
                "git commit",
                "weights sha256",
            ],
            [
                [
                    r["arm"],
                    str(r["seed"]),
                    str(r["training"]["steps"]),
                    str(r["training"].get("seconds", 0)),
                    fmt(r["training"].get("first_loss", float("nan"))),
                    fmt(r["training"].get("final_loss", float("nan"))),
                    (
                        f"{r['embedding']['mean_dimension_std']:.2g} / {r['embedding']['effective_rank']:.1f}"
                        if "embedding" in r
                        else "n/a"
                    ),
                    f"`{r['git_commit'][:7]}`",
                    f"`{r['weights_sha256'][:16]}`",
                ]
                for r in pre
            ],
        )
    )

    groups = section.classification()
    cells = {key: section.pooled(runs) for key, runs in groups.items()}
    columns = [(t, f) for t in config["tasks"] for f in config["fractions"]]
    out.append(
        "### Downstream macro AUROC (fold 10)\n\nMean over runs (pretraining seeds x probe seeds) and its 95% "
        "bootstrap interval over test records and training seeds (pretraining seeds; scratch: training seeds). "
        "Linear probe on the frozen encoder; `supervised_scratch` trains the whole encoder on the labels.\n"
    )
    rows = []
    for arm in ORDER:
        if not any(key[0] == arm for key in groups):
            continue
        row = [arm]
        for task, fraction in columns:
            value = cells.get((arm, task, fraction))
            n = len(groups.get((arm, task, fraction), []))
            row.append(f"{fmt(*value)} (n={n})" if value else "not run")
        rows.append(row)
    out.append(table(["arm"] + [f"{t} {f:.0%}" for t, f in columns], rows))
    label_efficiency_plot(section, cells, plot_path)
    out.append(f"\n![label efficiency]({plot_link})")

    out.append(
        "### Paired differences: ESI full minus each arm\n\nPaired bootstrap on the same test records "
        f"({section.samples} resamples; every run of each arm scored on each resample), and on each resample a "
        "resample of each arm's training seeds (pretraining seeds, or scratch training seeds), so that an arm "
        "with several pretraining runs carries their spread; 'not shown' when the 95% interval contains 0.\n"
    )
    diffs, rows = {}, []
    for arm, other in COMPARISONS:
        row, any_cell = [f"{arm} - {other}"], False
        for task, fraction in columns:
            a, b = groups.get((arm, task, fraction)), groups.get((other, task, fraction))
            if a and b:
                diffs[(other, task, fraction)] = section.compare(a, b)
                row.append(difference_cell(diffs[(other, task, fraction)]))
                any_cell = True
            else:
                row.append("not run")
        if any_cell:
            rows.append(row)
    out.append(table(["difference"] + [f"{t} {f:.0%}" for t, f in columns], rows))

    out.append("### Targets of issue 15\n")
    target_rows = []
    for other, tasks, fractions, margin in TARGETS:
        for task in tasks or config["tasks"]:
            for fraction in fractions:
                d = diffs.get((other, task, fraction))
                if d is None:
                    verdict, cell = "not run", ""
                else:
                    cell = difference_cell(d)
                    verdict = "met" if d["ci"][0] > 0 and d["difference"] >= margin else "not met"
                    if section.smoke:
                        verdict = "no verdict (smoke run)"
                target_rows.append(
                    [f"esi_full beats {other} by >= {margin:+.2f}", task, f"{fraction:.0%}", cell, verdict]
                )
    out.append(table(["target", "task", "labels", "difference [95% CI]", "verdict"], target_rows))

    sid = defaultdict(list)
    for run in section.by_kind["subject_id"]:
        sid[run["arm"]].append(run)
    if sid:
        out.append(
            "### Subject identification (folds 9-10 patients only)\n\nTop-1 over probes (each patient's earliest "
            "record is the gallery); paired difference against the random encoder on the same probes.\n"
        )
        top1 = lambda _refs, ranks: float((ranks < 1).mean())  # noqa: E731
        rows = []
        for arm in ORDER:
            if arm not in sid:
                continue
            ranks = [r["_scores"]["ranks"] for r in sid[arm]]
            dummy = np.zeros(len(ranks[0]))
            value = mean_over_runs(top1, dummy, ranks)
            ci = bootstrap_interval(
                lambda *a: mean_over_runs(top1, a[0], list(a[1:])), dummy, *ranks, samples=section.samples
            )
            versus = ""
            if arm != "random_init" and "random_init" in sid:
                base = [r["_scores"]["ranks"] for r in sid["random_init"]]
                versus = difference_cell(paired_bootstrap(top1, dummy, ranks, base, samples=section.samples))
            rows.append([arm, str(sid[arm][0]["probes"]), fmt(value, ci), versus])
        out.append(table(["arm", "probes", "top-1 [95% CI]", "minus random_init"], rows))

    if section.by_kind["zero_shot"]:
        out.append("### Zero-shot superdiagnostic (arms that learned a text embedding)\n")
        rows = []
        for arm in ORDER:
            runs = [r for r in section.by_kind["zero_shot"] if r["arm"] == arm]
            if runs:
                rows.append([arm, str(len(runs)), fmt(*section.pooled(runs))])
        out.append(table(["arm", "seeds", "macro AUROC [95% CI]"], rows))

    if section.by_kind["captioning"]:
        out.append(
            "### Caption quality (arms with a decoder)\n\nGreedy captions of fold-10 ECGs against the text of the "
            "variant the arm was trained on, and against the full variant; means over seeds. Overlap scores do "
            "not judge clinical correctness.\n"
        )
        rows = []
        for arm in ORDER:
            runs = [r for r in section.by_kind["captioning"] if r["arm"] == arm]
            if runs:
                m = {k: np.mean([r["metrics"][k] for r in runs]) for k in runs[0]["metrics"]}
                rows.append(
                    [
                        arm,
                        runs[0]["reference_variant"],
                        str(runs[0]["records"]),
                        fmt(m["token_f1"]),
                        fmt(m["rouge_l"]),
                        fmt(m["token_f1_vs_full"]),
                        fmt(m["rouge_l_vs_full"]),
                    ]
                )
        out.append(
            table(["arm", "reference", "ECGs", "token F1", "ROUGE-L", "token F1 (full)", "ROUGE-L (full)"], rows)
        )
    return "\n\n".join(out)


def model_summary(results_dir: Path, checksum: str) -> dict:
    """The downstream summary `esi.publish --downstream` reads, for the one model whose weights have `checksum`:
    its probe results (mean over probe seeds), each naming that checksum."""
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
            "name": f"PTB-XL {task}, linear probe, {fraction:.0%} labels (mean of {len(values)} probe seeds)",
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
    p.add_argument("--results-dir", type=Path, default=Path("benchmarks/results/esi_claim"))
    p.add_argument("--output", type=Path, default=Path("benchmarks/reports/esi_claim.md"))
    p.add_argument("--bootstrap-samples", type=int, default=1000)
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
    command = " ".join(shlex.quote(a) for a in ["python", "-m", "benchmarks.esi_claim.report", *sys.argv[1:]])
    parts = [
        "# ESI claim benchmark (issue 15)",
        f"Generated by `{command}` from the result files under `{args.results_dir}`; no number here is typed by "
        "hand. Protocol: pretraining on `../shared/ptb-xl-pretrain` (patient-disjoint from the evaluation set); "
        "linear probes trained on 1/10/100% of the fold 1-8 patients, early stopping and thresholds on fold 9, "
        "tested once on fold 10. Arms and the question each answers: `benchmarks/esi_claim/run.py` (ARMS). "
        + DISCLAIMER,
    ]
    args.output.parent.mkdir(parents=True, exist_ok=True)
    folders = sorted(d for d in args.results_dir.iterdir() if d.is_dir()) if args.results_dir.exists() else []
    for folder in folders:
        runs = load_runs(folder)
        if not runs:
            continue
        plot = args.output.with_name(f"{args.output.stem}_{folder.name}_label_efficiency.png")
        section = Section(folder.name, runs, args.bootstrap_samples)
        parts.append(render_section(section, plot, plot.name))
    if len(parts) == 2:
        parts.append("No result files yet: run `python -m benchmarks.esi_claim.run --profile cpu`.")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text("\n\n".join(parts) + "\n")
    return args.output


if __name__ == "__main__":
    main()
