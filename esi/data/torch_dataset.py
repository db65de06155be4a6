"""Datasets and collation for ESI training: prepared ECG signals joined with captions or labels."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from datasets.data_files import DataFilesDict, EmptyDatasetError, get_data_patterns
from datasets.table import ConcatenationTable, MemoryMappedTable

from .augment import EcgAugmentConfig, augment_ecg
from .windows import WINDOW_MODES, random_start, signal_lengths, window_starts


def load_dataset_folder(path: str | Path, keep_in_memory: bool = False) -> datasets.DatasetDict:
    """Load either a `save_to_disk` folder or a Parquet/Hub-style folder as a DatasetDict.

    A Parquet folder is read directly (splits found by the file patterns `datasets.load_dataset`
    uses, e.g. `data/train-00000-of-00001.parquet`), with no `datasets` cache: the cache keys a local
    folder by its name, so a folder regenerated under a familiar name (`A/cap`, then `B/cap`) was
    served stale or failed with `NonMatchingSplitsSizesError`. What is loaded depends only on the
    files' content.

    A `save_to_disk` folder is memory-mapped (rows are read from disk as they are indexed, so a corpus larger
    than RAM trains in bounded memory) unless `keep_in_memory`, which copies it into RAM.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"dataset folder {path} does not exist")
    if (path / "dataset_dict.json").exists():
        return datasets.load_from_disk(str(path), keep_in_memory=keep_in_memory)
    try:
        patterns = get_data_patterns(str(path))
    except EmptyDatasetError as error:
        raise FileNotFoundError(f"{path} holds neither a save_to_disk dataset nor Parquet files") from error
    files = DataFilesDict.from_patterns(patterns, base_path=str(path))
    splits = {}
    for split, split_files in files.items():
        parquet = [f for f in split_files if f.endswith(".parquet")]
        if len(parquet) != len(split_files):
            raise ValueError(f"{path}: split '{split}' has non-Parquet files {sorted(set(split_files) - set(parquet))}")
        # Concatenated Arrow tables in memory (caption folders are text: megabytes).
        table = pa.concat_tables([pq.read_table(f) for f in sorted(parquet)])
        splits[split] = datasets.Dataset(table)
    return datasets.DatasetDict(splits)


def is_memory_mapped(dataset: datasets.Dataset) -> bool:
    """Whether every Arrow block behind `dataset` is memory-mapped from disk (none copied into RAM)."""
    table = dataset.data
    blocks = [block for row in table.blocks for block in row] if isinstance(table, ConcatenationTable) else [table]
    return all(isinstance(block, MemoryMappedTable) for block in blocks)


def join_captions(
    signals: datasets.Dataset, captions: datasets.DatasetDict | datasets.Dataset, split: str
) -> list[str]:
    """Captions aligned row by row with `signals`, joined on `ecg_id`.

    Raises a ValueError that names the split and the offending ids when a caption column is
    missing, when the two share no ECG, or when some signals have no caption.
    """
    parts = captions.values() if isinstance(captions, datasets.DatasetDict) else [captions]
    by_id: dict[int, str] = {}
    for part in parts:
        missing_columns = {"ecg_id", "caption"} - set(part.column_names)
        if missing_columns:
            raise ValueError(f"captions dataset lacks column(s) {sorted(missing_columns)}; has {part.column_names}")
        by_id.update(zip(part["ecg_id"], part["caption"], strict=True))
    ids = signals["ecg_id"]
    if len(ids) == 0:
        raise ValueError(f"split '{split}' of the signals dataset is empty")
    lacking = [i for i in ids if i not in by_id]
    if len(lacking) == len(ids):
        raise ValueError(f"split '{split}': no ecg_id in common between signals and captions (signals start {ids[:5]})")
    if lacking:
        raise ValueError(
            f"split '{split}': {len(lacking)} of {len(ids)} ECGs have no caption (first ids: {lacking[:10]}); "
            "regenerate captions for them or drop them from the signals dataset"
        )
    empty = [i for i in ids if not str(by_id[i]).strip()]
    if empty:
        raise ValueError(f"split '{split}': empty caption for ecg_id(s) {empty[:10]}")
    return [by_id[i] for i in ids]


