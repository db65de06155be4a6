"""Benchmark profiles: how big each run is. Only the scale changes between profiles, never the protocol."""

from __future__ import annotations

from dataclasses import dataclass, field

TASKS = ("superdiagnostic", "subdiagnostic", "form", "rhythm")


@dataclass(frozen=True)
class Profile:
    name: str
    pack_name: str  # packs are shared by profiles with the same data (the gpu and gpu-tiny runs differ in scale only)
    pool_records: int | None  # None: the whole 6,000-record pool
    eval_records: int | None  # None: all of ../shared/ptb-xl
    caption_eval_records: int | None  # fold-10 records captioned as references for caption quality
    encoder_size: str  # EsiEcgConfig preset
    steps: int  # pretraining optimiser steps, the same for every pretrained arm
    batch_size: int
    learning_rate: float = 1e-3
    warmup_fraction: float = 0.1
    max_text_length: int = 128
    decoder_layers: int = 2
    decoder_width: int = 128
    pretrain_seeds: tuple[int, ...] = (0, 1, 2)  # for the arms in MULTI_SEED_ARMS
    probe_seeds: tuple[int, ...] = (0, 1, 2)
    fractions: tuple[float, ...] = (0.01, 0.1, 1.0)
    tasks: tuple[str, ...] = TASKS
    probe_epochs: int = 200
    probe_patience: int = 20
    scratch_epochs: int = 50
    scratch_patience: int = 8
    scratch_fractions: tuple[float, ...] = (0.01, 0.1, 1.0)
    caption_records: int = 200  # fold-10 ECGs captioned per decoder arm
    bootstrap_samples: int = 1000
    signal_quantum_uv: int = 1  # pack resolution; PTB-XL's own is 1 uV
    text_embedding_dims: int | None = None  # PCA of the cached text embeddings (None: all 384)
    bf16: bool = False
    loader_workers: int = 0  # processes preparing augmented pretraining batches ahead of the step (0: in line)
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
        max_text_length=48,
        decoder_layers=1,
        decoder_width=64,
        pretrain_seeds=(0, 1),
        probe_seeds=(0, 1),
        fractions=(0.1, 1.0),
        tasks=("superdiagnostic", "rhythm"),
        probe_epochs=20,
        probe_patience=5,
        scratch_epochs=2,
        scratch_patience=1,
        scratch_fractions=(1.0,),
        caption_records=4,
        bootstrap_samples=200,
        signal_quantum_uv=8,  # the gpu profile's compact paths, exercised by the CPU test
        text_embedding_dims=16,
        notes=("smoke test: seconds of compute, numbers carry no evidence",),
    ),
    "cpu": Profile(
        name="cpu",
        pack_name="full",
        pool_records=None,
        eval_records=None,
        caption_eval_records=200,
        encoder_size="atto",
        steps=150,
        batch_size=64,
        scratch_epochs=20,
        scratch_patience=4,
        scratch_fractions=(0.1, 0.01),
        notes=(
            "2-core CPU budget (~2.5 h on an idle machine, estimated from single-step timings): atto encoder "
            "(3.2 M parameters), 150 steps of batch 64 per pretrained arm (1.6 passes over the pool), frozen "
            "all-MiniLM-L6-v2 text tower with embeddings cached per caption, 2-layer 128-wide caption decoder; "
            "supervised-from-scratch at 10% and 1% labels only (20 epochs max, patience 4)",
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
        decoder_layers=4,
        decoder_width=256,
        caption_records=364,
        signal_quantum_uv=8,
        text_embedding_dims=64,
        bf16=True,
        loader_workers=12,  # the H200 machine has 16 cores
        notes=(
            "one H200, bf16: pico encoder, 1,500 steps of batch 256 on the whole pool, 4-layer decoder; "
            "pack at 8 uV resolution (limb leads III, aVR, aVL, aVF derived from I and II) and text embeddings "
            "reduced to 64 PCA dimensions so that code + pack stay under the 64 MiB carry limit",
        ),
    ),
}
# The arms run with every pretraining seed; the others with the first seed only.
MULTI_SEED_ARMS = ("esi_full", "statements_only", "supervised_pool")
