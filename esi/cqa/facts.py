"""What a record says about itself, in the form knowledge-base conditions read (``esi.knowledge.conditions``)."""

from __future__ import annotations

from collections.abc import Iterable

from esi.cqa.measurements import reliable_value
from esi.knowledge import RecordFacts
from esi.knowledge.conditions import CONDITION_FIELDS


def record_facts(statement_codes: Iterable[str], measurements) -> RecordFacts:
    """The record's SCP-ECG statement codes and its measurements that may be stated as fact (measured, not
    flagged low confidence); pass measurements already reconciled with the statements, so a rhythm flag that
    conflicts with them is unknown rather than evidence."""
    values = {name: reliable_value(measurements, name) for name in CONDITION_FIELDS}
    return RecordFacts(frozenset(statement_codes), {name: v for name, v in values.items() if v is not None})
