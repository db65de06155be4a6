"""The cardiology knowledge base: coverage of PTB-XL's statements, validity and key criteria."""

import csv
import dataclasses
import json

import pytest

from esi.knowledge import DEFAULT_PATHS, KnowledgeEntry, RecordFacts, load_knowledge_base, scp_entry_id
from tests.helpers import PTBXL_SAMPLE

SCP_CSV = PTBXL_SAMPLE / "scp_statements.csv"


@pytest.fixture(scope="module")
def entries() -> list[KnowledgeEntry]:
    return load_knowledge_base()


@pytest.fixture(scope="module")
def by_id(entries) -> dict[str, KnowledgeEntry]:
    return {e.id: e for e in entries}


@pytest.fixture(scope="module")
def scp_rows() -> dict[str, dict[str, str]]:
    with SCP_CSV.open(encoding="utf-8") as handle:
        return {row[""]: row for row in csv.DictReader(handle)}


def test_every_scp_statement_has_its_entry(by_id, scp_rows):
    assert len(scp_rows) == 71
    for code in scp_rows:
        entry = by_id[scp_entry_id(code)]
        assert entry.scp_codes == (code,)
        assert f"({code})" in entry.title


def test_statement_kind_tags_follow_the_csv(by_id, scp_rows):
    for code, row in scp_rows.items():
        tags = set(by_id[scp_entry_id(code)].tags)
        for kind in ("diagnostic", "form", "rhythm"):
            assert (kind in tags) == bool(row[kind]), (code, kind)
        if row["diagnostic_class"]:
            assert f"class:{row['diagnostic_class']}" in tags


def test_ids_unique_and_general_entries_present(entries):
    ids = [e.id for e in entries]
    assert len(ids) == len(set(ids))
    general = [e for e in entries if e.id.startswith("general:")]
    assert len(general) >= 20
    assert all(e.scp_codes == () for e in general)


def test_texts_are_passage_sized(entries):
    for entry in entries:
        assert 60 <= len(entry.text.split()) <= 150, entry.id


# Numeric criteria that the caption writer relies on; each must appear in its entry.
KEY_CRITERIA = {
    "scp:1AVB": ["200 ms"],
    "scp:LPR": ["200 ms"],
    "scp:CLBBB": ["120 ms", "I, aVL, V5 and V6", "absent septal q waves"],
    "scp:CRBBB": ["120 ms", "rsR'", "V1-V2", "S wave in I, aVL, V5 and V6"],
    "scp:LVH": ["3.5 mV", "2.8 mV", "2.0 mV", "Sokolow-Lyon", "Cornell"],
    "scp:LNGQT": ["450 ms", "460 ms", "500 ms"],
    "scp:SBRAD": ["60 bpm"],
    "scp:STACH": ["100 bpm"],
    "scp:LVOLT": ["0.5 mV", "1.0 mV"],
    "scp:AFIB": ["350-600", "P waves"],
    "scp:AFLT": ["240-350", "sawtooth"],
    "scp:WPW": ["120 ms", "delta wave"],
    "scp:LAFB": ["-45"],
    "scp:RVH": ["1.05 mV"],
    "scp:NORM": ["120-200 ms", "-30 and +90"],
    "general:pr-interval": ["120-200 ms"],
    "general:qrs-duration": ["120 ms"],
    "general:qt-interval": ["450 ms", "460 ms"],
    "general:qtc-formulas": ["sqrt(RR)", "RR^(1/3)", "447 ms", "431 ms"],
    "general:heart-rate": ["60 and 100 bpm"],
    "general:frontal-axis": ["-30 to +90"],
    "general:lead-territories": ["II, III and aVF", "I, aVL, V5 and V6", "V1-V2", "V3-V4"],
    "general:sokolow-lyon": ["3.5 mV"],
    "general:cornell": ["2.8 mV", "2.0 mV"],
    "general:low-voltage": ["0.5 mV", "1.0 mV"],
}


@pytest.mark.parametrize("entry_id", sorted(KEY_CRITERIA))
def test_key_entries_state_their_criteria(by_id, entry_id):
    for fact in KEY_CRITERIA[entry_id]:
        assert fact in by_id[entry_id].text, (entry_id, fact)


def test_qtc_example_numbers_are_correct():
    qt_ms, rr_s = 400, 0.8
    assert round(qt_ms / rr_s**0.5) == 447
    assert round(qt_ms / rr_s ** (1 / 3)) == 431


