"""Pretraining data: signals joined with captions, loaders, caption truncation and evaluation overlap."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import datasets
import numpy as np
import torch

from esi.data.augment import EcgAugmentConfig
from esi.data.torch_dataset import (
    EcgCollator,
    EcgDataset,
    EcgWindows,
    is_memory_mapped,
    join_captions,
    load_dataset_folder,
)
from esi.data.windows import parse_window_count
from esi.train.arguments import TRUNCATION_WARNING_SHARE, DataArguments, OptimizationArguments

logger = logging.getLogger("esi.train")


@dataclass
class PretrainingData:
    train_set: EcgDataset
    train_loader: torch.utils.data.DataLoader
    eval_loader: torch.utils.data.DataLoader | None
    truncation: dict[str, float]
    evaluation_overlap: dict[str, Any]


def caption_truncation(tokenizer, captions: list[str], max_length: int) -> dict[str, float]:
    """How much of the captions `max_length` tokens cut off (counting [CLS] and [SEP], as the collator does)."""
    # In chunks, keeping only the lengths: token ids of a whole corpus's captions would not fit in memory.
    lengths = np.concatenate(
        [
            [len(ids) for ids in tokenizer(list(captions[start : start + 4096]), truncation=False)["input_ids"]]
            for start in range(0, len(captions), 4096)
        ]
    )
    cut = np.maximum(lengths - max_length, 0)
    return {
        "max_text_length": max_length,
        "truncated_token_share": float(cut.sum() / lengths.sum()),
        "truncated_caption_share": float((cut > 0).mean()),
        "median_caption_tokens": float(np.median(lengths)),
        "p95_caption_tokens": float(np.percentile(lengths, 95)),
    }


def report_truncation(truncation: dict[str, float]) -> None:
    share = truncation["truncated_token_share"]
    message = (
        f"--max-text-length {truncation['max_text_length']} cuts off {share:.1%} of caption tokens "
        f"({truncation['truncated_caption_share']:.1%} of captions are truncated; median caption "
        f"{truncation['median_caption_tokens']:.0f} tokens, 95th percentile {truncation['p95_caption_tokens']:.0f})"
    )
    if share > TRUNCATION_WARNING_SHARE:
        logger.warning("WARNING: %s; the model never reads the cut text. Raise --max-text-length.", message)
    else:
        logger.info(message)


def evaluation_overlap(train: datasets.Dataset, evaluation_dir: str | None) -> dict[str, Any]:
    """Records and patients the pretraining split shares with the dataset the model will be evaluated on."""
    if evaluation_dir is None:
        return {"checked": False}
    evaluation = load_dataset_folder(evaluation_dir)
    train_ids, train_patients = set(train["ecg_id"]), set(train["patient_id"])
    shared_ids, shared_patients = set(), set()
    for split in evaluation.values():
        shared_ids |= train_ids & set(split["ecg_id"])
        shared_patients |= train_patients & set(split["patient_id"])
    overlap = {
        "checked": True,
        "evaluation_dataset": str(evaluation_dir),
        "shared_records": len(shared_ids),
        "shared_patients": len(shared_patients),
        "example_ecg_ids": sorted(shared_ids)[:10],
    }
    if shared_ids or shared_patients:
        logger.warning(
            "WARNING: PRETRAINING ON EVALUATION DATA: %d record(s) and %d patient(s) of the pretraining split are "
            "also in %s (e.g. ecg_id %s). Their captions carry their labels, so downstream results on that dataset "
            "are not a clean measure. Pretrain on records of patients the evaluation set does not hold.",
            len(shared_ids),
            len(shared_patients),
            evaluation_dir,
            overlap["example_ecg_ids"],
        )
    else:
        logger.info("no record or patient of the pretraining split is in %s", evaluation_dir)
    return overlap


def build_data(
    data_args: DataArguments, optim_args: OptimizationArguments, feature_extractor, tokenizer
) -> PretrainingData:
    # Memory-mapped unless --keep-in-memory: EcgDataset reads one row per item, and under `accelerate launch`
    # each process's sampler shard (BatchSamplerShard) decides which rows that process reads.
    signals = load_dataset_folder(data_args.signals, keep_in_memory=data_args.keep_in_memory)
    captions = load_dataset_folder(data_args.captions)
    for split in (data_args.train_split, data_args.eval_split):
        if split != "none" and split not in signals:
            raise ValueError(f"signals dataset {data_args.signals} has no split '{split}' (has {list(signals)})")
    train_signals = signals[data_args.train_split]
    where = "memory-mapped from disk" if is_memory_mapped(train_signals) else "in memory (--keep-in-memory or Parquet)"
    logger.info("training signals: %s", where)
    train_captions = join_captions(train_signals, captions, data_args.train_split)
    truncation = caption_truncation(tokenizer, train_captions, data_args.max_text_length)
    report_truncation(truncation)
    overlap = evaluation_overlap(train_signals, data_args.evaluation_records)
    train_set = EcgDataset(
        train_signals,
        train_captions,
        augment=EcgAugmentConfig() if data_args.augment else None,
        seed=optim_args.seed,
        window_s=feature_extractor.duration_s,
        window=data_args.train_window,
    )
    collator = EcgCollator(
        feature_extractor, train_set.sampling_rate, train_set.lead_names, tokenizer, data_args.max_text_length
    )
    train_loader = torch.utils.data.DataLoader(
        train_set,
        batch_size=optim_args.per_device_batch_size,
        shuffle=True,
        drop_last=True,
        collate_fn=collator,
        num_workers=data_args.num_workers,
        # Its own generator: creating an iterator (as a resumed run does mid-epoch) must not
        # advance the global RNG that dropout draws from.
        generator=torch.Generator().manual_seed(optim_args.seed),
    )
    if len(train_loader) == 0:
        raise ValueError(
            f"the train split has {len(train_set)} ECGs, "
            f"fewer than one batch of {optim_args.per_device_batch_size} per process"
        )
    eval_loader = None
    if data_args.eval_split != "none":
        eval_signals = signals[data_args.eval_split]
        eval_set = EcgWindows(
            EcgDataset(
                eval_signals,
                join_captions(eval_signals, captions, data_args.eval_split),
                window_s=feature_extractor.duration_s,
            ),
            parse_window_count(data_args.eval_windows),
        )
        eval_loader = torch.utils.data.DataLoader(eval_set, batch_size=optim_args.eval_batch_size, collate_fn=collator)
    return PretrainingData(train_set, train_loader, eval_loader, truncation, overlap)
