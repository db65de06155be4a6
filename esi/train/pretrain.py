"""The pretraining loop of ESI (contrastive + captioning loss): `pretrain(data, model, optim, run)`.

The command (`esi-train`, `train.py`) and what it does are described in `esi.train.cli`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration, ProjectConfiguration, set_seed
from torch import nn
from tqdm.auto import tqdm
from transformers import AutoConfig, AutoTokenizer, BertConfig

from esi.checksum import state_dict_sha256
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
from esi.train.text_cache import load_text_embeddings, restore_text_tower, use_cached_text_tower
from esi.train.vocabulary import caption_token_ids, trim_model_vocabulary, trimmed_tokenizer
from modeling_esi import EsiConfig, EsiFeatureExtractor, EsiModel, EsiProcessor

logger = logging.getLogger("esi.train")


LOSS_NAMES = ("loss", "contrastive_loss", "caption_loss")


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


class BatchDigest:
    """A sha256 chained over the ECG ids of every batch trained on, in order, kept in checkpoints: two runs
    with equal digests trained on the same records in the same order (and, with the same seed, the same
    augmentations, which are seeded by seed, epoch and row)."""

    def __init__(self):
        self.hexdigest = hashlib.sha256().hexdigest()

    def update(self, ecg_ids: torch.Tensor) -> None:
        step = hashlib.sha256(self.hexdigest.encode())
        step.update(ecg_ids.cpu().numpy().astype("<i8").tobytes())
        self.hexdigest = step.hexdigest()

    def state_dict(self) -> dict:
        return {"hexdigest": self.hexdigest}

    def load_state_dict(self, state: dict) -> None:
        self.hexdigest = state["hexdigest"]


def build_model(
    model_args: ModelArguments, max_text_length: int, text_model_path: Path, text_width: int | None = None
) -> EsiModel:
    """A new ESI model. `text_width`: the width of precomputed text embeddings; when it is not the tower's,
    the text tower is a 1-layer placeholder of that width (never run: the embeddings stand in for it)."""
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
        same_text_positives=model_args.same_text_positives,
    )
    tower_config = AutoConfig.from_pretrained(text_model_path)
    if text_width is not None and text_width != tower_config.hidden_size:
        logger.warning(
            "text embeddings are %d wide, the tower %d: a placeholder tower stands in, so the saved model cannot "
            "embed new text",
            text_width,
            tower_config.hidden_size,
        )
        config.text_config = BertConfig(
            vocab_size=tower_config.vocab_size,
            hidden_size=text_width,
            num_hidden_layers=1,
            num_attention_heads=1,
            intermediate_size=text_width,
        )
        return EsiModel(config)
    if model_args.random_text_tower:
        config.text_config = tower_config
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
    objective: Callable[[EsiModel], nn.Module] | None = None,
) -> Path:
    """Pretrain and save a Hub-ready model folder; returns OUTPUT_DIR/model.

    `objective` (for baselines without an ESI loss): wraps the model in a module called as the model is,
    `objective(**batch, return_loss=True)`, returning `.loss` (and any of `contrastive_loss`, `caption_loss`);
    its own parameters train and are checkpointed with the model's, and the model folder is saved as usual.
    """
    output_dir = Path(run_args.output_dir)
    accelerator = make_accelerator(optim_args, run_args)
    logging.basicConfig(level=logging.INFO if accelerator.is_main_process else logging.WARNING, format="%(message)s")
    set_seed(optim_args.seed)

    text_model_path = default_text_model_path() if model_args.text_model == "default" else Path(model_args.text_model)
    tokenizer = AutoTokenizer.from_pretrained(text_model_path)
    precomputed = None
    if model_args.text_embeddings:
        precomputed = load_text_embeddings(model_args.text_embeddings, data_args.max_text_length)
    text_width = len(next(iter(precomputed.values()))) if precomputed else None
    model = build_model(model_args, data_args.max_text_length, text_model_path, text_width)
    initial_ecg_encoder_sha256 = state_dict_sha256(model.ecg_model.state_dict())
    if model_args.freeze_text_tower:
        model.text_model.requires_grad_(False)
    if optim_args.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    feature_extractor = EsiFeatureExtractor(
        sampling_rate=model.config.ecg_config.sampling_rate, duration_s=model.config.ecg_config.duration_s
    )
    data = build_data(data_args, optim_args, feature_extractor, tokenizer)
    caption_vocabulary = len(tokenizer)
    if model_args.trim_vocabulary:
        kept = caption_token_ids(tokenizer, data.train_set.captions, data_args.max_text_length)
        tokenizer = trimmed_tokenizer(tokenizer, kept, data.train_set.captions, data_args.max_text_length)
        trim_model_vocabulary(model, kept)
        for loader in (data.train_loader, data.eval_loader):
            if loader is not None:
                loader.collate_fn.tokenizer = tokenizer
        logger.info("caption vocabulary trimmed to the %d tokens the training captions use", len(kept))
        caption_vocabulary = len(kept)
    text_cache_seconds = None
    if model_args.cache_text_embeddings or precomputed:
        started = time.perf_counter()
        cache = use_cached_text_tower(
            model, tokenizer, data.train_set.captions, data_args.max_text_length, precomputed=precomputed
        )
        text_cache_seconds = round(time.perf_counter() - started, 2)
        source = f"read from {model_args.text_embeddings}" if precomputed else "embedded once"
        logger.info("%d distinct captions %s in %.1f s (frozen text tower)", len(cache), source, text_cache_seconds)

    esi_model = model
    if objective is not None:
        if data.eval_loader is not None:
            raise ValueError("an objective other than ESI's has no retrieval evaluation: pass --eval-split none")
        model = objective(model)
    optimizer = build_optimizer(model, optim_args)
    raw_optimizer = optimizer
    model, optimizer, train_loader = accelerator.prepare(model, optimizer, data.train_loader)
    eval_loader = accelerator.prepare(data.eval_loader) if data.eval_loader is not None else None
    schedule = Schedule.for_run(len(train_loader), optim_args)
    # Not registered with Accelerate (it would pickle it): its state is JSON in the checkpoint's training state.
    scheduler = build_scheduler(raw_optimizer, optim_args, schedule.max_steps)
    digest = BatchDigest()  # like the scheduler, kept as JSON in the checkpoint's training state
    if run_args.report_to != "none":
        config = all_arguments(data_args, model_args, optim_args, run_args)
        accelerator.init_trackers("esi_pretraining", config={k: v for k, v in config.items() if v is not None})

    remove_partial_checkpoints(accelerator, output_dir)
    global_step, resumed = 0, {}
    if run_args.resume_from_checkpoint:
        global_step, resumed = load_checkpoint(accelerator, output_dir, run_args.resume_from_checkpoint)
        if resumed:
            scheduler.load_state_dict(resumed["scheduler"])
            digest.load_state_dict(resumed["batch_digest"])
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
    resumed_from_step = global_step
    run = train_loop(
        accelerator, model, optimizer, scheduler, train_loader, eval_loader, data, schedule, global_step,
        model_args, optim_args, run_args, digest, esi_model, resumed,
    )  # fmt: skip

    final_dir = output_dir / "model"
    if accelerator.is_main_process:
        summary = {
            **run,
            "train_ecgs": len(data.train_set),
            "num_processes": accelerator.num_processes,
            "text_cache_seconds": text_cache_seconds,
            "caption_vocabulary": caption_vocabulary,
            "resumed_from_step": resumed_from_step,
            # Runs with equal values started from the same ECG encoder and trained on the same batches.
            "initial_ecg_encoder_sha256": initial_ecg_encoder_sha256,
            "batch_ecg_ids_sha256": digest.hexdigest,
            "caption_truncation": data.truncation,
            "evaluation_overlap": data.evaluation_overlap,
            "args": all_arguments(data_args, model_args, optim_args, run_args),
        }
        restore_text_tower(esi_model)
        save_model_folder(esi_model, feature_extractor, tokenizer, final_dir, summary)
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
    digest: BatchDigest,
    esi_model: EsiModel,
    resumed: dict | None = None,
) -> dict:
    """Train from `global_step` to `schedule.max_steps`; returns the run's figures for the summary.

    `resumed`: the checkpoint's training state, so the summary covers the whole run, not only the last process.
    """
    output_dir = Path(run_args.output_dir)
    start_epoch, skip_batches = schedule.position(global_step)
    if global_step:
        logger.info("resumed at step %d (epoch %d, batch %d)", global_step, start_epoch, skip_batches)
    progress = tqdm(
        total=schedule.max_steps, initial=global_step, disable=not accelerator.is_local_main_process, desc="pretraining"
    )
    resumed = resumed or {}
    history: list[dict] = list(resumed.get("log_history", []))
    eval_metrics: dict[str, float] = {}
    set_train_mode(esi_model, model_args)
    # Another objective (a baseline) may need to know which records it trains on (its targets); ESI does not.
    pass_ids = accelerator.unwrap_model(model) is not esi_model
    earlier_seconds, data_seconds = resumed.get("train_seconds", 0.0), resumed.get("data_seconds", 0.0)
    earlier_cpu_seconds = resumed.get("train_cpu_seconds", 0.0)
    started, cpu_started = time.perf_counter(), time.process_time()
    for epoch in range(start_epoch, schedule.num_epochs):
        if global_step >= schedule.max_steps:  # resumed from the final checkpoint: nothing left to train
            break
        data.train_set.set_epoch(epoch)
        train_loader.set_epoch(epoch)
        loader = accelerator.skip_first_batches(train_loader, skip_batches) if epoch == start_epoch else train_loader
        waiting_since = time.perf_counter()
        for batch in loader:
            data_seconds += time.perf_counter() - waiting_since
            ecg_ids = batch["ecg_ids"] if pass_ids else batch.pop("ecg_ids")
            digest.update(ecg_ids)
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
                **{name: value.item() for name in LOSS_NAMES if (value := getattr(outputs, name, None)) is not None},
                "lr": scheduler.get_last_lr()[0],
                "logit_scale": esi_model.clamped_logit_scale().item(),
                "elapsed_s": round(earlier_seconds + time.perf_counter() - started, 3),
            }
            progress.set_postfix(loss=f"{logs['loss']:.3f}")
            if global_step % run_args.logging_steps == 0 or global_step == schedule.max_steps:
                accelerator.log(logs, step=global_step)
                history.append({"step": global_step, **logs})
            if global_step % run_args.checkpointing_steps == 0 or global_step == schedule.max_steps:
                state = {
                    "scheduler": scheduler.state_dict(),
                    "log_history": history,
                    "train_seconds": earlier_seconds + time.perf_counter() - started,
                    "data_seconds": data_seconds,
                    "train_cpu_seconds": earlier_cpu_seconds + time.process_time() - cpu_started,
                    "batch_digest": digest.state_dict(),
                }
                save_checkpoint(accelerator, output_dir, global_step, run_args.checkpoints_total_limit, state)
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
    train_seconds = earlier_seconds + time.perf_counter() - started
    return {
        "steps": global_step,
        "train_seconds": round(train_seconds, 1),
        # This process's CPU time (all its threads) over the whole run, resumed parts included.
        "train_cpu_seconds": round(earlier_cpu_seconds + time.process_time() - cpu_started, 1),
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