def test_entries_are_immutable(entries):
    with pytest.raises(dataclasses.FrozenInstanceError):
        entries[0].text = "changed"


def test_default_paths_are_the_shipped_files(entries):
    assert [p.name for p in DEFAULT_PATHS] == ["scp_statements.jsonl", "general.jsonl"]
    assert load_knowledge_base(list(DEFAULT_PATHS)) == entries


def _line(**overrides) -> str:
    obj = {"id": "x:1", "title": "T", "text": "some text", "scp_codes": [], "tags": ["t"]}
    obj.update(overrides)
    return json.dumps({k: v for k, v in obj.items() if v is not None})


def test_duplicate_id_names_file_and_line(tmp_path):
    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    first.write_text(_line() + "\n", encoding="utf-8")
    second.write_text(_line(id="x:2") + "\n\n" + _line() + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"b\.jsonl:3: duplicate id 'x:1' \(first at .*a\.jsonl:1\)"):
        load_knowledge_base([first, second])


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (_line(text=None), "field 'text' must be a non-empty string"),
        (_line(title="  "), "field 'title' must be a non-empty string"),
        (_line(scp_codes="AFIB"), "field 'scp_codes' must be a list"),
        (_line(tags=[1]), "field 'tags' must be a list"),
        ('{"id": "x:1",', "invalid JSON"),
        ("[1, 2]", "expected a JSON object"),
        (_line(extra="y"), r"unknown field\(s\) \['extra'\]"),
        (_line(supported_if=["heart_rate > 100"]), "field 'supported_if': 'heart_rate' is not a numeric measurement"),
        (_line(contradicted_if=["qrs_axis_category is up"]), "field 'contradicted_if': .* names no category"),
        (_line(supported_if=["rr_irregular and "]), "field 'supported_if': empty term"),
        (_line(supported_if="low_voltage"), "field 'supported_if' must be a list"),
    ],
)
def test_malformed_lines_are_rejected_with_location(tmp_path, line, message):
    path = tmp_path / "kb.jsonl"
    path.write_text(_line(id="ok") + "\n" + line + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match=rf"kb\.jsonl:2: {message}"):
        load_knowledge_base([path])


def test_conditions_name_real_statements(entries, scp_rows):
    named = {
        term.name
        for e in entries
        for condition in e.supported_if + e.contradicted_if
        for term in condition.terms
        if term.kind == "statement"
    }
    assert named and named <= set(scp_rows)


def test_condition_fields_are_measurement_fields():
    from esi.cqa.measurements import EcgMeasurements
    from esi.knowledge.conditions import CONDITION_FIELDS

    assert set(CONDITION_FIELDS) <= {f.name for f in dataclasses.fields(EcgMeasurements)}


SINUS = {"rr_irregular": False, "p_wave_absent": False}


@pytest.mark.parametrize(
    ("entry_id", "facts", "supported", "contradicted"),
    [
        ("scp:STACH", RecordFacts(frozenset({"SR"}), {"heart_rate_bpm": 71.0, **SINUS}), None, "heart_rate_bpm <= 100"),
        ("scp:STACH", RecordFacts(frozenset(), {"heart_rate_bpm": 124.0, **SINUS}), "heart_rate_bpm > 100", None),
        ("scp:STACH", RecordFacts(frozenset(), SINUS), None, None),  # rate unknown: neither
        ("scp:AFIB", RecordFacts(frozenset({"SR"}), SINUS), None, "statement SR"),
        ("scp:AFIB", RecordFacts(frozenset(), {"rr_irregular": True}), None, None),  # P waves unknown: neither
        ("scp:AFIB", RecordFacts(frozenset(), {"rr_irregular": True, "p_wave_absent": True}), "rr_irregular", None),
        ("scp:1AVB", RecordFacts(frozenset(), {"pr_interval_ms": 164.0}), None, "pr_interval_ms <= 200"),
        ("general:frontal-axis", RecordFacts(frozenset(), {"qrs_axis_category": "left"}), "qrs_axis_category", None),
    ],
)
def test_key_conditions(by_id, entry_id, facts, supported, contradicted):
    entry = by_id[entry_id]
    support, contradiction = entry.supported_by(facts), entry.contradicted_by(facts)
    assert (support is None) == (supported is None) and (supported is None or support.text.startswith(supported))
    assert (contradiction is None) == (contradicted is None)
    assert contradicted is None or contradiction.text == contradicted
