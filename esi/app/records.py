"""Read 12-lead WFDB records (uploaded .hea + .dat, or the embedded PTB-XL sample) with checks whose
failures read as plain sentences for the person using the app."""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import wfdb

from esi.constants import PTBXL_AGE_OVER_89, STANDARD_LEADS
from esi.data.ptbxl import SEX_NAMES, load_database, load_statements, parse_scp_codes

MAX_SECONDS = 10.0  # the model reads 10 s; longer records are cut
MIN_SECONDS = 2.0
MIN_RATE_HZ = 100
# Bytes per sample of the WFDB formats whose file size can be checked exactly.
BYTES_PER_SAMPLE = {"8": 1, "16": 2, "24": 3, "32": 4, "61": 2, "80": 1, "160": 2, "212": 1.5}


class RecordError(ValueError):
    """A record the app cannot read; the message is shown to the user as is."""


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

    lead_names: tuple[str, ...] = STANDARD_LEADS


def _standard_lead_order(sig_names: Sequence[str], header_name: str) -> list[int]:
    by_name = {str(name).strip().casefold(): i for i, name in enumerate(sig_names)}
    missing = [lead for lead in STANDARD_LEADS if lead.casefold() not in by_name]
    if missing:
        raise RecordError(
            f"{header_name} does not hold a standard 12-lead ECG: leads {', '.join(missing)} are missing "
            f"(it lists {', '.join(map(str, sig_names))})."
        )
    return [by_name[lead.casefold()] for lead in STANDARD_LEADS]


def _check_file_sizes(folder: Path, header: wfdb.Record, header_name: str) -> None:
    """wfdb reads whatever a header declares; a truncated or mismatched .dat must be caught here."""
    for file_name in dict.fromkeys(header.file_name):
        columns = [i for i, name in enumerate(header.file_name) if name == file_name]
        formats = {header.fmt[i] for i in columns}
        offsets = {(header.byte_offset or [None] * header.n_sig)[i] or 0 for i in columns}
        if len(formats) != 1 or formats - BYTES_PER_SAMPLE.keys() or offsets != {0}:
            continue  # unusual layouts: left to wfdb
        declared = math.ceil(header.sig_len * len(columns) * BYTES_PER_SAMPLE[formats.pop()])
        actual = os.path.getsize(folder / file_name)
        if actual != declared:
            raise RecordError(
                f"{file_name} does not match {header_name}: the header declares {len(columns)} signals x "
                f"{header.sig_len} samples = {declared} bytes, but the file has {actual} bytes. "
                "Upload the .dat that belongs to this header."
            )


def read_wfdb(header_path: Path, **metadata) -> EcgRecord:
    """Read a 12-lead WFDB record from its header path; its signal files must sit beside it."""
    header_name = header_path.name
    base = str(header_path.with_suffix(""))
    try:
        header = wfdb.rdheader(base)
    except Exception as error:  # wfdb raises many types on malformed headers
        raise RecordError(f"{header_name} is not a readable WFDB header ({error}).") from None
    if not header.file_name or not header.n_sig:
        raise RecordError(f"{header_name} lists no signals.")
    absent = [name for name in dict.fromkeys(header.file_name) if not (header_path.parent / name).is_file()]
    if absent:
        raise RecordError(
            f"{header_name} refers to the signal file {', '.join(absent)}, which is missing. "
            "Upload the .hea and its .dat together."
        )
    order = _standard_lead_order(header.sig_name, header_name)
    rate = float(header.fs)
    if rate < MIN_RATE_HZ or rate != int(rate):
        raise RecordError(f"{header_name}: the sampling rate is {rate:g} Hz; the app needs a whole number >= 100 Hz.")
    if header.sig_len < MIN_SECONDS * rate:
        raise RecordError(f"{header_name}: the record lasts {header.sig_len / rate:.1f} s; at least 2 s are needed.")
    _check_file_sizes(header_path.parent, header, header_name)
    try:
        record = wfdb.rdrecord(base, sampto=min(header.sig_len, int(MAX_SECONDS * rate)))
    except Exception as error:
        raise RecordError(f"the signal of {header_name} could not be read ({error}).") from None
    signal = np.ascontiguousarray(record.p_signal[:, order].T, dtype=np.float32)
    bad = [lead for lead, row in zip(STANDARD_LEADS, signal, strict=True) if not np.isfinite(row).all()]
    if bad:
        raise RecordError(f"{header_name}: leads {', '.join(bad)} contain invalid (NaN) samples.")
    return EcgRecord(name=header.record_name, signal=signal, sampling_rate=int(rate), **metadata)


def read_upload(paths: Sequence[str | os.PathLike]) -> EcgRecord:
    """A record from uploaded files: exactly one .hea plus the .dat file(s) it names."""
    files = [Path(p) for p in paths or []]
    if not files:
        raise RecordError("No file uploaded. Upload a WFDB record: its .hea header together with its .dat file.")
    others = [f.name for f in files if f.suffix.lower() not in (".hea", ".dat")]
    if others:
        raise RecordError(
            f"{', '.join(others)}: not part of a WFDB record. Upload the record's .hea header and .dat file."
        )
    headers = [f for f in files if f.suffix.lower() == ".hea"]
    if len(headers) != 1:
        found = ", ".join(f.name for f in headers) or "none"
        raise RecordError(f"Upload exactly one .hea header with its .dat file (headers received: {found}).")
    # Uploads arrive in separate temporary folders; WFDB needs them side by side.
    with tempfile.TemporaryDirectory(prefix="esi_upload_") as staging:
        for f in files:
            shutil.copyfile(f, Path(staging) / f.name)
        return read_wfdb(Path(staging) / headers[0].name)


class SampleCatalogue:
    """The embedded PTB-XL sample: metadata and statements per ecg_id, records read on demand."""

    def __init__(self, ptbxl_dir: str | os.PathLike) -> None:
        self.root = Path(ptbxl_dir)
        database = load_database(self.root)
        self.descriptions: dict[str, str] = load_statements(self.root)["description"].to_dict()
        self.rows = {int(row["ecg_id"]): row for row in database.to_dict("records")}
        self.rows = {i: row for i, row in self.rows.items() if self._header(row).is_file()}

    def _header(self, row: dict) -> Path:
        return self.root / f"{row['filename_lr']}.hea"

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
        return read_wfdb(
            self._header(row),
            ecg_id=ecg_id,
            age=age if math.isfinite(age) else None,
            sex=SEX_NAMES.get(row["sex"], ""),
            report=row["report"] if isinstance(row["report"], str) else "",
            scp_codes=self.scp_codes(ecg_id),
        )
