"""Read WFDB records (.hea + .dat/.mat): the one place a header is parsed and checked against its signal files.

`read_samples` parses a header and checks it (rate, length, limits, signal files present, inside the folder and
of the declared size, positive gains, checksums) before returning the digital samples; every WFDB reader uses it:
`read_wfdb` (the Challenge, MIMIC-IV-ECG and WFDB-folder sources: leads matched by name, as MIMIC stores aVF
before aVL, NaN refused, polyphase resampling with bounded memory) and `esi.data.ecg_file` (one clinical file,
any leads). PTB-XL's reader uses its pieces.

Research software, not a diagnostic device.
"""

from __future__ import annotations

import math
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

# Bytes per sample of the WFDB formats whose signal file size can be checked exactly (format 16: PTB-XL,
# MIMIC-IV-ECG and the Challenge's .mat files; the others occur in older PhysioNet databases).
BYTES_PER_SAMPLE = {"8": 1, "16": 2, "24": 3, "32": 4, "61": 2, "80": 1, "160": 2, "212": 1.5}
# Millivolts per unit for the amplitude units WFDB headers (and DICOM, CSV files) use.
MV_PER_UNIT = {"mv": 1.0, "uv": 1e-3, "µv": 1e-3, "μv": 1e-3, "v": 1e3}
# Longest record accepted (a 24-hour Holter at 1 kHz is not a 12-lead resting ECG).
MAX_SECONDS = 600
MAX_SIGNALS = 64
MAX_HEADER_BYTES = 64 * 1024
INVALID_SAMPLE = -32768  # WFDB's marker for a missing sample (format 16)


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


class MissingSignalFileError(RecordError):
    """A header names a signal file that is not beside it (`file_name`): an upload of the .hea alone."""

    def __init__(self, record: object, problem: str, file_name: str, source: str = "record"):
        super().__init__(record, problem, source=source)
        self.file_name = file_name


def header_size_problem(path: Path, max_bytes: int = MAX_HEADER_BYTES) -> str | None:
    """Why the header at `path` is too large to read, or None."""
    size = path.stat().st_size
    if size > max_bytes:
        return f"{path.name} has {size / 1024:.0f} KB; a WFDB header is limited to {max_bytes // 1024} KB"
    return None


def read_header(base: Path, max_bytes: int = MAX_HEADER_BYTES) -> Header | wfdb.Record:
    """The header of record `base` (no extension): parsed directly when simple, else by wfdb."""
    path = base.with_name(base.name + ".hea")
    problem = header_size_problem(path, max_bytes)
    if problem:
        raise ValueError(problem)
    header = _parse_simple_header(path.read_text(errors="replace"))
    return header if header is not None else wfdb.rdheader(str(base))


def read_digital(base: Path, header: Header) -> np.ndarray:
    """(sig_len, n_sig) int16 samples of a simple header's single format-16 file (size checked by `check_header`)."""
    samples = np.fromfile(base.parent / header.file_name[0], dtype="<i2", offset=header.byte_offset)
    return samples.reshape(header.sig_len, header.n_sig)


def to_physical(digital: np.ndarray, header: Header | wfdb.Record) -> np.ndarray:
    """Digital -> physical units exactly as wfdb's `dac` (float64); WFDB's invalid marker becomes NaN."""
    physical = (digital.astype(np.float64) - np.asarray(header.baseline)) / np.asarray(header.adc_gain)
    physical[digital == INVALID_SAMPLE] = np.nan
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


RECORD_SUFFIXES = (".hea", ".dat", ".mat")


def inside(folder: Path, relative: str, record: object, source: str) -> Path:
    """`folder / relative`, refusing absolute paths and paths that leave `folder` (`../../x`, symlinks out)."""
    if not relative or os.path.isabs(relative) or Path(relative).drive:
        raise RecordError(record, f"path {relative!r} is absolute or empty; it must lie inside {folder}", source=source)
    root = folder.resolve()
    target = (folder / relative).resolve()
    if not target.is_relative_to(root):
        raise RecordError(record, f"path {relative!r} leaves the dataset folder {folder}", source=source)
    base = folder / relative
    for suffix in RECORD_SUFFIXES:  # the record's own files: a link among them may point anywhere
        file = base.with_name(base.name + suffix)
        if file.is_symlink() and not file.resolve().is_relative_to(root):
            raise RecordError(
                record, f"{file.name} is a link to {file.resolve()}, outside the dataset folder {folder}", source=source
            )
    return base


def _byte_offsets(header: Header | wfdb.Record) -> list[int]:
    offsets = header.byte_offset
    if not isinstance(offsets, list):
        offsets = [offsets] * header.n_sig
    return [offset or 0 for offset in offsets]


