"""The claim grid: pretrain the arms through `esi.train`, cross-fit probes on PTB-XL, one JSON per run (resumable).

    python -m benchmarks.esi_claim.run --profile cpu --stage curve            # learning curve, one paired seed
    python -m benchmarks.esi_claim.run --profile cpu --stage grid --steps N   # the paired-seed grid at N steps

Protocol `crossfit-paired-v2` (written into every result file; the report reads no other):
- the text arms are `esi-train` runs (the command is in each result file) on the pack's pool, with the text
  tower's embeddings precomputed; the baselines run the same `esi.train` code with their own objective
  (`pretraining.py`); pretraining checkpoints every `checkpointing_steps` and resumes from the last one;
- at a pretraining seed every arm starts from the same ECG encoder and trains on the same batches (the
  digests `initial_ecg_encoder_sha256` and `batch_ecg_ids_sha256` in the result files show it);
- each encoder is probed by cross-fitting over the 10 folds (`crossfit.py`); scores are stored as float32;
- supervised-from-scratch trains on the standard split (folds 1-8, early stopping on fold 9, test fold 10)
  until fold 9 macro AUROC stops improving: an exploratory floor, not part of the claim.

A run whose JSON exists is skipped; an interrupted pretraining resumes from its last checkpoint.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.esi_claim.codec import LEADS, decode
from benchmarks.esi_claim.crossfit import crossfit_probe
from benchmarks.esi_claim.pretraining import ARMS, ARMS_BY_NAME, Arm, initial_model, pretrain_arm, write_train_inputs
from benchmarks.esi_claim.profiles import MULTI_SEED_ARMS, PROFILES, PROTOCOL, RESULTS_ROOT, Profile
from benchmarks.provenance import git_commit, utc_timestamp
from esi.checksum import sha256_file, state_dict_sha256
from esi.data.augment import EcgAugmentConfig, augment_ecg
from esi.eval.probe import choose_thresholds
from esi.eval.sampling import sample_label_fraction
from esi.eval.stats import macro_auroc
from esi.eval.subject_id import probe_ranks
from esi.train.arguments import OptimizationArguments
from esi.train.optim import build_optimizer, build_scheduler
from modeling_esi import EsiFeatureExtractor, EsiModel

logger = logging.getLogger("esi_claim.run")
PAIRING = (
    "arms with the same pretraining seed start from the same ECG encoder and train on the same batches and "
    "augmentations (equal initial_ecg_encoder_sha256 and batch_ecg_ids_sha256); probes with the same probe seed "
    "use the same labelled records"
)


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


@torch.no_grad()
def embed(model: EsiModel, inputs: torch.Tensor, device: torch.device, batch: int = 256) -> np.ndarray:
    """(records, hidden) float32 pooled ECG-encoder outputs of whole 10 s records."""
    model.to(device).eval()
    return np.concatenate(
        [
            model.ecg_model(inputs[i : i + batch].to(device)).pooler_output.float().cpu().numpy()
            for i in range(0, len(inputs), batch)
        ]
    ).astype(np.float32)


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


def probe(features: np.ndarray, pack: Pack, task: str, fraction: float, seed: int, profile: Profile) -> dict:
    return crossfit_probe(
        features,
        pack.labels(task),
        pack.meta["class_names"][task],
        pack.folds,
        pack.patients,
        fraction,
        seed,
        profile.probe_epochs,
        profile.probe_patience,
    )


def standard_split(pack: Pack, task: str) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Labelled rows of folds 1-8 / 9 / 10 and the task's labels (classes with positives in train and test)."""
    labels = pack.labels(task)
    labelled = labels.sum(1) > 0
    rows = {
        "train": np.flatnonzero(labelled & (pack.folds <= 8)),
        "validation": np.flatnonzero(labelled & (pack.folds == 9)),
        "test": np.flatnonzero(labelled & (pack.folds == 10)),
    }
    keep = labels[rows["train"]].any(0) & labels[rows["test"]].any(0) & ~labels[rows["test"]].all(0)
    return rows, labels[:, keep]


