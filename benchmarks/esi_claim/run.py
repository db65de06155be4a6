"""The claim grid: pretrain every arm on the pool, evaluate each on PTB-XL, one JSON per run (resumable).

Reads only the pack (`pack.py`) and needs only torch, transformers, numpy and scikit-learn, so the
same command runs on this CPU (`--profile cpu`/`tiny`) and on a bare accelerator machine (`gpu`).

    python -m benchmarks.esi_claim.run --profile cpu [--arms esi_full,random_init] [--results-dir DIR]

Every pretrained arm shares the encoder, steps, batch, optimiser (AdamW, cosine schedule with warm-up)
and augmentations; every arm is evaluated by the same linear probe (`esi.eval.probe`, the recipe of
`finetune.py --method linear_probe`). A run whose JSON exists is skipped.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shlex
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers import BertConfig, get_cosine_schedule_with_warmup

from benchmarks.esi_claim.codec import LEADS, decode
from benchmarks.esi_claim.profiles import MULTI_SEED_ARMS, PROFILES, Profile
from esi.checksum import sha256_file
from esi.data.augment import EcgAugmentConfig, augment_ecg
from esi.eval.probe import TrainConfig, choose_thresholds, fit_linear_probe
from esi.eval.sampling import sample_label_fraction
from esi.eval.stats import bootstrap_interval, macro_auroc
from esi.eval.subject_id import probe_ranks
from esi.eval.text_overlap import pair_scores
from modeling_esi import EsiConfig, EsiFeatureExtractor, EsiModel
from modeling_esi.modeling_esi import caption_targets, contrastive_loss

logger = logging.getLogger("esi_claim.run")


@dataclass(frozen=True)
class Arm:
    name: str
    kind: str  # esi | supervised_pool | ssl | random | scratch
    question: str
    variant: str | None = None
    contrastive_weight: float = 0.0
    caption_weight: float = 0.0


# In the order the grid runs them: the method and the comparisons the targets name first, so a
# grid cut short (the runs are resumable) has answered the most important questions.
ARMS = (
    Arm("esi_full", "esi", "the method", "full", 1.0, 2.0),
    Arm("statements_only", "esi", "does CQA's enrichment beat plain statements?", "statements", 1.0, 2.0),
    Arm("random_init", "random", "the floor"),
    Arm("supervised_scratch", "scratch", "is pretraining worth it at all?"),
    Arm("supervised_pool", "supervised_pool", "does text add anything beyond the labels it carries?"),
    Arm("ssl_two_views", "ssl", "does text beat no text? (contrastive on two augmented views)"),
    Arm("esi_no_knowledge", "esi", "does the knowledge base add anything?", "no_knowledge", 1.0, 2.0),
    Arm("measurements_only", "esi", "how much comes from the signal measurements alone?", "measurements", 1.0, 2.0),
    Arm("contrastive_only", "esi", "which loss does the work? (contrastive)", "full", 1.0, 0.0),
    Arm("caption_only", "esi", "which loss does the work? (caption)", "full", 0.0, 2.0),
)
ARMS_BY_NAME = {arm.name: arm for arm in ARMS}


# ---------------------------------------------------------------- data


class Pack:
    """The compact inputs written by `pack.py`."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.meta = json.loads((folder / "meta.json").read_text())
        self.meta_sha256 = sha256_file(folder / "meta.json")
        self.pool = [json.loads(line) for line in open(folder / "pool.jsonl")]
        self.eval = [json.loads(line) for line in open(folder / "eval.jsonl")]
        self.pool_signals = decode((folder / "pool_signals.bin").read_bytes())
        self.eval_signals = decode((folder / "eval_signals.bin").read_bytes())
        self.folds = np.array([r["strat_fold"] for r in self.eval])
        self.patients = np.array([r["patient_id"] for r in self.eval])
        self.ecg_ids = np.array([r["ecg_id"] for r in self.eval])
        self.references = {r["ecg_id"]: r["texts"] for r in map(json.loads, open(folder / "references.jsonl"))}
        self.zero_shot = json.loads((folder / "zero_shot.json").read_text())
        # The caption decoder predicts over the tokenizer ids that occur in the pool's texts (about 900 of
        # MiniLM's 30,522 for template captions), in every variant so that all arms share one vocabulary:
        # a full-vocabulary output layer would be most of a CPU step and can only learn to avoid the rest.
        special = self.meta["special_tokens"]
        used = [np.load(folder / f"text_ids_{v}.npy").ravel() for v in self.meta["text_variants"]]
        self.vocabulary = np.unique(np.concatenate([*used, [special["pad"], special["bos"], special["eos"]]]))
        self.pad, self.bos, self.eos = (
            int(np.searchsorted(self.vocabulary, special[k])) for k in ("pad", "bos", "eos")
        )

    def text(self, variant: str) -> tuple[np.ndarray, np.ndarray]:
        """(cached text embeddings, decoder token ids in the pack's vocabulary) of the pool for one variant."""
        emb = np.load(self.folder / f"text_emb_{variant}.npy").astype(np.float32)
        ids = np.load(self.folder / f"text_ids_{variant}.npy").astype(np.int64)
        return emb, np.searchsorted(self.vocabulary, ids)

    def labels(self, task: str) -> np.ndarray:
        names = self.meta["class_names"][task]
        out = np.zeros((len(self.eval), len(names)), dtype=np.int64)
        for i, r in enumerate(self.eval):
            out[i, r["labels"][task]] = 1
        return out

    def pool_statements(self) -> np.ndarray:
        vocab = {code: k for k, code in enumerate(self.meta["statement_vocabulary"])}
        out = np.zeros((len(self.pool), len(vocab)), dtype=np.float32)
        for i, r in enumerate(self.pool):
            out[i, [vocab[c] for c in r["statements"]]] = 1
        return out