def check_header(
    header: Header | wfdb.Record,
    base: Path,
    record: object,
    source: str,
    max_signals: int = MAX_SIGNALS,
    max_seconds: float = MAX_SECONDS,
) -> None:
    """Refuse a header the reader cannot trust: bad rate/length, too many signals or seconds, signal files
    missing or outside the folder, or of another size than the header declares."""
    name = f"{base.name}.hea"
    if not header.fs or header.fs <= 0 or not header.sig_len or header.sig_len <= 0:
        raise RecordError(record, f"{name} gives no positive sampling rate and length", source=source)
    if header.n_sig > max_signals or header.sig_len / header.fs > max_seconds:
        raise RecordError(
            record,
            f"{name} declares {header.n_sig} signals x {header.sig_len / header.fs:.0f} s "
            f"(limits: {max_signals} signals, {max_seconds:g} s)",
            source=source,
        )
    for file_name in sorted(set(header.file_name)):
        if os.path.basename(file_name) != file_name:
            raise RecordError(record, f"{name} names signal file {file_name!r} outside its folder", source=source)
        signal_file = base.parent / file_name
        if signal_file.is_symlink() and signal_file.resolve().parent != base.parent.resolve():
            raise RecordError(record, f"{name}: signal file {file_name} is a link outside its folder", source=source)
        if not signal_file.is_file():
            raise MissingSignalFileError(
                record, f"{name} names signal file {file_name}, which is missing", file_name, source=source
            )
    offsets = _byte_offsets(header)
    for file_name in dict.fromkeys(header.file_name):
        columns = [i for i, f in enumerate(header.file_name) if f == file_name]
        formats = {str(header.fmt[i]) for i in columns}
        starts = {offsets[i] for i in columns}
        if len(formats) != 1 or formats - BYTES_PER_SAMPLE.keys() or len(starts) != 1:
            continue  # mixed layouts in one file: left to wfdb
        offset, width = starts.pop(), BYTES_PER_SAMPLE[formats.pop()]
        expected = math.ceil(header.sig_len * len(columns) * width)
        actual = os.path.getsize(base.parent / file_name) - offset
        if actual != expected:
            preamble = f" after its {offset}-byte preamble" if offset else ""
            raise RecordError(
                record,
                f"{file_name} does not match {name} (expected {expected} bytes): it has {actual} bytes{preamble} "
                f"but its header declares {len(columns)} signals x {header.sig_len} samples of {width:g} bytes "
                "(truncated file or header mismatch)",
                source=source,
            )


def read_samples(
    base: Path,
    record: object,
    source: str,
    max_signals: int = MAX_SIGNALS,
    max_seconds: float = MAX_SECONDS,
    max_header_bytes: int = MAX_HEADER_BYTES,
) -> tuple[Header | wfdb.Record, np.ndarray]:
    """The checked header and (sig_len, n_sig) digital samples of the WFDB record `base` (path without extension).

    Every check that needs the header and the signal files is here: `check_header`, positive gains, and the
    checksums the header states. `record` and `source` name the record in errors (`RecordError`).
    """
    hea = base.with_name(base.name + ".hea")
    if not hea.is_file():
        raise RecordError(record, f"header {hea} is missing", missing=True, source=source)
    try:
        header = read_header(base, max_header_bytes)
    except Exception as err:  # wfdb raises assorted types on malformed headers
        raise RecordError(record, f"unreadable header {hea.name}: {err}", source=source) from None
    check_header(header, base, record, source, max_signals, max_seconds)
    if isinstance(header, Header):
        digital = read_digital(base, header)
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
    gains = np.asarray(header.adc_gain, dtype=float)
    if np.any(gains <= 0):
        leads = ", ".join(str(n) for n, g in zip(header.sig_name, gains, strict=True) if g <= 0)
        kind = "negative" if gains.min() < 0 else "zero"
        raise RecordError(record, f"leads {leads} have a {kind} gain; a gain must be positive", source=source)
    invalid = digital == INVALID_SAMPLE
    if invalid.any():  # said before the checksum: it would fail too, less clearly
        leads = [str(n) for n, bad in zip(header.sig_name, invalid.any(axis=0), strict=True) if bad]
        raise RecordError(record, f"{int(invalid.sum())} NaN (invalid) samples in leads {leads}", source=source)
    corrupt = bad_checksums(digital, header)
    if corrupt:
        raise RecordError(
            record,
            f"checksum mismatch in leads {corrupt}: the samples do not match the header's checksums, so "
            f"{header.file_name[0]} is damaged or belongs to another record",
            source=source,
        )
    return header, digital


def read_wfdb(
    base: Path, record: object, source: str, sampling_rate: int | None = None, expected_seconds: float | None = None
) -> WfdbSignal:
    """Read and check the WFDB record `base` (path without extension) as a 12-lead signal in mV.

    Args:
        record: how errors name the record (ecg_id or record name).
        sampling_rate: resample to this rate (Hz); None keeps the file's rate (must be an integer).
        expected_seconds: refuse records of another duration (MIMIC: 10 s).
    """
    header, digital = read_samples(base, record, source)
    hea = f"{base.name}.hea"
    if expected_seconds is not None and abs(header.sig_len / header.fs - expected_seconds) > 1e-6:
        raise RecordError(
            record,
            f"{hea} says {header.sig_len} samples at {header.fs:g} Hz; expected {expected_seconds} s",
            source=source,
        )
    try:
        rows = map_leads_by_name(header.sig_name, LEAD_NAMES)
    except ValueError as err:
        raise RecordError(record, f"{hea}: {err}", source=source) from None
    missing = [lead for lead, row in zip(LEAD_NAMES, rows, strict=True) if row is None]
    if missing or header.n_sig != len(LEAD_NAMES):
        raise RecordError(
            record, f"leads {header.sig_name} do not match {LEAD_NAMES} (missing: {missing})", source=source
        )
    units = [str(u).strip().lower() for u in header.units]
    unknown_units = sorted({u for u in units if u not in MV_PER_UNIT})
    if unknown_units:
        raise RecordError(record, f"{hea} gives units {unknown_units}; expected mV, uV or V", source=source)
    scale = np.array([MV_PER_UNIT[units[row]] for row in rows])[:, None]
    signal = to_physical(digital, header)[:, rows].T * scale
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
