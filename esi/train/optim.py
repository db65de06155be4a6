"""Optimizer and learning-rate schedule for pretraining."""

from __future__ import annotations

import torch
from torch import nn
from transformers import get_cosine_schedule_with_warmup
from transformers.trainer_pt_utils import get_parameter_names

from esi.train.arguments import OptimizationArguments

# Parameters that must not shrink towards zero: biases, every normalisation's scale and shift
# (LayerNorm, the ConvNeXt stem/downsampling norms, GRN's gamma/beta), embeddings and CLIP's
# temperature. Matched by module type and by name, as transformers' Trainer does.
NO_DECAY_LAYER_TYPES = (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._BatchNorm, nn.Embedding)
NO_DECAY_NAME_PATTERNS = [r"bias", r"norm", r"(?:^|\.)grn\.", r"embed", r"logit_scale"]


def decay_parameter_names(model: nn.Module) -> set[str]:
    return set(get_parameter_names(model, NO_DECAY_LAYER_TYPES, NO_DECAY_NAME_PATTERNS))


def build_optimizer(model: nn.Module, args: OptimizationArguments) -> torch.optim.AdamW:
    decay = decay_parameter_names(model)
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    return torch.optim.AdamW(
        [
            {"params": [p for n, p in trainable if n in decay], "weight_decay": args.weight_decay},
            {"params": [p for n, p in trainable if n not in decay], "weight_decay": 0.0},
        ],
        lr=args.learning_rate,
        # One fused kernel per parameter group (CPU and CUDA since torch 2.4): measured several times faster
        # than the default multi-tensor step on CPU (benchmarks/bench_train.py).
        fused=True,
    )


def build_scheduler(optimizer: torch.optim.Optimizer, args: OptimizationArguments, max_steps: int):
    """Cosine with warm-up over `max_steps` OPTIMIZER steps.

    Deliberately not passed to `accelerator.prepare`: Accelerate's wrapper steps a scheduler once per
    process per optimizer step (split_batches=False), which made an N-process run warm up N times too
    fast and restart its cosine. The loop steps it once per optimizer step, on every process alike.
    """
    warmup = min(args.warmup_steps, max_steps // 10 + 1)
    return get_cosine_schedule_with_warmup(optimizer, num_warmup_steps=warmup, num_training_steps=max_steps)
