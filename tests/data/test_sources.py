"""Every source reader writes the one prepared schema from real files; bad records fail naming themselves."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import wfdb
from datasets import Array2D, List

from esi.data.challenge import ChallengeSource
from esi.data.cli import main as prepare_main
from esi.data.mimic import MimicEcgSource
from esi.data.prepare import PrepareOptions, prepare_source
from esi.data.ptbxl import task_class_names
from esi.data.schema import LEAD_NAMES, RecordError
from esi.data.wfdb_folder import WfdbFolderSource
from tests.helpers import MIMIC_LAYOUT, SHARED

CINC = SHARED / "cinc2021-sample"
CPSC = SHARED / "cpsc2018-sample"
# CPSC records of 15, 10, 14 and 15.2 s.
CPSC_RECORDS = ["A0001", "A0002", "A0006", "A0008"]
CINC_RECORDS = ["E07500", "HR06000", "JS20000"]

pytestmark = pytest.mark.skipif(not CINC.is_dir() or not CPSC.is_dir(), reason="needs ../shared Challenge samples")


def _copy_records(source: Path, names: list[str], target: Path) -> Path:
    target.mkdir(parents=True, exist_ok=True)
    for name in names:
        for suffix in (".hea", ".mat"):
            shutil.copyfile(source / f"{name}{suffix}", target / f"{name}{suffix}")
    return target


def _all_rows(prepared) -> dict[str, dict]:
    return {row["record_name"]: row for split in prepared.values() for row in split.with_format("numpy")}


def _skipped(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "skipped.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def cpsc_prepared(tmp_path_factory):
    folder = _copy_records(CPSC, CPSC_RECORDS, tmp_path_factory.mktemp("cpsc"))
    return prepare_source(ChallengeSource(folder, sampling_rate=500), None, PrepareOptions(num_proc=2, unit_size=2))


def test_challenge_keeps_full_length_and_exact_samples(cpsc_prepared):
    rows = _all_rows(cpsc_prepared)
    assert sorted(rows) == CPSC_RECORDS
    assert cpsc_prepared["train"].features["signal"] == List(
        List(cpsc_prepared["train"].features["signal"].feature.feature)
    )
    lengths = set()
    for name, row in rows.items():
        expected, fields = wfdb.rdsamp(str(CPSC / name))
        order = [fields["sig_name"].index(lead) for lead in LEAD_NAMES]
        assert row["signal"].shape == (12, fields["sig_len"])  # the whole record, never cropped to 10 s
        np.testing.assert_allclose(row["signal"], expected[:, order].T, atol=1e-6)
        lengths.add(fields["sig_len"])
        assert row["sampling_rate"] == 500 and row["original_sampling_rate"] == 500
    assert len(lengths) > 1 and max(lengths) > 10 * 500


def test_challenge_2020_abbreviations_map_to_names_and_labels(cpsc_prepared):
    row = _all_rows(cpsc_prepared)["A0001"]  # '#Dx: RBBB', '#Age: 74', '#Sex: Male'
    assert list(row["statements"]) == [
        {"system": "CinC 2020 abbreviation", "code": "RBBB", "text": "right bundle branch block"}
    ]
    assert json.loads(row["scp_codes"]) == {"CRBBB": 100.0}
    names = task_class_names(cpsc_prepared["train"].features, "all")
    assert [names[i] for i in row["all"]] == ["CRBBB"]
    assert row["age"] == 74 and row["sex"] == "male" and row["source"] == "challenge"


def test_challenge_2021_snomed_codes_named_and_unknown_kept(tmp_path):
    folder = _copy_records(CINC, CINC_RECORDS, tmp_path / "cinc")
    hea = folder / "E07500.hea"  # '# Dx: 67741000119109,426177001'
    hea.write_text(hea.read_text().replace("# Dx: 67741000119109,426177001", "# Dx: 67741000119109,426177001,999999"))
    prepared = prepare_source(ChallengeSource(folder), None, PrepareOptions(num_proc=1))
    row = _all_rows(prepared)["E07500"]
    assert [(s["code"], s["text"]) for s in row["statements"]] == [
        ("67741000119109", "left atrial enlargement"),
        ("426177001", "sinus bradycardia"),
        ("999999", "999999"),
    ]
    assert json.loads(row["scp_codes"]) == {"LAO/LAE": 100.0, "SBRAD": 100.0}
    assert row["signal"].shape == (12, 1000) and row["sampling_rate"] == 100 and row["original_sampling_rate"] == 500
    assert prepared["train"].features["signal"] == List(List(prepared["train"].features["signal"].feature.feature))


def _mat_samples(mat: Path) -> tuple[bytes, np.ndarray]:
    """(24-byte MATLAB v4 header, (T, 12) int16 samples) of a Challenge `.mat` (format 16x1+24)."""
    raw = mat.read_bytes()
    return raw[:24], np.frombuffer(raw[24:], dtype="<i2").reshape(-1, 12).copy()


def _truncate(folder: Path) -> None:
    mat = folder / "A0002.mat"
    mat.write_bytes(mat.read_bytes()[:-2400])


def _header_length(folder: Path) -> None:
    hea = folder / "A0002.hea"
    lines = hea.read_text().splitlines()
    fields = lines[0].split()
    fields[3] = str(int(fields[3]) + 500)
    hea.write_text("\n".join([" ".join(fields)] + lines[1:]) + "\n")


def _nan(folder: Path) -> None:
    header, samples = _mat_samples(folder / "A0002.mat")
    samples[100:105, 1] = -32768  # WFDB's invalid-sample marker for format 16
    (folder / "A0002.mat").write_bytes(header + samples.tobytes())


def _missing_lead(folder: Path) -> None:
    hea = folder / "A0002.hea"
    hea.write_text(hea.read_text().replace(" V6\n", " V7\n"))


def _missing_signal_file(folder: Path) -> None:
    (folder / "A0002.mat").unlink()


def _bad_sex(folder: Path) -> None:
    hea = folder / "A0002.hea"
    hea.write_text(hea.read_text().replace("#Sex: Female", "#Sex: 7").replace("#Sex: Male", "#Sex: 7"))


CORRUPTIONS = {
    "truncated_mat": (_truncate, r"A0002: .*(truncated|cannot read)"),
    "header_data_mismatch": (_header_length, r"A0002: .*(declares|cannot read)"),
    "nan": (_nan, r"A0002: 5 NaN \(invalid\) samples in leads \['II'\]"),
    "missing_lead": (_missing_lead, r"A0002: .*unknown lead name"),
    "missing_signal_file": (_missing_signal_file, r"A0002: A0002.hea names signal file A0002.mat, which is missing"),
    "bad_sex": (_bad_sex, r"A0002: sex '7' is not Male/Female"),
}


@pytest.mark.parametrize("corruption", list(CORRUPTIONS))
def test_challenge_bad_record_named_or_skipped(tmp_path, corruption):
    corrupt, message = CORRUPTIONS[corruption]
    folder = _copy_records(CPSC, ["A0001", "A0002", "A0003"], tmp_path / "cpsc")
    corrupt(folder)
    with pytest.raises(RecordError, match=message) as info:
        prepare_source(ChallengeSource(folder), None, PrepareOptions(num_proc=1))
    assert info.value.record == "A0002"
    prepared = prepare_source(ChallengeSource(folder), tmp_path / "out", PrepareOptions(num_proc=1, skip_invalid=True))
    assert sorted(_all_rows(prepared)) == ["A0001", "A0003"]
    [entry] = _skipped(tmp_path / "out")
    assert entry["record"] == "A0002" and entry["reason"] == "invalid"


def test_mimic_layout_fixture_maps_leads_by_name_and_keeps_machine_measurements():
    prepared = prepare_source(MimicEcgSource(MIMIC_LAYOUT, sampling_rate=500), None, PrepareOptions(num_proc=1))
    rows = {int(row["ecg_id"]): row for split in prepared.values() for row in split.with_format("numpy")}
    assert sorted(rows) == [49990001, 49990002, 49990003]
    assert prepared["train"].features["signal"] == Array2D((12, 5000), "float32")
    # The fixture stores MIMIC's order (aVF before aVL): the prepared signal must equal PTB-XL's original.
    for ecg_id, row in zip((1, 2, 3), (rows[49990001], rows[49990002], rows[49990003]), strict=True):
        original, fields = wfdb.rdsamp(str(SHARED / f"ptb-xl/records500/00000/{ecg_id:05d}_hr"))
        order = [[n.upper() for n in fields["sig_name"]].index(lead.upper()) for lead in LEAD_NAMES]
        np.testing.assert_allclose(row["signal"], original[:, order].T, atol=0.0026)  # 200 units/mV
    first = rows[49990001]
    assert [s["text"] for s in first["statements"]] == ["Sinus rhythm", "Low QRS voltages"]
    assert first["report"] == "Sinus rhythm; Low QRS voltages" and first["scp_codes"] == "{}"
    assert first["machine_rr_interval_ms"] == 1000 and first["machine_qrs_axis_deg"] == 30
    assert np.isnan(rows[49990003]["machine_rr_interval_ms"])  # 29999: not measured
    assert np.isnan(first["age"]) and first["sex"] is None and int(first["patient_id"]) == 19990001
    # A patient's ECGs share a split.
    assert {s for s, split in prepared.items() for i in split["ecg_id"] if i in (49990002, 49990003)} == {"test"}


def _mimic_copy(tmp_path: Path) -> Path:
    target = tmp_path / "mimic"
    shutil.copytree(MIMIC_LAYOUT, target)
    return target


def test_mimic_is_strict_about_documented_columns(tmp_path):
    folder = _mimic_copy(tmp_path)
    table = pd.read_csv(folder / "machine_measurements.csv", dtype=str)
    table.drop(columns=["qrs_axis"]).to_csv(folder / "machine_measurements.csv", index=False)
    with pytest.raises(
        ValueError, match=r"machine_measurements.csv lacks the documented MIMIC-IV-ECG column\(s\) \['qrs_axis'\]"
    ):
        prepare_source(MimicEcgSource(folder), None, PrepareOptions(num_proc=1))


def test_mimic_bad_rows_named(tmp_path):
    folder = _mimic_copy(tmp_path)
    records = pd.read_csv(folder / "record_list.csv", dtype=str)
    records.loc[1, "path"] = "../../outside/49990002"
    records.to_csv(folder / "record_list.csv", index=False)
    measurements = pd.read_csv(folder / "machine_measurements.csv", dtype=str)
    measurements[measurements["study_id"] != "49990003"].to_csv(folder / "machine_measurements.csv", index=False)
    with pytest.raises(RecordError, match=r"study_id 49990002: path '../../outside/49990002' leaves"):
        prepare_source(MimicEcgSource(folder), None, PrepareOptions(num_proc=1))
    prepare_source(MimicEcgSource(folder), tmp_path / "out", PrepareOptions(num_proc=1, skip_invalid=True))
    problems = {e["record"]: e["problem"] for e in _skipped(tmp_path / "out")}
    assert problems == {
        "49990002": "path '../../outside/49990002' leaves the dataset folder " + str(folder),
        "49990003": "has no row in machine_measurements.csv",
    }


def test_wfdb_folder_with_labels_csv(tmp_path):
    folder = _copy_records(CPSC, ["A0001", "A0002"], tmp_path / "records" / "sub")
    labels = tmp_path / "labels.csv"
    labels.write_text(
        "record,patient_id,age,sex,statements,scp_codes,fold\n"
        "sub/A0001,7,74,M,complete right bundle branch block; read by Dr X,CRBBB,3\n"
        "sub/A0002,8,,,,,10\n"
    )
    prepared = prepare_source(WfdbFolderSource(folder.parent, labels), None, PrepareOptions(num_proc=1))
    rows = _all_rows(prepared)
    first = rows["sub/A0001"]
    assert [s["text"] for s in first["statements"]] == [
        "complete right bundle branch block",
        "read by Dr X",
        "complete right bundle branch block",
    ]
    assert first["age"] == 74 and first["sex"] == "male" and first["patient_id"] == 7 and first["strat_fold"] == 3
    assert np.isnan(rows["sub/A0002"]["age"]) and rows["sub/A0002"]["statements"].tolist() == []
    assert rows["sub/A0002"]["signal"].shape == (12, 1000)  # 10 s at 100 Hz
    labels.write_text("record\n../../etc/passwd\n")
    with pytest.raises(RecordError, match=r"labels CSV line 2 .*leaves the dataset folder"):
        prepare_source(WfdbFolderSource(folder.parent, labels), None, PrepareOptions(num_proc=1))


def test_one_command_per_source(tmp_path, capsys):
    prepare_main(
        ["--source", "mimic", "--input", str(MIMIC_LAYOUT), "--output-dir", str(tmp_path / "m"), "--num-proc", "1"]
    )
    assert "wrote 3 records" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="needs --labels"):
        prepare_main(["--source", "wfdb-folder", "--input", str(CPSC), "--output-dir", str(tmp_path / "w")])


def test_prepare_reads_its_options_from_one_json_file_and_refuses_a_bad_shard(tmp_path, capsys):
    config = tmp_path / "prepare.json"
    options = {"source": "mimic", "input": str(MIMIC_LAYOUT), "output_dir": str(tmp_path / "m"), "num_proc": 1}
    config.write_text(json.dumps(options))
    prepare_main([str(config)])
    assert "wrote 3 records" in capsys.readouterr().out
    with pytest.raises(SystemExit) as refused:
        prepare_main(
            [
                "--input",
                str(MIMIC_LAYOUT),
                "--output_dir",
                str(tmp_path / "s"),
                "--num_shards",
                "2",
                "--shard_index",
                "2",
            ]
        )
    assert refused.value.code == 2 and "shard_index must be in 0..1, got 2" in capsys.readouterr().err


@pytest.mark.slow
def test_cqa_captions_a_challenge_prepared_dataset(tmp_path):
    """cqa_generate's pipeline runs unchanged on a Challenge-prepared dataset of variable-length records."""
    from esi.cqa.run import generate_captions
    from esi.data.torch_dataset import load_dataset_folder

    folder = _copy_records(CPSC, ["A0001", "A0006", "A0008"], tmp_path / "cpsc")
    prepared = prepare_source(ChallengeSource(folder), tmp_path / "prepared", PrepareOptions(num_proc=1))
    # Only the split holding A0001: with three records the other splits are empty, which the caption
    # writer does not handle (an empty Parquet shard without schema; reported to the CQA's owner).
    [split] = [s for s, d in prepared.items() if "A0001" in d["record_name"]]
    summary = generate_captions(
        tmp_path / "prepared", tmp_path / "captions", backend="template", num_workers=1, splits=[split]
    )
    assert summary["complete"] and summary["rows_written"] == prepared[split].num_rows
    prepared = _all_rows(prepared)
    captions = {}
    for part in load_dataset_folder(tmp_path / "captions").values():
        captions.update(zip(part["ecg_id"], part["caption"], strict=True))
    a0001 = captions[int(prepared["A0001"]["ecg_id"])]  # '#Dx: RBBB', 74-year-old man
    assert "right bundle branch block" in a0001.lower() and "74" in a0001 and "male" in a0001
