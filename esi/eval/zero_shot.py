"""Zero-shot classification with a pretrained ESI model: each ECG scored against a text prompt per class
(`esi.knowledge.prompts`), macro AUROC on the test split (`esi-finetune --method zero_shot`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from esi.data.windows import parse_window_count
from esi.eval.arguments import FinetuneArguments
from esi.eval.classification import load_task, make_window_loader, per_record, score_predictions
from esi.eval.report import DISCLAIMER, fmt_ci, markdown_table, plot_roc
from esi.eval.text_model import load_pretrained
from esi.knowledge import load_knowledge_base
from esi.knowledge.prompts import class_prompts
from modeling_esi import EsiFeatureExtractor


@torch.no_grad()
def zero_shot_scores(model, tokenizer, prompts: Sequence[str], loader, max_length: int = 128) -> np.ndarray:
    """(N, K) scaled cosine similarities between each ECG of `loader` and each prompt."""
    model.eval()
    text = tokenizer(list(prompts), padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    parts = [
        model.zero_shot_logits(
            batch["input_values"], text["input_ids"], text["attention_mask"], batch["ecg_attention_mask"]
        )
        .float()
        .numpy()
        for batch in loader
    ]
    return np.concatenate(parts)


def run_zero_shot(args: FinetuneArguments, out: Path) -> dict:
    """Score the test split against the class prompts; writes OUT/roc.png and OUT/results.md."""
    data = load_task(args.dataset, args.task)
    prompts, missing = class_prompts(data.class_names, load_knowledge_base())
    if not prompts:
        raise ValueError(f"the knowledge base has no entry for any class of '{args.task}' ({data.class_names})")
    keep = [k for k, name in enumerate(data.class_names) if name in prompts]
    names = [data.class_names[k] for k in keep]
    model, tokenizer = load_pretrained(args.model)
    feature_extractor = EsiFeatureExtractor.from_pretrained(args.model)
    count = parse_window_count(args.eval_windows)
    loaders = {
        split: make_window_loader(data.splits[split], feature_extractor, args.eval_batch_size, count)
        for split in ("validation", "test")
    }
    scores = {
        split: per_record(zero_shot_scores(model, tokenizer, [prompts[n] for n in names], loader), loader)
        for split, loader in loaders.items()
    }
    labels = {split: data.labels[split][:, keep] for split in scores}
    metrics = score_predictions(
        labels["validation"],
        scores["validation"],
        labels["test"],
        scores["test"],
        names,
        args.bootstrap_samples,
        args.seed,
    )
    plot_roc(out / "roc.png", {"zero-shot": (labels["test"], scores["test"])}, names, f"{args.task}, zero-shot")
    result = {
        "method": "zero_shot",
        "task": args.task,
        "classes": names,
        "dropped_classes": {**data.dropped, **{n: "no knowledge-base entry for a prompt" for n in missing}},
        "prompts": prompts,
        **metrics,
    }
    table = markdown_table(
        ["class", "AUROC", "prompt"],
        [[n, f"{metrics['per_class_auroc'][n]:.3f}", prompts[n]] for n in names],
    )
    (out / "results.md").write_text(
        f"Zero-shot **{args.task}** on the test split: macro AUROC "
        f"{fmt_ci(metrics['macro_auroc'], metrics['macro_auroc_ci'])}.\n\n{table}\n\n{DISCLAIMER}\n"
    )
    return result
