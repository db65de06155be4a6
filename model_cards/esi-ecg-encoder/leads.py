"""Lead names and their order: plain Python, so that code which only needs them does not import torch."""

from collections.abc import Sequence

PTBXL_LEAD_ORDER = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")


def map_leads_by_name(lead_names: Sequence[str], wanted: Sequence[str] = PTBXL_LEAD_ORDER) -> list[int | None]:
    """For each lead in `wanted`, its row among `lead_names` (None when absent). Names match case-insensitively.

    Raises `ValueError` for a name that is not among `wanted` or a name given twice: either would put a
    lead's signal under another lead's name.
    """
    expected = {name.casefold() for name in wanted}
    given = [str(name).strip().casefold() for name in lead_names]
    unknown = [name for name, key in zip(lead_names, given, strict=True) if key not in expected]
    if unknown:
        raise ValueError(f"unknown lead name(s) {unknown}; expected names among {list(wanted)}")
    if len(set(given)) != len(given):
        raise ValueError(f"lead_names lists a lead twice: {list(lead_names)}")
    return [given.index(name.casefold()) if name.casefold() in given else None for name in wanted]
