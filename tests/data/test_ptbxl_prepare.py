"""The prepared dataset holds exactly what wfdb reads and the labels PTB-XL's statements imply."""

from __future__ import annotations

import ast
import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import wfdb
from datasets import Array2D, load_from_disk

from esi.data.prepare_ptbxl import prepare_ptbxl
from esi.data.ptbxl import LEAD_NAMES, PtbxlRecordError, summarize, task_class_names
from tests.helpers import REPO_ROOT


@pytest.fixture(scope="module")
def prepared(prepared_sample):
    return load_from_disk(str(prepared_sample))


@pytest.fixture(scope="module")
def database(ptbxl_sample_dir):
    return pd.read_csv(ptbxl_sample_dir / "ptbxl_database.csv", index_col="ecg_id")


def test_splits_follow_strat_fold(prepared, database):
    assert set(prepared) == {"train", "validation", "test"}
    folds = {split: set(prepared[split]["strat_fold"]) for split in prepared}
    assert folds == {"train": set(range(1, 9)), "validation": {9}, "test": {10}}
    ids = [i for split in prepared.values() for i in split["ecg_id"]]
    assert sorted(ids) == sorted(database.index.tolist())


def test_nothing_skipped(prepared_sample):
    assert (prepared_sample / "skipped.jsonl").read_text() == ""


def test_features_match_contract(prepared):
    features = prepared["train"].features
    assert features["signal"] == Array2D((12, 1000), "float32")
    for name in ("ecg_id", "patient_id", "sampling_rate", "strat_fold"):
        assert features[name].dtype == "int32"
    assert features["age"].dtype == "float32"
    expected_sizes = {"all": 71, "diagnostic": 44, "subdiagnostic": 23, "superdiagnostic": 5, "form": 19, "rhythm": 12}
    assert {task: len(task_class_names(features, task)) for task in expected_sizes} == expected_sizes
    assert task_class_names(features, "superdiagnostic") == ["CD", "HYP", "MI", "NORM", "STTC"]


@pytest.mark.parametrize("split", ["train", "validation", "test"])
def test_row_equals_wfdb_and_scp_codes(prepared, database, ptbxl_sample_dir, split):
    dataset = prepared[split].with_format("numpy")
    row = dataset[len(dataset) // 2]
    ecg_id = int(row["ecg_id"])
    meta = database.loc[ecg_id]

    expected, fields = wfdb.rdsamp(str(ptbxl_sample_dir / meta["filename_lr"]))
    assert [name.upper() for name in fields["sig_name"]] == [name.upper() for name in LEAD_NAMES]
    assert row["signal"].dtype == np.float32 and row["signal"].shape == (12, 1000)
    np.testing.assert_array_equal(row["signal"], expected.T.astype(np.float32))
    assert list(row["lead_names"]) == LEAD_NAMES and int(row["sampling_rate"]) == 100

    codes = ast.literal_eval(meta["scp_codes"])
    assert json.loads(row["scp_codes"]) == codes
    features = prepared[split].features
    assert {task_class_names(features, "all")[i] for i in row["all"]} == set(codes)
    statements = pd.read_csv(ptbxl_sample_dir / "scp_statements.csv", index_col=0)
    diagnostic = statements[statements["diagnostic"] == 1]
    superclasses = {diagnostic.loc[c, "diagnostic_class"] for c in codes if c in diagnostic.index}
    assert {task_class_names(features, "superdiagnostic")[i] for i in row["superdiagnostic"]} == superclasses
    rhythm = {c for c in codes if statements.loc[c, "rhythm"] == 1}
    assert {task_class_names(features, "rhythm")[i] for i in row["rhythm"]} == rhythm

    assert int(row["patient_id"]) == int(meta["patient_id"])
    assert row["sex"] == ("male" if meta["sex"] == 0 else "female")
    assert float(row["age"]) == pytest.approx(meta["age"])
    assert int(row["strat_fold"]) == int(meta["strat_fold"])


def test_500hz_missing_files_raise_or_are_reported(ptbxl_sample_dir, tmp_path):
    with pytest.raises(PtbxlRecordError, match=r"ecg_id \d+: 500 Hz file .* is missing"):
        prepare_ptbxl(ptbxl_sample_dir, sampling_rate=500, num_proc=1, limit=30)

    out = tmp_path / "hr"
    prepared = prepare_ptbxl(ptbxl_sample_dir, out, sampling_rate=500, num_proc=1, limit=30, skip_missing=True)
    kept = sorted(i for split in prepared.values() for i in split["ecg_id"])
    skipped = [json.loads(line) for line in (out / "skipped.jsonl").read_text().splitlines()]
    assert len(kept) + len(skipped) == 30 and kept == list(range(1, 13))
    assert all(e["reason"] == "missing" and f"{e['ecg_id']:05d}_hr" in e["problem"] for e in skipped)
    row = prepared["train"].with_format("numpy")[0]
    expected, _ = wfdb.rdsamp(str(ptbxl_sample_dir / f"records500/00000/{int(row['ecg_id']):05d}_hr"))
    assert row["signal"].shape == (12, 5000)
    np.testing.assert_array_equal(row["signal"], expected.T.astype(np.float32))


@pytest.mark.parametrize("entry", [["dataset_scripts/prepare.py"], ["-m", "esi.data.cli"]])
def test_cli_runs_as_file_and_module(ptbxl_sample_dir, tmp_path, entry):
    out = tmp_path / "cli"
    args = [sys.executable, *entry, "--ptbxl-dir", str(ptbxl_sample_dir), "--output-dir", str(out), "--limit", "12"]
    result = subprocess.run(args, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "wrote 12 records" in result.stdout and "skipped 0" in result.stdout
    assert sum(split.num_rows for split in load_from_disk(str(out)).values()) == 12


def test_summarize_reports_splits_classes_and_shape(prepared):
    text = summarize(prepared)
    assert f"train: {prepared['train'].num_rows} records" in text
    norm = sum(3 in labels for labels in prepared["test"]["superdiagnostic"])  # index 3 == "NORM"
    assert f"NORM {norm}" in text.splitlines()[2]
    assert "shape (12, 1000)" in text
