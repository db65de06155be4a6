"""Multi-label ECG classification on top of an ESI encoder: task data, training loops and scoring.

Windows: a training record gives one window of the model's input length per epoch (`train_window`:
"random" start, seeded by (seed, epoch, record), or "first"); an evaluation record gives the windows
covering it (`eval_windows`: None = all, k = at most k) and its prediction is the mean of their
probabilities. Records shorter than the window are padded and masked (`ecg_attention_mask`).

Methods: `linear_probe` (frozen encoder; its pooled embeddings are computed once and only the linear
head is trained), `lora` (PEFT LoRA adapters on the encoder, head trained in full), `full` (every
weight trained) and `supervised_scratch` (`full` from a randomly initialised encoder). Early stopping
on the validation split's macro AUROC; the best epoch's weights are scored on the test split.
"""

from __future__ import annotations

import importlib.resources
from dataclasses import dataclass
from pathlib import Path

import datasets
import evaluate
import numpy as np
import torch
from accelerate import Accelerator
from peft import LoraConfig, PeftModel, TaskType, get_peft_model
from torch import nn
from tqdm.auto import tqdm

from esi.data.ptbxl import multi_hot
from esi.data.torch_dataset import EcgCollator, EcgDataset, EcgWindows, load_dataset_folder
from esi.data.windows import mean_by_record
from esi.eval.arguments import METHODS
from esi.eval.probe import EarlyStopping, TrainConfig, choose_thresholds, fit_linear_probe
from esi.eval.stats import macro_auroc
from modeling_esi import EsiConfig, EsiFeatureExtractor, EsiForEcgClassification, lora_target_modules

SPLITS = ("train", "validation", "test")
# Local `evaluate` modules, shipped as package data (the Hub metrics cannot be downloaded offline).
METRICS_DIR = Path(str(importlib.resources.files("esi.eval") / "metrics"))


@dataclass
class TaskData:
    """One PTB-XL task: the splits, and multi-hot labels over the classes kept for evaluation."""

    task: str
    class_names: list[str]
    dropped: dict[str, str]
    splits: dict[str, datasets.Dataset]
    labels: dict[str, np.ndarray]

    def patient_ids(self, split: str) -> np.ndarray:
        return np.asarray(self.splits[split]["patient_id"])


def load_task(dataset_dir: str | Path, task: str) -> TaskData:
    """Load a prepared dataset and keep the task's classes that have positives in train and test and
    negatives in test (AUROC is undefined otherwise); the others are listed in `dropped` with the reason."""
    data = load_dataset_folder(dataset_dir)
    missing = [s for s in SPLITS if s not in data]
    if missing:
        raise ValueError(f"{dataset_dir} lacks split(s) {missing}")
    if task not in data["train"].column_names:
        raise ValueError(f"{dataset_dir} has no label column '{task}'")
    names = list(data["train"].features[task].feature.names)
    full = {split: multi_hot(data[split][task], len(names)).reshape(-1, len(names)) for split in SPLITS}
    dropped = {}
    for k, name in enumerate(names):
        if not full["train"][:, k].any():
            dropped[name] = "no positive record in train"
        elif not full["test"][:, k].any():
            dropped[name] = "no positive record in test"
        elif full["test"][:, k].all():
            dropped[name] = "no negative record in test"
    kept = [k for k, name in enumerate(names) if name not in dropped]
    if not kept:
        raise ValueError(f"task '{task}': no class has positives in both train and test")
    return TaskData(
        task=task,
        class_names=[names[k] for k in kept],
        dropped=dropped,
        splits={split: data[split] for split in SPLITS},
        labels={split: full[split][:, kept] for split in SPLITS},
    )


class LabelledEcgs(torch.utils.data.Dataset):
    """Rows `rows` of an `EcgDataset`, each carrying its positive class indices for `EcgCollator`."""

    def __init__(self, ecgs: EcgDataset, labels: np.ndarray | None = None, rows: np.ndarray | None = None):
        self.ecgs, self.labels = ecgs, labels
        self.rows = np.arange(len(ecgs)) if rows is None else np.asarray(rows)

    def __len__(self) -> int:
        return len(self.rows)

    def set_epoch(self, epoch: int) -> None:
        self.ecgs.set_epoch(epoch)

    def __getitem__(self, index: int) -> dict:
        row = int(self.rows[index])
        item = self.ecgs[row]
        if self.labels is not None:
            item["labels"] = np.flatnonzero(self.labels[row])
        return item


