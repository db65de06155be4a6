"""The text variants the arms pretrain against, composed from the CQA caption dataset's columns.

Until the CQA template writer offers a text-variant option, the variants are rebuilt here from the
columns every caption row carries (`statement_descriptions`, the measurement columns and
`retrieved_passage_ids`), so the variants differ only in content, never in phrasing:

- `statements`:    the record's SCP statements, report-like (what ECG-text models without CQA read)
- `measurements`:  the measured waveform features only
- `no_knowledge`:  statements, then measurements
- `full`:          statements, then measurements, then the retrieved knowledge passages

Statements come first and knowledge last so that a truncated caption loses the least important part
(the order issue 11 asks of the caption writer). Demographics are left out of every variant: the
pretraining pool has none (its README), and a variant must not differ from another by them.
"""

from __future__ import annotations

from collections.abc import Mapping

from esi.knowledge.prompts import first_sentence

VARIANTS = ("full", "no_knowledge", "statements", "measurements")


def _number(row: Mapping, key: str) -> float | None:
    value = row.get(key)
    return None if value is None or value != value else float(value)  # None or nan -> not measured


def measurement_sentence(row: Mapping) -> str:
    """Only the measured values (a value the measurer could not obtain is not mentioned)."""
    parts = []
    if (rate := _number(row, "heart_rate_bpm")) is not None:
        parts.append(f"heart rate {rate:.0f} bpm")
    if row.get("rr_irregular"):
        parts.append("irregular RR intervals")
    if row.get("p_wave_absent"):
        parts.append("no discernible P waves")
    for key, name in (("pr_interval_ms", "PR"), ("qrs_duration_ms", "QRS"), ("qtc_bazett_ms", "QTc")):
        if (value := _number(row, key)) is not None:
            parts.append(f"{name} {value:.0f} ms")
    if row.get("qrs_axis_category"):
        parts.append(f"{row['qrs_axis_category']} QRS axis")
    if (value := _number(row, "sokolow_lyon_mv")) is not None:
        parts.append(f"Sokolow-Lyon {value:.1f} mV")
    if row.get("low_voltage"):
        parts.append("low QRS voltage")
    return ("Measurements: " + ", ".join(parts) + ".") if parts else ""


def statement_sentence(row: Mapping) -> str:
    descriptions = [d for d in row.get("statement_descriptions") or [] if d]
    return ("Findings: " + "; ".join(descriptions) + ".") if descriptions else ""


def knowledge_sentences(row: Mapping, knowledge: Mapping[str, object]) -> str:
    """Title and first sentence of each retrieved passage, in retrieval order."""
    texts = []
    for passage_id in row.get("retrieved_passage_ids") or []:
        entry = knowledge.get(passage_id)
        if entry is None:
            raise ValueError(f"record ecg_id={row.get('ecg_id')}: passage {passage_id!r} is not in the knowledge base")
        texts.append(f"{entry.title}: {first_sentence(entry.text)}")
    return " ".join(texts)


def compose(row: Mapping, variant: str, knowledge: Mapping[str, object]) -> str:
    """The text of `variant` for one caption row; never empty (an empty text would be a free negative)."""
    if variant not in VARIANTS:
        raise ValueError(f"text variant must be one of {VARIANTS}, got {variant!r}")
    pieces = {
        "full": [statement_sentence(row), measurement_sentence(row), knowledge_sentences(row, knowledge)],
        "no_knowledge": [statement_sentence(row), measurement_sentence(row)],
        "statements": [statement_sentence(row)],
        "measurements": [measurement_sentence(row)],
    }[variant]
    text = " ".join(p for p in pieces if p)
    return text or "No finding or measurement is available for this ECG."
