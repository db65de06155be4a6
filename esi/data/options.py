"""The options of a preparation run, declared once: `esi-prepare` parses them, `prepare_source` takes them.

Plain Python (no readers imported), so that `esi-prepare --help` stays fast.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

# Records per committed unit: the granularity of resume and of sharding.
UNIT_SIZE = 256


def default_num_proc() -> int:
    """CPUs this process may run on (the affinity mask where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@dataclass(frozen=True)
class PrepareOptions:
    """How a source is prepared: readers, unit size, what to skip, resume and sharding."""

    num_proc: int | None = field(
        default=None, metadata={"help": "reader processes; unset: all CPUs this process may use"}
    )
    unit_size: int = field(
        default=UNIT_SIZE, metadata={"help": "records per committed unit (the step in which a run resumes)"}
    )
    skip_missing: bool = field(default=False, metadata={"help": "skip (and report) records without files"})
    skip_invalid: bool = field(default=False, metadata={"help": "skip (and report) malformed records"})
    resume: bool = field(default=False, metadata={"help": "continue an interrupted run in the output folder"})
    num_shards: int = field(default=1, metadata={"help": "split the corpus into this many parts (machines)"})
    shard_index: int = field(default=0, metadata={"help": "the part this run prepares (0-based)"})

    def __post_init__(self) -> None:
        if not 0 <= self.shard_index < self.num_shards:
            raise ValueError(f"shard_index must be in 0..{self.num_shards - 1}, got {self.shard_index}")
        if self.unit_size < 1:
            raise ValueError(f"unit_size must be at least 1, got {self.unit_size}")
