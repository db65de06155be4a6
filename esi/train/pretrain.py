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


@dataclass
class TrainingParts:
    """What the loop trains with: the model, optimizer and loaders as Accelerate prepared them, and the scheduler
    and batch digest kept beside them (checkpointed as JSON in the training state)."""

    accelerator: Accelerator
    model: nn.Module  # the ESI model, or the objective wrapping it
    esi_model: EsiModel
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    train_loader: torch.utils.data.DataLoader
    eval_loader: torch.utils.data.DataLoader | None
    data: PretrainingData
    schedule: Schedule
    digest: BatchDigest


class RunClock:
    """Wall, CPU and data-wait seconds of a run, including those of the runs it resumed."""

    def __init__(self, resumed: dict):
        self.earlier_seconds = resumed.get("train_seconds", 0.0)
        self.data_seconds = resumed.get("data_seconds", 0.0)
        self.earlier_cpu_seconds = resumed.get("train_cpu_seconds", 0.0)
        self.started, self.cpu_started = time.perf_counter(), time.process_time()

    def train_seconds(self) -> float:
        return self.earlier_seconds + time.perf_counter() - self.started

    def cpu_seconds(self) -> float:
        return self.earlier_cpu_seconds + time.process_time() - self.cpu_started


def _new_model(
    data_args: DataArguments, model_args: ModelArguments, optim_args: OptimizationArguments
) -> tuple[EsiModel, AutoTokenizer, dict | None]:
    """The model to pretrain, its tokenizer, and the precomputed text embeddings (None: the tower embeds)."""
    text_model_path = default_text_model_path() if model_args.text_model == "default" else Path(model_args.text_model)
    tokenizer = AutoTokenizer.from_pretrained(text_model_path)
    precomputed = None
    if model_args.text_embeddings:
        precomputed = load_text_embeddings(model_args.text_embeddings, data_args.max_text_length)
    text_width = len(next(iter(precomputed.values()))) if precomputed else None
    model = build_model(model_args, data_args.max_text_length, text_model_path, text_width)
    if model_args.freeze_text_tower:
        model.text_model.requires_grad_(False)
    if optim_args.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    return model, tokenizer, precomputed


def _trim_caption_vocabulary(model: EsiModel, tokenizer, data: PretrainingData, max_text_length: int) -> tuple:
    """Cut the caption decoder's vocabulary to the tokens the training captions use; (the trimmed tokenizer, also
    set on the loaders' collators, and the number of tokens kept)."""
    kept = caption_token_ids(tokenizer, data.train_set.captions, max_text_length)
    tokenizer = trimmed_tokenizer(tokenizer, kept, data.train_set.captions, max_text_length)
    trim_model_vocabulary(model, kept)
    for loader in (data.train_loader, data.eval_loader):
        if loader is not None:
            loader.collate_fn.tokenizer = tokenizer
    logger.info("caption vocabulary trimmed to the %d tokens the training captions use", len(kept))
    return tokenizer, len(kept)


def _cache_text_embeddings(
    model: EsiModel,
    tokenizer,
    data: PretrainingData,
    data_args: DataArguments,
    model_args: ModelArguments,
    precomputed: dict | None,
) -> float | None:
    """With a frozen text tower, replace it by the embeddings of the distinct captions (computed once, or read from
    `--text_embeddings`); the seconds it took, None when the tower stays."""
    if not (model_args.cache_text_embeddings or precomputed):
        return None
    started = time.perf_counter()
    cache = use_cached_text_tower(
        model, tokenizer, data.train_set.captions, data_args.max_text_length, precomputed=precomputed
    )
    seconds = round(time.perf_counter() - started, 2)
    source = f"read from {model_args.text_embeddings}" if precomputed else "embedded once"
    logger.info("%d distinct captions %s in %.1f s (frozen text tower)", len(cache), source, seconds)
    return seconds


def _prepare_parts(
    accelerator: Accelerator,
    model: EsiModel,
    data: PretrainingData,
    optim_args: OptimizationArguments,
    objective: Callable[[EsiModel], nn.Module] | None,
) -> TrainingParts:
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
    return TrainingParts(
        accelerator, model, esi_model, optimizer, scheduler, train_loader, eval_loader, data, schedule, digest
    )


def _resume(parts: TrainingParts, output_dir: Path, run_args: RunArguments) -> tuple[int, dict]:
    """(step, training state) of the checkpoint `--resume_from_checkpoint` names; (0, {}) for a fresh run."""
    remove_partial_checkpoints(parts.accelerator, output_dir)
    global_step, resumed = 0, {}
    if run_args.resume_from_checkpoint:
        global_step, resumed = load_checkpoint(parts.accelerator, output_dir, run_args.resume_from_checkpoint)
        if resumed:
            parts.scheduler.load_state_dict(resumed["scheduler"])
            parts.digest.load_state_dict(resumed["batch_digest"])
        set_aside_later_checkpoints(parts.accelerator, output_dir, global_step)
    return global_step, resumed


