"""Where one pretraining step's time goes: `python -m benchmarks.bench_train --profile-step`.

Runs `esi.train.pretrain.pretrain` (the code behind `esi-train`) on a recipe of `bench_train --speedup` for one
warm-up step plus `--steps` steps under `torch.profiler`, with a labelled range around each part of a step: data
(reading rows, augmentation, feature extraction, tokenisation and padding), the forward pass of each part of the
model (ECG encoder, text tower, decoder embeddings, each decoder layer, output layer, losses), gradient clipping
and the optimizer. Backward operations are charged to the part whose forward operation created them (the autograd
sequence number links the two). The labels are added by wrapping functions and module hooks in this process only:
the computation is the one users run.

The result file holds, per part, the seconds per step (profiled wall time; other processes on the machine stretch
it, the shares stay comparable) and the share of the step, and the operators with the most self time.
"""

from __future__ import annotations

import contextlib
import functools
from collections import defaultdict
from collections.abc import Callable, Iterator

import torch
from torch.autograd.profiler import record_function
from torch.optim.optimizer import register_optimizer_step_post_hook
from torch.profiler import ProfilerActivity, profile, schedule

LABEL = "esi: "  # prefix of this profile's ranges, told apart from torch's own
BACKWARD_PREFIX = "autograd::engine::evaluate_function: "


def labelled(name: str, function: Callable) -> Callable:
    """`function` run inside a profiler range named LABEL + name."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        with record_function(LABEL + name):
            return function(*args, **kwargs)

    return wrapper


@contextlib.contextmanager
def patched(owner, attribute: str, name: str) -> Iterator[None]:
    original = getattr(owner, attribute)
    setattr(owner, attribute, labelled(name, original))
    try:
        yield
    finally:
        setattr(owner, attribute, original)


def label_module(module: torch.nn.Module, name: str) -> list:
    """Open a range when `module`'s forward starts and close it when it returns; the hooks' handles."""
    ranges: list[record_function] = []

    def enter(*_):
        ranges.append(record_function(LABEL + name))
        ranges[-1].__enter__()

    def leave(*_):
        ranges.pop().__exit__(None, None, None)

    return [module.register_forward_pre_hook(enter), module.register_forward_hook(leave)]


def model_parts(model) -> dict[str, torch.nn.Module]:
    decoder = model.text_decoder
    parts = {
        "ECG encoder": model.ecg_model,
        "projections": model.ecg_projection,
        "projections ": model.text_projection,
        "decoder embeddings": decoder.embed_tokens,
        "decoder embeddings ": decoder.embed_positions,
        "decoder final norm": decoder.final_norm,
        "output layer (target positions)": decoder.lm_head,
    }
    parts.update({f"decoder layer {i}": layer for i, layer in enumerate(decoder.layers)})
    return parts


@contextlib.contextmanager
def labelled_training() -> Iterator[None]:
    """Labels on the data path, the losses, gradient clipping and (once the model is built) its parts."""
    import esi.data.torch_dataset as torch_dataset
    import esi.train.pretrain as pretrain_module
    import modeling_esi.modeling_esi as modeling
    from esi.train.text_cache import CachedTextTower
    from modeling_esi import EsiFeatureExtractor

    handles: list = []
    build_optimizer = pretrain_module.build_optimizer

    def label_and_build_optimizer(model, *args, **kwargs):
        # Called once the model is final (vocabulary trimmed, text tower cached), before the first step.
        for name, module in model_parts(model).items():
            handles.extend(label_module(module, name.strip()))
        return build_optimizer(model, *args, **kwargs)

    with contextlib.ExitStack() as stack:
        for owner, attribute, name in [
            (torch_dataset.EcgDataset, "record", "data: reading rows"),
            (torch_dataset, "augment_ecg", "data: augmentation"),
            (EsiFeatureExtractor, "__call__", "data: feature extraction"),
            (torch_dataset.EcgCollator, "__call__", "data: tokenisation and padding"),
            (CachedTextTower, "forward", "text tower (frozen; cached)"),
            (modeling, "caption_loss", "caption loss (cross-entropy)"),
            (modeling, "contrastive_loss", "contrastive loss"),
            (modeling, "text_identity", "contrastive loss"),
            (torch.nn.utils, "clip_grad_norm_", "gradient clipping"),
        ]:
            stack.enter_context(patched(owner, attribute, name))
        pretrain_module.build_optimizer = label_and_build_optimizer
        try:
            yield
        finally:
            pretrain_module.build_optimizer = build_optimizer
            for handle in handles:
                handle.remove()


def innermost_label(event) -> str | None:
    while event is not None:
        if event.name.startswith(LABEL):
            return event.name[len(LABEL) :]
        # The fused kernel is not always nested in the step's range in the profiler's event tree.
        if event.name.startswith("Optimizer.step") or event.name == "aten::_fused_adamw_":
            return "optimizer step (fused AdamW)"
        if event.name.startswith("Optimizer.zero_grad"):
            return "optimizer zero_grad"
        event = event.cpu_parent
    return None


def backward_root(event):
    while event is not None:
        if event.name.startswith(BACKWARD_PREFIX):
            return event
        event = event.cpu_parent
    return None


def breakdown(events, steps: int) -> dict[str, dict]:
    """Self time of every event, per step, by the part it belongs to: its innermost labelled range, or for a
    backward operation, "backward: " + the label of the forward operation with the same sequence number;
    with each part's operators of most self time."""
    forward_label = {}
    for event in events:
        if event.sequence_nr >= 0 and backward_root(event) is None:
            forward_label.setdefault(event.sequence_nr, innermost_label(event))
    seconds: dict[str, float] = defaultdict(float)
    operators: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for event in events:
        if event.name.startswith("ProfilerStep"):
            continue
        root = backward_root(event)
        if root is None:
            part = innermost_label(event) or "other (loop, logging, between parts)"
        elif "AccumulateGrad" in root.name:
            part = "backward: gradient accumulation into .grad"
        else:
            part = "backward: " + (forward_label.get(root.sequence_nr) or "unlabelled")
        seconds[part] += event.self_cpu_time_total / 1e6 / steps
        # A labelled range's own self time is the Python that ran between its operators.
        operator = "(Python between operators)" if event.name.startswith(LABEL) else event.name
        operators[part][operator] += event.self_cpu_time_total / 1e6 / steps
    total = sum(seconds.values())
    return {
        part: {
            "seconds_per_step": round(s, 4),
            "share": round(s / total, 4),
            "top_operators": {
                name: round(t, 4) for name, t in sorted(operators[part].items(), key=lambda item: -item[1])[:5]
            },
        }
        for part, s in sorted(seconds.items(), key=lambda item: -item[1])
    }


