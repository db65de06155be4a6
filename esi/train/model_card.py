"""Fill the model card template (`model_card.md`) from a training run's summary."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from string import Template

from modeling_esi.configuration_esi import EsiEcgConfig
from modeling_esi.modeling_esi import lora_target_modules

logger = logging.getLogger(__name__)
TEMPLATE = Path(__file__).with_name("model_card.md")


def results_for_model(downstream: dict | None, checksum: str) -> dict | None:
    """Only the downstream results measured on this very model (`weights_sha256` equal to `checksum`).

    A result without a checksum, or measured on other weights (another run, seed or checkpoint), is left
    out and counted in a warning: a model card must not quote figures its model did not earn.
    """
    if not downstream:
        return None
    results = downstream.get("results", [])
    kept = [r for r in results if r.get("weights_sha256") == checksum]
    if len(kept) < len(results):
        logger.warning(
            "left %d of %d downstream results off the model card: their weights_sha256 is not %s",
            len(results) - len(kept),
            len(results),
            checksum,
        )
    markdown = downstream.get("markdown") if downstream.get("weights_sha256") == checksum else None
    if not kept and not markdown:
        return None
    return {"results": kept, "markdown": markdown or "", "weights_sha256": checksum}


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


# Hub ids the card metadata uses: the task of every figure is embedding quality measured by a probe (the Hub's
# `feature-extraction`); PTB-XL has no Hub dataset id, so the evaluation data is named by its PhysioNet slug.
MODEL_INDEX_TASK = "feature-extraction"
EVALUATION_DATASET = {"type": "physionet/ptb-xl", "name": "PTB-XL (PhysioNet 1.0.3)"}
# The text tower `esi-train` starts from by default (`--text-model default`), as its Hub id.
DEFAULT_TEXT_TOWER_ID = "sentence-transformers/all-MiniLM-L6-v2"
COMMON = Path(__file__).with_name("card_common.md")
ENCODER_TEMPLATE = Path(__file__).with_name("encoder_card.md")


def _model_index(name: str, downstream: dict | None) -> str:
    """The card's `model-index` (one entry per result, each naming the weights it was measured on)."""
    if not downstream or not downstream.get("results"):
        return ""
    entries = [
        {
            "task": {"type": MODEL_INDEX_TASK, "name": result["name"]},
            "dataset": {**EVALUATION_DATASET, "split": result.get("split", "test")},
            "metrics": [
                {
                    "type": "roc_auc",
                    "name": "macro AUROC",
                    "value": round(result["value"], 4),
                    "verified": False,
                    "args": {"weights_sha256": result["weights_sha256"]},
                }
            ],
        }
        for result in downstream["results"]
    ]
    return f"model-index:\n- name: {name}\n  results:\n" + "\n".join("  - " + json.dumps(e) for e in entries) + "\n"


def _datasets(dataset_repo_id: str | None) -> str:
    return f"datasets:\n- {dataset_repo_id}\n" if dataset_repo_id else ""


def _base_model(summary: dict) -> str:
    """`base_model` where the text tower started from a Hub model (the default), else nothing."""
    args = summary.get("args", {})
    if args.get("text_model", "default") == "default" and not args.get("random_text_tower"):
        return f"base_model: {DEFAULT_TEXT_TOWER_ID}\n"
    return ""


def _shared_values(
    summary: dict, config: dict, repo_id: str, downstream: dict | None, dataset_repo_id: str | None
) -> dict[str, str]:
    """What the full model's and the encoder's cards fill in alike."""
    ecg = config.get("ecg_config", {})
    return {
        "datasets": _datasets(dataset_repo_id),
        "encoder_size": ecg.get("size", "custom"),
        "repo_id": repo_id,
        "projection_dim": config.get("projection_dim"),
        "sampling_rate": ecg.get("sampling_rate"),
        "duration_s": ecg.get("duration_s"),
        "lora_targets": f'r"{lora_target_modules(EsiEcgConfig(**ecg))}"',
        "training": _training_section(summary),
        "evaluation": _evaluation_section(summary, downstream),
        "common": COMMON.read_text(),
    }


def render_model_card(
    summary: dict,
    config: dict,
    repo_id: str = "ORG/esi",
    downstream: dict | None = None,
    dataset_repo_id: str | None = None,
) -> str:
    """Card text of a full ESI model; `dataset_repo_id` links the caption dataset it was pretrained on."""
    return Template(TEMPLATE.read_text()).substitute(
        _shared_values(summary, config, repo_id, downstream, dataset_repo_id),
        base_model=_base_model(summary),
        model_index=_model_index("ESI", downstream),
    )


def render_encoder_card(
    release: dict,
    summary: dict,
    config: dict,
    repo_id: str = "ORG/esi-ecg-encoder",
    downstream: dict | None = None,
    dataset_repo_id: str | None = None,
) -> str:
    """Card text of the encoder-only release (`esi.release`); `release` is its `release.json` (weights, dtype,
    the checksum of the model it was exported from, on which `downstream` results were measured)."""
    return Template(ENCODER_TEMPLATE.read_text()).substitute(
        _shared_values(summary, config, repo_id, downstream, dataset_repo_id),
        model_index=_model_index("ESI ECG encoder", downstream),
        parameters=f"{release['parameters']:,}",
        dtype=release["dtype"],
        size_mb=f"{release['size_bytes'] / 1e6:.1f}",
        weights_sha256=release["weights_sha256"],
        source_weights_sha256=release["source_weights_sha256"],
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


def _json_or_none(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def encoder_card_text(folder: str | Path) -> str:
    """The card an encoder release folder (`esi.release`) should carry, from the files in it: `release.json`,
    `config.json`, `training_summary.json` and, when present, `eval_results.json`."""
    folder = Path(folder)
    release = json.loads((folder / "release.json").read_text())
    return render_encoder_card(
        release,
        _json_or_none(folder / "training_summary.json") or {},
        json.loads((folder / "config.json").read_text()),
        release["repo_id"],
        _json_or_none(folder / "eval_results.json"),
        release.get("dataset_repo_id"),
    )


def write_encoder_card(folder: str | Path) -> Path:
    path = Path(folder) / "README.md"
    path.write_text(encoder_card_text(folder))
    return path
