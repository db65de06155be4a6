"""Read one multi-source WFDB record (.hea + .dat/.mat) as a checked 12-lead signal in mV.

Used by the Challenge, MIMIC-IV-ECG and WFDB-folder readers. Leads are matched by name (MIMIC
stores aVF before aVL), samples are checked for length, NaN and file size, and the signal is
resampled with a polyphase filter (bounded memory) when the prepared rate differs.

Research software, not a diagnostic device.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import wfdb
from scipy.signal import resample_poly

from esi.constants import map_leads_by_name
from esi.data.schema import LEAD_NAMES, RecordError

# Bytes per sample of the WFDB formats the supported sources use (PTB-XL, MIMIC: 16; Challenge .mat: 16 too).
BYTES_PER_SAMPLE = {"16": 2}
UNIT_TO_MV = {"mv": 1.0, "uv": 1e-3, "µv": 1e-3, "v": 1e3}
# Longest record accepted (a 24-hour Holter at 1 kHz is not a 12-lead resting ECG).
MAX_SECONDS = 600
MAX_SIGNALS = 64


@dataclass
class WfdbSignal:
    signal: np.ndarray  # (12, T) float32 mV, LEAD_NAMES order, at `sampling_rate`
    sampling_rate: int
    original_sampling_rate: float
    comments: list[str]


def inside(folder: Path, relative: str, record: object, source: str) -> Path:
    """`folder / relative`, refusing absolute paths and paths that leave `folder` (`../../x`, symlinks out)."""
    if not relative or os.path.isabs(relative) or Path(relative).drive:
        raise RecordError(record, f"path {relative!r} is absolute or empty; it must lie inside {folder}", source=source)
    target = (folder / relative).resolve()
    if not target.is_relative_to(folder.resolve()):
        raise RecordError(record, f"path {relative!r} leaves the dataset folder {folder}", source=source)
    return folder / relative


def check_header(header: wfdb.Record, base: Path, record: object, source: str) -> None:
    """Refuse a header the reader cannot trust: bad rate/length, too many signals, signal files missing or outside."""
    name = base.name
    if not header.fs or header.fs <= 0 or not header.sig_len or header.sig_len <= 0:
        raise RecordError(record, f"{name}.hea gives no positive sampling rate and length", source=source)
    if header.n_sig > MAX_SIGNALS or header.sig_len / header.fs > MAX_SECONDS:
        raise RecordError(
            record, f"{name}.hea declares {header.n_sig} signals x {header.sig_len / header.fs:.0f} s "
            f"(limits: {MAX_SIGNALS} signals, {MAX_SECONDS} s)", source=source,
        )
    for file_name in sorted(set(header.file_name)):
        if os.path.basename(file_name) != file_name:
            raise RecordError(record, f"{name}.hea names signal file {file_name!r} outside its folder", source=source)
        if not (base.parent / file_name).is_file():
            raise RecordError(record, f"{name}.hea names signal file {file_name}, which is missing", source=source)
    by_file = {}
    for file_name, fmt in zip(header.file_name, header.fmt, strict=True):
        by_file.setdefault(file_name, []).append(fmt)
    for file_name, formats in by_file.items():
        if file_name.endswith(".mat") or any(fmt not in BYTES_PER_SAMPLE for fmt in formats):
            continue  # wfdb checks .mat (MATLAB v4 header) and the packed formats itself
        size = os.path.getsize(base.parent / file_name)
        declared = header.sig_len * len(formats) * BYTES_PER_SAMPLE[formats[0]]
        if size != declared:
            raise RecordError(
                record, f"{file_name} has {size} bytes but its header declares {len(formats)} signals x "
                f"{header.sig_len} samples = {declared} bytes (truncated file or header mismatch)", source=source,
            )


def read_wfdb(
    base: Path, record: object, source: str, sampling_rate: int | None = None, expected_seconds: float | None = None
) -> WfdbSignal:
    """Read and check the WFDB record `base` (path without extension).

    Args:
        record: how errors name the record (ecg_id or record name).
        sampling_rate: resample to this rate (Hz); None keeps the file's rate (must be an integer).
        expected_seconds: refuse records of another duration (MIMIC: 10 s).
    """
    hea = base.with_name(base.name + ".hea")
    if not hea.is_file():
        raise RecordError(record, f"header {hea} is missing", missing=True, source=source)
    try:
        header = wfdb.rdheader(str(base))
    except Exception as err:  # wfdb raises assorted types on malformed headers
        raise RecordError(record, f"unreadable header {hea.name}: {err}", source=source) from None
    check_header(header, base, record, source)
    if expected_seconds is not None and abs(header.sig_len / header.fs - expected_seconds) > 1e-6:
        raise RecordError(
            record, f"{hea.name} says {header.sig_len} samples at {header.fs} Hz; expected {expected_seconds} s",
            source=source,
        )
    try:
        rows = map_leads_by_name(header.sig_name, LEAD_NAMES)
    except ValueError as err:
        raise RecordError(record, f"{hea.name}: {err}", source=source) from None
    missing = [lead for lead, row in zip(LEAD_NAMES, rows, strict=True) if row is None]
    if missing or header.n_sig != len(LEAD_NAMES):
        raise RecordError(record, f"leads {header.sig_name} do not match {LEAD_NAMES} (missing: {missing})", source=source)
    units = [str(u).strip().lower() for u in header.units]
    unknown_units = sorted({u for u in units if u not in UNIT_TO_MV})
    if unknown_units:
        raise RecordError(record, f"{hea.name} gives units {unknown_units}; expected mV, uV or V", source=source)
    try:
        data = wfdb.rdrecord(str(base), physical=False)
    except Exception as err:
        raise RecordError(record, f"wfdb cannot read {base.name}: {err}", source=source) from None
    if data.d_signal is None or data.d_signal.shape != (header.sig_len, header.n_sig):
        got = None if data.d_signal is None else data.d_signal.shape
        raise RecordError(
            record, f"signal file holds {got} samples x leads; {hea.name} declares ({header.sig_len}, {header.n_sig}) "
            "(truncated file or header mismatch)", source=source,
        )
    # Headers write the 16-bit checksum signed (Challenge) or unsigned: compare modulo 2^16.
    bad_checksums = [
        name for name, got, want in zip(data.sig_name, data.calc_checksum(), data.checksum or [], strict=False)
        if (int(got) - int(want)) % 65536
    ] if data.checksum else []
    data.dac(expanded=False, return_res=64, inplace=True)
    scale = np.array([UNIT_TO_MV[units[row]] for row in rows])[:, None]
    signal = data.p_signal[:, rows].T * scale
    nan_leads = [lead for lead, values in zip(LEAD_NAMES, signal, strict=True) if not np.isfinite(values).all()]
    if nan_leads:
        count = int((~np.isfinite(signal)).sum())
        raise RecordError(record, f"{count} NaN (invalid) samples in leads {nan_leads}", source=source)
    if bad_checksums:
        raise RecordError(record, f"checksum mismatch in leads {bad_checksums}: the signal file is corrupt", source=source)
    rate = float(header.fs)
    if sampling_rate is None:
        if rate != int(rate):
            raise RecordError(record, f"rate {rate} Hz is not an integer; pass a sampling rate to resample to", source=source)
        sampling_rate = int(rate)
    elif rate != sampling_rate:
        signal = resample(signal, rate, sampling_rate)
    return WfdbSignal(np.ascontiguousarray(signal, dtype=np.float32), sampling_rate, rate, list(header.comments))


def resample(signal: np.ndarray, rate: float, target: int) -> np.ndarray:
    """Polyphase resampling along time; the ratio is approximated (denominator <= 1000) to bound memory."""
    ratio = Fraction(target / rate).limit_denominator(1000)
    return resample_poly(signal, ratio.numerator, ratio.denominator, axis=-1)