def _log_plan(parts: TrainingParts, optim_args: OptimizationArguments) -> None:
    processes = parts.accelerator.num_processes
    logger.info(
        "training %d steps (%d epochs) on %d ECGs, %d process(es), batch %d per device, %d contrastive negatives",
        parts.schedule.max_steps,
        parts.schedule.num_epochs,
        len(parts.data.train_set),
        processes,
        optim_args.per_device_batch_size,
        optim_args.per_device_batch_size * processes - 1,
    )


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

    model, tokenizer, precomputed = _new_model(data_args, model_args, optim_args)
    initial_ecg_encoder_sha256 = state_dict_sha256(model.ecg_model.state_dict())  # freezing changes no weight
    feature_extractor = EsiFeatureExtractor(
        sampling_rate=model.config.ecg_config.sampling_rate, duration_s=model.config.ecg_config.duration_s
    )
    data = build_data(data_args, optim_args, feature_extractor, tokenizer)
    caption_vocabulary = len(tokenizer)
    if model_args.trim_vocabulary:
        tokenizer, caption_vocabulary = _trim_caption_vocabulary(model, tokenizer, data, data_args.max_text_length)
    text_cache_seconds = _cache_text_embeddings(model, tokenizer, data, data_args, model_args, precomputed)

    parts = _prepare_parts(accelerator, model, data, optim_args, objective)
    if run_args.report_to != "none":
        config = all_arguments(data_args, model_args, optim_args, run_args)
        accelerator.init_trackers("esi_pretraining", config={k: v for k, v in config.items() if v is not None})
    global_step, resumed = _resume(parts, output_dir, run_args)
    _log_plan(parts, optim_args)
    run = train_loop(parts, global_step, model_args, optim_args, run_args, resumed)

    final_dir = output_dir / "model"
    if accelerator.is_main_process:
        summary = {
            **run,
            "train_ecgs": len(data.train_set),
            "num_processes": accelerator.num_processes,
            "text_cache_seconds": text_cache_seconds,
            "caption_vocabulary": caption_vocabulary,
            "resumed_from_step": global_step,
            # Runs with equal values started from the same ECG encoder and trained on the same batches.
            "initial_ecg_encoder_sha256": initial_ecg_encoder_sha256,
            "batch_ecg_ids_sha256": parts.digest.hexdigest,
            "caption_truncation": data.truncation,
            "evaluation_overlap": data.evaluation_overlap,
            "args": all_arguments(data_args, model_args, optim_args, run_args),
        }
        _save_final_model(parts.esi_model, feature_extractor, tokenizer, final_dir, summary, run_args)
    accelerator.wait_for_everyone()
    accelerator.end_training()  # also tears down the process group: keep it last
    return final_dir


def _save_final_model(
    esi_model: EsiModel, feature_extractor, tokenizer, folder: Path, summary: dict, run_args: RunArguments
) -> None:
    restore_text_tower(esi_model)
    save_model_folder(esi_model, feature_extractor, tokenizer, folder, summary)
    if run_args.push_to_hub:
        from esi.hub import push_folder

        push_folder(folder, run_args.push_to_hub, repo_type="model", private=run_args.hub_private)


def _train_step(parts: TrainingParts, batch: dict, pass_ids: bool, global_step: int, max_grad_norm: float):
    """Forward and backward on one batch (an optimizer step once the accumulation is complete); the outputs."""
    accelerator, model = parts.accelerator, parts.model
    ecg_ids = batch["ecg_ids"] if pass_ids else batch.pop("ecg_ids")
    parts.digest.update(ecg_ids)
    with accelerator.accumulate(model):
        outputs = model(**batch, return_loss=True)
        check_finite(accelerator, outputs.loss, global_step, ecg_ids)
        accelerator.backward(outputs.loss)
        if accelerator.sync_gradients and max_grad_norm:
            accelerator.clip_grad_norm_(model.parameters(), max_grad_norm)
        parts.optimizer.step()
        parts.optimizer.zero_grad()
    return outputs


def _step_logs(parts: TrainingParts, outputs, clock: RunClock) -> dict[str, float]:
    return {
        **{name: value.item() for name in LOSS_NAMES if (value := getattr(outputs, name, None)) is not None},
        "lr": parts.scheduler.get_last_lr()[0],
        "logit_scale": parts.esi_model.clamped_logit_scale().item(),
        "elapsed_s": round(clock.train_seconds(), 3),
    }


