"""Hybrid BM25 + dense retrieval over the real knowledge base and the offline MiniLM encoder."""

import logging

import numpy as np
import pytest

from esi.cqa.retrieval import RRF_K, HybridRetriever, RetrievedPassage, build_query
from esi.knowledge import load_knowledge_base
from esi.text_encoder import default_text_model_path

AF_QUERY = "atrial fibrillation irregular rhythm without P waves"


@pytest.fixture(scope="module")
def entries():
    return load_knowledge_base()


@pytest.fixture(scope="module")
def hybrid(entries):
    # No cache, so repeated and batched calls below really recompute (one encoder load keeps the tests fast).
    return HybridRetriever(entries, cache_size=0)


@pytest.fixture(scope="module")
def lexical(entries):
    return HybridRetriever(entries, encoder_path=None)


def _index(entries, entry_id: str) -> int:
    return next(i for i, e in enumerate(entries) if e.id == entry_id)


def test_hybrid_ranks_afib_first(hybrid):
    results = hybrid.retrieve(AF_QUERY)
    assert len(results) == 4
    assert isinstance(results[0], RetrievedPassage)
    assert results[0].id == "scp:AFIB"
    assert [r.score for r in results] == sorted((r.score for r in results), reverse=True)


def test_dense_ranker_alone_ranks_afib_first(hybrid, entries):
    scores = hybrid.dense_scores([AF_QUERY])[0]
    assert int(np.argmax(scores)) == _index(entries, "scp:AFIB")
    # Unit-length embeddings: cosine scores lie in [-1, 1].
    assert scores.max() <= 1.0 + 1e-5 and scores.min() >= -1.0 - 1e-5


def test_lexical_ranker_alone_finds_afib(lexical, entries):
    scores = lexical.lexical_scores([AF_QUERY])[0]
    top3 = np.argsort(-scores, kind="stable")[:3]
    assert _index(entries, "scp:AFIB") in top3
    # Every top hit is about atrial arrhythmia, not an unrelated statement.
    assert all("atrial" in entries[i].text.lower() for i in top3)
    # A query built from the record's statement carries the code, which only the AFIB entry names.
    coded = build_query(["AFIB"], ["atrial fibrillation"], [])
    assert lexical.retrieve(coded)[0].id == "scp:AFIB"


def test_lexical_only_mode_is_announced_and_has_no_dense_scores(entries, caplog):
    with caplog.at_level(logging.WARNING, logger="esi.cqa.retrieval"):
        retriever = HybridRetriever(entries, encoder_path=None)
    assert "dense retrieval disabled" in caplog.text
    assert not retriever.dense_enabled
    with pytest.raises(RuntimeError):
        retriever.dense_scores(["x"])


def test_fusion_is_reciprocal_rank(hybrid, entries):
    lex = hybrid.lexical_scores([AF_QUERY])[0]
    dense = hybrid.dense_scores([AF_QUERY])[0]
    fused = hybrid.fused_scores([AF_QUERY])[0]
    i = _index(entries, "scp:AFIB")
    lex_rank = 1 + int((lex > lex[i]).sum())
    dense_rank = 1 + int((dense > dense[i]).sum())
    assert fused[i] == pytest.approx(1 / (RRF_K + lex_rank) + 1 / (RRF_K + dense_rank))


def test_passages_without_shared_terms_get_no_lexical_credit(lexical):
    fused = lexical.fused_scores(["sawtooth"])[0]
    assert (fused > 0).sum() == (lexical.lexical_scores(["sawtooth"])[0] > 0).sum() >= 1


def test_required_codes_come_first_ordered_by_score(hybrid):
    results = hybrid.retrieve(AF_QUERY, k=4, required_codes=["CLBBB", "1AVB", "NOT_A_CODE"])
    ids = [r.id for r in results]
    assert set(ids[:2]) == {"scp:CLBBB", "scp:1AVB"}
    assert results[0].score >= results[1].score
    assert ids[2] == "scp:AFIB"  # then the best of the fused ranking
    assert len(ids) == len(set(ids)) == 4


def test_required_codes_are_truncated_at_k(hybrid):
    required = ["SR", "NORM", "LVH", "CLBBB", "1AVB", "AFIB"]
    results = hybrid.retrieve(AF_QUERY, k=3, required_codes=required)
    assert len(results) == 3
    assert results[0].id == "scp:AFIB"  # the required entry that best matches the query
    assert {r.id for r in results} <= {f"scp:{c}" for c in required}


def test_default_encoder_is_the_offline_minilm():
    path = default_text_model_path()
    assert (path / "config.json").is_file() and (path / "tokenizer.json").is_file()


def test_deterministic_across_calls_and_instances(hybrid, lexical, entries):
    queries = [AF_QUERY, "QTc 492 ms prolonged", "frontal axis -60 degrees left axis deviation"]
    for query in queries:
        assert hybrid.retrieve(query, k=5) == hybrid.retrieve(query, k=5)
        fresh = HybridRetriever(entries, encoder_path=None)
        assert fresh.retrieve(query, k=5) == lexical.retrieve(query, k=5)


