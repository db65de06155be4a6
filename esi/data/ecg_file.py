"""Read one ECG file as a clinical user brings it: WFDB (`.hea` + `.dat`/`.mat`), Philips PageWriter /
TraceMaster XML, DICOM 12-lead waveform, or a CSV with lead names in its header row.

`read_ecg_file(path)` returns an `EcgFile` (leads x time in millivolts, lead names, sampling rate, units and
whatever demographics the file carries) or raises `EcgFileError` with one sentence naming the file and the
problem. Every format passes the same bounds (`ReadLimits`) before its samples are decoded, so a hostile
file (a huge header, 10^5 signals, a 99,991 Hz rate, a record hours long) is refused cheaply, and the same
checks after decoding (duplicated lead names, NaN, implausible amplitudes). Research software, not a
diagnostic device.
"""

from __future__ import annotations

import csv
import datetime
import math
import os
import re
from array import array
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from esi.constants import STANDARD_LEADS
from esi.data.schema import RecordError
from esi.data.wfdb_record import MV_PER_UNIT, MissingSignalFileError, header_size_problem, read_samples, to_physical

SUPPORTED_FORMATS = "WFDB (.hea with its .dat or .mat), Philips XML (.xml), DICOM waveform (.dcm) or CSV (.csv)"


class EcgFileError(ValueError):
    """A file that cannot be read as an ECG; the message names the file and the problem."""


@dataclass(frozen=True)
class ReadLimits:
    """What a single ECG file may hold. Checked before the samples are decoded where the format allows.

    The defaults admit every real resting ECG seen here (PTB-XL, CinC 2021, CPSC 2018's 60 s records, DICOM
    at 1000 Hz, 15- and 18-lead recordings) and refuse what only costs memory or time.
    """

    max_file_bytes: int = 20 * 2**20
    max_header_bytes: int = 64 * 2**10
    max_signals: int = 32
    min_rate_hz: int = 50
    max_rate_hz: int = 10_000
    min_seconds: float = 1.0
    max_seconds: float = 120.0
    max_abs_mv: float = 100.0  # ~20x the largest QRS; beyond it the gain or the unit is wrong


DEFAULT_LIMITS = ReadLimits()


@dataclass
class EcgFile:
    """One ECG as read from a file: `signal` is (leads x time), float32, in millivolts."""

    path: Path
    format: str
    signal: np.ndarray
    lead_names: tuple[str, ...]
    sampling_rate: int
    units: str = "mV"
    age: float | None = None
    sex: str = ""  # "male", "female" or "" (unknown)
    comments: tuple[str, ...] = ()  # a WFDB header's comment lines (PhysioNet/CinC Challenge: Age, Sex, Dx)

    @property
    def name(self) -> str:
        return self.path.stem

    @property
    def seconds(self) -> float:
        return self.signal.shape[1] / self.sampling_rate

    def standard_leads(self) -> np.ndarray:
        """The signal in STANDARD_LEADS order (12 x time); refuses a file that lacks one of the 12 leads."""
        rows = {name.casefold(): i for i, name in enumerate(self.lead_names)}
        missing = [lead for lead in STANDARD_LEADS if lead.casefold() not in rows]
        if missing:
            raise EcgFileError(
                f"{self.path.name} does not hold a standard 12-lead ECG: leads {', '.join(missing)} are missing "
                f"(it lists {', '.join(self.lead_names)})."
            )
        return np.ascontiguousarray(self.signal[[rows[lead.casefold()] for lead in STANDARD_LEADS]])