def _log_and_checkpoint(
    parts: TrainingParts, run_args: RunArguments, global_step: int, logs: dict, history: list[dict], clock: RunClock
) -> None:
    """Every `logging_steps` steps the step's logs; every `checkpointing_steps` a checkpoint; both at the last."""
    last = global_step == parts.schedule.max_steps
    if global_step % run_args.logging_steps == 0 or last:
        parts.accelerator.log(logs, step=global_step)
        history.append({"step": global_step, **logs})
    if not (global_step % run_args.checkpointing_steps == 0 or last):
        return
    state = {
        "scheduler": parts.scheduler.state_dict(),
        "log_history": history,
        "train_seconds": clock.train_seconds(),
        "data_seconds": clock.data_seconds,
        "train_cpu_seconds": clock.cpu_seconds(),
        "batch_digest": parts.digest.state_dict(),
    }
    save_checkpoint(parts.accelerator, Path(run_args.output_dir), global_step, run_args.checkpoints_total_limit, state)


def _evaluate_and_log(parts: TrainingParts, model_args: ModelArguments, global_step: int) -> dict[str, float]:
    metrics = evaluate(parts.model, parts.eval_loader, parts.accelerator, model_args)
    parts.accelerator.log(metrics, step=global_step)
    return metrics


def _progress_bar(accelerator: Accelerator, schedule: Schedule, global_step: int) -> tqdm:
    if global_step:
        epoch, batch = schedule.position(global_step)
        logger.info("resumed at step %d (epoch %d, batch %d)", global_step, epoch, batch)
    return tqdm(
        total=schedule.max_steps, initial=global_step, disable=not accelerator.is_local_main_process, desc="pretraining"
    )


def train_loop(
    parts: TrainingParts,
    global_step: int,
    model_args: ModelArguments,
    optim_args: OptimizationArguments,
    run_args: RunArguments,
    resumed: dict | None = None,
) -> dict:
    """Train from `global_step` to `parts.schedule.max_steps`; returns the run's figures for the summary.

    `resumed`: the checkpoint's training state, so the summary covers the whole run, not only the last process.
    """
    accelerator, schedule = parts.accelerator, parts.schedule
    start_epoch, skip_batches = schedule.position(global_step)
    progress = _progress_bar(accelerator, schedule, global_step)
    resumed = resumed or {}
    history: list[dict] = list(resumed.get("log_history", []))
    eval_metrics: dict[str, float] = {}
    set_train_mode(parts.esi_model, model_args)
    # Another objective (a baseline) may need to know which records it trains on (its targets); ESI does not.
    pass_ids = accelerator.unwrap_model(parts.model) is not parts.esi_model
    evaluate_every_epoch = parts.eval_loader is not None and not run_args.eval_steps
    evaluate_every_steps = parts.eval_loader is not None and run_args.eval_steps
    clock = RunClock(resumed)
    for epoch in range(start_epoch, schedule.num_epochs):
        if global_step >= schedule.max_steps:  # resumed from the final checkpoint: nothing left to train
            break
        parts.data.train_set.set_epoch(epoch)
        parts.train_loader.set_epoch(epoch)
        loader = parts.train_loader
        loader = accelerator.skip_first_batches(loader, skip_batches) if epoch == start_epoch else loader
        waiting_since = time.perf_counter()
        for batch in loader:
            clock.data_seconds += time.perf_counter() - waiting_since
            outputs = _train_step(parts, batch, pass_ids, global_step, optim_args.max_grad_norm)
            waiting_since = time.perf_counter()
            if not accelerator.sync_gradients:
                continue
            if not parts.optimizer.step_was_skipped:  # fp16 overflow: no update, so no schedule step either
                parts.scheduler.step()
            global_step += 1
            progress.update(1)
            logs = _step_logs(parts, outputs, clock)
            progress.set_postfix(loss=f"{logs['loss']:.3f}")
            _log_and_checkpoint(parts, run_args, global_step, logs, history, clock)
            if evaluate_every_steps and global_step % run_args.eval_steps == 0:
                eval_metrics = _evaluate_and_log(parts, model_args, global_step)
            if global_step >= schedule.max_steps:
                break
            waiting_since = time.perf_counter()  # logging, checkpoints and evaluation are not data time
        skip_batches = 0
        if evaluate_every_epoch:
            eval_metrics = _evaluate_and_log(parts, model_args, global_step)
            logger.info("epoch %d validation: %s", epoch, json.dumps({k: round(v, 4) for k, v in eval_metrics.items()}))
        if global_step >= schedule.max_steps:
            break
    progress.close()
    return _run_figures(global_step, clock, history, eval_metrics)


def _run_figures(global_step: int, clock: RunClock, history: list[dict], eval_metrics: dict[str, float]) -> dict:
    train_seconds = clock.train_seconds()
    return {
        "steps": global_step,
        "train_seconds": round(train_seconds, 1),
        # This process's CPU time (all its threads) over the whole run, resumed parts included.
        "train_cpu_seconds": round(clock.cpu_seconds(), 1),
        # Share of wall time spent waiting for the next batch (data loading + collation).
        "data_wait_fraction": round(clock.data_seconds / max(train_seconds, 1e-9), 4),
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
