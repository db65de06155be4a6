"""Read one multi-source WFDB record (.hea + .dat/.mat) as a checked 12-lead signal in mV.

Used by the Challenge, MIMIC-IV-ECG and WFDB-folder readers. Leads are matched by name (MIMIC
stores aVF before aVL), samples are checked for length, NaN and file size, and the signal is
resampled with a polyphase filter (bounded memory) when the prepared rate differs.

Research software, not a diagnostic device.
"""

from __future__ import annotations

import os
import re
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
MAX_HEADER_BYTES = 64 * 1024


@dataclass
class Header:
    """The fields of a WFDB header the readers use (wfdb.Record's attribute names)."""

    record_name: str
    n_sig: int
    fs: float
    sig_len: int
    file_name: list[str]
    fmt: list[str]
    adc_gain: list[float]
    baseline: list[int]
    units: list[str]
    checksum: list[int]
    sig_name: list[str]
    comments: list[str]
    byte_offset: int = 0  # Challenge .mat files: "16+24" / "16x1+24" (a 24-byte MATLAB v4 header first)


def _parse_simple_header(text: str) -> Header | None:
    """Parse a single-segment header of plain format-16 signals; None for anything else (wfdb handles it).

    wfdb's own parser costs ~75 ms per header (pandas indexing per field), which dominates preparing
    a PTB-XL or MIMIC record; these headers are simple enough to read directly.
    """
    lines = [line.strip() for line in text.splitlines()]
    comments = [line[1:].strip() for line in lines if line.startswith("#")]
    fields = [line.split() for line in lines if line and not line.startswith("#")]
    if not fields or len(fields[0]) < 4 or "/" in fields[0][0]:
        return None
    try:
        n_sig, fs, sig_len = int(fields[0][1]), float(fields[0][2]), int(fields[0][3])
    except ValueError:
        return None
    signals = fields[1:]
    if len(signals) != n_sig or any(len(f) < 9 for f in signals) or len({f[0] for f in signals}) != 1:
        return None
    formats = {re.fullmatch(r"16(?:x1)?(?:\+(\d+))?", f[1]) for f in signals}
    if None in formats or len({m.group(0) for m in formats}) != 1:
        return None
    offset = int(next(iter(formats)).group(1) or 0)
    gains, baselines, units = [], [], []
    for f in signals:
        gain_text, _, unit = f[2].partition("/")
        gain, _, base = gain_text.partition("(")
        try:
            gains.append(float(gain))
            baselines.append(int(base.rstrip(")")) if base else int(f[4]))
            checksum = int(f[6])
        except ValueError:
            return None
        units.append(unit or "mV")
        f[6] = checksum
    return Header(
        record_name=fields[0][0],
        n_sig=n_sig,
        fs=fs,
        sig_len=sig_len,
        file_name=[f[0] for f in signals],
        fmt=["16"] * n_sig,
        byte_offset=offset,
        adc_gain=gains,
        baseline=baselines,
        units=units,
        checksum=[f[6] for f in signals],
        sig_name=[" ".join(f[8:]) for f in signals],
        comments=comments,
    )


def read_header(base: Path) -> Header | wfdb.Record:
    """The header of record `base` (no extension): parsed directly when simple, else by wfdb."""
    path = base.with_name(base.name + ".hea")
    if path.stat().st_size > MAX_HEADER_BYTES:
        raise ValueError(f"{path.name} is {path.stat().st_size:,} bytes (limit {MAX_HEADER_BYTES:,})")
    header = _parse_simple_header(path.read_text(errors="replace"))
    return header if header is not None else wfdb.rdheader(str(base))


def read_digital(base: Path, header: Header, record: object, source: str) -> np.ndarray:
    """(sig_len, n_sig) int16 samples of a simple header's single format-16 file."""
    path = base.parent / header.file_name[0]
    declared = header.byte_offset + 2 * header.sig_len * header.n_sig
    size = path.stat().st_size
    if size != declared:
        raise RecordError(
            record,
            f"{path.name} has {size} bytes but its header declares {header.n_sig} signals x "
            f"{header.sig_len} samples = {declared} bytes (truncated file or header mismatch)",
            source=source,
        )
    samples = np.fromfile(path, dtype="<i2", offset=header.byte_offset)
    return samples.reshape(header.sig_len, header.n_sig)


def to_physical(digital: np.ndarray, header: Header | wfdb.Record) -> np.ndarray:
    """Digital -> physical units exactly as wfdb's `dac` (float64); WFDB's invalid marker becomes NaN."""
    physical = (digital.astype(np.float64) - np.asarray(header.baseline)) / np.asarray(header.adc_gain)
    physical[digital == -32768] = np.nan
    return physical


