"""Caption one clinical ECG file (WFDB, Philips XML, DICOM or CSV): `cqa_generate.py --ecg_file PATH`.

The file is read by `esi.data.ecg_file.read_ecg_file` (the app's reader), measured over its full length
and captioned by the same `Captioner` as a prepared dataset. A PhysioNet/CinC Challenge header's `# Dx:`
codes become the record's statements (named with the Challenge's mapping tables); other files carry no
statements. Research software: the caption is machine-generated and not a diagnosis.
"""

from __future__ import annotations

import os
from pathlib import Path

from esi.constants import STANDARD_LEADS
from esi.cqa.captioner import DEFAULT_SCP_STATEMENTS, Captioner
from esi.cqa.options import GenerationOptions
from esi.data.challenge import header_statements, statement_scp_codes
from esi.data.ecg_file import read_ecg_file
from esi.data.labels import parse_age, parse_sex

SOURCE = "ECG file"


def caption_ecg_file(
    path: str | os.PathLike, options: GenerationOptions, age: float | None = None, sex: str | None = None
) -> dict:
    """Read, measure and caption one ECG file; `age`/`sex` replace what the file states.

    Raises `EcgFileError` (unreadable file) or `RecordError` (bad Dx, age or sex), naming the file.
    """
    ecg = read_ecg_file(path)
    signal = ecg.standard_leads()
    name = ecg.path.name
    age = ecg.age if age is None else parse_age(name, str(age), SOURCE)
    sex = ecg.sex if sex is None else parse_sex(name, sex, SOURCE)
    statements = header_statements(name, list(ecg.comments))
    scp_codes = statement_scp_codes(statements)
    captioner = Captioner(DEFAULT_SCP_STATEMENTS.parent, options)
    try:
        measurements, result = captioner.caption_record(
            signal,
            ecg.sampling_rate,
            STANDARD_LEADS,
            scp_codes,
            age,
            sex,
            record_id=ecg.name,
            statements=statements,
            file_name=name,
        )
    finally:
        captioner.close()
    return {
        "file": str(Path(path)),
        "format": ecg.format,
        "sampling_rate": ecg.sampling_rate,
        "seconds": round(ecg.seconds, 3),
        "age": age,
        "sex": sex or None,
        "statements": statements,
        "caption": result.caption,
        "faithfulness": result.faithfulness,
        "faithfulness_issues": result.issues,
        "backend": captioner.backend.name,
        "model_id": captioner.backend.model_id,
        "prompt_hash": result.prompt_hash,
        "measurements": measurements.to_columns(),
    }
