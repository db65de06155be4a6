"""Cardiology knowledge base for the Cardio Query Assistant (CQA).

The entries are short passages written for this project (see README.md in this
folder) and stored as JSON Lines: one object per line with the keys
``id``, ``title``, ``text``, ``scp_codes`` and ``tags``, and optionally
``supported_if`` and ``contradicted_if`` (conditions on a record, see ``conditions.py``).
Research software, not medical advice.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from esi.knowledge.conditions import Condition, RecordFacts, first_holding, parse_condition

KNOWLEDGE_DIR = Path(__file__).resolve().parent
DEFAULT_PATHS: tuple[Path, ...] = (
    KNOWLEDGE_DIR / "scp_statements.jsonl",
    KNOWLEDGE_DIR / "general.jsonl",
)

_STRING_FIELDS = ("id", "title", "text")
_LIST_FIELDS = ("scp_codes", "tags")
_CONDITION_FIELDS = ("supported_if", "contradicted_if")  # optional


@dataclass(frozen=True)
class KnowledgeEntry:
    """One passage of background knowledge.

    ``scp_codes`` names the PTB-XL SCP statements the passage is *about* (one code
    for a statement entry, empty for general entries), which lets the retriever put
    a record's own statements first. ``tags`` are free topic labels.
    ``supported_if``: conditions under which the passage fits a record that does not state its code (the
    tachycardia passage with a measured rate above 100 bpm); ``contradicted_if``: conditions under which the
    record excludes the passage's finding (the same passage with a rate of 100 bpm or less).
    """

    id: str
    title: str
    text: str
    scp_codes: tuple[str, ...]
    tags: tuple[str, ...]
    supported_if: tuple[Condition, ...] = ()
    contradicted_if: tuple[Condition, ...] = ()

    def contradicted_by(self, facts: RecordFacts) -> Condition | None:
        """The first ``contradicted_if`` condition the record meets, None if it meets none."""
        return first_holding(self.contradicted_if, facts)

    def supported_by(self, facts: RecordFacts) -> Condition | None:
        """The first ``supported_if`` condition the record meets, None if it meets none."""
        return first_holding(self.supported_if, facts)


def scp_entry_id(code: str) -> str:
    """The id of the entry that describes one SCP statement, e.g. ``scp:AFIB``."""
    return f"scp:{code}"


def _parse_line(raw: str, where: str) -> KnowledgeEntry:
    try:
        obj = json.loads(raw)
    except json.JSONDecodeError as err:
        raise ValueError(f"{where}: invalid JSON ({err.msg})") from err
    if not isinstance(obj, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    unknown = set(obj) - set(_STRING_FIELDS) - set(_LIST_FIELDS) - set(_CONDITION_FIELDS)
    if unknown:
        raise ValueError(f"{where}: unknown field(s) {sorted(unknown)}")
    for name in _STRING_FIELDS:
        value = obj.get(name)
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"{where}: field {name!r} must be a non-empty string")
    for name in (*_LIST_FIELDS, *_CONDITION_FIELDS):
        value = obj.get(name, [] if name in _CONDITION_FIELDS else None)
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise ValueError(f"{where}: field {name!r} must be a list of non-empty strings")
    conditions = {}
    for name in _CONDITION_FIELDS:
        try:
            conditions[name] = tuple(parse_condition(text) for text in obj.get(name, []))
        except ValueError as err:
            raise ValueError(f"{where}: field {name!r}: {err}") from None
    return KnowledgeEntry(
        id=obj["id"],
        title=obj["title"],
        text=obj["text"],
        scp_codes=tuple(obj["scp_codes"]),
        tags=tuple(obj["tags"]),
        **conditions,
    )


def load_knowledge_base(paths: Sequence[Path] | None = None) -> list[KnowledgeEntry]:
    """Read and validate knowledge entries from JSONL files, in file and line order.

    ``paths=None`` loads the project's own files. Raises ``ValueError`` naming the
    file and line of the first malformed or duplicate entry.
    """
    entries: list[KnowledgeEntry] = []
    first_seen: dict[str, str] = {}
    for path in DEFAULT_PATHS if paths is None else paths:
        path = Path(path)
        with path.open(encoding="utf-8") as handle:
            for line_no, raw in enumerate(handle, start=1):
                if not raw.strip():
                    continue
                where = f"{path}:{line_no}"
                entry = _parse_line(raw, where)
                if entry.id in first_seen:
                    raise ValueError(f"{where}: duplicate id {entry.id!r} (first at {first_seen[entry.id]})")
                first_seen[entry.id] = where
                entries.append(entry)
    return entries


__all__ = ["DEFAULT_PATHS", "KNOWLEDGE_DIR", "KnowledgeEntry", "RecordFacts", "load_knowledge_base", "scp_entry_id"]
