"""Hybrid BM25 + dense retrieval over the real knowledge base and the offline MiniLM encoder, and which passages
fit a record (its statements, the findings its measurements support, never filler or a contradicted passage)."""

import logging

import numpy as np
import pytest

from esi.cqa.retrieval import RRF_K, HybridRetriever, RetrievedPassage, build_query
from esi.knowledge import RecordFacts, load_knowledge_base
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


def test_hybrid_ranks_afib_first(hybrid, entries):
    assert int(np.argmax(hybrid.fused_scores([AF_QUERY])[0])) == _index(entries, "scp:AFIB")


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
    assert int(np.argmax(lexical.fused_scores([coded])[0])) == _index(entries, "scp:AFIB")


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


SINUS_71 = RecordFacts(
    frozenset({"NORM", "SR"}), {"heart_rate_bpm": 71.0, "rr_irregular": False, "p_wave_absent": False}
)
TACHY_QUERY = "sinus tachycardia fast heart rate above 100 bpm"


def _ids(passages: list[RetrievedPassage]) -> list[str]:
    return [p.id for p in passages]


def test_sinus_record_at_71_bpm_gets_no_tachycardia_passage(hybrid, entries):
    # The query ranks the tachycardia passage first, yet a 71 bpm sinus record must not get it.
    assert int(np.argmax(hybrid.fused_scores([TACHY_QUERY])[0])) == _index(entries, "scp:STACH")
    results = hybrid.retrieve(TACHY_QUERY, SINUS_71)
    assert "scp:STACH" not in _ids(results)
    assert set(_ids(results)) == {"scp:NORM", "scp:SR"}  # nothing else fits: no filler
    assert all(r.reason.startswith("statement ") for r in results)


def test_tachycardia_passage_needs_a_measured_rate_above_100(hybrid):
    fast = RecordFacts(frozenset(), {"heart_rate_bpm": 124.0, "rr_irregular": False, "p_wave_absent": False})
    results = hybrid.retrieve(TACHY_QUERY, fast)
    assert "scp:STACH" in _ids(results) and "general:heart-rate" in _ids(results)
    assert next(r for r in results if r.id == "scp:STACH").reason.startswith("heart_rate_bpm > 100")
    unmeasured = RecordFacts(frozenset(), {"rr_irregular": False, "p_wave_absent": False})
    assert hybrid.retrieve(TACHY_QUERY, unmeasured) == []  # an unknown rate supports nothing


def test_af_passage_only_with_af_evidence(hybrid):
    regular_with_p = RecordFacts(frozenset({"SR"}), {"rr_irregular": False, "p_wave_absent": False})
    assert not {"scp:AFIB", "general:afib-vs-flutter"} & set(_ids(hybrid.retrieve(AF_QUERY, regular_with_p)))
    irregular_without_p = RecordFacts(frozenset(), {"rr_irregular": True, "p_wave_absent": True})
    assert {"scp:AFIB", "general:afib-vs-flutter"} <= set(_ids(hybrid.retrieve(AF_QUERY, irregular_without_p)))
    stated = hybrid.retrieve(AF_QUERY, RecordFacts(frozenset({"AFIB"})))
    assert _ids(stated)[0] == "scp:AFIB" and stated[0].reason == "statement AFIB"


def test_contradicted_passage_is_not_retrieved_though_supported(hybrid):
    # Irregular without P supports the AF-versus-flutter passage, but a stated sinus rhythm excludes it.
    facts = RecordFacts(frozenset({"SARRH"}), {"rr_irregular": True, "p_wave_absent": True})
    assert "general:afib-vs-flutter" not in _ids(hybrid.retrieve(AF_QUERY, facts))


def test_nothing_fits_gives_no_passage(hybrid):
    assert hybrid.retrieve(AF_QUERY, RecordFacts(frozenset())) == []


def test_own_statements_first_then_supported_by_score_at_most_k(hybrid):
    facts = RecordFacts(frozenset({"CLBBB", "1AVB"}), {"pr_interval_ms": 240.0, "qrs_duration_ms": 150.0})
    results = hybrid.retrieve(AF_QUERY, facts, k=8)
    ids = _ids(results)
    assert set(ids[:2]) == {"scp:CLBBB", "scp:1AVB"}
    assert "scp:LPR" in ids[2:] and "general:bundle-branch-blocks" in ids[2:]
    assert [r.score for r in results[2:]] == sorted((r.score for r in results[2:]), reverse=True)
    assert len(ids) == len(set(ids))
    assert _ids(hybrid.retrieve(AF_QUERY, facts, k=3)) == ids[:3]


def test_default_encoder_is_the_offline_minilm():
    path = default_text_model_path()
    assert (path / "config.json").is_file() and (path / "tokenizer.json").is_file()


def test_deterministic_across_calls_and_instances(hybrid, lexical, entries):
    queries = [AF_QUERY, "QTc 492 ms prolonged", "frontal axis -60 degrees left axis deviation"]
    facts = RecordFacts(frozenset({"LAFB", "LNGQT"}), {"qtc_bazett_ms": 492.0, "qrs_axis_category": "left"})
    for query in queries:
        assert hybrid.retrieve(query, facts, k=5) == hybrid.retrieve(query, facts, k=5)
        fresh = HybridRetriever(entries, encoder_path=None)
        assert fresh.retrieve(query, facts, k=5) == lexical.retrieve(query, facts, k=5)


BATCH_QUERIES = [AF_QUERY, "heart rate 46 bpm bradycardia", AF_QUERY, "QRS duration 150 ms prolonged", "", "ST"]
BATCH_FACTS = [
    RecordFacts(frozenset(codes), {"heart_rate_bpm": 46.0, "rr_irregular": True})
    for codes in [(), ("SBRAD",), ("PVC", "AFIB"), (), ("LVOLT",), ("STE_",)]
]


def _assert_batch_equals_single(batch_retriever, single_retriever):
    batch = batch_retriever.retrieve_batch(BATCH_QUERIES, BATCH_FACTS, k=4)
    assert len(batch) == len(BATCH_QUERIES)
    for query, facts, got in zip(BATCH_QUERIES, BATCH_FACTS, batch, strict=True):
        expected = single_retriever.retrieve(query, facts, k=4)
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


@pytest.mark.slow
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


def test_domain_queries_land_on_the_right_entries(hybrid, entries):
    expectations = {
        "PR interval 236 ms prolonged": {"scp:LPR", "scp:1AVB", "general:pr-interval"},
        "QRS duration 142 ms prolonged": {"general:qrs-duration", "scp:IVCD", "scp:CLBBB", "scp:CRBBB"},
        "heart rate 48 bpm bradycardia": {"general:heart-rate", "scp:SBRAD"},
        "Sokolow-Lyon voltage 4.1 mV": {"general:sokolow-lyon", "scp:LVH", "scp:VCLVH"},
        "baseline drift and noise in the signal": {"general:artefact-baseline-wander", "general:artefact-noise"},
    }
    fused = hybrid.fused_scores(list(expectations))
    for (query, acceptable), scores in zip(expectations.items(), fused, strict=True):
        assert entries[int(np.argmax(scores))].id in acceptable, query


def test_argument_validation(hybrid):
    with pytest.raises(ValueError, match="k must be at least 1"):
        hybrid.retrieve("x", RecordFacts(frozenset()), k=0)
    with pytest.raises(ValueError, match="2 queries but 1"):
        hybrid.retrieve_batch(["a", "b"], [RecordFacts(frozenset())])
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
