"""Write downstream results: JSON, a Markdown table and ROC curves (matplotlib, Agg backend)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import roc_curve  # noqa: E402

from esi.constants import DISCLAIMER  # noqa: E402


def fmt_ci(value: float, ci: Sequence[float] | None) -> str:
    if value is None or not np.isfinite(value):
        return "n/a"
    return f"{value:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def classification_markdown(result: Mapping) -> str:
    head = (
        f"**{result['task']}**, method `{result['method']}`{' (random init)' if result['random_init'] else ''}, "
        f"{result['label_fraction']:.0%} of training labels ({result['train_records']} records, "
        f"{result['train_patients']} patients), seed {result['seed']}; test: {result['test_records']} records."
    )
    summary = markdown_table(
        ["metric", "test value [95% bootstrap CI]"],
        [
            ["macro AUROC", fmt_ci(result["macro_auroc"], result["macro_auroc_ci"])],
            ["macro F1 (validation thresholds)", fmt_ci(result["macro_f1"], result["macro_f1_ci"])],
            ["validation macro AUROC (best epoch)", f"{result['validation_macro_auroc']:.3f}"],
        ],
    )
    per_class = markdown_table(
        ["class", "AUROC", "F1", "threshold"],
        [
            [
                c,
                f"{result['per_class_auroc'][c]:.3f}",
                f"{result['per_class_f1'][c]:.3f}",
                f"{result['thresholds'][c]:.3f}",
            ]
            for c in result["classes"]
        ],
    )
    dropped = "".join(f"\n- `{c}`: {why}" for c, why in result["dropped_classes"].items())
    return "\n\n".join(
        [head, summary, per_class, ("Classes dropped:" + dropped) if dropped else "No class dropped.", DISCLAIMER]
    )


def plot_roc(
    path: str | Path, curves: Mapping[str, tuple[np.ndarray, np.ndarray]], class_names: Sequence[str], title: str = ""
) -> Path:
    """One panel per class, one ROC line per entry of `curves` (name -> (multi-hot labels, scores))."""
    cols = min(len(class_names), 5)
    rows = -(-len(class_names) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.2 * rows), squeeze=False)
    for k, (ax, name) in enumerate(zip(axes.flat, class_names, strict=False)):
        for label, (y, s) in curves.items():
            fpr, tpr, _ = roc_curve(y[:, k], s[:, k])
            ax.plot(fpr, tpr, label=label, lw=1.2)
        ax.plot([0, 1], [0, 1], color="grey", lw=0.6, ls=":")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("false positive rate", fontsize=8)
        ax.set_ylabel("true positive rate", fontsize=8)
    for ax in list(axes.flat)[len(class_names) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=6, loc="lower right")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def write_json(path: str | Path, obj: object) -> Path:
    Path(path).write_text(json.dumps(obj, indent=2, default=float))
    return Path(path)
