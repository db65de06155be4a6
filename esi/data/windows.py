"""Fixed-length windows of variable-length ECGs (docs/CONTRACTS.md, "Windows").

Records of 6-60 s (CPSC 2018) are stored whole; a model reads `length` samples at a time:
- training: one window per record and epoch at a random start (`random_start`), drawn from a generator
  seeded by (seed, epoch, record), so a resumed run reads the windows the uninterrupted run read;
- evaluation: windows covering the record (`window_starts`), the last one aligned to the record's end so
  no sample is left out; the model's outputs are averaged over a record's windows (`mean_by_record`), as
  the PTB-XL benchmark literature does (Strodthoff et al. 2021, mean of the window probabilities).
A window is a slice `signal[:, start : start + length]`; a record shorter than `length` gives one shorter
window, which the feature extractor pads with zeros and marks as padding in `ecg_attention_mask`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import numpy as np

if TYPE_CHECKING:
    import datasets

WINDOW_MODES = ("random", "first")


def random_start(samples: int, length: int, rng: np.random.Generator) -> int:
    """A uniformly random start for a `length`-sample window of a `samples`-sample record (0 when it fits).

    Draws nothing from `rng` for a record no longer than the window, so the draws that follow (augmentations)
    do not depend on whether windowing is on.
    """
    if samples <= length:
        return 0
    return int(rng.integers(0, samples - length + 1))


def window_starts(samples: int, length: int, count: int | None = None) -> list[int]:
    """Starts of the evaluation windows of a `samples`-sample record.

    count None: every `length` samples, plus one ending at the record's end (all windows, each sample read).
    count k: at most k windows; when the record holds more, k starts evenly spaced from 0 to the last
    possible start (k = 1: the first window only).
    """
    if length <= 0:
        raise ValueError(f"window length must be positive, got {length}")
    if count is not None and count < 1:
        raise ValueError(f"the number of evaluation windows must be at least 1, got {count}")
    if samples <= length:
        return [0]
    last = samples - length
    starts = list(range(0, last + 1, length))
    if starts[-1] != last:
        starts.append(last)
    if count is None or len(starts) <= count:
        return starts
    return [int(s) for s in np.linspace(0, last, count).round()]


def parse_window_count(value: str | int) -> int | None:
    """`--eval-windows` value: 'all' -> None (every covering window), a positive integer -> at most that many."""
    if str(value).strip().lower() == "all":
        return None
    try:
        count = int(value)
    except ValueError:
        count = 0
    if count < 1:
        raise ValueError(f"--eval-windows must be 'all' or a positive integer, got {value!r}")
    return count


# Keyword-only, so that the commands' dataclasses can inherit these fields after their own required ones.
@dataclass(kw_only=True)
class WindowArguments:
    """Which windows a record gives: `esi-train` and `esi-finetune` share these options (`HfArgumentParser`)."""

    train_window: Literal["random", "first"] = field(
        default="random",
        metadata={
            "help": "which window of the model's input length (its feature extractor's duration_s) a training "
            "record gives: 'random' (a new seeded start each epoch; the linear probe draws once) or 'first' "
            "(always its start). Shorter records are padded and masked"
        },
    )
    eval_windows: str = field(
        default="all",
        metadata={
            "help": "windows per evaluation record: 'all' (windows covering the whole record) or N (at most N, "
            "evenly spaced; 1 = the first window only). A record's result is the mean over its windows "
            "(embeddings, probabilities or similarities; captioning reads the first window)"
        },
    )

    def __post_init__(self) -> None:
        parse_window_count(self.eval_windows)


def signal_lengths(signals: datasets.Dataset, batch_size: int = 4096) -> np.ndarray:
    """Samples per lead of every row's `signal`, read from the Arrow offsets, not from the samples.

    Works on a memory-mapped dataset without reading its signal data (only list offsets are touched),
    and follows the dataset's row order (select/shuffle indices).
    """
    # Imported here: the light claim-benchmark runner imports this module where `datasets` is absent.
    import datasets
    import pyarrow.compute as pc

    feature = signals.features["signal"]
    if isinstance(feature, datasets.Array2D):
        return np.full(len(signals), feature.shape[1], dtype=np.int64)
    column = signals.select_columns(["signal"]).with_format("arrow")
    lengths = []
    for begin in range(0, len(signals), batch_size):
        rows = column[begin : begin + batch_size]["signal"]  # list<list<float>>, one outer list per row
        leads = pc.list_value_length(rows).to_numpy(zero_copy_only=False)
        per_lead = pc.list_value_length(pc.list_flatten(rows)).to_numpy(zero_copy_only=False)
        firsts = np.concatenate([[0], np.cumsum(leads)[:-1]])  # index of each row's first lead
        lengths.append(per_lead[firsts])
    return np.concatenate(lengths).astype(np.int64) if lengths else np.zeros(0, dtype=np.int64)


def mean_by_record(values: np.ndarray, records: np.ndarray, num_records: int) -> np.ndarray:
    """Mean of the rows of `values` (windows, ...) per record index in `records`; (num_records, ...).

    Raises when a record has no window (its prediction would silently be zero).
    """
    records = np.asarray(records, dtype=np.int64)
    counts = np.bincount(records, minlength=num_records)
    if len(counts) != num_records or not counts.all():
        missing = np.flatnonzero(counts[:num_records] == 0)[:10].tolist()
        raise ValueError(f"windows do not match {num_records} records (records without a window: {missing})")
    sums = np.zeros((num_records, *values.shape[1:]), dtype=np.float64)
    np.add.at(sums, records, values)
    return (sums / counts.reshape(-1, *[1] * (values.ndim - 1))).astype(values.dtype)
