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


# --- Per-row validation (issue 14 items 5 and 9, Low items; issue 11 item 4) ---------------------------


def _edit_row(sample: Path, folder: Path, **cells) -> tuple[list[dict], int]:
    """A copy of the sample whose BAD_ROW has `cells` replaced; returns its rows and the bad row's CSV line."""
    rows = _copy_sample(sample, folder)
    rows[BAD_ROW].update(cells)
    _write_database(folder, rows)
    return rows, BAD_ROW + 2


def _skipped(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "skipped.jsonl").read_text().splitlines()]


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [
        ("filename_lr", "../../x", r"column 'filename_lr': path '../../x' leaves the dataset folder"),
        ("filename_lr", "/etc/passwd", r"column 'filename_lr': path '/etc/passwd' is absolute"),
        ("age", "abc", r"line 3, column 'age' is not a number: 'abc'"),
        ("age", "-4", r"column 'age' '-4' is not 0-300"),
        ("sex", "7", r"column 'sex' '7' is not 0 \(male\) or 1 \(female\)"),
        ("strat_fold", "ten", r"line 3, column 'strat_fold' is not an integer: 'ten'"),
        ("patient_id", "x1", r"line 3, column 'patient_id' is not an integer: 'x1'"),
        ("scp_codes", "{'NORM': 100.0, 'X': '" + "A" * 20_000_000 + "'}", r"'scp_codes' holds 20,000,024 characters"),
    ],
)
def test_bad_cell_fails_only_its_record(ptbxl_sample_dir, tmp_path, column, value, message):
    rows, line = _edit_row(ptbxl_sample_dir, tmp_path / "ptbxl", **{column: value})
    ecg_id = int(rows[BAD_ROW]["ecg_id"])
    with pytest.raises(PtbxlRecordError, match=message) as info:
        prepare_ptbxl(tmp_path / "ptbxl", num_proc=1)
    assert info.value.ecg_id == ecg_id and f"ecg_id {ecg_id}:" in str(info.value)
    prepared = prepare_ptbxl(tmp_path / "ptbxl", tmp_path / "out", num_proc=1, skip_invalid=True)
    kept = sorted(i for split in prepared.values() for i in split["ecg_id"])
    assert kept == sorted(int(r["ecg_id"]) for r in rows if int(r["ecg_id"]) != ecg_id)
    [entry] = _skipped(tmp_path / "out")
    assert entry["ecg_id"] == ecg_id and entry["reason"] == "invalid" and re.search(message, entry["problem"])


@pytest.mark.parametrize("value", ["abc", "-1", "2.5", ""])
def test_bad_ecg_id_names_the_csv_line(ptbxl_sample_dir, tmp_path, value):
    rows, line = _edit_row(ptbxl_sample_dir, tmp_path / "ptbxl", ecg_id=value)
    with pytest.raises(PtbxlRecordError, match=rf"ptbxl_database.csv line {line}: .*column 'ecg_id'") as info:
        prepare_ptbxl(tmp_path / "ptbxl", num_proc=1)
    assert info.value.row == line and info.value.ecg_id is None
    prepared = prepare_ptbxl(tmp_path / "ptbxl", tmp_path / "out", num_proc=1, skip_invalid=True)
    assert sum(split.num_rows for split in prepared.values()) == NUM_ROWS - 1
    [entry] = _skipped(tmp_path / "out")
    assert entry["ecg_id"] is None and entry["record"] == f"line {line}"


def test_missing_demographics_are_none(ptbxl_sample_dir, tmp_path):
    rows, _ = _edit_row(ptbxl_sample_dir, tmp_path / "ptbxl", age="", sex="", report="", heart_axis="")
    prepared = prepare_ptbxl(tmp_path / "ptbxl", num_proc=1)
    by_id = {r["ecg_id"]: r for split in prepared.values() for r in split}
    row = by_id[int(rows[BAD_ROW]["ecg_id"])]
    assert row["age"] is None and row["sex"] is None and row["report"] == ""
    other = by_id[int(rows[0]["ecg_id"])]
    assert other["age"] == float(rows[0]["age"]) and other["sex"] in ("male", "female")


def test_header_naming_missing_signal_file_is_a_record_error(ptbxl_sample_dir, tmp_path):
    folder = tmp_path / "ptbxl"
    rows = _copy_sample(ptbxl_sample_dir, folder)
    hea = folder / (rows[BAD_ROW]["filename_lr"] + ".hea")
    hea.write_text(hea.read_text().replace(Path(rows[BAD_ROW]["filename_lr"]).name + ".dat", "elsewhere.dat"))
    ecg_id = int(rows[BAD_ROW]["ecg_id"])
    with pytest.raises(
        PtbxlRecordError, match=rf"ecg_id {ecg_id}: .*names signal file elsewhere.dat, which is missing"
    ):
        prepare_ptbxl(folder, num_proc=1)
    prepared = prepare_ptbxl(folder, tmp_path / "out", num_proc=1, skip_invalid=True)
    assert sum(split.num_rows for split in prepared.values()) == NUM_ROWS - 1
    assert _skipped(tmp_path / "out")[0]["ecg_id"] == ecg_id