BATCH_QUERIES = [AF_QUERY, "heart rate 46 bpm bradycardia", AF_QUERY, "QRS duration 150 ms prolonged", "", "ST"]
BATCH_REQUIRED = [(), ("SBRAD",), ("PVC", "AFIB"), (), (), ("STE_",)]


def _assert_batch_equals_single(batch_retriever, single_retriever):
    batch = batch_retriever.retrieve_batch(BATCH_QUERIES, k=4, required_codes_list=BATCH_REQUIRED)
    assert len(batch) == len(BATCH_QUERIES)
    for query, codes, got in zip(BATCH_QUERIES, BATCH_REQUIRED, batch, strict=True):
        expected = single_retriever.retrieve(query, k=4, required_codes=codes)
        assert [r.id for r in got] == [r.id for r in expected]
        assert [r.score for r in got] == pytest.approx([r.score for r in expected])
    assert {r.id for r in batch[2][:2]} == {"scp:AFIB", "scp:PVC"}


def test_batch_equals_single_hybrid(hybrid):
    # Batched, padded encoding must give the same rankings as one query at a time.
    _assert_batch_equals_single(hybrid, hybrid)


def test_batch_equals_single_through_the_cache(entries, lexical):
    cached = HybridRetriever(entries, encoder_path=None, cache_size=2)
    for _ in range(2):  # second round is served partly from the small LRU cache
        _assert_batch_equals_single(cached, lexical)


def test_threaded_batches_equal_one_query_at_a_time(hybrid, entries):
    # 150 queries of 1 to ~60 tokens: three batches, cut by token count, encoded in two threads, must give each
    # query the scores it gets alone (no padding); a row written to the wrong query or a bad mask would not.
    words = (AF_QUERY + " heart rate 46 bpm bradycardia QRS duration prolonged left axis deviation").split()
    queries = [" ".join(words[: 1 + (7 * i) % len(words)] * (1 + i % 3)) for i in range(150)]
    threaded = HybridRetriever(entries, cache_size=0, encode_threads=2)
    batched = threaded.dense_scores(queries)
    alone = np.concatenate([hybrid.dense_scores([q]) for q in queries])
    np.testing.assert_allclose(batched, alone, atol=1e-5)
    np.testing.assert_array_equal(batched, hybrid.dense_scores(queries))  # threads do not change a bit


def test_domain_queries_land_on_the_right_entries(hybrid):
    expectations = {
        "PR interval 236 ms prolonged": {"scp:LPR", "scp:1AVB", "general:pr-interval"},
        "QRS duration 142 ms prolonged": {"general:qrs-duration", "scp:IVCD", "scp:CLBBB", "scp:CRBBB"},
        "heart rate 48 bpm bradycardia": {"general:heart-rate", "scp:SBRAD"},
        "Sokolow-Lyon voltage 4.1 mV": {"general:sokolow-lyon", "scp:LVH", "scp:VCLVH"},
        "baseline drift and noise in the signal": {"general:artefact-baseline-wander", "general:artefact-noise"},
    }
    results = hybrid.retrieve_batch(list(expectations), k=1)
    for (query, acceptable), top in zip(expectations.items(), results, strict=True):
        assert top[0].id in acceptable, query


def test_argument_validation(hybrid):
    with pytest.raises(ValueError, match="k must be at least 1"):
        hybrid.retrieve("x", k=0)
    with pytest.raises(ValueError, match="2 queries but 1"):
        hybrid.retrieve_batch(["a", "b"], required_codes_list=[()])
    with pytest.raises(ValueError, match="at least one"):
        HybridRetriever([], encoder_path=None)


def test_build_query():
    query = build_query(
        ["AFIB", "1AVB"],
        ["atrial fibrillation", "first degree AV block"],
        ["heart rate 112 bpm tachycardia", " ", "ST depression 0.15 mV in V5 and aVF", "heart rate 97 bpm tachycardia"],
    )
    assert query == (
        "atrial fibrillation (AFIB). first degree AV block (1AVB). heart rate tachycardia. ST depression in V5 and aVF"
    )
    assert build_query([], [], ["frontal axis -60 degrees left axis deviation"]) == "frontal axis left axis deviation"
    with pytest.raises(ValueError, match="2 statement codes but 1 descriptions"):
        build_query(["AFIB", "PVC"], ["atrial fibrillation"], [])


def test_records_with_the_same_findings_share_a_query():
    first = build_query(["SR"], ["sinus rhythm"], ["QRS duration 142 ms prolonged", "QTc 488 ms prolonged"])
    second = build_query(["SR"], ["sinus rhythm"], ["QRS duration 126 ms prolonged", "QTc 503 ms prolonged"])
    assert first == second == "sinus rhythm (SR). QRS duration prolonged. QTc prolonged"
