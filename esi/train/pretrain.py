"""Pretrain ESI on ECG-caption pairs with a contrastive + captioning loss.

Runs unchanged on one CPU, several CPU processes (gloo), one or many GPUs and nodes:

    python train.py --signals PREPARED_DIR --captions CAPTIONS_DIR --output-dir OUT --max-steps 100
    accelerate launch --multi_gpu --num_processes 2 train.py --signals ... --captions ... --output-dir OUT

(without CUDA, those processes train on CPUs and talk over gloo).

The contrastive loss gathers embeddings from every process, so the number of negatives
per ECG is `per_device_batch_size x num_processes - 1`. Gradient accumulation does NOT
add negatives: each micro-batch is contrasted only with itself (and its peers on other
processes); it only averages gradients over micro-batches.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shutil
import time
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration, ProjectConfiguration, set_seed
from safetensors import SafetensorError
from tqdm.auto import tqdm
from transformers import AutoConfig, AutoTokenizer, get_cosine_schedule_with_warmup

from esi.data.augment import EcgAugmentConfig
from esi.data.torch_dataset import EcgCollator, EcgDataset, join_captions, load_dataset_folder
from esi.text_encoder import default_text_model_path
from esi.train.retrieval_eval import embed_ecg_text, retrieval_recall
from modeling_esi import EsiConfig, EsiFeatureExtractor, EsiModel, EsiProcessor

logger = logging.getLogger("esi.train")
CHECKPOINT_PREFIX = "step_"


class NonFiniteLossError(RuntimeError):
    pass


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    data = p.add_argument_group("data")
    data.add_argument("--signals", required=True, help="prepared ECG dataset folder (dataset_scripts/prepare_ptbxl.py)")
    data.add_argument("--captions", required=True, help="captioned dataset folder (cqa_generate.py), joined on ecg_id")
    data.add_argument("--train-split", default="train")
    data.add_argument("--eval-split", default="validation", help="'none' to skip retrieval evaluation")
    data.add_argument("--max-text-length", type=int, default=256)
    data.add_argument("--no-augment", action="store_true", help="turn ECG augmentations off")
    data.add_argument("--num-workers", type=int, default=0, help="DataLoader worker processes")
    model = p.add_argument_group("model")
    model.add_argument("--config", default="atto", help="ECG encoder size preset: atto, femto, pico, nano, tiny, base")
    model.add_argument(
        "--text-model",
        default="default",
        help="BERT-family folder to initialise the text tower and tokenizer from; 'default' = offline all-MiniLM-L6-v2",
    )
    model.add_argument(
        "--random-text-tower", action="store_true", help="keep the tokenizer but start the text tower from scratch"
    )
    model.add_argument("--freeze-text-tower", action="store_true")
    model.add_argument("--projection-dim", type=int, default=256)
    model.add_argument("--decoder-layers", type=int, default=4)
    model.add_argument("--decoder-width", type=int, default=256)
    model.add_argument("--contrastive-loss-weight", type=float, default=1.0)
    model.add_argument("--caption-loss-weight", type=float, default=2.0)
    opt = p.add_argument_group("optimisation")
    opt.add_argument("--per-device-batch-size", type=int, default=32)
    opt.add_argument("--eval-batch-size", type=int, default=64)
    opt.add_argument("--learning-rate", type=float, default=3e-4)
    opt.add_argument("--weight-decay", type=float, default=0.05)
    opt.add_argument("--warmup-steps", type=int, default=100)
    opt.add_argument("--num-epochs", type=int, default=1)
    opt.add_argument("--max-steps", type=int, default=None, help="overrides --num-epochs")
    opt.add_argument("--gradient-accumulation-steps", type=int, default=1)
    opt.add_argument("--max-grad-norm", type=float, default=1.0)
    opt.add_argument(
        "--mixed-precision", choices=["no", "fp16", "bf16"], default=None, help="default: accelerate config"
    )
    opt.add_argument("--gradient-checkpointing", action="store_true")
    opt.add_argument("--seed", type=int, default=42)
    run = p.add_argument_group("run")
    run.add_argument("--output-dir", required=True)
    run.add_argument("--checkpointing-steps", type=int, default=500)
    run.add_argument("--checkpoints-total-limit", type=int, default=2)
    run.add_argument("--resume-from-checkpoint", default=None, help="a checkpoint folder, or 'latest'")
    run.add_argument("--eval-steps", type=int, default=None, help="also evaluate every N steps (default: each epoch)")
    run.add_argument("--logging-steps", type=int, default=10)
    run.add_argument("--report-to", default="tensorboard", help="accelerate tracker(s), or 'none'")
    run.add_argument("--push-to-hub", default=None, metavar="REPO_ID")
    run.add_argument("--hub-private", action="store_true")
    return p.parse_args(argv)


def build_model(args: argparse.Namespace, text_model_path: Path) -> EsiModel:
    heads = max(1, args.decoder_width // 64)
    config = EsiConfig(
        ecg_config={"size": args.config},
        decoder_config={
            "num_hidden_layers": args.decoder_layers,
            "hidden_size": args.decoder_width,
            "num_attention_heads": heads,
            "intermediate_size": 4 * args.decoder_width,
            "max_position_embeddings": args.max_text_length,
        },
        projection_dim=args.projection_dim,
        contrastive_loss_weight=args.contrastive_loss_weight,
        caption_loss_weight=args.caption_loss_weight,
    )
    if args.random_text_tower:
        config.text_config = AutoConfig.from_pretrained(text_model_path)
        return EsiModel(config)
    return EsiModel.from_text_pretrained(text_model_path, config=config)


def checkpoint_dirs(output_dir: Path) -> list[Path]:
    folder = output_dir / "checkpoints"
    found = [
        d for d in folder.glob(f"{CHECKPOINT_PREFIX}*") if d.is_dir() and d.name[len(CHECKPOINT_PREFIX) :].isdigit()
    ]
    return sorted(found, key=lambda d: int(d.name[len(CHECKPOINT_PREFIX) :]))


def save_checkpoint(accelerator: Accelerator, output_dir: Path, step: int, keep: int) -> Path:
    """Write a checkpoint atomically: into a temporary folder, renamed only once complete.

    If writing fails (full disk, quota), the partial folder is removed and the previous
    checkpoints are untouched, so `--resume-from-checkpoint latest` still works.
    """
    final = output_dir / "checkpoints" / f"{CHECKPOINT_PREFIX}{step}"
    partial = final.with_name(final.name + ".partial")
    try:
        accelerator.save_state(str(partial))
        accelerator.wait_for_everyone()
    except (OSError, SafetensorError) as error:  # safetensors reports ENOSPC/EFBIG as its own error
        if accelerator.is_main_process:
            shutil.rmtree(partial, ignore_errors=True)
        previous = checkpoint_dirs(output_dir)
        raise OSError(
            f"writing the checkpoint for step {step} failed ({error}); "
            f"the previous checkpoint {previous[-1] if previous else '(none)'} is intact"
        ) from error
    if accelerator.is_main_process:
        partial.rename(final)
        for old in checkpoint_dirs(output_dir)[:-keep]:
            shutil.rmtree(old)
    accelerator.wait_for_everyone()
    return final


def evaluate(model, dataloader, accelerator) -> dict[str, float]:
    ecg, text = embed_ecg_text(model, dataloader, accelerator)
    model.train()
    return retrieval_recall(ecg, text)


def main(argv: list[str] | None = None) -> Path:
    args = parse_args(argv)
    output_dir = Path(args.output_dir)
    report_to = None if args.report_to == "none" else args.report_to
    # Several processes without CUDA (accelerate launch --multi_gpu / torchrun on CPUs) -> gloo.
    multi_cpu = int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available()
    accelerator = Accelerator(
        cpu=multi_cpu,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        mixed_precision=args.mixed_precision,
        log_with=report_to,
        project_config=ProjectConfiguration(project_dir=str(output_dir), logging_dir=str(output_dir / "logs")),
        # The sampler is reseeded from (seed, epoch): a resumed run replays the same order.
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=args.seed),
    )
    logging.basicConfig(level=logging.INFO if accelerator.is_main_process else logging.WARNING, format="%(message)s")
    set_seed(args.seed)

    text_model_path = default_text_model_path() if args.text_model == "default" else Path(args.text_model)
    tokenizer = AutoTokenizer.from_pretrained(text_model_path)
    model = build_model(args, text_model_path)
    if args.freeze_text_tower:
        model.text_model.requires_grad_(False)
    if args.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    feature_extractor = EsiFeatureExtractor(
        sampling_rate=model.config.ecg_config.sampling_rate, duration_s=model.config.ecg_config.duration_s
    )

    signals = load_dataset_folder(args.signals)
    captions = load_dataset_folder(args.captions)
    for split in (args.train_split, args.eval_split):
        if split != "none" and split not in signals:
            raise ValueError(f"signals dataset {args.signals} has no split '{split}' (has {list(signals)})")
    augment = None if args.no_augment else EcgAugmentConfig()
    train_set = EcgDataset(
        signals[args.train_split],
        join_captions(signals[args.train_split], captions, args.train_split),
        augment=augment,
        seed=args.seed,
    )
    collator = EcgCollator(
        feature_extractor, train_set.sampling_rate, train_set.lead_names, tokenizer, args.max_text_length
    )
    train_loader = torch.utils.data.DataLoader(
        train_set,
        batch_size=args.per_device_batch_size,
        shuffle=True,
        drop_last=True,
        collate_fn=collator,
        num_workers=args.num_workers,
        # Its own generator: creating an iterator (as a resumed run does mid-epoch) must not
        # advance the global RNG that dropout draws from.
        generator=torch.Generator().manual_seed(args.seed),
    )
    if len(train_loader) == 0:
        raise ValueError(
            f"the train split has {len(train_set)} ECGs, "
            f"fewer than one batch of {args.per_device_batch_size} per process"
        )
    eval_loader = None
    if args.eval_split != "none":
        eval_set = EcgDataset(
            signals[args.eval_split], join_captions(signals[args.eval_split], captions, args.eval_split)
        )
        eval_loader = torch.utils.data.DataLoader(eval_set, batch_size=args.eval_batch_size, collate_fn=collator)

    decay = [p for n, p in model.named_parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.requires_grad and p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.learning_rate,
    )
    updates_per_epoch = math.ceil(len(train_loader) / accelerator.num_processes / args.gradient_accumulation_steps)
    max_steps = args.max_steps or args.num_epochs * updates_per_epoch
    num_epochs = math.ceil(max_steps / updates_per_epoch)
    scheduler = get_cosine_schedule_with_warmup(
        optimizer, num_warmup_steps=min(args.warmup_steps, max_steps // 10 + 1), num_training_steps=max_steps
    )
    model, optimizer, train_loader, scheduler = accelerator.prepare(model, optimizer, train_loader, scheduler)
    if eval_loader is not None:
        eval_loader = accelerator.prepare(eval_loader)
    if report_to:
        accelerator.init_trackers("esi_pretraining", config={k: v for k, v in vars(args).items() if v is not None})

    global_step, start_epoch, skip_batches = 0, 0, 0
    if args.resume_from_checkpoint:
        found = checkpoint_dirs(output_dir)
        if args.resume_from_checkpoint == "latest":
            checkpoint = found[-1] if found else None
        else:
            checkpoint = Path(args.resume_from_checkpoint)
        if checkpoint is None:
            logger.info("no checkpoint under %s: starting from scratch", output_dir / "checkpoints")
        else:
            accelerator.load_state(str(checkpoint))
            global_step = int(checkpoint.name[len(CHECKPOINT_PREFIX) :])
            batches_done = global_step * args.gradient_accumulation_steps
            start_epoch, skip_batches = divmod(batches_done, len(train_loader))
            logger.info(
                "resumed from %s (step %d, epoch %d, batch %d)", checkpoint, global_step, start_epoch, skip_batches
            )

    logger.info(
        "training %d steps (%d epochs) on %d ECGs, %d process(es), batch %d per device, %d contrastive negatives",
        max_steps,
        num_epochs,
        len(train_set),
        accelerator.num_processes,
        args.per_device_batch_size,
        args.per_device_batch_size * accelerator.num_processes - 1,
    )
    progress = tqdm(
        total=max_steps, initial=global_step, disable=not accelerator.is_local_main_process, desc="pretraining"
    )
    history: list[dict] = []
    eval_metrics: dict[str, float] = {}
    model.train()
    started, data_seconds = time.perf_counter(), 0.0
    for epoch in range(start_epoch, num_epochs):
        if global_step >= max_steps:  # resumed from the final checkpoint: nothing left to train
            break
        train_set.set_epoch(epoch)
        train_loader.set_epoch(epoch)
        loader = accelerator.skip_first_batches(train_loader, skip_batches) if epoch == start_epoch else train_loader
        waiting_since = time.perf_counter()
        for batch in loader:
            data_seconds += time.perf_counter() - waiting_since
            ecg_ids = batch.pop("ecg_ids")
            with accelerator.accumulate(model):
                outputs = model(**batch, return_loss=True)
                check_finite(accelerator, outputs.loss, global_step, ecg_ids)
                accelerator.backward(outputs.loss)
                if accelerator.sync_gradients and args.max_grad_norm:
                    accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
            waiting_since = time.perf_counter()
            if not accelerator.sync_gradients:
                continue
            global_step += 1
            progress.update(1)
            logs = {
                "loss": outputs.loss.item(),
                "contrastive_loss": outputs.contrastive_loss.item(),
                "caption_loss": outputs.caption_loss.item(),
                "lr": scheduler.get_last_lr()[0],
                "logit_scale": accelerator.unwrap_model(model).clamped_logit_scale().item(),
            }
            progress.set_postfix(loss=f"{logs['loss']:.3f}")
            if global_step % args.logging_steps == 0 or global_step == max_steps:
                accelerator.log(logs, step=global_step)
                history.append({"step": global_step, **logs})
            if global_step % args.checkpointing_steps == 0 or global_step == max_steps:
                save_checkpoint(accelerator, output_dir, global_step, args.checkpoints_total_limit)
            if eval_loader is not None and args.eval_steps and global_step % args.eval_steps == 0:
                eval_metrics = evaluate(model, eval_loader, accelerator)
                accelerator.log(eval_metrics, step=global_step)
            if global_step >= max_steps:
                break
            waiting_since = time.perf_counter()  # logging, checkpoints and evaluation are not data time
        skip_batches = 0
        if eval_loader is not None and not args.eval_steps:
            eval_metrics = evaluate(model, eval_loader, accelerator)
            accelerator.log(eval_metrics, step=global_step)
            logger.info("epoch %d validation: %s", epoch, json.dumps({k: round(v, 4) for k, v in eval_metrics.items()}))
        if global_step >= max_steps:
            break
    progress.close()
    train_seconds = time.perf_counter() - started

    final_dir = output_dir / "model"
    if accelerator.is_main_process:
        summary = {
            "steps": global_step,
            "train_ecgs": len(train_set),
            "num_processes": accelerator.num_processes,
            "train_seconds": round(train_seconds, 1),
            # Share of wall time spent waiting for the next batch (data loading + collation).
            "data_wait_fraction": round(data_seconds / max(train_seconds, 1e-9), 4),
            "final_losses": history[-1] if history else None,
            "validation": eval_metrics,
            "args": {k: v for k, v in vars(args).items()},
        }
        save_model_folder(accelerator.unwrap_model(model), feature_extractor, tokenizer, final_dir, summary)
        if args.push_to_hub:
            from esi.hub import push_folder

            push_folder(final_dir, args.push_to_hub, repo_type="model", private=args.hub_private)
    accelerator.wait_for_everyone()
    accelerator.end_training()  # also tears down the process group: keep it last
    return final_dir


def check_finite(accelerator: Accelerator, loss: torch.Tensor, step: int, ecg_ids: torch.Tensor) -> None:
    """Stop every process, naming the step and batch, when any process sees a non-finite loss."""
    finite = torch.isfinite(loss.detach()).float().reshape(1)
    if accelerator.gather(finite).min().item() < 1:
        raise NonFiniteLossError(
            f"non-finite loss ({loss.item()}) at step {step + 1} on process {accelerator.process_index}; "
            f"batch ecg_ids {ecg_ids.tolist()}. Lower the learning rate or check these records."
        )


def save_model_folder(model: EsiModel, feature_extractor, tokenizer, folder: Path, summary: dict) -> None:
    """A Hub-ready folder: weights, remote code, preprocessor, tokenizer, run summary and card."""
    from esi.train.model_card import write_model_card

    model.save_pretrained(folder)
    feature_extractor.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    # AutoProcessor: ECG and text inputs in one call (`model(**processor(ecgs=..., text=...))`).
    max_text_length = model.config.decoder_config.max_position_embeddings
    EsiProcessor(feature_extractor, tokenizer, max_text_length=max_text_length).save_pretrained(folder)
    (folder / "training_summary.json").write_text(json.dumps(summary, indent=2, default=str))
    write_model_card(folder, summary)
    logger.info("saved model to %s", folder)


if __name__ == "__main__":
    main()
