"""Downstream evaluation of an ESI model, the `esi-finetune` command's work: `run(FinetuneArguments(...))` runs the
evaluation `--method` names and writes OUT/results.json. Fine-tuning a classifier is here; zero-shot
classification, subject identification and captioning have their own modules (`esi.eval.zero_shot`,
`esi.eval.subject_id`, `esi.eval.captioning`). The command line is `esi.eval.cli`."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np

from esi.data.windows import parse_window_count
from esi.eval.arguments import FinetuneArguments
from esi.eval.captioning import run_captioning
from esi.eval.classification import TrainConfig, load_task, run_classification
from esi.eval.finetuned_card import adapter_base_reference, adapter_usage, write_finetuned_card
from esi.eval.report import classification_markdown, plot_roc, write_json
from esi.eval.subject_id import run_subject_id
from esi.eval.zero_shot import run_zero_shot

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


def run_finetuning(args: FinetuneArguments, out: Path) -> dict:
    """Fine-tune and score a classifier; saves OUT/model or OUT/adapter with its card, test scores and ROC."""
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


def run(args: FinetuneArguments) -> dict:
    """Run one evaluation and write OUT/results.json (+ results.md, ...); returns the result."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    runners = {"subject_id": run_subject_id, "zero_shot": run_zero_shot, "captioning": run_captioning}
    result = runners.get(args.method, run_finetuning)(args, out)
    result["args"] = dataclasses.asdict(args)
    write_json(out / "results.json", result)
    logger.info("%s: %s", args.method, {k: v for k, v in result.items() if isinstance(v, float)})
    return result
