"""The model card of a fine-tuned head or adapter, naming the pretrained ESI it started from."""

from __future__ import annotations

import json
import os
from pathlib import Path

from esi.eval.arguments import FinetuneArguments


def base_model_id(model: str) -> str:
    """The pretrained model as the Hub knows it: a repo id as given, a local folder by its name only."""
    return model if not Path(model).exists() else Path(model).resolve().name


def adapter_base_reference(model: str) -> str:
    """How a LoRA adapter names its base (`base_model_name_or_path`): a Hub repo id as given, a local folder by its
    path relative to the working directory (an absolute path would not survive a move to another machine)."""
    return model if not Path(model).exists() else os.path.relpath(model)


def adapter_usage(base: str, config: dict) -> str:
    """The card's section on reloading an adapter: the base's config has no labels, so the call passes the head's."""
    labels = {
        "num_labels": len(config["id2label"]),
        "id2label": {int(i): name for i, name in config["id2label"].items()},
        "label2id": config["label2id"],
        "problem_type": config["problem_type"],
    }
    arguments = "".join(f"    {key}={value!r},\n" for key, value in labels.items())
    return (
        "## Reloading\n\n"
        f"The adapter's base is `{base}` (a Hub id, or a folder relative to where the adapter was trained). "
        "Its config has no labels, so the call passes the head's:\n\n"
        "```python\nfrom peft import AutoPeftModelForSequenceClassification\n\n"
        'adapter = "path/to/this/folder"  # or its Hub repo id\n'
        "model = AutoPeftModelForSequenceClassification.from_pretrained(\n"
        f"    adapter,\n    trust_remote_code=True,\n{arguments})\n```\n"
    )


def write_finetuned_card(folder: Path, args: FinetuneArguments, result: dict) -> Path:
    """A model card for a fine-tuned head or adapter: `base_model` names the pretrained ESI it started from."""
    adapter = args.method == "lora"
    front = {
        "base_model": base_model_id(args.model),
        "library_name": "peft" if adapter else "transformers",
        "tags": ["ecg", "electrocardiogram", "esi", f"ptb-xl-{args.task}", args.method, "research-only"],
    }
    if not adapter:
        front["base_model_relation"] = "finetune"
    lines = [f"{key}: {json.dumps(value)}" for key, value in front.items()]
    body = (
        f"# ESI {args.task} classifier ({args.method})\n\n"
        f"Fine-tuned from `{front['base_model']}` on PTB-XL `{args.task}` labels ({args.label_fraction:.0%} of the "
        f"training patients, seed {args.seed}) with `esi-finetune --method {args.method}`. Test macro AUROC "
        f"(fold 10): {result['macro_auroc']:.4f}.\n\n"
        "> **Research software, not a medical device.** Do not use it to diagnose, triage or treat anyone.\n"
    )
    path = folder / "README.md"
    path.write_text("---\n" + "\n".join(lines) + "\n---\n\n" + body)
    return path