def read_ecg_file(
    path: str | os.PathLike, limits: ReadLimits = DEFAULT_LIMITS, sampling_rate: int | None = None
) -> EcgFile:
    """Read one ECG file, chosen by its suffix. A WFDB record is read from its `.hea` (or from its `.dat` /
    `.mat` with the header beside it). `sampling_rate` is for CSV files without a time column."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in (".dat", ".mat"):
        path, suffix = path.with_suffix(".hea"), ".hea"
    readers: dict[str, Callable[[Path, ReadLimits], EcgFile]] = {
        ".hea": _read_wfdb,
        ".xml": _read_philips_xml,
        ".dcm": _read_dicom,
        ".csv": lambda p, lim: _read_csv(p, lim, sampling_rate),
    }
    if suffix not in readers:
        raise EcgFileError(f"{path.name}: not a supported ECG file. Supported: {SUPPORTED_FORMATS}.")
    if not path.is_file():
        raise EcgFileError(f"{path.name}: the file is missing.")
    size = path.stat().st_size
    if size > limits.max_file_bytes:
        raise EcgFileError(
            f"{path.name} has {size / 2**20:.1f} MB; single ECG files are limited to "
            f"{limits.max_file_bytes / 2**20:.0f} MB."
        )
    ecg = readers[suffix](path, limits)
    _check_samples(ecg, limits)
    return ecg


# ---- bounds shared by every format ----------------------------------------------------------------


def _check_rate(file_name: str, rate: float, limits: ReadLimits) -> int:
    if not math.isfinite(rate) or rate <= 0:
        raise EcgFileError(f"{file_name}: the sampling rate {rate:g} Hz is not a positive number.")
    if abs(rate - round(rate)) > 1e-6 * rate:
        raise EcgFileError(f"{file_name}: the sampling rate {rate:g} Hz is not a whole number of Hz.")
    if not limits.min_rate_hz <= rate <= limits.max_rate_hz:
        raise EcgFileError(
            f"{file_name}: the sampling rate is {rate:g} Hz; rates from {limits.min_rate_hz} to "
            f"{limits.max_rate_hz} Hz are accepted."
        )
    return round(rate)


def _check_shape(file_name: str, num_signals: int, num_samples: int, rate: int, limits: ReadLimits) -> None:
    """Before decoding: the declared size must be one a resting ECG can have."""
    if num_signals < 1:
        raise EcgFileError(f"{file_name} lists no signals.")
    if num_signals > limits.max_signals:
        raise EcgFileError(f"{file_name} declares {num_signals} signals; at most {limits.max_signals} are accepted.")
    seconds = num_samples / rate
    if seconds < limits.min_seconds:
        raise EcgFileError(
            f"{file_name}: the record lasts {seconds:.2f} s; at least {limits.min_seconds:g} s are needed."
        )
    if seconds > limits.max_seconds:
        raise EcgFileError(
            f"{file_name}: the record lasts {seconds:.0f} s; at most {limits.max_seconds:g} s are accepted."
        )


def _check_lead_names(file_name: str, names: list[str]) -> tuple[str, ...]:
    names = ["" if name is None else str(name).strip() for name in names]
    if any(not name for name in names):
        raise EcgFileError(
            f"{file_name}: {sum(not name for name in names)} of its {len(names)} signals have no lead name; "
            "leads are matched by name."
        )
    seen: dict[str, str] = {}
    for name in names:
        if name.casefold() in seen:
            raise EcgFileError(
                f"{file_name} names lead {name} twice; each lead must appear once (which copy is the real one?)."
            )
        seen[name.casefold()] = name
    # Standard leads get their standard spelling ("AVR" -> "aVR"), so callers can match them exactly.
    canonical = {lead.casefold(): lead for lead in STANDARD_LEADS}
    return tuple(canonical.get(name.casefold(), name) for name in names)


def _check_samples(ecg: EcgFile, limits: ReadLimits) -> None:
    """After decoding: finite samples of a plausible size."""
    _check_values(ecg.path.name, ecg.lead_names, ecg.signal, limits)


def _check_values(name: str, leads: tuple[str, ...], signal: np.ndarray, limits: ReadLimits) -> None:
    """(leads, samples) in mV: finite and within the plausible amplitude (before a float32 cast turns 1e308
    into infinity)."""
    bad = [lead for lead, row in zip(leads, signal, strict=True) if not np.isfinite(row).all()]
    if bad:
        raise EcgFileError(f"{name}: leads {', '.join(bad)} contain invalid (NaN or infinite) samples.")
    peak = np.abs(signal).max(axis=1)
    wild = [lead for lead, value in zip(leads, peak, strict=True) if value > limits.max_abs_mv]
    if wild:
        raise EcgFileError(
            f"{name}: leads {', '.join(wild)} reach {peak.max():.3g} mV; a surface ECG stays within "
            f"±{limits.max_abs_mv:g} mV, so the gain or the unit in the file is wrong."
        )


def _mv_per_unit(file_name: str, unit: str, lead: str) -> float:
    key = unit.strip().casefold()
    if key not in MV_PER_UNIT:
        raise EcgFileError(f"{file_name}: lead {lead} is in unit '{unit}'; only mV, uV and V are understood.")
    return MV_PER_UNIT[key]


def _sex(value: str | None) -> str:
    key = (value or "").strip().casefold()
    return {"m": "male", "male": "male", "f": "female", "female": "female"}.get(key, "")


def _age(value: str | float | None) -> float | None:
    try:
        age = float(value)
    except (TypeError, ValueError):
        return None
    return age if 0 <= age < 150 else None


# ---- WFDB -------------------------------------------------------------------------------------------


def _wfdb_record_line(header_path: Path) -> list[str]:
    """The header's record line, split; read by hand because wfdb assumes 250 Hz when the rate is absent
    (and reads a negative rate as absent)."""
    for line in header_path.read_text(errors="replace").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            return line.split()
    raise EcgFileError(f"{header_path.name} is empty: no WFDB record line.")


def _read_wfdb(header_path: Path, limits: ReadLimits) -> EcgFile:
    """The record line is checked against `limits` first (cheap, and wfdb would assume 250 Hz without a rate);
    then `esi.data.wfdb_record.read_samples`, the one WFDB reader, checks the header against its signal files."""
    name = header_path.name
    problem = header_size_problem(header_path, limits.max_header_bytes)
    if problem:
        raise EcgFileError(f"{problem}.")
    fields = _wfdb_record_line(header_path)
    if "/" in fields[0]:
        raise EcgFileError(
            f"{name} is a multi-segment WFDB record; only single-segment records are read "
            "(join the segments first, e.g. with wfdb.rdrecord(..., m2s=True) and wfdb.wrsamp)."
        )
    if len(fields) < 4:
        raise EcgFileError(
            f"{name} does not state the sampling rate and the record length (its record line is "
            f"'{' '.join(fields)}'); both are needed."
        )
    try:
        num_signals, rate, num_samples = int(fields[1]), float(fields[2].split("/")[0].split("(")[0]), int(fields[3])
    except ValueError:
        raise EcgFileError(
            f"{name} is not a readable WFDB header: its record line '{' '.join(fields)}' does not give the "
            "signal count, sampling rate and length as numbers."
        ) from None
    rate_hz = _check_rate(name, rate, limits)
    _check_shape(name, num_signals, num_samples, rate_hz, limits)
    try:
        header, digital = read_samples(
            header_path.with_suffix(""), name, "WFDB record", limits.max_signals, limits.max_seconds
        )
    except MissingSignalFileError as error:
        raise EcgFileError(
            f"{name} refers to the signal file {error.file_name}, which is missing. "
            "Keep (or upload) the .hea and its signal file together."
        ) from None
    except RecordError as error:
        raise EcgFileError(f"{name}: {error.problem}.") from None
    if header.n_sig != num_signals:
        raise EcgFileError(f"{name} declares {num_signals} signals but describes {header.n_sig}.")
    leads = _check_lead_names(name, header.sig_name)
    scale = np.array([_mv_per_unit(name, unit or "mV", lead) for lead, unit in zip(leads, header.units, strict=True)])
    signal = np.asarray(to_physical(digital, header).T * scale[:, None], dtype=np.float32)
    demographics = _challenge_comments(header.comments)
    return EcgFile(header_path, "WFDB", signal, leads, rate_hz, **demographics, comments=tuple(header.comments))


def _challenge_comments(comments: list[str]) -> dict:
    """`# Age: 61` / `# Sex: Female` comments (PhysioNet/CinC Challenge headers)."""
    values = {}
    for comment in comments:
        key, _, value = comment.partition(":")
        values[key.strip().casefold()] = value.strip()
    return {"age": _age(values.get("age")), "sex": _sex(values.get("sex"))}


# ---- Philips PageWriter / TraceMaster XML ----------------------------------------------------------------


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _read_philips_xml(path: Path, limits: ReadLimits) -> EcgFile:
    import sierraecg
    from defusedxml import ElementTree  # refuses entity expansion (billion laughs) and external entities

    name = path.name
    try:
        root = ElementTree.parse(path).getroot()
    except Exception as error:
        raise EcgFileError(f"{name} is not a well-formed XML document ({error}).") from None
    found: dict[str, str] = {}
    for element in root.iter():
        tag = _local(element.tag)
        if tag not in found and element.text and element.text.strip():
            found[tag] = element.text.strip()
    if _local(root.tag) != "restingecgdata":
        raise EcgFileError(f"{name} is not a Philips resting ECG (root element <{_local(root.tag)}>).")
    try:
        rate = float(found["samplingrate"])
        resolution_uv = float(found.get("resolution") or found["signalresolution"])
    except (KeyError, ValueError):
        raise EcgFileError(f"{name} does not state its sampling rate and signal resolution.") from None
    rate_hz = _check_rate(name, rate, limits)
    try:
        channels = int(found.get("numberchannelsvalid", "12"))
        duration_ms = float(
            next(e for e in root.iter() if _local(e.tag) == "parsedwaveforms").get("durationperchannel")
        )
    except (StopIteration, TypeError, ValueError):
        raise EcgFileError(f"{name} holds no parsed waveforms with a duration per channel.") from None
    _check_shape(name, channels, round(duration_ms * rate_hz / 1000), rate_hz, limits)
    try:
        parsed = sierraecg.read_file(str(path))
    except Exception as error:  # unsupported document types and damaged waveforms raise several types
        raise EcgFileError(f"{name} could not be read as a Philips PageWriter/TraceMaster ECG ({error}).") from None
    lengths = {len(lead.samples) for lead in parsed.leads}
    if len(lengths) != 1:
        raise EcgFileError(f"{name}: the leads have different lengths ({sorted(lengths)} samples).")
    leads = _check_lead_names(name, [lead.label for lead in parsed.leads])
    signal = np.stack([np.asarray(lead.samples, dtype=np.float32) for lead in parsed.leads]) * (resolution_uv / 1000)
    acquired = next((e.get("date") for e in root.iter() if _local(e.tag) == "dataacquisition"), None)
    age = _philips_age(found, acquired)
    return EcgFile(path, "Philips XML", signal, leads, rate_hz, age=age, sex=_sex(found.get("sex")))


def _philips_age(found: dict[str, str], acquisition_date: str | None) -> float | None:
    """Sierra 1.03 states `<age><years>`; 1.04 states the date of birth (age at the acquisition date)."""
    if "years" in found:
        return _age(found["years"])
    try:
        born = datetime.date.fromisoformat(found["dateofbirth"])
        acquired = datetime.date.fromisoformat(acquisition_date or "")
    except (KeyError, ValueError):
        return None
    return _age(acquired.year - born.year - ((acquired.month, acquired.day) < (born.month, born.day)))


# ---- DICOM waveform --------------------------------------------------------------------------------------


def _dicom_lead_name(channel) -> str:
    """`Lead I (Einthoven)` -> `I`, `Lead aVR` -> `aVR`."""
    source = channel.ChannelSourceSequence[0]
    meaning = str(source.get("CodeMeaning", "") or source.get("CodeValue", ""))
    return re.sub(r"\s*\(.*\)$", "", re.sub(r"^lead\s+", "", meaning.strip(), flags=re.IGNORECASE))


def _read_dicom(path: Path, limits: ReadLimits) -> EcgFile:
    import pydicom

    name = path.name
    try:
        dataset = pydicom.dcmread(path)
    except Exception as error:
        raise EcgFileError(f"{name} is not a readable DICOM file ({error}).") from None
    groups = list(dataset.get("WaveformSequence", []))
    if not groups:
        raise EcgFileError(f"{name} is a DICOM file without a waveform (modality {dataset.get('Modality', '?')}).")
    # The rhythm multiplex is the ECG; a median-beat group (one averaged beat) is not.
    labels = [str(group.get("MultiplexGroupLabel", "")).upper() for group in groups]
    index = labels.index("RHYTHM") if "RHYTHM" in labels else 0
    group = groups[index]
    try:
        rate_hz = _check_rate(name, float(group.SamplingFrequency), limits)
        _check_shape(name, int(group.NumberOfWaveformChannels), int(group.NumberOfWaveformSamples), rate_hz, limits)
        leads = _check_lead_names(name, [_dicom_lead_name(c) for c in group.ChannelDefinitionSequence])
        scale = np.array(
            [
                _mv_per_unit(name, str(c.ChannelSensitivityUnitsSequence[0].CodeValue), lead)
                for c, lead in zip(group.ChannelDefinitionSequence, leads, strict=True)
            ]
        )
        samples = dataset.waveform_array(index)  # sensitivity, correction and baseline applied
    except EcgFileError:
        raise
    except Exception as error:
        raise EcgFileError(f"{name}: the DICOM waveform could not be decoded ({error}).") from None
    signal = np.asarray(samples.T * scale[:, None], dtype=np.float32)
    age = str(dataset.get("PatientAge", "") or "")
    return EcgFile(
        path,
        "DICOM",
        signal,
        leads,
        rate_hz,
        age=_age(age[:-1]) if age.upper().endswith("Y") else None,
        sex=_sex(dataset.get("PatientSex")),
    )


# ---- CSV ---------------------------------------------------------------------------------------------------

TIME_COLUMNS = {"time": 1.0, "t": 1.0, "time_s": 1.0, "seconds": 1.0, "time_ms": 1e-3}


def _csv_column(file_name: str, heading: str) -> tuple[str, float]:
    """`V1`, `V1 (uV)` or `V1 [mV]` -> (lead name, millivolts per unit)."""
    match = re.fullmatch(r"\s*(.*?)\s*(?:[\(\[]\s*([^\)\]]*?)\s*[\)\]])?\s*", heading)
    lead, unit = match.group(1), match.group(2)
    return lead, _mv_per_unit(file_name, unit, lead) if unit else 1.0


def _read_csv(path: Path, limits: ReadLimits, sampling_rate: int | None) -> EcgFile:
    name = path.name
    # utf-8-sig: Excel starts its CSV files with a byte-order mark, which must not become part of the first heading.
    with path.open(newline="", encoding="utf-8-sig", errors="replace") as handle:
        rows = csv.reader(handle)
        try:
            heading = next(rows, None)
            if not heading:
                raise EcgFileError(f"{name} is empty; a CSV ECG needs a header row of lead names.")
            time_scale = TIME_COLUMNS.get(heading[0].strip().casefold())
            columns = heading[1:] if time_scale else heading
            if len(columns) > limits.max_signals:
                raise EcgFileError(
                    f"{name} declares {len(columns)} signals; at most {limits.max_signals} are accepted."
                )
            parsed = [_csv_column(name, column) for column in columns]
            leads = _check_lead_names(name, [lead for lead, _ in parsed])
            if sampling_rate is None and time_scale is None:
                raise EcgFileError(
                    f"{name} has no time column (first column named time, time_s or time_ms) and no sampling rate "
                    "was given; the rate cannot be guessed."
                )
            values = _csv_samples(name, rows, heading, time_scale, sampling_rate, limits)
        except csv.Error as error:  # a cell over the csv module's 128 KB, a NUL byte: not an ECG table
            raise EcgFileError(f"{name}, row {rows.line_num}: not a readable CSV row ({error}).") from None
    if not len(values):
        raise EcgFileError(f"{name} has a header row but no samples.")
    table = np.frombuffer(values, dtype=np.float64).reshape(-1, len(heading))
    if time_scale is not None:
        seconds = table[:, 0] * time_scale
        steps = np.diff(seconds)
        if len(steps) == 0 or steps.min() <= 0:
            raise EcgFileError(f"{name}: the time column does not increase from row to row.")
        step = float(np.median(steps))
        if np.abs(steps - step).max() > 0.01 * step:
            raise EcgFileError(f"{name}: the time column is not evenly spaced; resample to a fixed rate first.")
        rate_hz = _check_rate(name, round(1.0 / step, 6), limits)
        table = table[:, 1:]
    else:
        rate_hz = _check_rate(name, float(sampling_rate), limits)
    _check_shape(name, len(leads), len(table), rate_hz, limits)
    signal = table.T * np.array([per_unit for _, per_unit in parsed])[:, None]
    _check_values(name, leads, signal, limits)
    return EcgFile(path, "CSV", np.asarray(signal, dtype=np.float32), leads, rate_hz)


def _csv_samples(
    name: str, rows, heading: list[str], time_scale: float | None, sampling_rate: int | None, limits: ReadLimits
) -> array:
    """The data rows' numbers, row after row, as one flat array of doubles (8 bytes a value, not a Python list
    per row). Stops at the most rows a record of `limits.max_seconds` can have at its rate: the given one, else
    the one its first two time values imply."""
    max_rows = int(limits.max_seconds * (sampling_rate or limits.max_rate_hz)) + 1
    width = len(heading)
    values = array("d")
    for number, row in enumerate(rows, start=2):
        if number > max_rows + 1:
            raise EcgFileError(f"{name} has more than {max_rows} rows; longer records are not accepted.")
        if len(row) != width:
            raise EcgFileError(f"{name}, row {number}: {len(row)} values for {width} columns.")
        try:
            values.extend(float(cell) for cell in row)
        except ValueError:
            bad = next(h for h, cell in zip(heading, row, strict=True) if not _is_number(cell))
            raise EcgFileError(f"{name}, row {number}, column {bad.strip()}: not a number.") from None
        if time_scale is not None and number == 3 and values[width] > values[0]:
            step_s = (values[width] - values[0]) * time_scale
            max_rows = min(max_rows, int(limits.max_seconds / step_s * 1.01) + 1)
    return values


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


__all__ = ["DEFAULT_LIMITS", "EcgFile", "EcgFileError", "ReadLimits", "SUPPORTED_FORMATS", "read_ecg_file"]
