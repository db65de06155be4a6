"""Nearest neighbours in the embedded sample: every sample ECG embedded once, cached on disk by model hash."""

from __future__ import annotations

import hashlib
import itertools
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .inference import EsiPredictor
from .records import SampleCatalogue

logger = logging.getLogger(__name__)
BATCH = 32


@dataclass
class Neighbour:
    ecg_id: int
    similarity: float
    statements: str


class SampleIndex:
    def __init__(self, predictor: EsiPredictor, catalogue: SampleCatalogue, cache_dir: str | Path) -> None:
        self.catalogue = catalogue
        ids = catalogue.ecg_ids
        key = hashlib.sha256(f"{predictor.hash}:{','.join(map(str, ids))}".encode()).hexdigest()[:20]
        self.cache_path = Path(cache_dir) / f"sample_embeddings_{key}.npz"
        if self.cache_path.is_file():
            cached = np.load(self.cache_path)
            self.ids, self.embeddings = cached["ecg_ids"], cached["embeddings"]
        else:
            self.ids, self.embeddings = np.asarray(ids), self._embed_all(predictor, ids)
            self.cache_path.parent.mkdir(parents=True, exist_ok=True)
            np.savez(self.cache_path, ecg_ids=self.ids, embeddings=self.embeddings)
            logger.info("embedded %d sample ECGs into %s", len(ids), self.cache_path)

    def _embed_all(self, predictor: EsiPredictor, ids: list[int]) -> np.ndarray:
        records = [self.catalogue.read(ecg_id) for ecg_id in ids]
        parts = []
        # A batch shares one sampling rate; grouping consecutive records keeps the order.
        for _, group in itertools.groupby(records, key=lambda record: record.sampling_rate):
            group = list(group)
            parts += [predictor.embed(group[i : i + BATCH]) for i in range(0, len(group), BATCH)]
        return np.concatenate(parts)

    def nearest(self, embedding: np.ndarray, k: int = 5, exclude: int | None = None) -> list[Neighbour]:
        """Top-k sample ECGs by cosine similarity (embeddings are unit length)."""
        scores = self.embeddings @ embedding
        order = [i for i in np.argsort(-scores, kind="stable") if int(self.ids[i]) != exclude][:k]
        return [
            Neighbour(int(self.ids[i]), float(scores[i]), self.catalogue.statements_text(int(self.ids[i])))
            for i in order
        ]
