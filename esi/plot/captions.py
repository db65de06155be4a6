"""PNGs of captioned ECGs: each record on ECG paper with its CQA caption below (`cqa_generate.py --plot N`)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import datasets
import numpy as np

from esi.data.torch_dataset import load_dataset_folder

from .paper import plot_ecg

CaptionSource = str | Path | datasets.Dataset | datasets.DatasetDict


def _caption_rows(captions: CaptionSource) -> Iterator[dict]:
    if isinstance(captions, (str, Path)):
        captions = load_dataset_folder(captions)
    parts = captions.values() if isinstance(captions, datasets.DatasetDict) else [captions]
    for part in parts:
        yield from part.select_columns(["ecg_id", "caption"])


def _signal_locations(prepared: datasets.DatasetDict) -> dict[int, tuple[str, int]]:
    return {ecg_id: (split, i) for split, part in prepared.items() for i, ecg_id in enumerate(part["ecg_id"])}


def plot_records_with_captions(
    captions_dir_or_dataset: CaptionSource, prepared_dir: str | Path, n: int, out_dir: str | Path, dpi: int = 150
) -> list[Path]:
    """Write `ecg_<id>.png` for the first `n` captioned ECGs (in split order) into `out_dir`; return the paths.

    Signals come from the prepared dataset (`esi-prepare`), joined on `ecg_id`.
    """
    prepared = load_dataset_folder(prepared_dir)
    locations = _signal_locations(prepared)
    out_dir = Path(out_dir)
    written: list[Path] = []
    for row in _caption_rows(captions_dir_or_dataset):
        if len(written) >= n:
            break
        ecg_id = int(row["ecg_id"])
        if ecg_id not in locations:
            raise ValueError(f"ecg_id {ecg_id} has a caption but no signal in {prepared_dir}")
        split, index = locations[ecg_id]
        record = prepared[split].with_format("numpy")[index]
        path = out_dir / f"ecg_{ecg_id}.png"
        figure = plot_ecg(
            np.asarray(record["signal"]),
            int(record["sampling_rate"]),
            list(record["lead_names"]),
            title=f"PTB-XL ecg_id {ecg_id} ({split})",
            caption=row["caption"],
            output_path=path,
            dpi=dpi,
        )
        figure.clear()
        written.append(path)
    return written