def make_loader(
    split: datasets.Dataset,
    feature_extractor: EsiFeatureExtractor,
    batch_size: int,
    labels: np.ndarray | None = None,
    rows: np.ndarray | None = None,
    shuffle: bool = False,
    seed: int = 0,
    window: str = "random",
) -> torch.utils.data.DataLoader:
    """Training loader: one window (`window`: "random" or "first") of the model's input length per record."""
    ecgs = EcgDataset(split, seed=seed, window_s=feature_extractor.duration_s, window=window)
    return torch.utils.data.DataLoader(
        LabelledEcgs(ecgs, labels, rows),
        batch_size=batch_size,
        shuffle=shuffle,
        collate_fn=_collator(ecgs, feature_extractor, None if labels is None else labels.shape[1]),
        generator=torch.Generator().manual_seed(seed) if shuffle else None,
    )


def make_window_loader(
    split: datasets.Dataset, feature_extractor: EsiFeatureExtractor, batch_size: int, count: int | None = None
) -> torch.utils.data.DataLoader:
    """Evaluation loader: the windows covering each record (`count` None = all, k = at most k), in order;
    batches carry `records`, and `per_record` averages outputs over each record's windows."""
    ecgs = EcgDataset(split, window_s=feature_extractor.duration_s)
    return torch.utils.data.DataLoader(
        EcgWindows(ecgs, count), batch_size=batch_size, collate_fn=_collator(ecgs, feature_extractor)
    )


def _collator(ecgs: EcgDataset, feature_extractor: EsiFeatureExtractor, num_labels: int | None = None) -> EcgCollator:
    return EcgCollator(feature_extractor, ecgs.sampling_rate, ecgs.lead_names, num_labels=num_labels)


def per_record(values: np.ndarray, loader: torch.utils.data.DataLoader) -> np.ndarray:
    """Outputs of a `make_window_loader` loader averaged over each record's windows (others unchanged)."""
    windows = loader.dataset
    if not isinstance(windows, EcgWindows):
        return values
    return mean_by_record(values, windows.records, windows.num_records)


def load_classifier(
    model: str | Path,
    num_labels: int,
    random_init: bool = False,
    seed: int = 0,
    class_names: list[str] | None = None,
) -> EsiForEcgClassification:
    """The ESI classification model: pretrained ECG encoder from `model` (a folder or Hub id) plus a new
    head, or, with `random_init`, the same architecture with every weight freshly initialised. `class_names`
    become the config's `id2label` / `label2id` (saved with the model, shown by pipelines)."""
    kwargs = dict(num_labels=num_labels, problem_type="multi_label_classification")
    if class_names is not None:
        kwargs |= dict(id2label=dict(enumerate(class_names)), label2id={name: i for i, name in enumerate(class_names)})
    torch.manual_seed(seed)
    if random_init:
        return EsiForEcgClassification(EsiConfig.from_pretrained(model, **kwargs))
    return EsiForEcgClassification.from_pretrained(model, **kwargs)


@torch.no_grad()
def encoder_features(model: EsiForEcgClassification, loader: torch.utils.data.DataLoader) -> np.ndarray:
    """Pooled ECG encoder embeddings (N, hidden) of a loader's items (records or windows), in its order."""
    model.eval()
    return np.concatenate(
        [
            model.ecg_model(batch["input_values"], batch["ecg_attention_mask"]).pooler_output.float().numpy()
            for batch in loader
        ]
    )


@torch.no_grad()
def predict(model: nn.Module, loader: torch.utils.data.DataLoader) -> np.ndarray:
    """Sigmoid probabilities (N, K) of a classification model per record of a loader (the mean over a
    record's windows for a `make_window_loader` loader), in its order."""
    model.eval()
    probabilities = np.concatenate(
        [
            torch.sigmoid(model(input_values=b["input_values"], ecg_attention_mask=b["ecg_attention_mask"]).logits)
            .float()
            .numpy()
            for b in loader
        ]
    )
    return per_record(probabilities, loader)


