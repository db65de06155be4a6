"""The app's parts without a browser: reading uploads (and refusing bad ones), predictions, the sample index."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from esi.app.cqa_view import measurement_table
from esi.app.inference import SUPERCLASSES, EsiPredictor
from esi.app.records import RecordError, SampleCatalogue, read_upload
from esi.app.similar import SampleIndex
from esi.data.ptbxl import read_signal
from tests.helpers import PTBXL_SAMPLE, SHARED, build_tiny_model

RECORD = "records100/00000/00547_lr"
ECG_ID = 547


@pytest.fixture(scope="module")
def record_files(ptbxl_sample_dir) -> tuple[Path, Path]:
    base = ptbxl_sample_dir / RECORD
    return base.with_suffix(".hea"), base.with_suffix(".dat")


@pytest.fixture(scope="module")
def catalogue(ptbxl_sample_dir) -> SampleCatalogue:
    return SampleCatalogue(ptbxl_sample_dir)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("app_model") / "model", with_classifier=True)


def test_upload_reads_the_same_signal_as_the_dataset_reader(record_files, ptbxl_sample_dir):
    record = read_upload(record_files)
    expected = read_signal(ptbxl_sample_dir, ECG_ID, RECORD, 100)
    assert record.name == "00547_lr" and record.sampling_rate == 100 and record.ecg_id is None
    np.testing.assert_array_equal(record.signal, expected)


def test_sample_carries_its_metadata(catalogue):
    record = catalogue.read(ECG_ID)
    assert record.ecg_id == ECG_ID and record.sex in ("male", "female") and record.scp_codes
    assert catalogue.label(ECG_ID).startswith(f"{ECG_ID}: ")
    assert "atrial fibrillation" in catalogue.statements_text(ECG_ID)


def copy_files(files, folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    return [Path(shutil.copy(f, folder / Path(f).name)) for f in files]


def test_refuses_nothing_and_non_wfdb_files(tmp_path):
    with pytest.raises(RecordError, match="No file uploaded"):
        read_upload([])
    notes = tmp_path / "notes.txt"
    notes.write_text("not an ECG")
    with pytest.raises(RecordError, match="notes.txt: not an ECG file the app reads"):
        read_upload([notes])


def test_refuses_header_without_its_dat(record_files):
    with pytest.raises(RecordError, match=r"refers to the signal file 00547_lr\.dat, which is missing"):
        read_upload([record_files[0]])


def test_refuses_two_headers(record_files, tmp_path):
    other = copy_files([record_files[0]], tmp_path)[0].rename(tmp_path / "other.hea")
    with pytest.raises(RecordError, match="exactly one .hea"):
        read_upload([*record_files, other])


def test_refuses_unreadable_header(record_files, tmp_path):
    hea, dat = copy_files(record_files, tmp_path)
    hea.write_text("this is not a header\n")
    with pytest.raises(RecordError, match="not a readable WFDB header"):
        read_upload([hea, dat])


def test_refuses_dat_that_does_not_match_its_header(record_files, tmp_path):
    hea, dat = copy_files(record_files, tmp_path)
    dat.write_bytes(dat.read_bytes()[:-240])
    with pytest.raises(RecordError, match="does not match 00547_lr.hea.*24000 bytes.*23760 bytes"):
        read_upload([hea, dat])


def test_refuses_record_without_twelve_standard_leads(record_files, tmp_path):
    hea, dat = copy_files(record_files, tmp_path)
    hea.write_text(hea.read_text().replace(" V6\n", " X6\n"))
    with pytest.raises(RecordError, match="leads V6 are missing"):
        read_upload([hea, dat])


def test_measurement_table_rows(catalogue):
    from esi.cqa.measurements import measure_ecg

    record = catalogue.read(ECG_ID)
    table = measurement_table(measure_ecg(record.signal, 100, list(record.lead_names)))
    assert all(len(row) == 2 for row in table)
    names = dict(table)
    assert names["Heart rate"].endswith(" bpm")
    assert "QRS duration" in names


def test_fine_tuned_classifier_is_preferred(model_dir, catalogue):
    predictor = EsiPredictor(model_dir)
    predictions = predictor.predict(catalogue.read(ECG_ID))
    assert predictions.method.startswith("Fine-tuned classifier (classifier/")
    assert list(predictions.probabilities) == list(SUPERCLASSES)
    assert all(0.0 < p < 1.0 for p in predictions.probabilities.values())


def test_zero_shot_without_classifier(model_dir, catalogue, tmp_path):
    bare = Path(shutil.copytree(model_dir, tmp_path / "bare", ignore=shutil.ignore_patterns("classifier")))
    predictor = EsiPredictor(bare)
    assert predictor.classifier is None
    predictions = predictor.predict(catalogue.read(ECG_ID))
    assert predictions.method.startswith("Zero-shot")
    assert set(predictions.probabilities) == set(SUPERCLASSES)
    assert sum(predictions.probabilities.values()) == pytest.approx(1.0, abs=1e-5)
    assert isinstance(predictor.caption(catalogue.read(ECG_ID), max_new_tokens=8), str)


def test_sample_index_finds_itself_and_is_cached(model_dir, catalogue, tmp_path):
    predictor = EsiPredictor(model_dir)
    index = SampleIndex(predictor, catalogue, tmp_path)
    assert index.cache_path.is_file() and len(index.ids) == len(catalogue.ecg_ids)
    assert np.allclose(np.linalg.norm(index.embeddings, axis=1), 1.0, atol=1e-5)
    embedding = predictor.embed([catalogue.read(ECG_ID)])[0]
    first = index.nearest(embedding, k=5)
    assert len(first) == 5 and first[0].ecg_id == ECG_ID and first[0].similarity == pytest.approx(1.0, abs=1e-5)
    assert [n.similarity for n in first] == sorted((n.similarity for n in first), reverse=True)
    assert ECG_ID not in [n.ecg_id for n in index.nearest(embedding, k=5, exclude=ECG_ID)]

    def no_embedding(records):
        raise AssertionError("the cached embeddings should have been used")

    predictor.embed = no_embedding
    cached = SampleIndex(predictor, catalogue, tmp_path)
    np.testing.assert_array_equal(cached.embeddings, index.embeddings)


@pytest.mark.slow
def test_uploaded_challenge_record_is_described_with_its_own_labels():
    """A CPSC 2018 upload (.hea + .mat): the app reads the header's `# Dx: AF` as `cqa_generate.py --ecg_file`
    does, so the description names the CinC 2020 label, not a PTB-XL statement it was mapped to."""
    from esi.app.cqa_view import CqaDescriber

    base = SHARED / "cpsc2018-sample" / "A0065"
    record = read_upload([base.with_suffix(".hea"), base.with_suffix(".mat")])
    assert record.statements == [{"system": "CinC 2020 abbreviation", "code": "AF", "text": "atrial fibrillation"}]
    assert record.scp_codes == {"AFIB": 100.0}
    assert (record.age, record.sex) == (66, "female")
    description = CqaDescriber(PTBXL_SAMPLE).describe(record)
    assert "CinC 2020 diagnosis labels list atrial fibrillation" in description.description
    assert "SCP-ECG" not in description.description