def featurize(extractor: EsiFeatureExtractor, signals, rate: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_values, ecg_attention_mask): augmented crops are shorter, and their padding must stay masked."""
    features = extractor(list(signals), sampling_rate=rate, lead_names=LEADS, return_tensors="pt")
    return features["input_values"], features["ecg_attention_mask"]


# ---------------------------------------------------------------- models


def build_model(profile: Profile, pack: Pack) -> EsiModel:
    """ESI with the profile's encoder; the text tower reads cached embeddings, so a 1-layer placeholder
    of the embeddings' width stands in for BERT (it is never called)."""
    dims = pack.meta["text_embedding_dims"]
    config = EsiConfig(
        ecg_config={"size": profile.encoder_size},
        decoder_config={
            "num_hidden_layers": profile.decoder_layers,
            "hidden_size": profile.decoder_width,
            "num_attention_heads": max(1, profile.decoder_width // 64),
            "intermediate_size": 4 * profile.decoder_width,
            "max_position_embeddings": profile.max_text_length,
        },
        projection_dim=128,
    )
    config.pad_token_id, config.bos_token_id, config.eos_token_id = pack.pad, pack.bos, pack.eos
    config.text_config = BertConfig(
        vocab_size=len(pack.vocabulary),
        hidden_size=dims,
        num_hidden_layers=1,
        num_attention_heads=1,
        intermediate_size=dims,
    )
    return EsiModel(config)


def augmented_batch(
    signals: np.ndarray, rows: np.ndarray, rate: int, seed: int, step: int, view: int
) -> list[np.ndarray]:
    """Augmented copies (a crop may be shorter), seeded by (seed, step, view, row): every arm sees the same ones."""
    config = EcgAugmentConfig()
    return [
        augment_ecg(signals[r], rate, LEADS, config, np.random.default_rng([seed, step, view, int(r)])) for r in rows
    ]


class PretrainingBatches(torch.utils.data.Dataset):
    """Step -> that step's featurized, augmented views, so DataLoader workers prepare batches ahead of the
    accelerator (on one GPU the CPU-side augmentation of a 256-record batch takes longer than the step).

    The rows of every step are drawn up front from one generator (a new permutation of the pool whenever a
    batch would run past its end), and each augmentation is seeded by (seed, step, view, row): the batches are
    the same whatever the number of workers.
    """

    def __init__(self, signals: np.ndarray, rate: int, seed: int, steps: int, batch_size: int, views: int):
        if len(signals) < batch_size:
            raise ValueError(f"the pack's pool has {len(signals)} records, fewer than one batch of {batch_size}")
        self.signals, self.rate, self.seed, self.views = signals, rate, seed, views
        self.extractor = EsiFeatureExtractor(sampling_rate=rate)
        order = np.random.default_rng(seed)
        permutation, cursor, self.rows = order.permutation(len(signals)), 0, []
        for _ in range(steps):
            if cursor + batch_size > len(signals):
                permutation, cursor = order.permutation(len(signals)), 0
            self.rows.append(permutation[cursor : cursor + batch_size])
            cursor += batch_size

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, step: int) -> tuple[np.ndarray, list[tuple[torch.Tensor, torch.Tensor]]]:
        """(pool rows, [(input_values, ecg_attention_mask) per view])."""
        rows = self.rows[step]
        return rows, [
            featurize(self.extractor, augmented_batch(self.signals, rows, self.rate, self.seed, step, view), self.rate)
            for view in range(self.views)
        ]


