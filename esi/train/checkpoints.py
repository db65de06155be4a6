"""Checkpoints of a pretraining run: atomic writes, pruning, resuming (with fallback) and branching.

Layout: OUTPUT_DIR/checkpoints/step_N (complete, renamed into place only once written),
OUTPUT_DIR/checkpoints/step_N.partial (being written; removed on failure or at the next start),
OUTPUT_DIR/checkpoints/abandoned-<time>/step_N (later checkpoints of a run resumed from an older step).

Resuming never unpickles code: Accelerate's own files (weights as safetensors; optimizer, sampler and random states)
are read with torch's weights-only loader, and the run's own state (scheduler, log history, time spent) is JSON in
`training_state.json`. A folder holding pickled custom objects (`custom_checkpoint_*.pkl`, which Accelerate would
load with arbitrary code execution) is refused, never tried and never skipped silently.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path

from accelerate import Accelerator

logger = logging.getLogger("esi.train")
CHECKPOINT_PREFIX = "step_"
PARTIAL_SUFFIX = ".partial"
TRAINING_STATE_FILE = "training_state.json"
# Files Accelerate unpickles without restriction (`weights_only=False`) when loading a checkpoint.
UNRESTRICTED_PICKLES = "custom_checkpoint_*"


class CheckpointWriteError(OSError):
    """Writing a checkpoint failed; the partial folder was removed and older checkpoints are intact."""


class CheckpointLoadError(RuntimeError):
    """No usable checkpoint could be loaded."""


class UnsafeCheckpointError(CheckpointLoadError):
    """A checkpoint holds pickled objects that loading would execute; it is refused, not skipped."""


def refuse_pickled_objects(checkpoint: Path) -> None:
    """Raise `UnsafeCheckpointError` when `checkpoint` holds files Accelerate would unpickle without restriction."""
    found = sorted(p.name for p in Path(checkpoint).glob(UNRESTRICTED_PICKLES))
    if found:
        raise UnsafeCheckpointError(
            f"checkpoint {checkpoint} holds {', '.join(found)}: pickled objects that resuming would run as code. "
            f"ESI keeps its training state in {TRAINING_STATE_FILE} and never loads such files, so this folder was "
            "altered or written by another program; resume from a checkpoint you trust, or start a new run."
        )


def checkpoint_step(folder: Path) -> int:
    return int(folder.name[len(CHECKPOINT_PREFIX) :])


def checkpoint_dirs(output_dir: Path) -> list[Path]:
    """Complete checkpoints under OUTPUT_DIR/checkpoints, oldest first."""
    folder = Path(output_dir) / "checkpoints"
    found = [
        d for d in folder.glob(f"{CHECKPOINT_PREFIX}*") if d.is_dir() and d.name[len(CHECKPOINT_PREFIX) :].isdigit()
    ]
    return sorted(found, key=checkpoint_step)


def remove_partial_checkpoints(accelerator: Accelerator, output_dir: Path) -> None:
    """Delete `.partial` folders a killed run left behind (they were never complete)."""
    if accelerator.is_main_process:
        for partial in (Path(output_dir) / "checkpoints").glob(f"{CHECKPOINT_PREFIX}*{PARTIAL_SUFFIX}"):
            logger.warning("removing incomplete checkpoint %s left by an interrupted run", partial)
            shutil.rmtree(partial)
    accelerator.wait_for_everyone()


def save_checkpoint(
    accelerator: Accelerator, output_dir: Path, step: int, keep: int, training_state: dict | None = None
) -> Path:
    """Write a checkpoint atomically: into a temporary folder, renamed only once complete.

    `training_state` (JSON-serialisable: scheduler state, log history) goes to `TRAINING_STATE_FILE`.

    If writing fails (full disk, quota, file-size limit: OSError from torch.save, safetensors'
    own error or torch's RuntimeError), the partial folder is removed, the previous checkpoints
    are untouched and a `CheckpointWriteError` says so.
    """
    final = Path(output_dir) / "checkpoints" / f"{CHECKPOINT_PREFIX}{step}"
    partial = final.with_name(final.name + PARTIAL_SUFFIX)
    try:
        accelerator.save_state(str(partial))
        if accelerator.is_main_process:
            (partial / TRAINING_STATE_FILE).write_text(json.dumps(training_state or {}))
        accelerator.wait_for_everyone()
    except Exception as error:  # any failure leaves an incomplete folder: clean it, say what is intact
        if accelerator.is_main_process:
            shutil.rmtree(partial, ignore_errors=True)
        previous = checkpoint_dirs(output_dir)
        raise CheckpointWriteError(
            f"writing the checkpoint for step {step} failed ({type(error).__name__}: {error}); "
            f"the previous checkpoint {previous[-1] if previous else '(none)'} is intact. "
            "Free disk space (or raise the quota) and rerun with --resume-from-checkpoint latest."
        ) from error
    if accelerator.is_main_process:
        partial.rename(final)
        for old in checkpoint_dirs(output_dir)[:-keep]:
            shutil.rmtree(old)
    accelerator.wait_for_everyone()
    return final


def set_aside_later_checkpoints(accelerator: Accelerator, output_dir: Path, step: int) -> None:
    """Resuming from an older step starts a new trajectory: move the later checkpoints out of its way.

    They are kept (not deleted) under checkpoints/abandoned-<time>/ so nothing trained is lost, and
    `latest` and pruning only ever see this trajectory's checkpoints.
    """
    later = [d for d in checkpoint_dirs(output_dir) if checkpoint_step(d) > step]
    if later and accelerator.is_main_process:
        stamp, number = time.strftime("%Y%m%d-%H%M%S"), 0
        while (aside := Path(output_dir) / "checkpoints" / f"abandoned-{stamp}-{number}").exists():
            number += 1
        aside.mkdir()
        for folder in later:
            folder.rename(aside / folder.name)
        logger.warning(
            "resuming from step %d while later checkpoints exist: moved %s to %s (kept, not used)",
            step,
            [d.name for d in later],
            aside,
        )
    accelerator.wait_for_everyone()


def resolve_checkpoint(output_dir: Path, requested: str) -> list[Path]:
    """Checkpoints to try, in order: the requested one, then (for 'latest') older ones as fallbacks."""
    if requested == "latest":
        return list(reversed(checkpoint_dirs(output_dir)))
    path = Path(requested)
    if not path.is_dir():
        raise FileNotFoundError(
            f"checkpoint {path} does not exist (complete checkpoints: {[d.name for d in checkpoint_dirs(output_dir)]})"
        )
    if not path.name[len(CHECKPOINT_PREFIX) :].isdigit() or not path.name.startswith(CHECKPOINT_PREFIX):
        raise ValueError(f"{path} is not a checkpoint folder (expected a name like {CHECKPOINT_PREFIX}500)")
    return [path]


def load_checkpoint(accelerator: Accelerator, output_dir: Path, requested: str) -> tuple[int, dict]:
    """Load the requested checkpoint; returns its step and training state (0 and {} when 'latest' finds none).

    A damaged checkpoint is named; with 'latest' the previous one is tried next, saying so. A checkpoint holding
    pickled objects is refused at once (`UnsafeCheckpointError`): tampering is not damage to fall back from.
    """
    candidates = resolve_checkpoint(output_dir, requested)
    if not candidates:
        logger.info("no checkpoint under %s: starting from scratch", Path(output_dir) / "checkpoints")
        return 0, {}
    failures = []
    for checkpoint in candidates:
        refuse_pickled_objects(checkpoint)
        try:
            training_state = json.loads((checkpoint / TRAINING_STATE_FILE).read_text())
            if not isinstance(training_state, dict):
                raise ValueError(f"{TRAINING_STATE_FILE} is not a JSON object")
            accelerator.load_state(str(checkpoint))
        except Exception as error:  # truncated/corrupt files raise many types (pickle, safetensors, torch, OSError)
            failures.append(f"{checkpoint}: {type(error).__name__}: {error}")
            if requested == "latest":
                logger.warning("checkpoint %s is damaged (%s); falling back to the previous one", checkpoint, error)
            continue
        if failures:
            logger.warning("resumed from %s instead of the damaged %s", checkpoint, candidates[0].name)
        return checkpoint_step(checkpoint), training_state
    hint = (
        "; every checkpoint is damaged: delete them to start from scratch"
        if requested == "latest"
        else "; try --resume-from-checkpoint latest (or an older step_N folder) instead"
    )
    raise CheckpointLoadError("could not load checkpoint " + " | ".join(failures) + hint)