def bad_checksums(digital: np.ndarray, header: Header | wfdb.Record) -> list[str]:
    """Leads whose 16-bit sample sum differs from the header's checksum (written signed or unsigned)."""
    if not header.checksum:
        return []
    sums = digital.astype(np.int64).sum(axis=0)
    return [
        name
        for name, got, want in zip(header.sig_name, sums, header.checksum, strict=False)
        if want is not None and (int(got) - int(want)) % 65536  # checksums are optional in WFDB headers
    ]


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
            record,
            f"{name}.hea declares {header.n_sig} signals x {header.sig_len / header.fs:.0f} s "
            f"(limits: {MAX_SIGNALS} signals, {MAX_SECONDS} s)",
            source=source,
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
                record,
                f"{file_name} has {size} bytes but its header declares {len(formats)} signals x "
                f"{header.sig_len} samples = {declared} bytes (truncated file or header mismatch)",
                source=source,
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
        header = read_header(base)
    except Exception as err:  # wfdb raises assorted types on malformed headers
        raise RecordError(record, f"unreadable header {hea.name}: {err}", source=source) from None
    check_header(header, base, record, source)
    if expected_seconds is not None and abs(header.sig_len / header.fs - expected_seconds) > 1e-6:
        raise RecordError(
            record,
            f"{hea.name} says {header.sig_len} samples at {header.fs:g} Hz; expected {expected_seconds} s",
            source=source,
        )
    try:
        rows = map_leads_by_name(header.sig_name, LEAD_NAMES)
    except ValueError as err:
        raise RecordError(record, f"{hea.name}: {err}", source=source) from None
    missing = [lead for lead, row in zip(LEAD_NAMES, rows, strict=True) if row is None]
    if missing or header.n_sig != len(LEAD_NAMES):
        raise RecordError(
            record, f"leads {header.sig_name} do not match {LEAD_NAMES} (missing: {missing})", source=source
        )
    units = [str(u).strip().lower() for u in header.units]
    unknown_units = sorted({u for u in units if u not in UNIT_TO_MV})
    if unknown_units:
        raise RecordError(record, f"{hea.name} gives units {unknown_units}; expected mV, uV or V", source=source)
    if isinstance(header, Header):
        digital = read_digital(base, header, record, source)
    else:
        try:
            header = wfdb.rdrecord(str(base), physical=False)
        except Exception as err:
            raise RecordError(record, f"wfdb cannot read {base.name}: {err}", source=source) from None
        digital = header.d_signal
        if digital is None or digital.shape != (header.sig_len, header.n_sig):
            got = None if digital is None else digital.shape
            raise RecordError(
                record,
                f"signal file holds {got} samples x leads; {hea.name} declares ({header.sig_len}, "
                f"{header.n_sig}) (truncated file or header mismatch)",
                source=source,
            )
    if np.any(np.asarray(header.adc_gain) <= 0):
        raise RecordError(record, f"{hea.name} gives a gain <= 0 {header.adc_gain}", source=source)
    scale = np.array([UNIT_TO_MV[units[row]] for row in rows])[:, None]
    signal = to_physical(digital, header)[:, rows].T * scale
    nan_leads = [lead for lead, values in zip(LEAD_NAMES, signal, strict=True) if not np.isfinite(values).all()]
    if nan_leads:
        count = int((~np.isfinite(signal)).sum())
        raise RecordError(record, f"{count} NaN (invalid) samples in leads {nan_leads}", source=source)
    corrupt = bad_checksums(digital, header)
    if corrupt:
        raise RecordError(record, f"checksum mismatch in leads {corrupt}: the signal file is corrupt", source=source)
    rate = float(header.fs)
    if sampling_rate is None:
        if rate != int(rate):
            raise RecordError(
                record, f"rate {rate} Hz is not an integer; pass a sampling rate to resample to", source=source
            )
        sampling_rate = int(rate)
    elif rate != sampling_rate:
        signal = resample(signal, rate, sampling_rate)
    return WfdbSignal(np.ascontiguousarray(signal, dtype=np.float32), sampling_rate, rate, list(header.comments))


def resample(signal: np.ndarray, rate: float, target: int) -> np.ndarray:
    """Polyphase resampling along time; the ratio is approximated (denominator <= 1000) to bound memory."""
    ratio = Fraction(target / rate).limit_denominator(1000)
    return resample_poly(signal, ratio.numerator, ratio.denominator, axis=-1)
