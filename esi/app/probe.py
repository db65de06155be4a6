"""Class probabilities for a model with neither a classifier head nor a text tower (the released encoder): a linear
probe on the embedded sample's PTB-XL superclass labels, fitted once when the app starts.

The recipe is `esi-finetune --method linear_probe`'s (`esi.eval.probe.fit_linear_probe`): PTB-XL folds 1-8 train
the head, fold 9 chooses its epoch. The sample is small (300 records), so these probabilities show what the
embeddings separate, not a validated classifier.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from esi.data.ptbxl import PtbxlLabeler, load_statements, multi_hot
from esi.eval.probe import TrainConfig, fit_linear_probe

from .inference import Predictions
from .records import SampleCatalogue
from .similar import SampleIndex

TASK = "superdiagnostic"
TRAIN_FOLDS, VALIDATION_FOLD = range(1, 9), 9
PROBE_CONFIG = TrainConfig(epochs=200, batch_size=64, lr=3e-3, patience=20)  # esi-finetune's linear-probe defaults


class SampleProbe:
    def __init__(self, index: SampleIndex, catalogue: SampleCatalogue) -> None:
        labeler = PtbxlLabeler(load_statements(catalogue.root))
        names = labeler.class_names[TASK]
        folds = np.array([int(catalogue.rows[int(i)]["strat_fold"]) for i in index.ids])
        labels = multi_hot([labeler(int(i), catalogue.scp_codes(int(i)))[TASK] for i in index.ids], len(names))
        train, validation = np.isin(folds, TRAIN_FOLDS), folds == VALIDATION_FOLD
        # A class without a positive training record cannot be probed: it is left out, not guessed.
        kept = [k for k in range(len(names)) if labels[train, k].any()]
        self.class_names = [names[k] for k in kept]
        self.head = nn.Linear(index.embeddings.shape[1], len(kept))
        fit_linear_probe(
            self.head,
            index.embeddings[train],
            labels[train][:, kept],
            index.embeddings[validation],
            labels[validation][:, kept],
            PROBE_CONFIG,
        )
        self.head.eval()
        self.method = (
            f"Linear probe on this model's embeddings, fitted on the {int(train.sum())} embedded sample ECGs of "
            f"PTB-XL folds 1-8 (superclass labels; independent sigmoid per class). A small sample: it shows what "
            "the embeddings separate, it is not a validated classifier"
        )

    @torch.no_grad()
    def predict(self, embedding: np.ndarray) -> Predictions:
        probabilities = torch.sigmoid(self.head(torch.from_numpy(embedding).float()[None]))[0]
        return Predictions(self.method, dict(zip(self.class_names, probabilities.tolist(), strict=True)))
