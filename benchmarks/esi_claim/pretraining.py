"""Pretraining of the claim's arms through `esi.train` (the code behind `esi-train`), from the pack.

The pack becomes the inputs `esi-train` reads: one signals folder of the pool (Parquet), one captions folder
per text variant and one file of precomputed text-tower embeddings per variant (`--text-embeddings`). A text
arm is then exactly the command `esi_train_command` prints; the baselines without an ESI loss (statement
labels of the pool, two augmented views) run the same `esi.train.pretrain.pretrain` with their own
objective, so every arm shares model construction, optimiser, schedule, batches, augmentations,
checkpointing and resume.

Pairing: with the same seed, every arm starts from the same ECG encoder (ESI's towers are initialised in a
fixed order, the ECG encoder first) and trains on the same batches (the sampler and augmentations are
seeded by the seed); `esi.train` writes both digests into the training summary, and the grid copies them
into each result file.
"""

from __future__ import annotations

import json
import lzma
import shlex
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.esi_claim.codec import LEADS
from benchmarks.esi_claim.profiles import Profile
from esi.data.augment import EcgAugmentConfig, augment_ecg
from esi.text_encoder import default_text_model_path
from modeling_esi import EsiFeatureExtractor, EsiModel
from modeling_esi.modeling_esi import contrastive_loss

EVALUATION_RECORDS = "evaluation_records"  # the folder of write_train_inputs holding the evaluation records' ids


@dataclass(frozen=True)
class Arm:
    name: str
    kind: str  # esi | supervised_pool | ssl | random | scratch
    question: str
    variant: str = "statements"  # the captions esi.train reads (baselines read none of them but batch alike)
    contrastive_weight: float = 1.0
    caption_weight: float = 2.0
    train_text_tower: bool = False
    same_text_positives: bool = True  # False: CLIP's one positive per ECG, identical captions count as negatives


# In the order the grid runs them: the claim's arms first, so a grid cut short has answered the claim.
ARMS = (
    Arm("esi_full", "esi", "the method", "full"),
    Arm("statements_only", "esi", "does CQA's enrichment beat plain statements?", "statements"),
    Arm("supervised_pool", "supervised_pool", "does text add anything beyond the labels it carries?"),
    Arm("random_init", "random", "the floor"),
    Arm("supervised_scratch", "scratch", "is pretraining worth it at all?"),
    Arm("ssl_two_views", "ssl", "does text beat no text? (contrastive on two augmented views)"),
    Arm(
        "esi_full_one_positive", "esi", "do same-text positives matter? (the method)", "full", same_text_positives=False
    ),
    Arm(
        "statements_only_one_positive",
        "esi",
        "do same-text positives matter? (plain statements, where many captions are identical)",
        "statements",
        same_text_positives=False,
    ),
    Arm("esi_no_knowledge", "esi", "does the knowledge base add anything?", "no_knowledge"),
    Arm("measurements_only", "esi", "how much comes from the signal measurements alone?", "measurements"),
    Arm("contrastive_only", "esi", "which loss does the work? (contrastive)", "full", 1.0, 0.0),
    Arm("caption_only", "esi", "which loss does the work? (caption)", "full", 0.0, 2.0),
    # The paper trains its text tower: not in any default list (a trained MiniLM per step is beyond the CPU
    # budget, and its weights do not fit the accelerator's carry limit); run them with --arms.
    Arm("esi_full_tower", "esi", "the method, text tower trained", "full", train_text_tower=True),
    Arm("statements_only_tower", "esi", "plain statements, text tower trained", "statements", train_text_tower=True),
)
ARMS_BY_NAME = {arm.name: arm for arm in ARMS}


def atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def parquet_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return sink.getvalue().to_pybytes()


