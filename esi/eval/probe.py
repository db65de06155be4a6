"""A linear probe on fixed encoder embeddings: the one recipe shared by `finetune.py` and the claim benchmark.

torch / numpy / scikit-learn only (no `datasets`), so light runners can use it.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np
import torch
from sklearn.metrics import precision_recall_curve
from torch import nn

from esi.data.windows import mean_by_record
from esi.eval.stats import macro_auroc


@dataclass
class TrainConfig:
    epochs: int = 20
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-4
    patience: int = 5
    seed: int = 0
    history: list[dict] = field(default_factory=list)


class EarlyStopping:
    """Keeps the best-scoring weights (validation macro AUROC) and says when to stop."""

    def __init__(self, module: nn.Module, patience: int):
        self.module, self.patience = module, patience
        self.best_score, self.best_epoch, self.best_state = -np.inf, -1, None

    def step(self, epoch: int, score: float) -> bool:
        if score > self.best_score:
            self.best_score, self.best_epoch = score, epoch
            self.best_state = copy.deepcopy(self.module.state_dict())
        return epoch - self.best_epoch >= self.patience

    def restore(self) -> None:
        if self.best_state is not None:
            self.module.load_state_dict(self.best_state)


def fit_linear_probe(
    head: nn.Linear,
    train_x: np.ndarray,
    train_y: np.ndarray,
    val_x: np.ndarray,
    val_y: np.ndarray,
    config: TrainConfig,
    val_records: np.ndarray | None = None,
) -> list[dict]:
    """Train the linear head on precomputed embeddings (BCE, AdamW, minibatches); best epoch kept.

    `val_records`: when `val_x` holds evaluation windows, the record (row of `val_y`) of each; validation
    scores are then the mean of the windows' probabilities per record.
    """
    generator = torch.Generator().manual_seed(config.seed)
    x, y = torch.from_numpy(train_x).float(), torch.from_numpy(train_y).float()
    vx = torch.from_numpy(val_x).float()
    optimizer = torch.optim.AdamW(head.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    stopper, history = EarlyStopping(head, config.patience), []
    for epoch in range(config.epochs):
        head.train()
        for rows in torch.randperm(len(x), generator=generator).split(config.batch_size):
            loss = nn.functional.binary_cross_entropy_with_logits(head(x[rows]), y[rows])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            logits = head(vx)
            if val_records is None:
                scores = logits.numpy()
            else:
                scores = mean_by_record(torch.sigmoid(logits).numpy(), val_records, len(val_y))
            score = macro_auroc(val_y, scores)
        history.append({"epoch": epoch, "train_loss": loss.item(), "val_macro_auroc": score})
        if stopper.step(epoch, score):
            break
    stopper.restore()
    return history


def choose_thresholds(labels: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Per class, the score threshold that maximises F1 on these (validation) records; 0.5 for a class
    with no positive record."""
    thresholds = np.full(labels.shape[1], 0.5)
    for k in range(labels.shape[1]):
        if labels[:, k].any():
            precision, recall, cuts = precision_recall_curve(labels[:, k], scores[:, k])
            f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
            thresholds[k] = cuts[int(np.argmax(f1[:-1]))]
    return thresholds
