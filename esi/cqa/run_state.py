"""How a captioning run cuts its work into units, and the run folder (`esi.run_folder`) that commits them.

Work is cut into units: per split, consecutive blocks of ``records_per_file`` rows, each written as
``data/{split}-{index:05d}-of-{count:05d}.parquet`` (the file naming ``datasets.load_dataset`` maps to
splits). The cut depends only on the dataset, the splits and ``num_samples``, never on ``num_shards``, so
scale-out jobs write disjoint files of one layout and a merge just gathers them. Each unit is committed (and
resumed, and checked against its sha256) by `esi.run_folder.RunFolder` under ``.cqa/``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass

from esi.run_folder import RunFolder

STATE_DIR = ".cqa"  # hidden: datasets ignores it and Hub uploads skip it


@dataclass(frozen=True)
class WorkUnit:
    split: str
    index: int
    count: int
    start: int
    stop: int

    @property
    def filename(self) -> str:
        return f"data/{self.split}-{self.index:05d}-of-{self.count:05d}.parquet"


# What `WorkUnit.filename` writes; a run config or journal naming anything else (`../../x.parquet`) was not written
# by a run and could reach outside the output folder.
UNIT_NAME_RE = re.compile(r"data/[A-Za-z0-9_-]+-\d{5}-of-\d{5}\.parquet")


def plan_units(num_rows: dict[str, int], records_per_file: int) -> list[WorkUnit]:
    """All units of a run, split by split, independent of sharding."""
    if records_per_file < 1:
        raise ValueError(f"records_per_file must be at least 1, got {records_per_file}")
    units = []
    for split, n in num_rows.items():
        count = max(1, -(-n // records_per_file))
        units += [
            WorkUnit(split, i, count, i * records_per_file, min(n, (i + 1) * records_per_file)) for i in range(count)
        ]
    return units


def shard_units(units: Sequence[WorkUnit], num_shards: int, shard_index: int) -> list[WorkUnit]:
    """Round-robin over the global unit order: job ``shard_index`` of ``num_shards`` takes every n-th unit."""
    if num_shards < 1 or not 0 <= shard_index < num_shards:
        raise ValueError(f"need 0 <= shard_index < num_shards, got shard {shard_index} of {num_shards}")
    return [u for i, u in enumerate(units) if i % num_shards == shard_index]


def check_run_config(config: dict) -> None:
    """Raise `ValueError` unless `config` lists its units as files a run writes (a merge copies exactly those)."""
    if not isinstance(config.get("units"), list):
        raise ValueError("no list of units")
    strange = [str(u)[:80] for u in config["units"] if not isinstance(u, str) or not UNIT_NAME_RE.fullmatch(u)]
    if strange:
        raise ValueError(f"unit {strange[0]!r} is not a data/<split>-NNNNN-of-NNNNN.parquet file")


def caption_folder(output_dir: str | os.PathLike) -> RunFolder:
    """The run state of a captions folder: units under data/, state under `.cqa/`."""
    return RunFolder(output_dir, STATE_DIR, UNIT_NAME_RE, data_glob="data/*.parquet", check_config=check_run_config)
