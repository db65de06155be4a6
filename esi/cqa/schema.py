"""The captioned dataset's columns: one Arrow schema for every shard, every backend and every run."""

from __future__ import annotations

import typing

from datasets import Features, List, Value

from esi.cqa.measurements import EcgMeasurements

# How a caption passed the faithfulness check (the `faithfulness` column).
FAITHFULNESS_OUTCOMES = ("pass", "pass_after_retry", "template_fallback")


def measurement_features() -> dict[str, Value]:
    """Arrow types of ``EcgMeasurements.to_columns()``, fixed so every shard has the same schema."""
    hints = typing.get_type_hints(EcgMeasurements)
    out = {}
    for key in EcgMeasurements().to_columns():
        hint = str(hints.get(key, ""))
        if "bool" in hint:
            out[key] = Value("bool")
        elif "float" in hint or key.endswith(("_ms", "_mv", "_bpm", "_deg")):
            out[key] = Value("float64")
        else:
            out[key] = Value("string")
    return out


def output_features() -> Features:
    strings = List(Value("string"))
    return Features(
        {
            "ecg_id": Value("int32"),
            "split": Value("string"),
            "caption": Value("string"),
            **measurement_features(),
            "statements": strings,
            "statement_descriptions": strings,
            "retrieved_passage_ids": strings,
            "backend": Value("string"),
            "model_id": Value("string"),
            "prompt_hash": Value("string"),
            "faithfulness": Value("string"),
            "faithfulness_issues": strings,
        }
    )
