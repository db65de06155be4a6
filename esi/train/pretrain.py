"""The pretraining loop of ESI (contrastive + captioning loss): `pretrain(data, model, optim, run)`.

The command (`esi-train`, `train.py`) and what it does are described in `esi.train.cli`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration, ProjectConfiguration, set_seed
from tqdm.auto import tqdm
from transformers import AutoConfig, AutoTokenizer

from esi.licence import write_licence
from esi.text_encoder import default_text_model_path
from esi.train.arguments import (
    DataArguments,
    ModelArguments,
    OptimizationArguments,
    RunArguments,
)
from esi.train.checkpoints import (
    load_checkpoint,
    remove_partial_checkpoints,
    save_checkpoint,
    set_aside_later_checkpoints,
)
from esi.train.data import PretrainingData, build_data
from esi.train.optim import build_optimizer, build_scheduler
from esi.train.retrieval_eval import embed_ecg_text, retrieval_recall
from esi.train.text_cache import restore_text_tower, use_cached_text_tower
from modeling_esi import EsiConfig, EsiFeatureExtractor, EsiModel, EsiProcessor

logger = logging.getLogger("esi.train")


class NonFiniteLossError(RuntimeError):
    pass


@dataclass
class Schedule:
    """Where optimizer steps fall in the data: the same arithmetic for a fresh and a resumed run."""

    batches_per_epoch: int  # per process
    accumulation: int
    max_steps: int

    @classmethod
    def for_run(cls, batches_per_epoch: int, optim_args: OptimizationArguments) -> Schedule:
        schedule = cls(batches_per_epoch, optim_args.gradient_accumulation_steps, optim_args.max_steps or 0)
        schedule.max_steps = optim_args.max_steps or optim_args.num_epochs * schedule.updates_per_epoch
        return schedule

    @property
    def updates_per_epoch(self) -> int:
        # Accelerate syncs at the end of the dataloader too, so a last short accumulation is a step.
        return math.ceil(self.batches_per_epoch / self.accumulation)

    @property
    def num_epochs(self) -> int:
        return math.ceil(self.max_steps / self.updates_per_epoch)

    def position(self, step: int) -> tuple[int, int]:
        """(epoch, batches of that epoch already consumed) after `step` optimizer steps."""
        epoch, updates_done = divmod(step, self.updates_per_epoch)
        return epoch, updates_done * self.accumulation


def build_model(model_args: ModelArguments, max_text_length: int, text_model_path: Path) -> EsiModel:
    heads = max(1, model_args.decoder_width // 64)
    config = EsiConfig(
        ecg_config={"size": model_args.config},
        decoder_config={
            "num_hidden_layers": model_args.decoder_layers,
            "hidden_size": model_args.decoder_width,
            "num_attention_heads": heads,
            "intermediate_size": 4 * model_args.decoder_width,
            "max_position_embeddings": max_text_length,
        },
        projection_dim=model_args.projection_dim,
        contrastive_loss_weight=model_args.contrastive_loss_weight,
        caption_loss_weight=model_args.caption_loss_weight,
    )
    if model_args.random_text_tower:
        config.text_config = AutoConfig.from_pretrained(text_model_path)
        return EsiModel(config)
    return EsiModel.from_text_pretrained(text_model_path, config=config)


def set_train_mode(model: torch.nn.Module, model_args: ModelArguments) -> None:
    """Training mode, except a frozen text tower, which stays in eval mode: no dropout, fixed targets."""
    model.train()
    if model_args.freeze_text_tower:
        model.text_model.eval()


def make_accelerator(optim_args: OptimizationArguments, run_args: RunArguments) -> Accelerator:
    output_dir = Path(run_args.output_dir)
    # Several processes without CUDA (accelerate launch --multi_gpu / torchrun on CPUs) -> gloo.
    multi_cpu = int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available()
    return Accelerator(
        cpu=multi_cpu,
        gradient_accumulation_steps=optim_args.gradient_accumulation_steps,
        mixed_precision=optim_args.mixed_precision,
        log_with=None if run_args.report_to == "none" else run_args.report_to,
        project_config=ProjectConfiguration(project_dir=str(output_dir), logging_dir=str(output_dir / "logs")),
        # The sampler is reseeded from (seed, epoch): a resumed run replays the same order.
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=optim_args.seed),
    )


def all_arguments(*groups) -> dict:
    return {k: v for group in groups for k, v in dataclasses.asdict(group).items()}


def evaluate(model, dataloader, accelerator, model_args: ModelArguments) -> dict[str, float]:
    ecg, text = embed_ecg_text(model, dataloader, accelerator)
    set_train_mode(accelerator.unwrap_model(model), model_args)
    return retrieval_recall(ecg, text)


def pretrain(
    data_args: DataArguments,
    model_args: ModelArguments,
    optim_args: OptimizationArguments,
    run_args: RunArguments,
) -> Path:
    """Pretrain and save a Hub-ready model folder; returns OUTPUT_DIR/model."""
    output_dir = Path(run_args.output_dir)
    accelerator = make_accelerator(optim_args, run_args)
    logging.basicConfig(level=logging.INFO if accelerator.is_main_process else logging.WARNING, format="%(message)s")
    set_seed(optim_args.seed)

    text_model_path = default_text_model_path() if model_args.text_model == "default" else Path(model_args.text_model)
    tokenizer = AutoTokenizer.from_pretrained(text_model_path)
    model = build_model(model_args, data_args.max_text_length, text_model_path)
    if model_args.freeze_text_tower:
        model.text_model.requires_grad_(False)
    if optim_args.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    feature_extractor = EsiFeatureExtractor(
        sampling_rate=model.config.ecg_config.sampling_rate, duration_s=model.config.ecg_config.duration_s
    )
    data = build_data(data_args, optim_args, feature_extractor, tokenizer)
    text_cache_seconds = None
    if model_args.cache_text_embeddings:
        started = time.perf_counter()
        cache = use_cached_text_tower(model, tokenizer, data.train_set.captions, data_args.max_text_length)
        text_cache_seconds = round(time.perf_counter() - started, 2)
        logger.info("embedded %d distinct captions once in %.1f s (frozen text tower)", len(cache), text_cache_seconds)

    optimizer = build_optimizer(model, optim_args)
    raw_optimizer = optimizer
    model, optimizer, train_loader = accelerator.prepare(model, optimizer, data.train_loader)
    eval_loader = accelerator.prepare(data.eval_loader) if data.eval_loader is not None else None
    schedule = Schedule.for_run(len(train_loader), optim_args)
    scheduler = build_scheduler(raw_optimizer, optim_args, schedule.max_steps)
    accelerator.register_for_checkpointing(scheduler)
    if run_args.report_to != "none":
        config = all_arguments(data_args, model_args, optim_args, run_args)
        accelerator.init_trackers("esi_pretraining", config={k: v for k, v in config.items() if v is not None})

    remove_partial_checkpoints(accelerator, output_dir)
    global_step = 0
    if run_args.resume_from_checkpoint:
        global_step = load_checkpoint(accelerator, output_dir, run_args.resume_from_checkpoint)
        set_aside_later_checkpoints(accelerator, output_dir, global_step)

    logger.info(
        "training %d steps (%d epochs) on %d ECGs, %d process(es), batch %d per device, %d contrastive negatives",
        schedule.max_steps,
        schedule.num_epochs,
        len(data.train_set),
        accelerator.num_processes,
        optim_args.per_device_batch_size,
        optim_args.per_device_batch_size * accelerator.num_processes - 1,
    )
    run = train_loop(
        accelerator, model, optimizer, scheduler, train_loader, eval_loader, data, schedule, global_step,
        model_args, optim_args, run_args,
    )  # fmt: skip

    final_dir = output_dir / "model"
    if accelerator.is_main_process:
        summary = {
            **run,
            "train_ecgs": len(data.train_set),
            "num_processes": accelerator.num_processes,
            "text_cache_seconds": text_cache_seconds,
            "caption_truncation": data.truncation,
            "evaluation_overlap": data.evaluation_overlap,
            "args": all_arguments(data_args, model_args, optim_args, run_args),
        }
        unwrapped = accelerator.unwrap_model(model)
        restore_text_tower(unwrapped)
        save_model_folder(unwrapped, feature_extractor, tokenizer, final_dir, summary)
        if run_args.push_to_hub:
            from esi.hub import push_folder

            push_folder(final_dir, run_args.push_to_hub, repo_type="model", private=run_args.hub_private)
    accelerator.wait_for_everyone()
    accelerator.end_training()  # also tears down the process group: keep it last
    return final_dir


def train_loop(
    accelerator: Accelerator,
    model,
    optimizer,
    scheduler,
    train_loader,
    eval_loader,
    data: PretrainingData,
    schedule: Schedule,
    global_step: int,
    model_args: ModelArguments,
    optim_args: OptimizationArguments,
    run_args: RunArguments,
) -> dict:
    """Train from `global_step` to `schedule.max_steps`; returns the run's figures for the summary."""
    output_dir = Path(run_args.output_dir)
    start_epoch, skip_batches = schedule.position(global_step)
    if global_step:
        logger.info("resumed at step %d (epoch %d, batch %d)", global_step, start_epoch, skip_batches)
    progress = tqdm(
        total=schedule.max_steps, initial=global_step, disable=not accelerator.is_local_main_process, desc="pretraining"
    )
    history: list[dict] = []
    eval_metrics: dict[str, float] = {}
    set_train_mode(accelerator.unwrap_model(model), model_args)
    started, data_seconds = time.perf_counter(), 0.0
    for epoch in range(start_epoch, schedule.num_epochs):
        if global_step >= schedule.max_steps:  # resumed from the final checkpoint: nothing left to train
            break
        data.train_set.set_epoch(epoch)
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
                if accelerator.sync_gradients and optim_args.max_grad_norm:
                    accelerator.clip_grad_norm_(model.parameters(), optim_args.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad()
            waiting_since = time.perf_counter()
            if not accelerator.sync_gradients:
                continue
            if not optimizer.step_was_skipped:  # fp16 overflow: no update, so no schedule step either
                scheduler.step()
            global_step += 1
            progress.update(1)
            logs = {
                "loss": outputs.loss.item(),
                "contrastive_loss": outputs.contrastive_loss.item(),
                "caption_loss": outputs.caption_loss.item(),
                "lr": scheduler.get_last_lr()[0],
                "logit_scale": accelerator.unwrap_model(model).clamped_logit_scale().item(),
                "elapsed_s": round(time.perf_counter() - started, 3),
            }
            progress.set_postfix(loss=f"{logs['loss']:.3f}")
            if global_step % run_args.logging_steps == 0 or global_step == schedule.max_steps:
                accelerator.log(logs, step=global_step)
                history.append({"step": global_step, **logs})
            if global_step % run_args.checkpointing_steps == 0 or global_step == schedule.max_steps:
                save_checkpoint(accelerator, output_dir, global_step, run_args.checkpoints_total_limit)
            if eval_loader is not None and run_args.eval_steps and global_step % run_args.eval_steps == 0:
                eval_metrics = evaluate(model, eval_loader, accelerator, model_args)
                accelerator.log(eval_metrics, step=global_step)
            if global_step >= schedule.max_steps:
                break
            waiting_since = time.perf_counter()  # logging, checkpoints and evaluation are not data time
        skip_batches = 0
        if eval_loader is not None and not run_args.eval_steps:
            eval_metrics = evaluate(model, eval_loader, accelerator, model_args)
            accelerator.log(eval_metrics, step=global_step)
            logger.info("epoch %d validation: %s", epoch, json.dumps({k: round(v, 4) for k, v in eval_metrics.items()}))
        if global_step >= schedule.max_steps:
            break
    progress.close()
    train_seconds = time.perf_counter() - started
    return {
        "steps": global_step,
        "train_seconds": round(train_seconds, 1),
        # Share of wall time spent waiting for the next batch (data loading + collation).
        "data_wait_fraction": round(data_seconds / max(train_seconds, 1e-9), 4),
        "final_losses": history[-1] if history else None,
        "log_history": history,
        "validation": eval_metrics,
    }


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
    write_licence(folder)
    logger.info("saved model to %s", folder)
