"""Downstream evaluation of an ESI model: `run(FinetuneArguments(...))`; the command is `esi.eval.cli`."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path

import evaluate
import numpy as np

from esi.data.torch_dataset import join_captions, load_dataset_folder
from esi.data.windows import parse_window_count
from esi.eval.arguments import FinetuneArguments
from esi.eval.classification import (
    METRICS_DIR,
    TrainConfig,
    encoder_features,
    load_classifier,
    load_task,
    make_window_loader,
    per_record,
    run_classification,
    score_predictions,
)
from esi.eval.report import DISCLAIMER, classification_markdown, fmt_ci, markdown_table, plot_roc, write_json
from esi.eval.subject_id import subject_identification
from esi.eval.zero_shot import class_prompts, generate_captions, zero_shot_scores
from modeling_esi import EsiFeatureExtractor

logger = logging.getLogger("esi.finetune")
# Per-method defaults; a linear head on fixed embeddings needs many cheap epochs.
DEFAULTS = {
    "linear_probe": dict(epochs=200, batch_size=64, lr=3e-3, patience=20),
    "lora": dict(epochs=15, batch_size=32, lr=1e-3, patience=4),
    "full": dict(epochs=15, batch_size=32, lr=3e-4, patience=4),
    "supervised_scratch": dict(epochs=15, batch_size=32, lr=1e-3, patience=4),
}


def train_config(args: FinetuneArguments) -> TrainConfig:
    defaults = DEFAULTS[args.method]
    values = {k: getattr(args, k) if getattr(args, k) is not None else v for k, v in defaults.items()}
    return TrainConfig(weight_decay=args.weight_decay, seed=args.seed, **values)


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


def run_classification_cli(args: FinetuneArguments, out: Path) -> dict:
    data = load_task(args.dataset, args.task)
    run = run_classification(
        args.model,
        data,
        args.method,
        args.label_fraction,
        train_config(args),
        random_init=args.random_init,
        eval_batch_size=args.eval_batch_size,
        bootstrap_samples=args.bootstrap_samples,
        train_window=args.train_window,
        eval_windows=parse_window_count(args.eval_windows),
    )
    saved = out / ("adapter" if args.method == "lora" else "model")
    if args.method == "lora":
        run.model.peft_config["default"].base_model_name_or_path = adapter_base_reference(args.model)
    run.model.save_pretrained(saved)
    card = write_finetuned_card(saved, args, run.result)
    if args.method == "lora":
        base = run.model.peft_config["default"].base_model_name_or_path
        card.write_text(card.read_text() + "\n" + adapter_usage(base, run.model.config.to_dict()))
    np.savez_compressed(out / "test_scores.npz", scores=run.scores["test"], labels=data.labels["test"])
    plot_roc(out / "roc.png", {args.method: (data.labels["test"], run.scores["test"])}, data.class_names, args.task)
    (out / "results.md").write_text(classification_markdown(run.result) + "\n")
    return run.result


def run_subject_id(args: FinetuneArguments, out: Path) -> dict:
    data = load_dataset_folder(args.dataset)
    model = load_classifier(args.model, 1, args.random_init, args.seed)
    feature_extractor = EsiFeatureExtractor.from_pretrained(args.model)
    embeddings, patients, ecg_ids = [], [], []
    for split in data.values():
        loader = make_window_loader(
            split, feature_extractor, args.eval_batch_size, parse_window_count(args.eval_windows)
        )
        embeddings.append(per_record(encoder_features(model, loader), loader))
        patients.extend(split["patient_id"])
        ecg_ids.extend(split["ecg_id"])
    result = {
        "method": "subject_id",
        "random_init": args.random_init,
        **subject_identification(np.concatenate(embeddings), patients, ecg_ids),
    }
    table = markdown_table(
        ["patients (>= 2 records)", "probes", "top-1", "top-5"],
        [[result["patients"], result["probes"], f"{result['top1_accuracy']:.3f}", f"{result['top5_accuracy']:.3f}"]],
    )
    (out / "results.md").write_text(f"Subject identification (all splits).\n\n{table}\n\n{DISCLAIMER}\n")
    return result


def load_pretrained(model_path: str):
    from transformers import AutoTokenizer

    from modeling_esi import EsiModel

    model = EsiModel.from_pretrained(model_path)
    # Passing the config stops AutoTokenizer from reading config.json's remote-code auto_map.
    return model, AutoTokenizer.from_pretrained(model_path, config=model.config)


def run_zero_shot(args: FinetuneArguments, out: Path) -> dict:
    from esi.knowledge import load_knowledge_base

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


def run_captioning(args: FinetuneArguments, out: Path) -> dict:
    test = load_dataset_folder(args.dataset)["test"]
    if args.max_records:
        test = test.select(range(min(args.max_records, len(test))))
    references = join_captions(test, load_dataset_folder(args.captions), "test")
    model, tokenizer = load_pretrained(args.model)
    # One caption per record: generated from its first window.
    loader = make_window_loader(test, EsiFeatureExtractor.from_pretrained(args.model), args.eval_batch_size, 1)
    generated = generate_captions(model, tokenizer, loader, args.max_new_tokens, args.num_beams)
    overlap = evaluate.load(str(METRICS_DIR / "caption_overlap"))
    metrics = overlap.compute(predictions=generated, references=references)
    with open(out / "captions.jsonl", "w") as f:
        for ecg_id, gen, ref in zip(test["ecg_id"], generated, references, strict=True):
            f.write(json.dumps({"ecg_id": ecg_id, "generated": gen, "reference": ref}) + "\n")
    result = {"method": "captioning", "records": len(generated), "num_beams": args.num_beams, **metrics}
    (out / "results.md").write_text(
        f"Captioning on {len(generated)} test ECGs (beams: {args.num_beams}): token F1 {metrics['token_f1']:.3f}, "
        f"ROUGE-L {metrics['rouge_l']:.3f} against the CQA captions. Example:\n\n> {generated[0]}\n\n{DISCLAIMER}\n"
    )
    return result


def run(args: FinetuneArguments) -> dict:
    """Run one evaluation and write OUT/results.json (+ results.md, ...); returns the result."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    runners = {"subject_id": run_subject_id, "zero_shot": run_zero_shot, "captioning": run_captioning}
    result = runners.get(args.method, run_classification_cli)(args, out)
    result["args"] = dataclasses.asdict(args)
    write_json(out / "results.json", result)
    logger.info("%s: %s", args.method, {k: v for k, v in result.items() if isinstance(v, float)})
    return result