class EcgDataset(torch.utils.data.Dataset):
    """Rows of a prepared ECG split, optionally paired with captions, cut to a window and augmented.

    Rows are read one at a time from the (memory-mapped) Arrow table: nothing loads the signal column.
    With `window_s` (the model's input duration, its feature extractor's `duration_s`), each item is one
    window of that many seconds: `window="random"` at a random start, `"first"` the record's start; a
    shorter record stays whole and the collator's feature extractor pads and masks it. Window and
    augmentation randomness are seeded by (seed, epoch, index), so they do not depend on the order in
    which rows are drawn or on whether the run was resumed.
    """

    def __init__(
        self,
        signals: datasets.Dataset,
        captions: Sequence[str] | None = None,
        label_column: str | None = None,
        augment: EcgAugmentConfig | None = None,
        seed: int = 0,
        window_s: float | None = None,
        window: str = "random",
    ):
        if window not in WINDOW_MODES:
            raise ValueError(f"window must be one of {WINDOW_MODES}, got {window!r}")
        columns = ["signal", "ecg_id"] + ([label_column] if label_column else [])
        self.signals = signals.select_columns(columns).with_format("numpy")
        first = signals.select_columns(["sampling_rate", "lead_names"])[0]
        self.sampling_rate = int(first["sampling_rate"])
        self.lead_names = list(first["lead_names"])
        self.captions = captions
        self.label_column = label_column
        self.augment = augment
        self.seed = seed
        # Windows are cut at the stored rate; the feature extractor resamples them to the model's.
        self.window_samples = None if window_s is None else round(window_s * self.sampling_rate)
        self.window = window
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.signals)

    def record(self, index: int) -> dict[str, Any]:
        """Row `index` as it is stored: the whole signal (leads, samples), ecg_id, caption and labels if any."""
        row = self.signals[int(index)]
        item = {"signal": row["signal"], "ecg_id": int(row["ecg_id"])}
        if self.captions is not None:
            item["caption"] = self.captions[int(index)]
        if self.label_column is not None:
            item["labels"] = row[self.label_column]
        return item

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self.record(index)
        # One generator for the window and then the augmentations: a record that fits in the window draws
        # nothing for it, so its augmentations are those of a run without windows.
        rng = np.random.default_rng([self.seed, self.epoch, int(index)])
        signal = item["signal"]
        if self.window_samples is not None:
            start = random_start(signal.shape[-1], self.window_samples, rng) if self.window == "random" else 0
            signal = signal[:, start : start + self.window_samples]
        if self.augment is not None:
            signal = augment_ecg(signal, self.sampling_rate, self.lead_names, self.augment, rng)
        item["signal"] = signal
        return item


class EcgWindows(torch.utils.data.Dataset):
    """Evaluation windows of an `EcgDataset`: each record cut into the windows `window_starts` gives.

    `ecgs` must have a window length (`window_s`). Item k is one window, with `record` = its row in `ecgs`;
    average the model's outputs over a record's windows with `esi.data.windows.mean_by_record`. Record
    lengths come from the Arrow offsets, so building the index reads no signal.
    """

    def __init__(self, ecgs: EcgDataset, count: int | None = None):
        if ecgs.window_samples is None:
            raise ValueError("EcgWindows needs an EcgDataset built with window_s (the model's input duration)")
        self.ecgs = ecgs
        self.window_samples = ecgs.window_samples
        lengths = signal_lengths(ecgs.signals)
        self.windows = [
            (row, start)
            for row, samples in enumerate(lengths)
            for start in window_starts(int(samples), self.window_samples, count)
        ]
        self.num_records = len(lengths)
        self.records = np.array([row for row, _ in self.windows], dtype=np.int64)

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, index: int) -> dict[str, Any]:
        row, start = self.windows[index]
        item = self.ecgs.record(row)
        item["signal"] = item["signal"][:, start : start + self.window_samples]
        item["record"] = row
        return item


# Captions are padded to the batch's longest, rounded up to this multiple (whole SIMD / tensor-core tiles).
CAPTION_PAD_MULTIPLE = 8


@dataclass
class EcgCollator:
    """Turns a list of `EcgDataset` items into model inputs.

    Signals go through the model's own `EsiFeatureExtractor` (the same preprocessing users get
    at inference); captions are tokenised on the fly, padded to the batch's longest caption rounded up
    to a multiple of `CAPTION_PAD_MULTIPLE` (`max_text_length` only truncates); labels become multi-hot
    float vectors.
    """

    feature_extractor: Any
    sampling_rate: int
    lead_names: Sequence[str]
    tokenizer: Any = None
    max_text_length: int = 256
    num_labels: int | None = None

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        # A list, not a stacked array: augmented (cropped) ECGs are shorter, and the extractor pads
        # them and marks the padding in `attention_mask`, (`ecg_attention_mask`).
        features = self.feature_extractor(
            [item["signal"] for item in items],
            sampling_rate=self.sampling_rate,
            lead_names=list(self.lead_names),
            return_tensors="pt",
        )
        batch = {
            "input_values": features["input_values"],
            "ecg_attention_mask": features["ecg_attention_mask"],
            "ecg_ids": torch.tensor([i["ecg_id"] for i in items]),
        }
        if "record" in items[0]:  # evaluation windows: which record each window belongs to
            batch["records"] = torch.tensor([i["record"] for i in items])
        if self.tokenizer is not None and "caption" in items[0]:
            text = self.tokenizer([item["caption"] for item in items], truncation=True, max_length=self.max_text_length)
            longest = max(len(ids) for ids in text["input_ids"])
            width = min(-(-longest // CAPTION_PAD_MULTIPLE) * CAPTION_PAD_MULTIPLE, self.max_text_length)
            text = self.tokenizer.pad(text, padding="max_length", max_length=width, return_tensors="pt")
            batch["input_ids"] = text["input_ids"]
            batch["attention_mask"] = text["attention_mask"]
        if self.num_labels is not None and "labels" in items[0]:
            labels = torch.zeros(len(items), self.num_labels)
            for row, item in enumerate(items):
                labels[row, list(item["labels"])] = 1.0
            batch["labels"] = labels
        return batch