def grouped(parts: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    """Forward and backward of each part together, decoder layers summed."""
    seconds: dict[str, float] = defaultdict(float)
    for part, figures in parts.items():
        name = part.removeprefix("backward: ")
        name = "decoder layers" if name.startswith("decoder layer ") else name
        name = "data (rows, augmentation, features, tokens)" if name.startswith("data: ") else name
        seconds[name] += figures["seconds_per_step"]
    total = sum(seconds.values())
    ordered = sorted(seconds.items(), key=lambda item: -item[1])
    return {part: {"seconds_per_step": round(s, 4), "share": round(s / total, 4)} for part, s in ordered}


def profile_pretraining(arguments: tuple, steps: int) -> dict:
    """Profile steps 2..steps+1 of `pretrain(*arguments)` (which must run steps + 1 steps); the breakdown."""
    from esi.train.pretrain import pretrain

    captured = {}

    def keep(profiler) -> None:
        captured["events"] = profiler.events()
        captured["operators"] = profiler.key_averages()

    # The first step (and the setup before it) is skipped: it pays one-off allocations.
    profiler = profile(
        activities=[ProfilerActivity.CPU], schedule=schedule(wait=1, warmup=0, active=steps), on_trace_ready=keep
    )
    step_hook = register_optimizer_step_post_hook(lambda *_: profiler.step())
    try:
        with labelled_training(), profiler:
            model_dir = pretrain(*arguments)
    finally:
        step_hook.remove()
    events = captured["events"]
    step_seconds = [e.cpu_time_total / 1e6 for e in events if e.name.startswith("ProfilerStep")]
    parts = breakdown(events, steps)
    operators = sorted(captured["operators"], key=lambda op: -op.self_cpu_time_total)[:20]
    return {
        "model_dir": str(model_dir),
        "profiled_steps": steps,
        "profiled_step_seconds": [round(s, 3) for s in step_seconds],
        "torch_threads": torch.get_num_threads(),
        "by_part": grouped(parts),
        "by_part_forward_and_backward": parts,
        "top_operators_by_self_time": {
            op.key: {
                "seconds_per_step": round(op.self_cpu_time_total / 1e6 / steps, 4),
                "calls_per_step": op.count // steps,
            }
            for op in operators
        },
    }