def scratch(model: EsiModel, pack: Pack, task: str, fraction: float, seed: int, profile: Profile, device) -> dict:
    """Supervised from scratch on the downstream labels of the standard split: the arms' initial encoder, the
    pretraining optimiser and schedule (esi.train.optim) and augmentations, trained until fold 9 macro AUROC
    has not improved for `scratch_patience` epochs (the best epoch is kept; its optimiser steps are reported)."""
    rows, labels = standard_split(pack, task)
    chosen = rows["train"][sample_label_fraction(pack.patients[rows["train"]], labels[rows["train"]], fraction, seed)]
    torch.manual_seed(seed)
    model = model.to(device)
    head = nn.Linear(model.config.ecg_config.hidden_sizes[-1], labels.shape[1]).to(device)
    trained = nn.ModuleDict({"encoder": model.ecg_model, "head": head})
    batch = min(profile.batch_size, len(chosen))
    steps_per_epoch = max(1, len(chosen) // batch)
    args = OptimizationArguments(learning_rate=profile.learning_rate, warmup_steps=steps_per_epoch)
    optimizer = build_optimizer(trained, args)
    scheduler = build_scheduler(optimizer, args, steps_per_epoch * profile.scratch_epochs)
    rate = pack.meta["sampling_rate"]
    extractor = EsiFeatureExtractor(sampling_rate=model.config.ecg_config.sampling_rate)
    evaluation = {s: featurize(extractor, pack.eval_signals[rows[s]], rate)[0] for s in ("validation", "test")}
    rng, config = np.random.default_rng(seed), EcgAugmentConfig()
    best, best_state, best_epoch, epochs = -np.inf, None, -1, 0

    def predict(split: str) -> np.ndarray:
        features = torch.from_numpy(embed(model, evaluation[split], device)).to(device)
        with torch.no_grad():
            return torch.sigmoid(head(features)).float().cpu().numpy()

    for epoch in range(profile.scratch_epochs):
        epochs += 1
        trained.train()
        shuffled = rng.permutation(chosen)  # each labelled record once per epoch
        for step in range(steps_per_epoch):
            picked = shuffled[step * batch : (step + 1) * batch]
            views = [
                augment_ecg(pack.eval_signals[r], rate, LEADS, config, np.random.default_rng([seed, epoch, int(r)]))
                for r in picked
            ]
            x, x_mask = featurize(extractor, views, rate)
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
            best_state = {k: v.detach().clone() for k, v in trained.state_dict().items()}
        if epoch - best_epoch >= profile.scratch_patience:
            break
    trained.load_state_dict(best_state)
    test_y, val_y = labels[rows["test"]], labels[rows["validation"]]
    test_scores, val_scores = predict("test"), predict("validation")
    decisions = test_scores >= choose_thresholds(val_y, val_scores)
    return {
        "metrics": {"fold10_macro_auroc": macro_auroc(test_y, test_scores), "validation_macro_auroc": best},
        "train_records": int(len(chosen)),
        "epochs_run": epochs,
        "best_epoch": best_epoch,
        "optimizer_steps_to_best": (best_epoch + 1) * steps_per_epoch,
        "optimizer_steps_run": epochs * steps_per_epoch,
        "stopped_early": epochs < profile.scratch_epochs,
        "weights_sha256": state_dict_sha256(trained.state_dict()),
        "fold10_positive_decisions": int(decisions.sum()),
        "_scores": {"rows": rows["test"], "labels": test_y, "scores": test_scores},
    }


def subject_id(features: np.ndarray, pack: Pack) -> dict:
    """Folds 9-10 patients only: none was pretrained on (the pool is patient-disjoint)."""
    rows = np.flatnonzero(pack.folds >= 9)
    ranks = probe_ranks(features[rows], pack.patients[rows], pack.ecg_ids[rows])
    return {
        "metrics": {"top1_accuracy": float((ranks < 1).mean()), "top5_accuracy": float((ranks < 5).mean())},
        "probes": int(len(ranks)),
        "_scores": {"ranks": ranks},
    }


# ---------------------------------------------------------------- provenance and the grid


class Grid:
    def __init__(self, profile: Profile, pack: Pack, results: Path, work: Path, device: torch.device):
        self.profile, self.pack, self.results, self.work, self.device = profile, pack, results, work, device
        self.command = shlex.join([Path(sys.executable).name, "-m", "benchmarks.esi_claim.run", *sys.argv[1:]])
        self.commit = git_commit()
        (results / "scores").mkdir(parents=True, exist_ok=True)
        self.inputs = write_train_inputs(pack, work / "inputs")
        extractor = EsiFeatureExtractor(sampling_rate=pack.meta["sampling_rate"])
        self.eval_inputs, _ = featurize(extractor, pack.eval_signals, pack.meta["sampling_rate"])  # whole records
        self.done = self.skipped = 0

    def path(self, run_id: str) -> Path:
        return self.results / f"{run_id}.json"

    def write(self, run_id: str, kind: str, arm: str, weights_sha256: str, payload: dict, extra: dict) -> None:
        scores = payload.pop("_scores", None)
        record = {
            "run_id": run_id,
            "protocol": PROTOCOL,
            "kind": kind,
            "arm": arm,
            "profile": self.profile.name,
            "command": self.command,
            "git_commit": self.commit,
            "date_utc": utc_timestamp(),
            "load_average": list(os.getloadavg()),
            "config": {k: v for k, v in vars(self.profile).items()},
            "pack": {
                **{k: self.pack.meta[k] for k in ("pool_records", "eval_records", "signal_quantum_uv")},
                "text_embedding_dims": self.pack.meta["text_embedding_dims"],
                "meta_sha256": self.pack.meta_sha256,  # meta.json lists every pack file's checksum
            },
            "weights_sha256": weights_sha256,
            "device": str(self.device),
            "smoke": self.profile.name == "tiny",
            **extra,
            **payload,
        }
        if scores is not None:
            score_file = self.results / "scores" / f"{run_id}.npz"
            # float32: float16 scores moved rhythm AUROC by up to 0.021 (ties among near-equal scores)
            np.savez_compressed(
                score_file, **{k: (v.astype(np.float32) if v.dtype.kind == "f" else v) for k, v in scores.items()}
            )
            record["scores_file"] = f"scores/{score_file.name}"
        tmp = self.path(run_id).with_suffix(".tmp")
        tmp.write_text(json.dumps(record, indent=1, default=float))
        tmp.replace(self.path(run_id))  # atomic: a killed run leaves no half-written result
        self.done += 1
        logger.info("wrote %s", self.path(run_id))

    def encoder_runs(self, name: str, seed: int) -> list[tuple[str, dict]]:
        p = self.profile
        runs = [
            (
                f"probe-{name}-{task}-f{fraction:g}-p{probe_seed}",
                dict(task=task, label_fraction=fraction, probe_seed=probe_seed),
            )
            for task in p.tasks
            for fraction in p.fractions
            for probe_seed in p.probe_seeds or (seed,)
        ]
        return runs + [(f"subject_id-{name}", {})]

    def run_encoder(self, arm: Arm, seed: int, steps: int) -> None:
        name = f"{arm.name}-s{seed}" if arm.kind == "random" else f"{arm.name}-n{steps}-s{seed}"
        runs = self.encoder_runs(name, seed)
        pending = [(r, e) for r, e in runs if not self.path(r).exists()]
        self.skipped += len(runs) - len(pending)
        if not pending and self.path(f"pretrain-{name}").exists():
            return
        if arm.kind == "random":
            model = initial_model(self.profile, self.pack, self.inputs, seed)
            training = {"steps": 0, "initial_ecg_encoder_sha256": state_dict_sha256(model.ecg_model.state_dict())}
            sha = state_dict_sha256(model.state_dict())
        else:
            model_dir, training = pretrain_arm(
                arm, self.profile, self.pack, self.inputs, seed, steps, self.work / "models" / name
            )
            model = EsiModel.from_pretrained(model_dir)
            # The checksum of the file a user would publish: `esi.publish --downstream` matches results on it.
            sha = sha256_file(model_dir / "model.safetensors")
        features = embed(model, self.eval_inputs, self.device)
        pairing = {"pretrain_seed": seed, "pretrain_steps": training["steps"], "pairing": PAIRING}
        if not self.path(f"pretrain-{name}").exists():
            self.write(
                f"pretrain-{name}",
                "pretrain",
                arm.name,
                sha,
                {"training": training, "embedding": embedding_spread(features)},
                pairing,
            )
        for run_id, extra in pending:
            if run_id.startswith("probe-"):
                started = time.process_time()
                result = probe(
                    features, self.pack, extra["task"], extra["label_fraction"], extra["probe_seed"], self.profile
                )
                result["probe_cpu_seconds"] = round(time.process_time() - started, 1)
                self.write(run_id, "probe", arm.name, sha, result, {**extra, **pairing})
            else:
                self.write(run_id, "subject_id", arm.name, sha, subject_id(features, self.pack), pairing)

    def run_scratch(self, arm: Arm, probe_seeds: tuple[int, ...]) -> None:
        for probe_seed in probe_seeds:
            for task in self.profile.tasks:
                for fraction in self.profile.scratch_fractions:
                    run_id = f"scratch-{arm.name}-{task}-f{fraction:g}-p{probe_seed}"
                    if self.path(run_id).exists():
                        self.skipped += 1
                        continue
                    model = initial_model(self.profile, self.pack, self.inputs, probe_seed)
                    started = time.process_time()
                    result = scratch(model, self.pack, task, fraction, probe_seed, self.profile, self.device)
                    result["train_cpu_seconds"] = round(time.process_time() - started, 1)
                    sha = result.pop("weights_sha256")
                    extra = dict(task=task, label_fraction=fraction, probe_seed=probe_seed, pretrain_seed=None)
                    self.write(run_id, "scratch", arm.name, sha, result, extra)


def plan(profile: Profile, stage: str, names: list[str] | None, steps: int | None) -> list[tuple[Arm, int, int]]:
    """(arm, seed, steps) in run order. curve: the curve arms, first seed, each curve step count. grid: every
    seed of the multi-seed arms, the first of the others, breadth first (a grid cut short still holds one
    complete comparison of all its arms, and a rerun picks up where it stopped)."""
    if stage == "curve":
        arms = [ARMS_BY_NAME[n] for n in (names or profile.curve_arms)]
        return [(arm, profile.pretrain_seeds[0], n) for n in profile.curve_steps for arm in arms]
    default = [a.name for a in ARMS if not a.train_text_tower]
    arms = [ARMS_BY_NAME[n] for n in (names or default)]
    n = steps or profile.steps
    return [
        (arm, seed, n)
        for index, seed in enumerate(profile.pretrain_seeds)
        for arm in arms
        if arm.name in MULTI_SEED_ARMS or index == 0 or arm.kind == "scratch"
    ]


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--profile", choices=sorted(PROFILES), default="cpu")
    p.add_argument("--stage", choices=("curve", "grid"), default="grid")
    p.add_argument("--steps", type=int, default=None, help="grid: pretraining steps of every arm (default: profile)")
    p.add_argument("--pack", type=Path, default=None, help="default: outputs/esi_claim/<pack_name>/pack")
    p.add_argument("--results-dir", type=Path, default=None, help=f"default: {RESULTS_ROOT}/<profile>")
    p.add_argument(
        "--work-dir",
        type=Path,
        default=None,
        help="models and esi-train inputs; default outputs/esi_claim/v2/<profile>",
    )
    p.add_argument("--arms", default=None, help="comma-separated arm names (default: the stage's arms)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    profile = PROFILES[args.profile]
    if args.threads:
        torch.set_num_threads(args.threads)
    names = args.arms.split(",") if args.arms else None
    unknown = sorted(set(names or []) - set(ARMS_BY_NAME))
    if unknown:
        p.error(f"unknown arm(s) {unknown}; arms: {[a.name for a in ARMS]}")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    pack = Pack(args.pack or Path("outputs/esi_claim") / profile.pack_name / "pack")
    results = args.results_dir or Path(RESULTS_ROOT) / profile.name
    grid = Grid(profile, pack, results, args.work_dir or Path("outputs/esi_claim/v2") / profile.name, device)
    started = time.perf_counter()
    runs = plan(profile, args.stage, names, args.steps)
    passes = [seed for arm, seed, _ in runs if arm.kind == "scratch"]
    for arm, seed, steps in runs:
        if arm.kind == "scratch":  # no pretraining seed: its training seeds are spread over the passes alike
            index = passes.index(seed)
            grid.run_scratch(arm, profile.scratch_seeds[index :: len(passes)])
            continue
        logger.info("arm %s seed %d, %d steps", arm.name, seed, steps)
        grid.run_encoder(arm, seed, steps)
    summary = {"written": grid.done, "skipped": grid.skipped, "seconds": round(time.perf_counter() - started, 1)}
    logger.info("grid: %s", summary)
    return summary


if __name__ == "__main__":
    main()
