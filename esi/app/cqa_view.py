"""The Cardio Query Assistant's view of one record: its measurements and its template description."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from esi.cqa.captioner import Captioner
from esi.cqa.measurements import EcgMeasurements
from esi.cqa.options import GenerationOptions
from esi.cqa.prompts import measurement_lines

from .records import EcgRecord


@dataclass
class CqaResult:
    measurements: EcgMeasurements
    table: list[list[str]]  # [measurement, value] rows, as the CQA prompt states them
    description: str
    faithfulness: str


def measurement_table(m: EcgMeasurements) -> list[list[str]]:
    """`- Heart rate: 72 bpm` lines of the CQA prompt as [name, value] rows."""
    return [line.removeprefix("- ").split(": ", 1) for line in measurement_lines(m)]


class CqaDescriber:
    """Measures a record and writes its description with the template backend (no LLM), as `cqa_generate.py` does."""

    def __init__(self, ptbxl_dir: str | Path) -> None:
        self.captioner = Captioner(Path(ptbxl_dir), GenerationOptions(backend="template"))

    def describe(self, record: EcgRecord) -> CqaResult:
        m, result = self.captioner.caption_record(
            record.signal,
            record.sampling_rate,
            record.lead_names,
            record.scp_codes,
            age=record.age,
            sex=record.sex,
            report=record.report,
            record_id=record.ecg_id if record.ecg_id is not None else record.name,
            statements=record.statements,
            file_name=None if record.ecg_id is not None else record.name,
        )
        return CqaResult(m, measurement_table(m), result.caption, result.faithfulness)
