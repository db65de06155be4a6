"""The Cardio Query Assistant's view of one record: its measurements and its template description."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from esi.cqa.measurements import EcgMeasurements, measure_ecg
from esi.cqa.pipeline import Captioner, GenerationOptions
from esi.cqa.prompts import build_request, measurement_lines

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
        m = measure_ecg(
            record.signal, record.sampling_rate, list(record.lead_names), ecg_id=record.ecg_id or record.name
        )
        row = {
            "ecg_id": [record.ecg_id or 0],  # uploads have no PTB-XL id; 0 only seeds the template's phrasing
            "scp_codes": [json.dumps(record.scp_codes)],
            "age": [record.age],
            "sex": [record.sex],
            "report": [record.report],
        }
        inputs = self.captioner.inputs(row, [m])[0]
        ((text, outcome, _),) = self.captioner.captions([build_request(inputs)])
        return CqaResult(m, measurement_table(m), text, outcome)