def write_train_inputs(pack, folder: Path) -> Path:
    """`folder/signals`, `folder/captions_<variant>` (Parquet, split `train`), `folder/text_emb_<variant>.npz` and
    `folder/evaluation_records` (the evaluation records' ids, for `esi-train --evaluation-records`) from the pack,
    written once (a later call with the same pack reuses them)."""
    stamp = folder / "pack_meta_sha256.txt"
    if stamp.exists() and stamp.read_text() == pack.meta_sha256 and (folder / EVALUATION_RECORDS).exists():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    signals = np.ascontiguousarray(pack.pool_signals, dtype=np.float32)  # (N, 12, T) millivolts
    n, leads, samples = signals.shape
    rows = pa.ListArray.from_arrays(
        pa.array(np.arange(0, n * leads + 1, leads, dtype=np.int32)),
        pa.ListArray.from_arrays(
            pa.array(np.arange(0, n * leads * samples + 1, samples, dtype=np.int32)), pa.array(signals.ravel())
        ),
    )
    ecg_ids = [r["ecg_id"] for r in pack.pool]
    table = pa.table(
        {
            "ecg_id": pa.array(ecg_ids, pa.int64()),
            "patient_id": pa.array([r["patient_id"] for r in pack.pool], pa.int64()),
            "signal": rows,
            "sampling_rate": pa.array([pack.meta["sampling_rate"]] * n, pa.int64()),
            "lead_names": pa.array([list(LEADS)] * n, pa.list_(pa.string())),
        }
    )
    (folder / "signals" / "data").mkdir(parents=True, exist_ok=True)
    atomic_write(folder / "signals" / "data" / "train-00000-of-00001.parquet", parquet_bytes(table))
    # esi-train checks these against its pretraining split and writes the overlap into the model's card.
    evaluation = pa.table(
        {"ecg_id": pa.array(pack.ecg_ids, pa.int64()), "patient_id": pa.array(pack.patients, pa.int64())}
    )
    (folder / EVALUATION_RECORDS / "data").mkdir(parents=True, exist_ok=True)
    atomic_write(folder / EVALUATION_RECORDS / "data" / "test-00000-of-00001.parquet", parquet_bytes(evaluation))
    texts = json.loads(lzma.decompress((pack.folder / "pool_texts.json.xz").read_bytes()))
    for variant in pack.meta["text_variants"]:
        captions = [t[variant] for t in texts]
        (folder / f"captions_{variant}" / "data").mkdir(parents=True, exist_ok=True)
        atomic_write(
            folder / f"captions_{variant}" / "data" / "train-00000-of-00001.parquet",
            parquet_bytes(pa.table({"ecg_id": pa.array(ecg_ids, pa.int64()), "caption": captions})),
        )
        embeddings = np.load(pack.folder / f"text_emb_{variant}.npy").astype(np.float32)
        first = dict.fromkeys(captions)  # one row per distinct caption
        index = {c: i for i, c in reversed(list(enumerate(captions)))}
        with open(folder / f"text_emb_{variant}.npz.tmp", "wb") as f:
            np.savez(
                f,
                captions=np.array(list(first)),
                embeddings=embeddings[[index[c] for c in first]],
                max_text_length=np.array(pack.meta["max_text_length"]),
            )
        (folder / f"text_emb_{variant}.npz.tmp").replace(folder / f"text_emb_{variant}.npz")
    stamp.write_text(pack.meta_sha256)
    return folder


def text_model_folder(pack) -> Path:
    """The real tower where its embeddings are used whole; the pack's config-only folder where they were reduced."""
    return default_text_model_path() if pack.meta["text_embedding_dims"] == 384 else pack.folder / "tokenizer"


