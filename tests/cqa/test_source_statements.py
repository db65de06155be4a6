"""The CQA captions every source's statements (Challenge SNOMED-CT codes and CinC 2020 labels, MIMIC-IV-ECG machine
report lines), read from the prepared `statements` column, and its checks keep working on them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import datasets
import pytest

from esi.cqa.captioner import record_statements
from esi.cqa.consistency import reconcile_with_statements
from esi.cqa.faithfulness import DiagnosisLexicon, FaithfulnessChecker
from esi.cqa.measurements import EcgMeasurements
from esi.cqa.prompts import CaptionInputs, render_user_message
from esi.cqa.run import generate_captions
from esi.data.challenge import ChallengeSource
from esi.data.labels import scp_reference
from esi.data.mimic import MimicEcgSource
from esi.data.prepare import PrepareOptions, prepare_source
from esi.knowledge import RecordFacts, load_knowledge_base
from tests.helpers import MIMIC_LAYOUT, SHARED, copy_challenge_records

CINC = SHARED / "cinc2021-sample"
CPSC = SHARED / "cpsc2018-sample"
# E07507: nonspecific st t abnormality (no SCP-ECG equivalent) + prolonged qt interval; JS20017: eight codes, three
# without an SCP-ECG equivalent; A0065: CPSC 2018 "AF"; A0011: CPSC 2018 "LBBB".
RECORDS = {CINC: ["E07507", "JS20017"], CPSC: ["A0065", "A0011"]}
UNKNOWN_CODE = "999999999"  # in no Challenge mapping table (none of the 50 real records has such a code)
FAST = {"backend": "template", "encoder_path": None, "num_workers": 1}

pytestmark = pytest.mark.skipif(not CINC.is_dir() or not CPSC.is_dir(), reason="needs ../shared Challenge samples")


def _captions(output_dir: Path) -> dict[int, dict]:
    return {row["ecg_id"]: row for split in datasets.load_dataset(str(output_dir)).values() for row in split}


@pytest.fixture(scope="module")
def challenge_dir(tmp_path_factory) -> Path:
    """Real CinC 2021 and CPSC 2018 records, plus a copy of E07501 whose header also lists an unknown code."""
    folder = tmp_path_factory.mktemp("challenge")
    copy_challenge_records(RECORDS, folder)
    header = (CINC / "E07501.hea").read_text()
    assert "# Dx: 253352002,427084000" in header
    (folder / "X07501.hea").write_text(
        header.replace("E07501", "X07501").replace("# Dx: 253352002,", f"# Dx: {UNKNOWN_CODE},253352002,")
    )
    shutil.copyfile(CINC / "E07501.mat", folder / "X07501.mat")
    prepared = folder / "prepared"
    prepare_source(ChallengeSource(folder, sampling_rate=100), prepared, PrepareOptions(num_proc=1))
    return prepared


@pytest.fixture(scope="module")
def challenge_captions(challenge_dir, tmp_path_factory) -> dict[str, dict]:
    out = tmp_path_factory.mktemp("challenge_captions") / "out"
    summary = generate_captions(challenge_dir, out, **FAST)
    assert summary["complete"] and summary["faithfulness"] == {"pass": 5}
    prepared = datasets.load_from_disk(str(challenge_dir))
    names = {row["ecg_id"]: row["record_name"] for split in prepared.values() for row in split}
    return {names[ecg_id]: row for ecg_id, row in _captions(out).items()}


def test_challenge_captions_name_every_statement_in_its_own_system(challenge_captions):
    e07507 = challenge_captions["E07507"]
    assert e07507["statements"] == ["428750005", "111975006"]
    assert e07507["statement_descriptions"] == ["nonspecific st t abnormality", "prolonged qt interval"]
    js20017 = challenge_captions["JS20017"]
    assert len(js20017["statements"]) == 8
    for row in challenge_captions.values():
        caption = row["caption"]
        assert "SCP-ECG" not in caption and "cardiologists" not in caption, caption
        for code, text in zip(row["statements"], row["statement_descriptions"], strict=True):
            assert (text if text != code else f"SNOMED-CT code {code}") in caption, (text, caption)
        assert row["faithfulness"] == "pass"
    for name in ("E07507", "JS20017", "X07501"):
        assert "SNOMED-CT diagnoses" in challenge_captions[name]["caption"]
    for name in ("A0065", "A0011"):
        assert "CinC 2020 diagnosis labels" in challenge_captions[name]["caption"]
    assert challenge_captions["A0065"]["statement_descriptions"] == ["atrial fibrillation"]


def test_unknown_code_is_said_as_its_code_never_named(challenge_captions):
    row = challenge_captions["X07501"]
    assert row["statements"][0] == UNKNOWN_CODE and row["statement_descriptions"][0] == UNKNOWN_CODE
    caption = row["caption"]
    assert f"SNOMED-CT code {UNKNOWN_CODE} (not named in its mapping tables)" in caption
    assert "left atrial abnormality" in caption and "sinus tachycardia" in caption


def test_prompt_lists_statements_under_their_coding_system(challenge_dir):
    from esi.cqa.captioner import Captioner
    from esi.cqa.options import GenerationOptions

    prepared = datasets.load_from_disk(str(challenge_dir))

    def rows(record: str) -> dict:
        return next(
            split.with_format("numpy", columns=["signal"], output_all_columns=True)[i : i + 1]
            for split in prepared.values()
            for i, name in enumerate(split["record_name"])
            if name == record
        )

    captioner = Captioner(challenge_dir, GenerationOptions(backend="template", encoder_path=None))
    (inputs,) = captioner.inputs(rows("X07501"), [EcgMeasurements(heart_rate_bpm=110.0)])
    message = render_user_message(inputs)
    assert "ECG record" in message and "(12 leads, 10 seconds)" in message
    assert "Statements of the record (SNOMED-CT diagnoses):" in message
    assert f"- {UNKNOWN_CODE}: no name known; call it SNOMED-CT code {UNKNOWN_CODE}" in message
    assert "- 253352002: left atrial abnormality" in message and "- 427084000: sinus tachycardia" in message
    assert "(SCP-ECG)" not in message
    (cpsc,) = captioner.inputs(rows("A0065"), [EcgMeasurements(heart_rate_bpm=139.0)])
    assert "(12 leads, 11 seconds)" in render_user_message(cpsc)  # CPSC 2018 records are 6-60 s long


def test_mimic_machine_report_lines_reach_the_caption(tmp_path):
    prepared = tmp_path / "prepared"
    prepare_source(MimicEcgSource(MIMIC_LAYOUT, sampling_rate=100), prepared, PrepareOptions(num_proc=1))
    summary = generate_captions(prepared, tmp_path / "out", **FAST)
    assert summary["faithfulness"] == {"pass": summary["rows_written"]}
    rows = _captions(tmp_path / "out")
    first = rows[49990001]
    assert first["statement_descriptions"] == ["Sinus rhythm", "Low QRS voltages"]
    assert 'The MIMIC-IV-ECG machine report reads: "Sinus rhythm; Low QRS voltages".' in first["caption"]
    assert all("SCP-ECG" not in row["caption"] for row in rows.values())


@pytest.fixture(scope="module")
def checker() -> FaithfulnessChecker:
    return FaithfulnessChecker(DiagnosisLexicon.build(scp_reference()[2], load_knowledge_base()))


def _challenge_inputs(entries: list[tuple[str, str, str]], scp_codes: str, **measured) -> CaptionInputs:
    statements = record_statements(
        7, scp_codes, [{"system": s, "code": c, "text": t} for s, c, t in entries], scp_reference()[2]
    )
    m = EcgMeasurements(heart_rate_bpm=104.0, **measured)
    return CaptionInputs(7, 70.0, "female", "", statements, m, [])


LAA = ("SNOMED-CT", "253352002", "left atrial abnormality")
STACH = ("SNOMED-CT", "427084000", "sinus tachycardia")
AF = ("CinC 2020 abbreviation", "AF", "atrial fibrillation")


def test_quoted_statement_without_scp_equivalent_is_faithful(checker):
    inputs = _challenge_inputs([LAA, STACH], '{"STACH": 100.0}')
    assert [s.scp for s in inputs.statements] == [None, "STACH"]
    text = "The SNOMED-CT diagnoses list sinus tachycardia and left atrial abnormality. Heart rate 104 bpm."
    assert checker.check(text, inputs) == []
    assert checker.check("The SNOMED-CT diagnoses list sinus tachycardia. Heart rate 104 bpm.", inputs) == [
        "does not mention the statement 253352002 (left atrial abnormality)"
    ]


def test_checks_still_catch_claims_on_challenge_records(checker):
    inputs = _challenge_inputs([AF], '{"AFIB": 100.0}')
    assert inputs.statements[0].scp == "AFIB"
    ok = "According to the CinC 2020 diagnosis labels, the record shows atrial fibrillation. Heart rate 104 bpm."
    assert checker.check(ok, inputs) == []
    denied = checker.check(ok + " There is no atrial fibrillation.", inputs)
    assert any(issue.startswith("denies 'atrial fibrillation'") for issue in denied), denied
    invented = checker.check(ok + " It also shows left bundle branch block.", inputs)
    assert any("asserts 'left bundle branch block'" in issue for issue in invented), invented
    healthy = checker.check(ok + " The patient is healthy.", _challenge_inputs([LAA], "{}"))
    assert any("claims 'healthy'" in issue for issue in healthy), healthy


def test_reconciliation_uses_the_mapped_statements():
    inputs = _challenge_inputs([AF], '{"AFIB": 100.0}', p_wave_absent=False, rr_irregular=False)
    codes = [s.scp for s in inputs.statements if s.scp]
    reconciled = reconcile_with_statements(inputs.measurements, codes)
    assert reconciled.p_wave_absent is None and reconciled.rr_irregular is None
    assert "AFIB" in reconciled.missing["p_wave_absent"]


def test_scp_codes_no_entry_stands_for_are_kept():
    statements = record_statements(
        3,
        '{"SR": 0.0, "NORM": 100.0}',
        [
            {"system": "labels CSV", "code": "", "text": "looks fine"},
            {"system": "SCP-ECG", "code": "NORM", "text": "normal ECG"},
        ],
        scp_reference()[2],
    )
    assert [(s.system, s.code or s.description) for s in statements] == [
        ("labels CSV", "looks fine"),
        ("SCP-ECG", "NORM"),
        ("SCP-ECG", "SR"),
    ]
    assert statements[1].likelihood == 100.0


def test_empty_split_gives_an_empty_output_split(tmp_path, caplog):
    """Two CPSC records both hash into train: validation and test are empty, and cqa_generate still finishes."""
    import pyarrow.parquet as pq

    from esi.cqa.cli import main

    folder = tmp_path / "records"
    folder.mkdir()
    for name in ("A0001", "A0002"):
        for suffix in (".hea", ".mat"):
            shutil.copyfile(CPSC / f"{name}{suffix}", folder / f"{name}{suffix}")
    prepared = prepare_source(ChallengeSource(folder), tmp_path / "prepared", PrepareOptions(num_proc=1))
    assert {s: d.num_rows for s, d in prepared.items()} == {"train": 2, "validation": 0, "test": 0}
    out = tmp_path / "out"
    with caplog.at_level("INFO", logger="esi.cqa.run"):
        main(
            [
                "--dataset",
                str(tmp_path / "prepared"),
                "--output_dir",
                str(out),
                "--encoder_path",
                "none",
                "--num_workers",
                "1",
            ]
        )
    assert "split 'validation' of" in caplog.text and "has no records" in caplog.text
    for split in ("validation", "test"):
        assert pq.read_table(out / "data" / f"{split}-00000-of-00001.parquet").num_rows == 0
    loaded = datasets.load_dataset(str(out))
    assert list(loaded) == ["train"] and loaded["train"].num_rows == 2


PHILIPS = SHARED / "vendor-ecg" / "philips-xml"


def _cqa_file(capsys, *argv: str) -> dict:
    from esi.cqa.cli import main

    main(["--ecg_file", *argv, "--encoder_path", "none"])
    return json.loads(capsys.readouterr().out)


@pytest.mark.skipif(not PHILIPS.is_dir(), reason="needs ../shared vendor files")
def test_cqa_generate_captions_one_philips_xml(capsys):
    result = _cqa_file(capsys, str(PHILIPS / "129DYPRG.XML"))
    assert (result["format"], result["sampling_rate"], result["age"], result["sex"]) == (
        "Philips XML",
        500,
        50.0,
        "male",
    )
    assert result["statements"] == [] and result["faithfulness"] == "pass"
    assert result["caption"].startswith("No statements accompany this record.")
    assert "50-year-old male patient" in result["caption"] or "male patient is 50 years old" in result["caption"]
    rate = round(result["measurements"]["heart_rate_bpm"])
    assert f"{rate} bpm" in result["caption"]
    again = _cqa_file(capsys, str(PHILIPS / "129DYPRG.XML"), "--age", "61", "--sex", "F")
    assert (again["age"], again["sex"]) == (61.0, "female") and "61" in again["caption"]


def test_cqa_generate_captions_one_wfdb_record_with_its_dx(capsys, tmp_path):
    result = _cqa_file(capsys, str(CPSC / "A0065.hea"), "--output_dir", str(tmp_path))
    assert (result["format"], result["seconds"]) == ("WFDB", 11.0)
    assert result["statements"] == [{"system": "CinC 2020 abbreviation", "code": "AF", "text": "atrial fibrillation"}]
    assert "CinC 2020 diagnosis labels list atrial fibrillation" in result["caption"] or (
        "CinC 2020 diagnosis labels, the record shows atrial fibrillation" in result["caption"]
    )
    assert json.loads((tmp_path / "A0065.json").read_text()) == result


@pytest.mark.skipif(not PHILIPS.is_dir(), reason="needs ../shared vendor files")
def test_cqa_generate_refuses_a_bad_file_naming_it(capsys):
    from esi.cqa.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["--ecg_file", str(PHILIPS / "invalid-doc-type.xml")])
    assert exc.value.code == (
        "error: invalid-doc-type.xml could not be read as a Philips PageWriter/TraceMaster ECG "
        "(Files of type MortaraECG 1.03 are unsupported)."
    )
    with pytest.raises(SystemExit) as exc:
        main(["--ecg_file", str(CPSC / "A0065.hea"), "--sex", "unknown-value"])
    assert "A0065.hea" in str(exc.value.code) and "sex 'unknown-value'" in str(exc.value.code)
    assert capsys.readouterr().out == ""


def test_single_file_prompt_names_the_file_not_record_0(capsys):
    from esi.constants import STANDARD_LEADS
    from esi.cqa.captioner import DEFAULT_SCP_STATEMENTS, Captioner
    from esi.cqa.options import GenerationOptions
    from esi.data.ecg_file import read_ecg_file

    result = _cqa_file(capsys, str(CPSC / "A0065.hea"))
    ecg = read_ecg_file(CPSC / "A0065.hea")
    captioner = Captioner(DEFAULT_SCP_STATEMENTS.parent, GenerationOptions(backend="template", encoder_path=None))
    named, unnamed = (
        captioner.caption_record(
            ecg.standard_leads(),
            ecg.sampling_rate,
            STANDARD_LEADS,
            {"AFIB": 100.0},
            ecg.age,
            ecg.sex,
            record_id=ecg.name,
            statements=result["statements"],
            file_name=file_name,
        )[1]
        for file_name in ("A0065.hea", None)
    )
    assert render_user_message(named.inputs).startswith('ECG file "A0065.hea" (12 leads, 11 seconds).')
    assert render_user_message(unnamed.inputs).startswith("ECG record 0 (12 leads")  # the old prompt
    assert result["prompt_hash"] == named.prompt_hash != unnamed.prompt_hash  # --ecg_file's prompt names the file
    assert named.inputs.ecg_id == 0 and isinstance(named.inputs.ecg_id, int)


def test_unspecified_bundle_branch_block_is_never_called_complete(tmp_path, checker):
    """E07509 (real, Georgia) carries SNOMED 59118001 "right bundle branch block" and A0001 (real, CPSC 2018) the 2020
    label "RBBB": both keep CRBBB as their task label, but neither caption nor background may say "complete"."""
    from esi.cqa.retrieval import HybridRetriever

    for source, name in ((CINC, "E07509"), (CPSC, "A0001")):
        for suffix in (".hea", ".mat"):
            shutil.copyfile(source / f"{name}{suffix}", tmp_path / f"{name}{suffix}")
    assert "# Dx: 59118001," in (tmp_path / "E07509.hea").read_text()
    prepare_source(ChallengeSource(tmp_path, sampling_rate=100), tmp_path / "prepared", PrepareOptions(num_proc=1))
    prepared = datasets.load_from_disk(str(tmp_path / "prepared"))
    rows = {row["record_name"]: row for split in prepared.values() for row in split}
    assert json.loads(rows["E07509"]["scp_codes"]) == {"CRBBB": 100.0, "SBRAD": 100.0}  # the Challenge's scoring
    assert json.loads(rows["A0001"]["scp_codes"]) == {"CRBBB": 100.0}
    summary = generate_captions(tmp_path / "prepared", tmp_path / "out", **FAST)
    assert summary["faithfulness"] == {"pass": 2}
    names = {r["ecg_id"]: n for n, r in rows.items()}
    written = datasets.Dataset.from_parquet([str(p) for p in sorted((tmp_path / "out" / "data").glob("*.parquet"))])
    assert sorted(written["ecg_id"]) == sorted(names)
    for row in written:
        name = names[row["ecg_id"]]
        assert "right bundle branch block" in row["caption"] and "complete" not in row["caption"].lower(), name
        assert "scp:CRBBB" not in row["retrieved_passage_ids"], name

    statements = record_statements(1, rows["E07509"]["scp_codes"], rows["E07509"]["statements"], scp_reference()[2])
    assert [(s.code, s.scp) for s in statements] == [("59118001", None), ("426177001", "SBRAD")]
    claim = _challenge_inputs(
        [("SNOMED-CT", "59118001", "right bundle branch block"), ("SNOMED-CT", "426177001", "sinus bradycardia")],
        rows["E07509"]["scp_codes"],
    )
    assert checker.check("Sinus bradycardia and right bundle branch block; heart rate 104 bpm.", claim) == []
    assert checker.check("Sinus bradycardia and complete right bundle branch block; heart rate 104 bpm.", claim)

    bm25 = HybridRetriever(load_knowledge_base(), encoder_path=None)
    query, facts = ["complete right bundle branch block"], [RecordFacts(frozenset({"CRBBB"}))]
    assert "scp:CRBBB" in [p.id for p in bm25.retrieve_batch(query, facts, k=3)[0]]
    excluded = bm25.retrieve_batch(query, facts, k=3, excluded_codes_list=[["CRBBB"]])[0]
    assert "scp:CRBBB" not in [p.id for p in excluded]