def pretrain(arm: Arm, profile: Profile, pack: Pack, seed: int, device: torch.device) -> tuple[EsiModel, dict]:
    torch.manual_seed(seed)
    model = build_model(profile, pack).to(device)
    if arm.kind == "random":
        return model, {"steps": 0}
    head = None
    if arm.kind == "esi":
        text_emb, text_ids = pack.text(arm.variant)
        pad = pack.pad
    elif arm.kind == "supervised_pool":
        targets = pack.pool_statements()
        head = nn.Linear(model.config.ecg_config.hidden_sizes[-1], targets.shape[1]).to(device)
        # Start the head at the log prior odds of each statement. From a zero bias, the first steps' large
        # BCE gradient (most of the 47 statements are rare) is most cheaply met by collapsing the encoder
        # to one constant embedding: the first cpu grid's runs ended at the prior's loss with a per-dimension
        # embedding spread of ~2e-4 and probed below random init. This is the standard prior initialisation
        # of a multi-label head, not a tuning in the baseline's favour.
        prior = targets.mean(0).clip(0.5 / len(targets), 1 - 0.5 / len(targets))
        with torch.no_grad():
            head.bias.copy_(torch.from_numpy(np.log(prior / (1 - prior))).float())
    params = [p for p in model.parameters()] + ([] if head is None else list(head.parameters()))
    decay = [p for p in params if p.ndim >= 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.05}, {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}],
        lr=profile.learning_rate,
    )
    scheduler = get_cosine_schedule_with_warmup(optimizer, int(profile.warmup_fraction * profile.steps), profile.steps)
    batches = PretrainingBatches(
        pack.pool_signals,
        pack.meta["sampling_rate"],
        seed,
        profile.steps,
        profile.batch_size,
        views=2 if arm.kind == "ssl" else 1,
    )
    loader = torch.utils.data.DataLoader(
        batches,
        batch_size=None,  # each item is already a batch
        num_workers=profile.loader_workers,
        prefetch_factor=4 if profile.loader_workers else None,
        generator=torch.Generator().manual_seed(seed),  # not the global generator the model's dropout draws from
    )
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=profile.bf16)
    losses, started = [], time.perf_counter()
    model.train()
    for step, (rows, views) in enumerate(loader):
        rows = np.asarray(rows)  # the loader hands numpy arrays over as tensors
        inputs = [[t.to(device, non_blocking=True) for t in view] for view in views]
        with autocast:
            ecg = model.ecg_model(*inputs[0])
            if arm.kind == "esi":
                loss = torch.zeros((), device=device)
                if arm.contrastive_weight:
                    ecg_embeds = F.normalize(model.ecg_projection(ecg.pooler_output), dim=-1)
                    text = torch.from_numpy(text_emb[rows]).to(device)
                    text_embeds = F.normalize(model.text_projection(text), dim=-1)
                    clip, _, _ = contrastive_loss(ecg_embeds, text_embeds, model.clamped_logit_scale())
                    loss = loss + arm.contrastive_weight * clip
                if arm.caption_weight:
                    ids = torch.from_numpy(text_ids[rows]).to(device)
                    mask = (ids != pad).long()
                    logits = model.text_decoder(ids[:, :-1], ecg.last_hidden_state, mask[:, :-1], ecg.token_mask).logits
                    labels = caption_targets(ids, mask)
                    loss = loss + arm.caption_weight * F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten())
            elif arm.kind == "supervised_pool":
                target = torch.from_numpy(targets[rows]).to(device)
                loss = F.binary_cross_entropy_with_logits(head(ecg.pooler_output).float(), target)
            else:  # ssl: two augmented views of each record are each other's positive
                other = model.ecg_model(*inputs[1])
                a = F.normalize(model.ecg_projection(ecg.pooler_output), dim=-1)
                b = F.normalize(model.ecg_projection(other.pooler_output), dim=-1)
                loss, _, _ = contrastive_loss(a, b, model.clamped_logit_scale())
        if not torch.isfinite(loss):
            raise FloatingPointError(f"arm {arm.name} seed {seed}: non-finite loss at step {step}")
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        scheduler.step()
        losses.append(loss.item())
    return model, {
        "steps": profile.steps,
        "seconds": round(time.perf_counter() - started, 1),
        "first_loss": losses[0],
        "final_loss": float(np.mean(losses[-max(1, len(losses) // 10) :])),
    }


@torch.no_grad()
def embed(model: EsiModel, inputs: torch.Tensor, device: torch.device, batch: int = 256) -> np.ndarray:
    model.eval()
    return np.concatenate(
        [
            model.ecg_model(inputs[i : i + batch].to(device)).pooler_output.float().cpu().numpy()
            for i in range(0, len(inputs), batch)
        ]
    )


def embedding_spread(features: np.ndarray) -> dict:
    """How much the evaluation records' embeddings differ: a collapsed encoder (one embedding for every ECG)
    shows a per-dimension spread near 0 and an effective rank near 1, whatever its probe scores."""
    centred = features.astype(np.float64) - features.mean(0)
    variance = np.linalg.svd(centred, compute_uv=False) ** 2
    share = variance / max(variance.sum(), 1e-300)
    return {
        "mean_dimension_std": float(features.std(0).mean()),
        "mean_norm": float(np.linalg.norm(features, axis=1).mean()),
        # exp(entropy of the variance shares): the number of equally used directions
        "effective_rank": float(np.exp(-(share * np.log(share + 1e-300)).sum())),
    }


# ---------------------------------------------------------------- evaluation


def task_rows(pack: Pack, task: str) -> tuple[dict[str, np.ndarray], np.ndarray, list[str]]:
    """Rows of folds 1-8 / 9 / 10 with a label for the task, and the classes kept for evaluation (positives
    in train and test, negatives in test), as `esi.eval.classification.load_task` keeps them."""
    labels = pack.labels(task)
    labelled = labels.sum(1) > 0  # the PTB-XL benchmark drops records without a label for the task
    rows = {
        "train": np.flatnonzero(labelled & (pack.folds <= 8)),
        "validation": np.flatnonzero(labelled & (pack.folds == 9)),
        "test": np.flatnonzero(labelled & (pack.folds == 10)),
    }
    keep = labels[rows["train"]].any(0) & labels[rows["test"]].any(0) & ~labels[rows["test"]].all(0)
    if not keep.any():
        raise ValueError(f"task '{task}': no class has positives in folds 1-8 and in fold 10 and negatives in fold 10")
    names = [n for n, k in zip(pack.meta["class_names"][task], keep, strict=True) if k]
    return rows, labels[:, keep], names


def probe(features: np.ndarray, pack: Pack, task: str, fraction: float, seed: int, profile: Profile) -> dict:
    rows, labels, names = task_rows(pack, task)
    chosen = rows["train"][sample_label_fraction(pack.patients[rows["train"]], labels[rows["train"]], fraction, seed)]
    config = TrainConfig(
        epochs=profile.probe_epochs, batch_size=64, lr=3e-3, patience=profile.probe_patience, seed=seed
    )
    torch.manual_seed(seed)
    head = nn.Linear(features.shape[1], labels.shape[1])
    history = fit_linear_probe(
        head, features[chosen], labels[chosen], features[rows["validation"]], labels[rows["validation"]], config
    )
    with torch.no_grad():
        scores = {s: torch.sigmoid(head(torch.from_numpy(features[rows[s]]).float())).numpy() for s in rows}
    return scored(pack, rows, labels, names, scores, chosen, len(history), profile, seed)


def scored(pack, rows, labels, names, scores, chosen, epochs, profile, seed) -> dict:
    test_y, val_y = labels[rows["test"]], labels[rows["validation"]]
    thresholds = choose_thresholds(val_y, scores["validation"])
    return {
        "metrics": {
            "macro_auroc": macro_auroc(test_y, scores["test"]),
            "macro_auroc_ci": bootstrap_interval(
                macro_auroc, test_y, scores["test"], samples=profile.bootstrap_samples, seed=seed
            ),
            "validation_macro_auroc": macro_auroc(val_y, scores["validation"]),
            "macro_f1_at_validation_thresholds": float(
                np.mean([_f1(test_y[:, k], scores["test"][:, k] >= thresholds[k]) for k in range(len(names))])
            ),
        },
        "classes": names,
        "train_records": int(len(chosen)),
        "train_patients": int(len(np.unique(pack.patients[chosen]))),
        "test_records": int(len(rows["test"])),
        "epochs_run": epochs,
        "_scores": {"test_ecg_ids": pack.ecg_ids[rows["test"]], "labels": test_y, "scores": scores["test"]},
    }


def _f1(y: np.ndarray, decision: np.ndarray) -> float:
    tp = float((y & decision).sum())
    return 0.0 if tp == 0 else 2 * tp / (y.sum() + decision.sum())


def scratch(pack: Pack, task: str, fraction: float, seed: int, profile: Profile, device: torch.device) -> dict:
    """Supervised from scratch on the downstream labels: same encoder and augmentations, cosine LR over
    `scratch_epochs`, early stopping on fold 9 macro AUROC (best epoch kept)."""
    rows, labels, names = task_rows(pack, task)
    chosen = rows["train"][sample_label_fraction(pack.patients[rows["train"]], labels[rows["train"]], fraction, seed)]
    torch.manual_seed(seed)
    model = build_model(profile, pack).to(device)
    head = nn.Linear(model.config.ecg_config.hidden_sizes[-1], labels.shape[1]).to(device)
    params = list(model.ecg_model.parameters()) + list(head.parameters())
    optimizer = torch.optim.AdamW(params, lr=profile.learning_rate, weight_decay=0.05)
    batch = min(profile.batch_size, len(chosen))
    steps_per_epoch = max(1, len(chosen) // batch)
    scheduler = get_cosine_schedule_with_warmup(optimizer, steps_per_epoch, steps_per_epoch * profile.scratch_epochs)
    rate = pack.meta["sampling_rate"]
    extractor = EsiFeatureExtractor(sampling_rate=model.config.ecg_config.sampling_rate)
    # Unaugmented evaluation records are whole 10 s signals: their mask is all ones.
    evaluation = {s: featurize(extractor, pack.eval_signals[rows[s]], rate)[0] for s in ("validation", "test")}
    rng = np.random.default_rng(seed)
    best, best_state, best_epoch, epochs = -np.inf, None, -1, 0

    def predict(split: str) -> np.ndarray:
        model.eval()
        with torch.no_grad():
            return (
                torch.sigmoid(head(torch.from_numpy(embed(model, evaluation[split], device)).to(device))).cpu().numpy()
            )

    for epoch in range(profile.scratch_epochs):
        epochs += 1
        model.train()
        shuffled = rng.permutation(chosen)  # each labelled record once per epoch
        for step in range(steps_per_epoch):
            picked = shuffled[step * batch : (step + 1) * batch]
            x, x_mask = featurize(
                extractor, augmented_batch(pack.eval_signals, picked, rate, seed, epoch * 10_000 + step, 0), rate
            )
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=profile.bf16):
                logits = head(model.ecg_model(x.to(device), x_mask.to(device)).pooler_output).float()
            loss = F.binary_cross_entropy_with_logits(logits, torch.from_numpy(labels[picked]).float().to(device))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
        score = macro_auroc(labels[rows["validation"]], predict("validation"))
        if best_state is None or score > best:
            best, best_epoch = score, epoch
            best_state = {
                **{k: v.detach().clone() for k, v in model.state_dict().items()},
                **{"head." + k: v.detach().clone() for k, v in head.state_dict().items()},
            }
        if epoch - best_epoch >= profile.scratch_patience:
            break
    model.load_state_dict({k: v for k, v in best_state.items() if not k.startswith("head.")})
    head.load_state_dict({k[5:]: v for k, v in best_state.items() if k.startswith("head.")})
    scores = {"validation": predict("validation"), "test": predict("test")}
    result = scored(pack, rows, labels, names, scores, chosen, epochs, profile, seed)
    result["best_epoch"] = best_epoch
    result["weights_sha256"] = state_sha256({**model.ecg_model.state_dict(), **head.state_dict()})
    return result


def subject_id(features: np.ndarray, pack: Pack) -> dict:
    """Folds 9-10 patients only: none was pretrained on (the pool is patient-disjoint) or probed on."""
    rows = np.flatnonzero(pack.folds >= 9)
    ranks = probe_ranks(features[rows], pack.patients[rows], pack.ecg_ids[rows])
    return {
        "metrics": {"top1_accuracy": float((ranks < 1).mean()), "top5_accuracy": float((ranks < 5).mean())},
        "probes": int(len(ranks)),
        "_scores": {"ranks": ranks},
    }


@torch.no_grad()
def zero_shot(model: EsiModel, inputs: torch.Tensor, pack: Pack, device: torch.device, profile: Profile) -> dict:
    rows, labels, names = task_rows(pack, "superdiagnostic")
    keep = [k for k, n in enumerate(names) if n in pack.zero_shot["classes"]]
    prompt_rows = [pack.zero_shot["classes"].index(names[k]) for k in keep]
    prompts = torch.from_numpy(np.load(pack.folder / "zero_shot_emb.npy").astype(np.float32)[prompt_rows]).to(device)
    model.eval()
    text = F.normalize(model.text_projection(prompts), dim=-1)
    ecg = F.normalize(
        model.ecg_projection(torch.from_numpy(embed(model, inputs[rows["test"]], device)).to(device)), dim=-1
    )
    scores = (ecg @ text.t()).float().cpu().numpy()
    test_y = labels[rows["test"]][:, keep]
    return {
        "metrics": {
            "macro_auroc": macro_auroc(test_y, scores),
            "macro_auroc_ci": bootstrap_interval(macro_auroc, test_y, scores, samples=profile.bootstrap_samples),
        },
        "classes": [names[k] for k in keep],
        "_scores": {"test_ecg_ids": pack.ecg_ids[rows["test"]], "labels": test_y, "scores": scores},
    }


@torch.no_grad()
def caption_quality(
    model: EsiModel, inputs: torch.Tensor, pack: Pack, variant: str, profile: Profile, device: torch.device
) -> dict:
    """Greedy captions of the first fold-10 records with a reference, scored against that record's text of the
    variant the arm was trained on (and against the full variant)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(pack.folder / "tokenizer")
    rows = [i for i in np.flatnonzero(pack.folds == 10) if int(pack.ecg_ids[i]) in pack.references][
        : profile.caption_records
    ]
    model.eval()
    ids = model.generate_caption(inputs[rows].to(device), max_new_tokens=profile.max_text_length - 1)
    generated = tokenizer.batch_decode(pack.vocabulary[ids.cpu().numpy()], skip_special_tokens=True)
    references = [pack.references[int(pack.ecg_ids[i])] for i in rows]
    own = np.array([pair_scores(g, r[variant]) for g, r in zip(generated, references, strict=True)])
    full = np.array([pair_scores(g, r["full"]) for g, r in zip(generated, references, strict=True)])
    return {
        "metrics": {
            "token_f1": float(own[:, 0].mean()),
            "rouge_l": float(own[:, 1].mean()),
            "token_f1_vs_full": float(full[:, 0].mean()),
            "rouge_l_vs_full": float(full[:, 1].mean()),
        },
        "records": len(rows),
        "reference_variant": variant,
        "example": {"ecg_id": int(pack.ecg_ids[rows[0]]), "generated": generated[0]},
    }


# ---------------------------------------------------------------- provenance and the grid


def state_sha256(state: dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for name in sorted(state):
        digest.update(name.encode())
        digest.update(state[name].detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def git_commit() -> str:
    """HEAD (with -dirty for uncommitted changes); ESI_GIT_COMMIT names it where the tree has no .git
    (the accelerator machine receives a copy of the working tree)."""
    if os.environ.get("ESI_GIT_COMMIT"):
        return os.environ["ESI_GIT_COMMIT"]
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True)
        return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


class Grid:
    def __init__(self, profile: Profile, pack: Pack, results: Path, models: Path, device: torch.device):
        self.profile, self.pack, self.results, self.models, self.device = profile, pack, results, models, device
        self.command = " ".join(
            shlex.quote(a) for a in [Path(sys.executable).name, "-m", "benchmarks.esi_claim.run", *sys.argv[1:]]
        )
        self.commit = git_commit()
        (results / "scores").mkdir(parents=True, exist_ok=True)
        models.mkdir(parents=True, exist_ok=True)
        self.done = self.skipped = 0

    def path(self, run_id: str) -> Path:
        return self.results / f"{run_id}.json"

    def write(
        self, run_id: str, kind: str, arm: str, seed: int, weights_sha256: str, payload: dict, extra: dict
    ) -> None:
        scores = payload.pop("_scores", None)
        record = {
            "run_id": run_id,
            "kind": kind,
            "arm": arm,
            "profile": self.profile.name,
            "command": self.command,
            "git_commit": self.commit,
            "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "config": asdict(self.profile),
            "pack": {
                **{
                    k: self.pack.meta[k]
                    for k in ("pool_records", "eval_records", "signal_quantum_uv", "text_embedding_dims")
                },
                "meta_sha256": self.pack.meta_sha256,  # meta.json lists every pack file's checksum
            },
            "seed": seed,
            "weights_sha256": weights_sha256,
            "device": str(self.device),
            "smoke": self.profile.name == "tiny",
            **extra,
            **payload,
        }
        if scores is not None:
            score_file = self.results / "scores" / f"{run_id}.npz"
            np.savez_compressed(
                score_file, **{k: (v.astype(np.float16) if v.dtype.kind == "f" else v) for k, v in scores.items()}
            )
            record["scores_file"] = f"scores/{score_file.name}"
        tmp = self.path(run_id).with_suffix(".tmp")
        tmp.write_text(json.dumps(record, indent=1, default=float))
        tmp.replace(self.path(run_id))  # atomic: a killed run leaves no half-written result
        self.done += 1
        logger.info("wrote %s", self.path(run_id))

    def encoder_runs(self, arm: Arm, seed: int) -> list[tuple[str, callable]]:
        p = self.profile
        runs = [
            (
                f"probe-{arm.name}-s{seed}-{task}-f{fraction:g}-p{probe_seed}",
                dict(task=task, label_fraction=fraction, probe_seed=probe_seed),
            )
            for task in p.tasks
            for fraction in p.fractions
            for probe_seed in p.probe_seeds
        ]
        runs.append((f"subject_id-{arm.name}-s{seed}", {}))
        if arm.kind == "esi" and arm.contrastive_weight:
            runs.append((f"zero_shot-{arm.name}-s{seed}", {"task": "superdiagnostic"}))
        if arm.kind == "esi" and arm.caption_weight:
            runs.append((f"captioning-{arm.name}-s{seed}", {}))
        return runs

    def run_scratch(self, arm: Arm, probe_seeds: tuple[int, ...]) -> None:
        for probe_seed in probe_seeds:
            for task in self.profile.tasks:
                for fraction in self.profile.scratch_fractions:
                    run_id = f"scratch-{arm.name}-{task}-f{fraction:g}-p{probe_seed}"
                    if self.path(run_id).exists():
                        self.skipped += 1
                        continue
                    result = scratch(self.pack, task, fraction, probe_seed, self.profile, self.device)
                    sha = result.pop("weights_sha256")
                    self.write(
                        run_id,
                        "scratch",
                        arm.name,
                        probe_seed,
                        sha,
                        result,
                        dict(task=task, label_fraction=fraction, probe_seed=probe_seed, pretrain_seed=None),
                    )

    def run_arm(self, arm: Arm, seed: int, inputs: torch.Tensor) -> None:
        pending = [(r, e) for r, e in self.encoder_runs(arm, seed) if not self.path(r).exists()]
        self.skipped += len(self.encoder_runs(arm, seed)) - len(pending)
        if not pending:
            return
        pretrain_id = f"pretrain-{arm.name}-s{seed}"
        model, summary = pretrain(arm, self.profile, self.pack, seed, self.device)
        folder = self.models / f"{arm.name}-s{seed}"
        model.save_pretrained(folder)
        # The checksum of the file a user would publish: `esi.publish --downstream` matches results on it.
        sha = sha256_file(folder / "model.safetensors")
        features = embed(model, inputs, self.device)
        payload = {"training": summary, "embedding": embedding_spread(features), "weights_folder": str(folder)}
        self.write(pretrain_id, "pretrain", arm.name, seed, sha, payload, {})
        for run_id, extra in pending:
            kind = run_id.split("-")[0]
            if kind == "probe":
                result = probe(
                    features, self.pack, extra["task"], extra["label_fraction"], extra["probe_seed"], self.profile
                )
            elif kind == "subject_id":
                result = subject_id(features, self.pack)
            elif kind == "zero_shot":
                result = zero_shot(model, inputs, self.pack, self.device, self.profile)
            else:
                result = caption_quality(model, inputs, self.pack, arm.variant, self.profile, self.device)
            self.write(run_id, kind, arm.name, seed, sha, result, {**extra, "pretrain_seed": seed})


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--profile", choices=sorted(PROFILES), default="cpu")
    p.add_argument("--pack", type=Path, default=None, help="default: outputs/esi_claim/<pack_name>/pack")
    p.add_argument("--results-dir", type=Path, default=None, help="default: benchmarks/results/esi_claim/<profile>")
    p.add_argument("--models-dir", type=Path, default=None, help="default: outputs/esi_claim/<profile>/models")
    p.add_argument("--arms", default="all", help="comma-separated arm names, or 'all'")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    profile = PROFILES[args.profile]
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    pack = Pack(args.pack or Path("outputs/esi_claim") / profile.pack_name / "pack")
    results = args.results_dir or Path("benchmarks/results/esi_claim") / profile.name
    grid = Grid(profile, pack, results, args.models_dir or Path("outputs/esi_claim") / profile.name / "models", device)
    names = [a.name for a in ARMS] if args.arms == "all" else args.arms.split(",")
    unknown = sorted(set(names) - set(ARMS_BY_NAME))
    if unknown:
        p.error(f"unknown arm(s) {unknown}; arms: {[a.name for a in ARMS]}")
    extractor = EsiFeatureExtractor(sampling_rate=100)
    inputs, _ = featurize(extractor, pack.eval_signals, pack.meta["sampling_rate"])  # whole records: no padding
    started = time.perf_counter()
    # Breadth first: every arm's first seed before any arm's second, so a grid cut short still holds
    # one complete comparison of all arms (and a rerun picks up where it stopped). Supervised-from-scratch
    # has no pretraining seed: its training seeds are spread over the passes in the same way.
    passes = profile.pretrain_seeds
    for index, seed in enumerate(passes):
        for name in names:
            arm = ARMS_BY_NAME[name]
            if arm.kind == "scratch":
                logger.info("arm %s training seeds %s", name, profile.probe_seeds[index :: len(passes)])
                grid.run_scratch(arm, profile.probe_seeds[index :: len(passes)])
            elif name in MULTI_SEED_ARMS or index == 0:
                logger.info("arm %s seed %d", name, seed)
                grid.run_arm(arm, seed, inputs)
    summary = {"written": grid.done, "skipped": grid.skipped, "seconds": round(time.perf_counter() - started, 1)}
    logger.info("grid: %s", summary)
    return summary


if __name__ == "__main__":
    main()
