"""Machine-readable conditions under which a knowledge passage fits, or contradicts, one ECG record.

A knowledge entry may carry two lists of conditions: ``supported_if`` (the passage is relevant when any holds)
and ``contradicted_if`` (the record excludes the passage's finding when any holds). A condition is one or more
terms joined by `` and ``; each term is one of

- ``statement CODE``: the record states the SCP-ECG statement ``CODE`` (``statement AFIB``);
- ``FIELD OP NUMBER`` with ``OP`` one of ``<``, ``<=``, ``>``, ``>=`` (``heart_rate_bpm > 100``);
- ``FIELD`` or ``not FIELD`` for a yes/no measurement (``rr_irregular and p_wave_absent``);
- ``FIELD is WORD`` for a category (``qrs_axis_category is left``).

Measurements are read from ``RecordFacts.values``, which holds only the values that may be stated as fact: a
value that was not measured, or was flagged low confidence, makes its term unknown, and a condition with an
unknown term and no false one neither holds nor fails (three-valued logic). So an unmeasured rate never makes the
tachycardia passage fit, nor contradicts it.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

# The measurement fields a condition may name (EcgMeasurements' scalar fields, by name).
NUMERIC_FIELDS = (
    "heart_rate_bpm",
    "pr_interval_ms",
    "qrs_duration_ms",
    "qt_interval_ms",
    "qtc_bazett_ms",
    "qtc_fridericia_ms",
    "qrs_axis_deg",
    "sokolow_lyon_mv",
    "cornell_mv",
)
BOOLEAN_FIELDS = ("rr_irregular", "p_wave_absent", "low_voltage")
CATEGORY_FIELDS = {"qrs_axis_category": ("normal", "left", "right", "extreme")}
CONDITION_FIELDS = (*NUMERIC_FIELDS, *BOOLEAN_FIELDS, *CATEGORY_FIELDS)

_COMPARISONS: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
_STATEMENT_RE = re.compile(r"^statement (\S+)$")
_COMPARISON_RE = re.compile(r"^(\w+) (<=|>=|<|>) ([-+]?\d+(?:\.\d+)?)$")
_FLAG_RE = re.compile(r"^(not )?(\w+)$")
_CATEGORY_RE = re.compile(r"^(\w+) is (\w+)$")


@dataclass(frozen=True)
class RecordFacts:
    """What one record says about itself: its SCP-ECG statement codes and its reliable measurements.

    ``values`` maps a field of ``CONDITION_FIELDS`` to its value; a field left out is unknown.
    """

    codes: frozenset[str]
    values: Mapping[str, float | bool | str] = field(default_factory=dict)


@dataclass(frozen=True)
class _Term:
    kind: str  # "statement", "compare", "flag" or "category"
    name: str  # statement code or field name
    op: str = ""
    value: float | bool | str = True

    def holds(self, facts: RecordFacts) -> bool | None:
        if self.kind == "statement":
            return self.name in facts.codes
        actual = facts.values.get(self.name)
        if actual is None:
            return None
        if self.kind == "compare":
            return _COMPARISONS[self.op](float(actual), float(self.value))
        return actual == self.value


@dataclass(frozen=True)
class Condition:
    """A conjunction of terms, parsed from its text (kept for messages)."""

    text: str
    terms: tuple[_Term, ...]

    @property
    def statements_only(self) -> bool:
        """Whether only the record's statements decide it (no measurement takes part)."""
        return all(t.kind == "statement" for t in self.terms)

    def holds(self, facts: RecordFacts) -> bool | None:
        """True or False, or None when a term is unknown and none is false."""
        results = [term.holds(facts) for term in self.terms]
        if False in results:
            return False
        return None if None in results else True


def _parse_term(text: str) -> _Term:
    if match := _STATEMENT_RE.match(text):
        return _Term("statement", match.group(1))
    if match := _COMPARISON_RE.match(text):
        name, op, number = match.groups()
        if name not in NUMERIC_FIELDS:
            raise ValueError(f"'{name}' is not a numeric measurement ({', '.join(NUMERIC_FIELDS)})")
        return _Term("compare", name, op, float(number))
    if match := _CATEGORY_RE.match(text):
        name, word = match.groups()
        if word not in CATEGORY_FIELDS.get(name, ()):
            raise ValueError(f"'{text}' names no category of {', '.join(CATEGORY_FIELDS)}")
        return _Term("category", name, value=word)
    if match := _FLAG_RE.match(text):
        negated, name = match.groups()
        if name not in BOOLEAN_FIELDS:
            raise ValueError(f"'{name}' is not a yes/no measurement ({', '.join(BOOLEAN_FIELDS)})")
        return _Term("flag", name, value=not negated)
    raise ValueError(f"cannot read the condition term '{text}'")


def parse_condition(text: str) -> Condition:
    """``"heart_rate_bpm > 100 and not p_wave_absent"`` -> Condition; ValueError naming the bad term."""
    parts = [part.strip() for part in text.split(" and ")]
    if not all(parts):
        raise ValueError(f"empty term in the condition '{text}'")
    return Condition(text, tuple(_parse_term(part) for part in parts))


def first_holding(conditions: Sequence[Condition], facts: RecordFacts) -> Condition | None:
    """The first condition that holds for the record, None if none does."""
    return next((c for c in conditions if c.holds(facts)), None)


__all__ = [
    "CONDITION_FIELDS",
    "Condition",
    "RecordFacts",
    "first_holding",
    "parse_condition",
]
