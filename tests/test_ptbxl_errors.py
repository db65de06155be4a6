"""Corrupted copies of real sample records fail loudly, naming the ecg_id, or are skipped and reported."""

from __future__ import annotations

import csv
import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from esi.data.prepare_ptbxl import prepare_ptbxl
from esi.data.ptbxl import MissingRecordFileError, PtbxlRecordError

NUM_ROWS = 3
BAD_ROW = 1  # the middle record of the copy is the one corrupted


def _copy_sample(sample: Path, target: Path) -> list[dict]:
    """Writable PTB-XL folder with the sample's first NUM_ROWS records; returns their database rows.

    copyfile, not copy: the sample's files are read-only and their mode must not follow.
    """
    with open(sample / "ptbxl_database.csv", newline="") as f:
        reader = csv.DictReader(f)
        rows = [row for _, row in zip(range(NUM_ROWS), reader, strict=False)]
    target.mkdir(parents=True)
    _write_database(target, rows)
    shutil.copyfile(sample / "scp_statements.csv", target / "scp_statements.csv")
    for row in rows:
        for suffix in (".hea", ".dat"):
            (target / row["filename_lr"]).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(sample / (row["filename_lr"] + suffix), target / (row["filename_lr"] + suffix))
    return rows


def _write_database(target: Path, rows: list[dict]) -> None:
    with open(target / "ptbxl_database.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _digital(dat: Path) -> np.ndarray:
    """(T, 12) int16 samples of a format-16 file."""
    return np.fromfile(dat, dtype="<i2").reshape(-1, 12)


def truncate_dat(base: Path, rows, row) -> None:
    dat = base.with_suffix(".dat")
    dat.write_bytes(dat.read_bytes()[:-240])


def extra_samples_in_dat(base: Path, rows, row) -> None:
    dat = base.with_suffix(".dat")
    dat.write_bytes(dat.read_bytes() + bytes(2 * 12 * 50))


def header_wrong_length(base: Path, rows, row) -> None:
    hea = base.with_suffix(".hea")
    lines = hea.read_text().splitlines()
    lines[0] = lines[0].replace(" 1000", " 900")
    hea.write_text("\n".join(lines) + "\n")


def header_wrong_signal_count(base: Path, rows, row) -> None:
    hea = base.with_suffix(".hea")
    lines = hea.read_text().splitlines()
    lines[0] = lines[0].replace(" 12 ", " 11 ", 1)
    hea.write_text("\n".join(lines[:-1]) + "\n")


def nan_samples(base: Path, rows, row) -> None:
    samples = _digital(base.with_suffix(".dat"))
    samples[100:105, 1] = -32768  # WFDB's invalid-sample marker for format 16
    samples.astype("<i2").tofile(base.with_suffix(".dat"))


def flipped_sample(base: Path, rows, row) -> None:
    samples = _digital(base.with_suffix(".dat"))
    samples[500, 7] += 1
    samples.astype("<i2").tofile(base.with_suffix(".dat"))


def missing_lead(base: Path, rows, row) -> None:
    """A self-consistent 11-lead record: V6 removed from both header and data."""
    samples = _digital(base.with_suffix(".dat"))
    np.ascontiguousarray(samples[:, :11]).astype("<i2").tofile(base.with_suffix(".dat"))
    hea = base.with_suffix(".hea")
    lines = hea.read_text().splitlines()
    lines[0] = lines[0].replace(" 12 ", " 11 ", 1)
    hea.write_text("\n".join(lines[:-1]) + "\n")


def unknown_scp_code(base: Path, rows, row) -> None:
    row["scp_codes"] = "{'NORM': 100.0, 'XYZ9': 50.0}"


def unclosed_scp_codes(base: Path, rows, row) -> None:
    row["scp_codes"] = "{'NORM': 100.0"


def code_in_scp_codes(base: Path, rows, row) -> None:
    row["scp_codes"] = "__import__('os').getcwd()"


def likelihood_not_number(base: Path, rows, row) -> None:
    row["scp_codes"] = "{'NORM': 'high'}"


CORRUPTIONS: dict[str, tuple[Callable, str]] = {
    "truncated_dat": (truncate_dat, r"has 23760 bytes but its header declares 12 signals x 1000 samples"),
    "dat_longer_than_header": (extra_samples_in_dat, r"has 25200 bytes but its header declares"),
    "header_wrong_length": (header_wrong_length, r"header says 900 samples at 100 Hz; expected 1000"),
    "header_wrong_signal_count": (header_wrong_signal_count, r"header declares 11 signals"),
    "nan_samples": (nan_samples, r"5 NaN \(invalid\) samples in leads \['II'\]"),
    "checksum": (flipped_sample, r"checksum mismatch in leads \['V2'\]"),
    "missing_lead": (missing_lead, r"missing: \['V6'\]"),
    "unknown_scp_code": (unknown_scp_code, r"unknown SCP code 'XYZ9'"),
    "malformed_scp_codes": (unclosed_scp_codes, r"malformed scp_codes"),
    "code_in_scp_codes": (code_in_scp_codes, r"malformed scp_codes"),
    "likelihood_not_number": (likelihood_not_number, r"is not code -> number"),
}


@pytest.fixture
def corrupted(request, ptbxl_sample_dir, tmp_path):
    """(folder, bad ecg_id, expected message) for the corruption named by the test parameter."""
    corrupt, message = CORRUPTIONS[request.param]
    rows = _copy_sample(ptbxl_sample_dir, tmp_path / "ptbxl")
    row = rows[BAD_ROW]
    corrupt(tmp_path / "ptbxl" / (row["filename_lr"] + ".dat"), rows, row)
    _write_database(tmp_path / "ptbxl", rows)
    return tmp_path / "ptbxl", int(row["ecg_id"]), message


@pytest.mark.parametrize("corrupted", list(CORRUPTIONS), indirect=True)
def test_corruption_raises_naming_record(corrupted):
    folder, ecg_id, message = corrupted
    with pytest.raises(PtbxlRecordError, match=message) as info:
        prepare_ptbxl(folder, num_proc=1)
    assert info.value.ecg_id == ecg_id
    assert f"ecg_id {ecg_id}:" in str(info.value)
    assert not isinstance(info.value, MissingRecordFileError)
    with pytest.raises(PtbxlRecordError, match=message):
        prepare_ptbxl(folder, num_proc=1, skip_missing=True)  # wrong flag: still an error


@pytest.mark.parametrize("corrupted", list(CORRUPTIONS), indirect=True)
def test_corruption_skipped_and_reported(corrupted, tmp_path):
    folder, ecg_id, message = corrupted
    prepared = prepare_ptbxl(folder, tmp_path / "out", num_proc=2, skip_invalid=True)
    kept = {i for split in prepared.values() for i in split["ecg_id"]}
    assert len(kept) == NUM_ROWS - 1 and ecg_id not in kept
    [entry] = [json.loads(line) for line in (tmp_path / "out" / "skipped.jsonl").read_text().splitlines()]
    assert entry["ecg_id"] == ecg_id and entry["reason"] == "invalid"
    assert re.search(message, entry["problem"])


def test_missing_file_needs_skip_missing(ptbxl_sample_dir, tmp_path):
    folder = tmp_path / "ptbxl"
    rows = _copy_sample(ptbxl_sample_dir, folder)
    (folder / (rows[BAD_ROW]["filename_lr"] + ".dat")).unlink()
    with pytest.raises(MissingRecordFileError, match=rf"ecg_id {rows[BAD_ROW]['ecg_id']}: 100 Hz file .*\.dat"):
        prepare_ptbxl(folder, num_proc=1, skip_invalid=True)
    prepared = prepare_ptbxl(folder, tmp_path / "out", num_proc=1, skip_missing=True)
    assert sum(split.num_rows for split in prepared.values()) == NUM_ROWS - 1
    [entry] = [json.loads(line) for line in (tmp_path / "out" / "skipped.jsonl").read_text().splitlines()]
    assert entry["reason"] == "missing" and entry["ecg_id"] == int(rows[BAD_ROW]["ecg_id"])
