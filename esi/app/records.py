"""Records for the app: an uploaded ECG file (WFDB .hea + .dat/.mat, Philips XML, DICOM, CSV) or the
embedded PTB-XL sample, read by `esi.data.ecg_file` and held to what the app needs (12 standard leads,
>= 100 Hz, >= 2 s, the first 10 s). Failures read as plain sentences for the person using the app."""

from __future__ import annotations

import logging
import math
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from esi.constants import MIN_SECONDS, PTBXL_AGE_OVER_89, STANDARD_LEADS
from esi.data.challenge import header_statements, statement_scp_codes
from esi.data.ecg_file import SUPPORTED_FORMATS, EcgFileError, ReadLimits, read_ecg_file
from esi.data.ptbxl import (
    SEX_NAMES,
    PtbxlRecordError,
    load_database,
    load_statements,
    parse_scp_codes,
    record_path,
)
from modeling_esi.configuration_esi import EsiEcgConfig

# The model reads this many seconds (its configuration's default); longer records are cut.
MAX_SECONDS = EsiEcgConfig.duration_s
MIN_RATE_HZ = 100
# An upload may be at most this large in all (Gradio refuses larger files before they reach the app).
MAX_UPLOAD_BYTES = 20 * 2**20
APP_LIMITS = ReadLimits(max_file_bytes=MAX_UPLOAD_BYTES, min_rate_hz=MIN_RATE_HZ, min_seconds=MIN_SECONDS)
WFDB_SUFFIXES = (".hea", ".dat", ".mat")
SINGLE_FILE_SUFFIXES = (".xml", ".dcm", ".csv")

# The reader's refusal is the app's: one sentence naming the file and the problem, shown as is.
RecordError = EcgFileError


@dataclass
class EcgRecord:
    """One ECG in standard lead order (leads x time, millivolts) and what is known about it."""

    name: str
    signal: np.ndarray
    sampling_rate: int
    ecg_id: int | None = None
    age: float | None = None
    sex: str = ""
    report: str = ""
    scp_codes: dict[str, float] = field(default_factory=dict)
    # Entries (system, code, text) of a file's own statements (a Challenge header's `# Dx:` codes); None for
    # the PTB-XL sample, whose statements are its `scp_codes`.
    statements: list[dict[str, str]] | None = None

    lead_names: tuple[str, ...] = STANDARD_LEADS


def read_record(path: Path, **metadata) -> EcgRecord:
    """A 12-lead record from one ECG file (a WFDB record from its .hea): the first 10 s, standard lead order."""
    ecg = read_ecg_file(path, APP_LIMITS)
    signal = ecg.standard_leads()[:, : int(MAX_SECONDS * ecg.sampling_rate)]
    known = {"age": ecg.age, "sex": ecg.sex}
    statements = header_statements(ecg.path.name, list(ecg.comments))
    if statements:  # what `cqa_generate.py --ecg_file` reads from the same file
        known |= {"statements": statements, "scp_codes": statement_scp_codes(statements)}
    return EcgRecord(ecg.name, np.ascontiguousarray(signal), ecg.sampling_rate, **{**known, **metadata})


def read_upload(paths: Sequence[str | os.PathLike]) -> EcgRecord:
    """A record from uploaded files: one Philips XML, DICOM or CSV file, or one .hea plus the signal file(s)
    it names."""
    files = [Path(p) for p in paths or []]
    if not files:
        raise RecordError(f"No file uploaded. Upload one ECG file: {SUPPORTED_FORMATS}.")
    total = sum(f.stat().st_size for f in files if f.is_file())
    if total > MAX_UPLOAD_BYTES:
        raise RecordError(
            f"The upload has {total / 2**20:.1f} MB; uploads are limited to {MAX_UPLOAD_BYTES // 2**20} MB."
        )
    others = [f.name for f in files if f.suffix.lower() not in (*WFDB_SUFFIXES, *SINGLE_FILE_SUFFIXES)]
    if others:
        raise RecordError(f"{', '.join(others)}: not an ECG file the app reads. Upload {SUPPORTED_FORMATS}.")
    singles = [f for f in files if f.suffix.lower() in SINGLE_FILE_SUFFIXES]
    if singles:
        if len(files) != 1:
            raise RecordError(f"Upload one ECG at a time: {', '.join(f.name for f in files)} were uploaded together.")
        return read_record(singles[0])
    headers = [f for f in files if f.suffix.lower() == ".hea"]
    if len(headers) != 1:
        found = ", ".join(f.name for f in headers) or "none"
        raise RecordError(f"Upload exactly one .hea header with its .dat file (headers received: {found}).")
    # Uploads arrive in separate temporary folders; WFDB needs them side by side.
    with tempfile.TemporaryDirectory(prefix="esi_upload_") as staging:
        for f in files:
            shutil.copyfile(f, Path(staging) / f.name)
        return read_record(Path(staging) / headers[0].name)


logger = logging.getLogger(__name__)


class SampleCatalogue:
    """The embedded PTB-XL sample: metadata and statements per ecg_id, records read on demand."""

    def __init__(self, ptbxl_dir: str | os.PathLike) -> None:
        self.root = Path(ptbxl_dir)
        database = load_database(self.root)
        self.descriptions: dict[str, str] = load_statements(self.root)["description"].to_dict()
        self.rows = {}
        for row in database.to_dict("records"):
            try:  # a row whose file name leaves the folder is never offered (it could read any file on the server)
                header = self._header(row)
            except PtbxlRecordError as err:
                logger.warning("sample list: %s; record left out", err)
                continue
            if header.is_file():
                self.rows[int(row["ecg_id"])] = row

    def _header(self, row: dict) -> Path:
        return self.root / f"{record_path(row, 100, self.root)}.hea"

    @property
    def ecg_ids(self) -> list[int]:
        return list(self.rows)

    def scp_codes(self, ecg_id: int) -> dict[str, float]:
        return parse_scp_codes(ecg_id, self.rows[ecg_id]["scp_codes"])

    def statements_text(self, ecg_id: int) -> str:
        """`NORM (normal ECG), SR (sinus rhythm)`."""
        return ", ".join(f"{code} ({self.descriptions.get(code, 'unknown')})" for code in self.scp_codes(ecg_id))

    def label(self, ecg_id: int) -> str:
        """Short dropdown text: `547: NORM, SR - female, 56 y`."""
        row = self.rows[ecg_id]
        age = row["age"]
        if not math.isfinite(age):
            age_text = "age unknown"
        else:
            age_text = "age over 89" if age >= PTBXL_AGE_OVER_89 else f"{age:.0f} y"
        sex = SEX_NAMES.get(row["sex"], "sex unknown")
        return f"{ecg_id}: {', '.join(self.scp_codes(ecg_id))} - {sex}, {age_text}"

    def read(self, ecg_id: int) -> EcgRecord:
        row = self.rows[ecg_id]
        age = float(row["age"])
        return read_record(
            self._header(row),
            ecg_id=ecg_id,
            age=age if math.isfinite(age) else None,
            sex=SEX_NAMES.get(row["sex"], ""),
            report=row["report"] if isinstance(row["report"], str) else "",
            scp_codes=self.scp_codes(ecg_id),
        )
