"""Linear probe of one pretrained ESI folder against a randomly initialised encoder of the same
architecture, in one run (same folds, seed and label sample).

    python -m benchmarks.bench_probe --model outputs/bench_downstream/bench_train-atto-300steps-*/model

Prints a Markdown table of fold-10 macro AUROC with bootstrap intervals per label fraction and
writes it to benchmarks/reports/downstream_lever_table.md.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from esi.eval import finetune

REPO = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--dataset", type=Path, default=REPO / "outputs" / "bench_downstream" / "prepared-100hz-ptb-xl")
    p.add_argument("--task", default="superdiagnostic")
    p.add_argument("--fractions", type=float, nargs="+", default=[0.1, 1.0])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--report", type=Path, default=REPO / "benchmarks" / "reports" / "downstream_lever_table.md")
    args = p.parse_args(argv)

    results: dict[tuple[str, float], dict] = {}
    with tempfile.TemporaryDirectory() as work:
        for fraction in args.fractions:
            for name, extra in (("ESI (pretrained)", []), ("random init", ["--random-init"])):
                out = Path(work) / f"{name.split()[0]}-{fraction}"
                results[name, fraction] = finetune.main([
                    "--model", str(args.model), "--dataset", str(args.dataset), "--task", args.task,
                    "--method", "linear_probe", "--label-fraction", str(fraction), "--seed", str(args.seed),
                    "--output-dir", str(out), *extra,
                ])  # fmt: skip

    def cell(r: dict) -> str:
        low, high = r["macro_auroc_ci"]
        return f"{r['macro_auroc']:.3f} [{low:.3f}, {high:.3f}]"

    header = "| encoder | " + " | ".join(f"{f:.0%} labels" for f in args.fractions) + " |"
    rows = [header, "|---" * (len(args.fractions) + 1) + "|"]
    for name in ("ESI (pretrained)", "random init"):
        rows.append(f"| {name} | " + " | ".join(cell(results[name, f]) for f in args.fractions) + " |")
    gaps = [results["ESI (pretrained)", f]["macro_auroc"] - results["random init", f]["macro_auroc"]
            for f in args.fractions]  # fmt: skip
    rows.append("| gap | " + " | ".join(f"{g:+.3f}" for g in gaps) + " |")
    table = "\n".join(rows)
    print(f"{args.task}, fold 10 macro AUROC, linear probe, seed {args.seed}, model {args.model}\n\n{table}")
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text(
        f"`python -m benchmarks.bench_probe --model {args.model} --task {args.task} --seed {args.seed}`\n\n{table}\n"
    )
    return {"table": table, "gaps": gaps}


if __name__ == "__main__":
    main()
