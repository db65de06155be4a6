"""Benchmark profiles: how big each run is. Only the scale changes between profiles, never the protocol."""

from __future__ import annotations

from dataclasses import dataclass, field

TASKS = ("superdiagnostic", "subdiagnostic", "form", "rhythm")
# Written into every result file; the report reads only files of this protocol. The first grid (fold-10-only
# probes, its own training loop, float16 scores) wrote none and lives in another results folder.
PROTOCOL = "crossfit-paired-v2"
RESULTS_ROOT = "benchmarks/results/esi_claim/v2"
# The claim, declared before any run of this protocol: esi_full against each of these, on every task, at these
# label fractions. Every other comparison in the report is exploratory.
CLAIM_BASELINES = ("statements_only", "supervised_pool")
CLAIM_FRACTIONS = (0.01, 0.1)
EQUIVALENCE_MARGIN = 0.02


@dataclass(frozen=True)
class Profile:
    name: str
    pack_name: str  # packs are shared by profiles with the same data (the gpu and gpu-tiny runs differ in scale only)
    pool_records: int | None  # None: the whole 6,000-record pool
    eval_records: int | None  # None: all of ../shared/ptb-xl
    caption_eval_records: int | None  # fold-10 records captioned as references (kept in the pack)
    encoder_size: str  # EsiEcgConfig preset
    steps: int  # pretraining optimiser steps of the grid, the same for every pretrained arm (--steps overrides)
    batch_size: int
    curve_steps: tuple[int, ...] = (150, 600, 1200)  # the learning curve's step counts (--stage curve)
    curve_arms: tuple[str, ...] = ("esi_full", "statements_only")
    learning_rate: float = 1e-3
    warmup_fraction: float = 0.1
    max_text_length: int = 320  # esi-train's default: the full variant's texts have a median of ~220 tokens
    # The caption decoder over the ~1,000 tokens the pool's texts use, not all 30,522 (esi-train --trim-vocabulary):
    # the full output layer was most of a CPU step.
    trim_vocabulary: bool = True
    decoder_layers: int = 2
    decoder_width: int = 128
    projection_dim: int = 128
    checkpointing_steps: int = 50  # esi.train checkpoints: an interrupted grid resumes from the last one
    pretrain_seeds: tuple[int, ...] = (0, 1, 2, 3, 4)  # for the arms in MULTI_SEED_ARMS
    # None: each encoder is probed once, with its pretraining seed's label subsets (arms of a seed share them, and
    # the seed resampling of the report then covers the choice of subset as well); a tuple: every encoder, each.
    probe_seeds: tuple[int, ...] | None = None
    scratch_seeds: tuple[int, ...] = (0, 1)
    fractions: tuple[float, ...] = (0.01, 0.1, 1.0)
    tasks: tuple[str, ...] = TASKS
    probe_epochs: int = 200
    probe_patience: int = 20
    scratch_epochs: int = 200  # an upper bound: training stops when fold 9 macro AUROC stops improving
    scratch_patience: int = 10
    scratch_fractions: tuple[float, ...] = (0.01, 0.1)
    bootstrap_samples: int = 2000
    signal_quantum_uv: int = 1  # pack resolution; PTB-XL's own is 1 uV
    text_embedding_dims: int | None = None  # PCA of the cached text embeddings (None: all 384, the real tower)
    bf16: bool = False
    loader_workers: int = 0  # DataLoader worker processes preparing augmented batches ahead of the step
    notes: tuple[str, ...] = field(default_factory=tuple)


PROFILES = {
    "tiny": Profile(
        name="tiny",
        pack_name="tiny",
        pool_records=48,
        eval_records=300,
        caption_eval_records=8,
        encoder_size="atto",
        steps=4,
        batch_size=8,
        curve_steps=(2, 4),
        max_text_length=48,
        decoder_layers=1,
        decoder_width=64,
        projection_dim=32,
        checkpointing_steps=2,
        pretrain_seeds=(0, 1),
        probe_seeds=(0,),
        scratch_seeds=(0,),
        fractions=(0.1, 1.0),
        tasks=("superdiagnostic", "rhythm"),
        probe_epochs=20,
        probe_patience=5,
        scratch_epochs=2,
        scratch_patience=1,
        scratch_fractions=(1.0,),
        bootstrap_samples=200,
        signal_quantum_uv=8,  # the gpu profile's compact paths, exercised by the CPU test
        notes=("smoke test: seconds of compute, numbers carry no evidence",),
    ),
    "cpu": Profile(
        name="cpu",
        pack_name="full",
        pool_records=None,
        eval_records=None,
        caption_eval_records=200,
        encoder_size="atto",
        steps=1200,
        batch_size=64,
        notes=(
            "2-core CPU: atto encoder (3.2 M parameters), batch 64, frozen all-MiniLM-L6-v2 text tower whose "
            "embeddings are computed once per caption, 2-layer 128-wide caption decoder; pretrained through "
            "esi.train (the code behind esi-train); probes cross-fitted over the 10 PTB-XL folds",
        ),
    ),
    "gpu": Profile(
        name="gpu",
        pack_name="gpu",
        pool_records=None,
        eval_records=None,
        caption_eval_records=364,
        encoder_size="pico",
        steps=1500,
        batch_size=256,
        curve_steps=(375, 1500),
        decoder_layers=4,
        decoder_width=256,
        projection_dim=256,
        checkpointing_steps=250,
        pretrain_seeds=(0, 1, 2),
        signal_quantum_uv=8,
        text_embedding_dims=64,
        bf16=True,
        loader_workers=12,  # the accelerator machines have 16 cores
        notes=(
            "one H100/H200, bf16: pico encoder, 1,500 steps of batch 256 on the whole pool, 4-layer decoder; "
            "pack at 8 uV resolution and text embeddings reduced to 64 PCA dimensions (a placeholder text tower of "
            "that width stands in for MiniLM) so that code + pack fit the 64 MiB carry limit; needs the `datasets` "
            "wheel (and dill, multiprocess) carried, as esi.train reads its inputs through it",
        ),
    ),
}
# The arms run with every pretraining seed; the others with the first seed only.
MULTI_SEED_ARMS = ("esi_full", "statements_only", "supervised_pool")