def fit_network(
    model: nn.Module,
    train_loader: torch.utils.data.DataLoader,
    val_loader: torch.utils.data.DataLoader,
    val_y: np.ndarray,
    config: TrainConfig,
) -> list[dict]:
    """Train every parameter that requires a gradient (LoRA or full fine-tuning) with Accelerate."""
    accelerator = Accelerator()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    model, optimizer, train_loader = accelerator.prepare(model, optimizer, train_loader)
    stopper, history = EarlyStopping(accelerator.unwrap_model(model), config.patience), []
    for epoch in range(config.epochs):
        model.train()
        train_loader.dataset.set_epoch(epoch)  # a new random window of each record every epoch
        losses = []
        for batch in tqdm(train_loader, desc=f"epoch {epoch}", leave=False, disable=not accelerator.is_main_process):
            loss = model(
                input_values=batch["input_values"],
                ecg_attention_mask=batch["ecg_attention_mask"],
                labels=batch["labels"],
            ).loss
            accelerator.backward(loss)
            optimizer.step()
            optimizer.zero_grad()
            losses.append(loss.item())
        score = macro_auroc(val_y, predict(accelerator.unwrap_model(model), val_loader))
        history.append({"epoch": epoch, "train_loss": float(np.mean(losses)), "val_macro_auroc": score})
        if stopper.step(epoch, score):
            break
    stopper.restore()
    return history


def add_lora(model: EsiForEcgClassification, rank: int = 8, alpha: int = 16, dropout: float = 0.0) -> PeftModel:
    """LoRA on the encoder, the head trained in full; PEFT's sequence-classification task type, so the adapter
    reloads with `AutoPeftModelForSequenceClassification`."""
    config = LoraConfig(
        task_type=TaskType.SEQ_CLS,
        r=rank,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=lora_target_modules(model),
        modules_to_save=["classifier"],
    )
    return get_peft_model(model, config)


def score_predictions(
    val_y: np.ndarray,
    val_scores: np.ndarray,
    test_y: np.ndarray,
    test_scores: np.ndarray,
    class_names: list[str],
    bootstrap_samples: int = 200,
    seed: int = 0,
) -> dict:
    """Test macro / per-class AUROC and macro F1 (thresholds chosen on validation), with bootstrap CIs,
    computed by the local `evaluate` modules in `metrics/`."""
    auroc = evaluate.load(str(METRICS_DIR / "multilabel_auroc"))
    f1 = evaluate.load(str(METRICS_DIR / "multilabel_f1"))
    thresholds = choose_thresholds(val_y, val_scores)
    common = dict(
        predictions=test_scores, references=test_y.astype(int), bootstrap_samples=bootstrap_samples, seed=seed
    )
    a = auroc.compute(**common)
    f = f1.compute(thresholds=thresholds, **common)
    return {
        "macro_auroc": a["macro_auroc"],
        "macro_auroc_ci": a.get("macro_auroc_ci"),
        "per_class_auroc": dict(zip(class_names, a["per_class_auroc"], strict=True)),
        "macro_f1": f["macro_f1"],
        "macro_f1_ci": f.get("macro_f1_ci"),
        "per_class_f1": dict(zip(class_names, f["per_class_f1"], strict=True)),
        "thresholds": dict(zip(class_names, thresholds.tolist(), strict=True)),
        "validation_macro_auroc": macro_auroc(val_y, val_scores),
    }


@dataclass
class ClassificationRun:
    """What one run produced: the JSON-ready result, the trained model and its scores per split."""

    result: dict
    model: nn.Module
    scores: dict[str, np.ndarray]


@dataclass
class _Training:
    """What every method trains from: the task, the sampled training rows, the validation and test loaders."""

    data: TaskData
    rows: np.ndarray
    feature_extractor: EsiFeatureExtractor
    loaders: dict[str, torch.utils.data.DataLoader]
    config: TrainConfig
    train_window: str