def esi_train_args(arm: Arm, profile: Profile, pack, inputs: Path, seed: int, steps: int, output_dir: Path) -> list:
    """The `esi-train` arguments of one pretraining run of `arm` (baselines: the same, their objective aside)."""
    args = [
        "--signals", str(inputs / "signals"), "--captions", str(inputs / f"captions_{arm.variant}"),
        "--eval-split", "none", "--output-dir", str(output_dir),
        "--evaluation-records", str(inputs / EVALUATION_RECORDS),
        "--text-model", str(text_model_folder(pack)), "--config", profile.encoder_size,
        "--decoder-layers", str(profile.decoder_layers), "--decoder-width", str(profile.decoder_width),
        "--projection-dim", str(profile.projection_dim), "--max-text-length", str(profile.max_text_length),
        "--contrastive-loss-weight", str(arm.contrastive_weight), "--caption-loss-weight", str(arm.caption_weight),
        "--per-device-batch-size", str(profile.batch_size), "--learning-rate", str(profile.learning_rate),
        "--warmup-steps", str(max(1, round(profile.warmup_fraction * steps))), "--max-steps", str(steps),
        "--checkpointing-steps", str(profile.checkpointing_steps), "--checkpoints-total-limit", "1",
        "--logging-steps", str(max(1, steps // 20)), "--num-workers", str(profile.loader_workers),
        "--mixed-precision", "bf16" if profile.bf16 else "no", "--keep-in-memory",
        "--report-to", "none", "--seed", str(seed), "--resume-from-checkpoint", "latest",
    ]  # fmt: skip
    if profile.trim_vocabulary:
        args.append("--trim-vocabulary")
    if not arm.same_text_positives:
        args.append("--no-same-text-positives")
    if not arm.train_text_tower:
        args += ["--freeze-text-tower", "--text-embeddings", str(inputs / f"text_emb_{arm.variant}.npz")]
    return args


def esi_train_command(args: list[str]) -> str:
    return shlex.join(["esi-train", *args])


class BaselineObjective(nn.Module):
    """Called as ESI is (`(**batch, return_loss=True)`), so `esi.train` trains it like the model it wraps."""

    def __init__(self, model: EsiModel):
        super().__init__()
        self.model = model

    def encode(self, input_values: torch.Tensor, ecg_attention_mask: torch.Tensor | None) -> torch.Tensor:
        return self.model.ecg_model(input_values, ecg_attention_mask).pooler_output


@dataclass
class BaselineOutput:
    loss: torch.Tensor


class SupervisedPool(BaselineObjective):
    """Multi-label BCE on the pool's SCP statements (the labels its captions carry), from the ECG encoder."""

    def __init__(self, model: EsiModel, statements_by_ecg_id: dict[int, np.ndarray]):
        super().__init__(model)
        self.targets = statements_by_ecg_id
        table = np.stack(list(statements_by_ecg_id.values()))
        self.head = nn.Linear(model.config.ecg_config.hidden_sizes[-1], table.shape[1])
        # Start at the log prior odds of each statement: from a zero bias the first large BCE gradient (most
        # statements are rare) was met by collapsing the encoder to one embedding (standard prior initialisation).
        prior = table.mean(0).clip(0.5 / len(table), 1 - 0.5 / len(table))
        with torch.no_grad():
            self.head.bias.copy_(torch.from_numpy(np.log(prior / (1 - prior))).float())

    def forward(self, input_values, ecg_attention_mask=None, ecg_ids=None, return_loss=True, **_) -> BaselineOutput:
        target = torch.from_numpy(np.stack([self.targets[int(i)] for i in ecg_ids])).to(input_values.device)
        logits = self.head(self.encode(input_values, ecg_attention_mask)).float()
        return BaselineOutput(F.binary_cross_entropy_with_logits(logits, target))


class TwoViews(BaselineObjective):
    """Two-view contrastive SSL: the batch's augmented ECGs (the text arms' view) against a second augmentation
    of the same batch, drawn by `esi.data.augment` from (seed, ecg_id, micro-batch count): resumable, since the
    count is a buffer saved with the checkpoints."""

    def __init__(self, model: EsiModel, seed: int, lead_names: list[str]):
        super().__init__(model)
        self.seed, self.lead_names = seed, lead_names
        self.extractor = EsiFeatureExtractor(sampling_rate=model.config.ecg_config.sampling_rate)
        self.register_buffer("batches_seen", torch.zeros((), dtype=torch.long))

    def second_view(self, input_values: torch.Tensor, ecg_attention_mask, ecg_ids) -> tuple[torch.Tensor, ...]:
        rate, config, count = self.extractor.sampling_rate, EcgAugmentConfig(), int(self.batches_seen)
        lengths = (
            ecg_attention_mask.sum(1) if ecg_attention_mask is not None else [input_values.shape[-1]] * len(ecg_ids)
        )
        views = [
            augment_ecg(
                x[:, : int(n)].float().cpu().numpy(),
                rate,
                self.lead_names,
                config,
                np.random.default_rng([self.seed, int(i), count, 1]),
            )  # fmt: skip
            for x, n, i in zip(input_values, lengths, ecg_ids, strict=True)
        ]
        features = self.extractor(views, sampling_rate=rate, lead_names=self.lead_names, return_tensors="pt")
        device = input_values.device
        return features["input_values"].to(device), features["ecg_attention_mask"].to(device)

    def forward(self, input_values, ecg_attention_mask=None, ecg_ids=None, return_loss=True, **_) -> BaselineOutput:
        other = self.second_view(input_values, ecg_attention_mask, ecg_ids)
        self.batches_seen += 1
        a = F.normalize(self.model.ecg_projection(self.encode(input_values, ecg_attention_mask)), dim=-1)
        b = F.normalize(self.model.ecg_projection(self.encode(*other)), dim=-1)
        loss, _, _ = contrastive_loss(a, b, self.model.clamped_logit_scale())
        return BaselineOutput(loss)


def initial_model(profile: Profile, pack, inputs: Path, seed: int) -> EsiModel:
    """The model every arm of this seed starts from, built by the code `esi.train` builds it with: random_init
    is exactly this, and is rebuilt from its seed alone."""
    from accelerate.utils import set_seed

    from esi.train.arguments import parse_args
    from esi.train.pretrain import build_model

    args = esi_train_args(ARMS_BY_NAME["esi_full"], profile, pack, inputs, seed, 1, inputs / "unused")
    data_args, model_args, _, _ = parse_args(args)
    with np.load(model_args.text_embeddings) as saved:
        width = saved["embeddings"].shape[1]
    set_seed(seed)
    return build_model(model_args, data_args.max_text_length, Path(model_args.text_model), width)


def pretrain_arm(
    arm: Arm, profile: Profile, pack, inputs: Path, seed: int, steps: int, output_dir: Path
) -> tuple[Path, dict]:
    """Pretrain (or resume, or reuse a finished run of) one arm; returns the model folder and run figures."""
    from esi.train.arguments import parse_args
    from esi.train.pretrain import pretrain

    args = esi_train_args(arm, profile, pack, inputs, seed, steps, output_dir)
    model_dir = output_dir / "model"
    started = time.perf_counter()
    if not (model_dir / "training_summary.json").exists():
        objective = None
        if arm.kind == "supervised_pool":
            statements = dict(zip((r["ecg_id"] for r in pack.pool), pack.pool_statements(), strict=True))
            objective = lambda model: SupervisedPool(model, statements)  # noqa: E731
        elif arm.kind == "ssl":
            objective = lambda model: TwoViews(model, seed, list(LEADS))  # noqa: E731
        pretrain(*parse_args(args), objective=objective)
        shutil.rmtree(output_dir / "checkpoints", ignore_errors=True)  # finished: only the model folder is kept
    summary = json.loads((model_dir / "training_summary.json").read_text())
    return model_dir, {
        "esi_train_command": esi_train_command(args) + ("" if arm.kind == "esi" else f"  # + {arm.kind} objective"),
        "steps": summary["steps"],
        "train_seconds": summary["train_seconds"],
        "train_cpu_seconds": summary["train_cpu_seconds"],
        "resumed_from_step": summary["resumed_from_step"],
        "wall_seconds_this_call": round(time.perf_counter() - started, 1),
        "initial_ecg_encoder_sha256": summary["initial_ecg_encoder_sha256"],
        "batch_ecg_ids_sha256": summary["batch_ecg_ids_sha256"],
        "final_losses": summary["final_losses"],
        "first_losses": summary["log_history"][0] if summary["log_history"] else None,
        "caption_truncation": summary["caption_truncation"],
    }
