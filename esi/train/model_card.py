"""Fill the model card template (`model_card.md`) from a training run's summary."""

from __future__ import annotations

import json
from pathlib import Path
from string import Template

from modeling_esi.configuration_esi import EsiEcgConfig
from modeling_esi.modeling_esi import lora_target_modules

TEMPLATE = Path(__file__).with_name("model_card.md")


def _name(path: str | None) -> str | None:
    """A folder's name without the local path to it (cards are uploaded; the path means nothing there)."""
    return Path(path).name if path else path


def _training_section(summary: dict) -> str:
    args = summary.get("args", {})
    losses = summary.get("final_losses") or {}
    lines = [
        f"- Pretrained for {summary.get('steps')} optimiser steps on {summary.get('train_ecgs')} ECG-caption pairs "
        f"({summary.get('num_processes')} process(es), batch {args.get('per_device_batch_size')} per device, "
        f"learning rate {args.get('learning_rate')}, seed {args.get('seed')}).",
        f"- Signals: `{_name(args.get('signals'))}`; captions: `{_name(args.get('captions'))}`.",
        f"- Loss = {args.get('contrastive_loss_weight')} x contrastive (symmetric InfoNCE, gathered across processes) "
        f"+ {args.get('caption_loss_weight')} x captioning (causal decoder cross-attending to the ECG token sequence).",
        *_data_caveats(summary),
    ]
    if losses:
        nan = float("nan")
        total, contrastive, caption = (losses.get(k, nan) for k in ("loss", "contrastive_loss", "caption_loss"))
        lines.append(f"- Final losses: total {total:.4f}, contrastive {contrastive:.4f}, caption {caption:.4f}.")
    return "\n".join(lines)


def _data_caveats(summary: dict) -> list[str]:
    """What the pretraining data means for evaluation: overlap with the evaluation set, truncated text."""
    lines = []
    overlap = summary.get("evaluation_overlap") or {}
    if not overlap.get("checked"):
        lines.append(
            "- Overlap with evaluation data: not checked (the run was not given `--evaluation-records`); "
            "do not read downstream results on PTB-XL as clean unless the pretraining records are disjoint from them."
        )
    elif overlap.get("shared_records") or overlap.get("shared_patients"):
        lines.append(
            f"- **WARNING: pretrained on evaluation data.** {overlap['shared_records']} record(s) and "
            f"{overlap['shared_patients']} patient(s) of the pretraining split are also in "
            f"`{_name(overlap['evaluation_dataset'])}`; their captions carry their labels, so downstream results "
            "on that dataset overstate what the encoder learned."
        )
    else:
        lines.append(f"- No record or patient of the pretraining split is in `{_name(overlap['evaluation_dataset'])}`.")
    truncation = summary.get("caption_truncation") or {}
    if truncation:
        lines.append(
            f"- Captions read up to {truncation['max_text_length']} tokens: "
            f"{truncation['truncated_token_share']:.1%} of caption tokens were cut off "
            f"({truncation['truncated_caption_share']:.1%} of captions truncated)."
        )
    return lines


def _evaluation_section(summary: dict, downstream: dict | None) -> str:
    parts = []
    validation = summary.get("validation") or {}
    if validation:
        rows = "\n".join(f"| {k} | {v:.3f} |" for k, v in sorted(validation.items()))
        parts.append(
            "ECG-text retrieval on the validation fold at the end of pretraining:\n\n| metric | value |\n|---|---|\n"
            + rows
        )
    if downstream and downstream.get("markdown"):
        parts.append(downstream["markdown"])
    return "\n\n".join(parts) or "Not evaluated yet."


def _model_index(downstream: dict | None) -> str:
    if not downstream or not downstream.get("results"):
        return ""
    entries = [
        {
            "task": {"type": "ecg-classification", "name": result["name"]},
            "dataset": {"type": "ptb-xl", "name": result.get("dataset", "PTB-XL"), "split": "fold 10"},
            "metrics": [{"type": "roc_auc", "name": "macro AUROC", "value": round(result["value"], 4)}],
        }
        for result in downstream["results"]
    ]
    return "model-index:\n- name: ESI\n  results:\n" + "\n".join("  - " + json.dumps(entry) for entry in entries)


def render_model_card(
    summary: dict,
    config: dict,
    repo_id: str = "ORG/esi",
    downstream: dict | None = None,
    dataset_repo_id: str | None = None,
) -> str:
    """Card text; `dataset_repo_id` links the caption dataset the model was pretrained on (Hub `datasets:`)."""
    ecg = config.get("ecg_config", {})
    datasets = [dataset_repo_id] if dataset_repo_id else ["ptb-xl"]
    return Template(TEMPLATE.read_text()).substitute(
        datasets="\n".join(f"- {name}" for name in datasets),
        model_index=_model_index(downstream),
        encoder_size=ecg.get("size", "custom"),
        repo_id=repo_id,
        projection_dim=config.get("projection_dim"),
        sampling_rate=ecg.get("sampling_rate"),
        duration_s=ecg.get("duration_s"),
        lora_targets=f'r"{lora_target_modules(EsiEcgConfig(**ecg))}"',
        training=_training_section(summary),
        evaluation=_evaluation_section(summary, downstream),
    )


def write_model_card(
    folder: str | Path,
    summary: dict,
    repo_id: str = "ORG/esi",
    downstream: dict | None = None,
    dataset_repo_id: str | None = None,
) -> Path:
    folder = Path(folder)
    config = json.loads((folder / "config.json").read_text())
    path = folder / "README.md"
    path.write_text(render_model_card(summary, config, repo_id, downstream, dataset_repo_id))
    return path