def _train_linear_probe(
    model: EsiForEcgClassification, training: _Training, batch_size: int
) -> tuple[list[dict], dict[str, np.ndarray]]:
    """Embed each split once with the frozen encoder (`batch_size` records at a time) and fit the linear head;
    (history, per-record scores)."""
    data, rows, loaders, config = training.data, training.rows, training.loaders, training.config
    model.freeze_encoder()
    train_loader = make_loader(
        data.splits["train"],
        training.feature_extractor,
        batch_size,
        rows=rows,
        seed=config.seed,
        window=training.train_window,
    )
    features = {"train": encoder_features(model, train_loader)}
    features |= {s: encoder_features(model, loaders[s]) for s in loaders}
    history = fit_linear_probe(
        model.classifier,
        features["train"],
        data.labels["train"][rows],
        features["validation"],
        data.labels["validation"],
        config,
        val_records=loaders["validation"].dataset.records,
    )
    with torch.no_grad():
        scores = {
            s: per_record(torch.sigmoid(model.classifier(torch.from_numpy(features[s]).float())).numpy(), loaders[s])
            for s in loaders
        }
    return history, scores


def _train_network(model: nn.Module, training: _Training) -> tuple[list[dict], dict[str, np.ndarray]]:
    """Train the network (LoRA adapters, or every weight) with early stopping; (history, per-record scores)."""
    data, rows, loaders, config = training.data, training.rows, training.loaders, training.config
    train_loader = make_loader(
        data.splits["train"],
        training.feature_extractor,
        config.batch_size,
        data.labels["train"],
        rows,
        shuffle=True,
        seed=config.seed,
        window=training.train_window,
    )
    history = fit_network(model, train_loader, loaders["validation"], data.labels["validation"], config)
    return history, {s: predict(model, loaders[s]) for s in loaders}


def _training_summary(data: TaskData, rows: np.ndarray, history: list[dict], config: TrainConfig) -> dict:
    """What a run trained on and for how long: records, patients, classes, epochs and the configuration."""
    best = max(history, key=lambda h: h["val_macro_auroc"])
    return {
        "train_records": int(len(rows)),
        "train_patients": int(len(np.unique(data.patient_ids("train")[rows]))),
        "test_records": int(len(data.labels["test"])),
        "classes": data.class_names,
        "dropped_classes": data.dropped,
        "epochs_run": len(history),
        "best_epoch": best["epoch"],
        "config": {k: v for k, v in vars(config).items() if k != "history"},
    }


def run_classification(
    model_path: str | Path,
    data: TaskData,
    method: str,
    label_fraction: float,
    config: TrainConfig,
    random_init: bool = False,
    eval_batch_size: int = 64,
    bootstrap_samples: int = 200,
    train_window: str = "random",
    eval_windows: int | None = None,
) -> ClassificationRun:
    """Sample the label fraction (by patient), train with `method`, and score on the test split.

    `train_window` ("random" or "first") picks each training record's window; validation and test records
    are scored on `eval_windows` windows (None = all covering the record), probabilities averaged.
    The linear probe embeds one window per training record once (the epoch-0 draw of `train_window`).
    """
    from esi.eval.sampling import sample_label_fraction

    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    random_init = random_init or method == "supervised_scratch"
    train_y = data.labels["train"]
    rows = sample_label_fraction(data.patient_ids("train"), train_y, label_fraction, config.seed)
    model = load_classifier(model_path, len(data.class_names), random_init, config.seed, data.class_names)
    feature_extractor = EsiFeatureExtractor.from_pretrained(model_path)
    loaders = {
        s: make_window_loader(data.splits[s], feature_extractor, eval_batch_size, eval_windows)
        for s in ("validation", "test")
    }
    training = _Training(data, rows, feature_extractor, loaders, config, train_window)
    if method == "linear_probe":
        history, scores = _train_linear_probe(model, training, eval_batch_size)
    else:
        model = add_lora(model) if method == "lora" else model
        history, scores = _train_network(model, training)
    metrics = score_predictions(
        data.labels["validation"],
        scores["validation"],
        data.labels["test"],
        scores["test"],
        data.class_names,
        bootstrap_samples,
        config.seed,
    )
    result = {
        "task": data.task,
        "method": method,
        "random_init": random_init,
        "label_fraction": label_fraction,
        "seed": config.seed,
        **_training_summary(data, rows, history, config),
        **metrics,
        "history": history,
    }
    return ClassificationRun(result, model, scores)
