"""`esi.data.ecg_file.read_ecg_file` on real files of each format (Philips XML and WFDB from ../shared, the
DICOM waveform pydicom ships, a CSV written here from a real PTB-XL record) and on broken ones."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pydicom
import pydicom.examples
import pytest
import wfdb

from esi.constants import STANDARD_LEADS
from esi.data.ecg_file import EcgFileError, read_ecg_file
from tests.helpers import SHARED

PHILIPS = SHARED / "vendor-ecg" / "philips-xml"
PHILIPS_VALID = ["129DYPRG.XML", "2020-5-18_15-48-11.xml", "3191723_ZZDEMOPTONLY_1-04_orig.xml",
                 "ad4d3d80-d165_1-04_orig.xml", "repbeats_example.xml"]  # fmt: skip
PTBXL_500 = SHARED / "ptb-xl" / "records500" / "00000" / "00001_hr"
CINC = SHARED / "cinc2021-sample" / "HR06009"


@pytest.mark.parametrize("name", PHILIPS_VALID)
def test_philips_xml(name):
    ecg = read_ecg_file(PHILIPS / name)
    assert ecg.format == "Philips XML" and ecg.lead_names == STANDARD_LEADS
    assert ecg.sampling_rate == 500 and ecg.signal.shape == (12, 5500) and ecg.signal.dtype == np.float32
    # Einthoven: lead III = II - I (derived in the decoder; a few µV of rounding). The last 0.3 s hold the
    # cart's 1 mV calibration pulse, the same in every lead.
    np.testing.assert_allclose(ecg.signal[2, :5000], ecg.signal[1, :5000] - ecg.signal[0, :5000], atol=0.02)
    assert 0.2 < np.abs(ecg.signal).max() < 30  # millivolts, not µV or raw counts


def test_philips_demographics():
    assert (read_ecg_file(PHILIPS / "129DYPRG.XML").age, read_ecg_file(PHILIPS / "129DYPRG.XML").sex) == (50, "male")
    female = read_ecg_file(PHILIPS / "ad4d3d80-d165_1-04_orig.xml")  # born 1976-01-01, recorded in 2008
    assert female.sex == "female" and 0 < female.age < 100


def test_philips_invalid_document_is_refused_by_name():
    with pytest.raises(EcgFileError, match=r"invalid-doc-type\.xml could not be read.*MortaraECG"):
        read_ecg_file(PHILIPS / "invalid-doc-type.xml")


def test_philips_truncated_file(tmp_path):
    cut = tmp_path / "cut.xml"
    cut.write_bytes((PHILIPS / "129DYPRG.XML").read_bytes()[:30_000])
    with pytest.raises(EcgFileError, match=r"cut\.xml is not a well-formed XML document"):
        read_ecg_file(cut)


def test_dicom_waveform_example():
    path = pydicom.examples.get_path("waveform")
    ecg = read_ecg_file(path)
    assert ecg.format == "DICOM" and ecg.lead_names == STANDARD_LEADS
    assert ecg.sampling_rate == 1000 and ecg.signal.shape == (12, 10000)
    assert (ecg.age, ecg.sex) == (42, "female")
    # The DICOM stores µV (sensitivity 1.25 µV per count): the reader returns mV.
    raw = pydicom.dcmread(path).waveform_array(0)
    np.testing.assert_allclose(ecg.signal, raw.T / 1000, rtol=1e-6)


def test_dicom_without_waveform_and_non_dicom(tmp_path):
    image = tmp_path / "ct.dcm"
    shutil.copy(pydicom.examples.get_path("ct"), image)
    with pytest.raises(EcgFileError, match=r"ct\.dcm is a DICOM file without a waveform \(modality CT\)"):
        read_ecg_file(image)
    fake = tmp_path / "fake.dcm"
    fake.write_bytes(b"not dicom at all" * 10)
    with pytest.raises(EcgFileError, match=r"fake\.dcm is not a readable DICOM file"):
        read_ecg_file(fake)


def test_wfdb_ptbxl_500hz_equals_rdsamp():
    ecg = read_ecg_file(PTBXL_500.with_suffix(".hea"))
    expected, fields = wfdb.rdsamp(str(PTBXL_500))
    assert (
        ecg.format == "WFDB"
        and ecg.sampling_rate == 500
        and [n.casefold() for n in ecg.lead_names] == [n.casefold() for n in fields["sig_name"]]
    )
    np.testing.assert_allclose(ecg.signal, expected.T, rtol=1e-6)
    assert read_ecg_file(PTBXL_500.with_suffix(".dat")).signal.shape == (12, 5000)  # from its .dat too


def test_wfdb_challenge_mat_with_demographics():
    ecg = read_ecg_file(CINC.with_suffix(".mat"))
    assert ecg.sampling_rate == 500 and ecg.signal.shape == (12, 5000) and ecg.lead_names == STANDARD_LEADS
    assert (ecg.age, ecg.sex) == (61, "female")


def copy_record(base: Path, folder: Path) -> Path:
    for suffix in (".hea", ".dat", ".mat"):
        if base.with_suffix(suffix).is_file():
            shutil.copy(base.with_suffix(suffix), folder)
    return folder / (base.name + ".hea")


def test_wfdb_truncated_dat_and_mat(tmp_path):
    header = copy_record(PTBXL_500, tmp_path)
    dat = header.with_suffix(".dat")
    dat.write_bytes(dat.read_bytes()[:-100])
    with pytest.raises(EcgFileError, match=r"00001_hr\.dat does not match 00001_hr\.hea.*120000 bytes.*119900"):
        read_ecg_file(header)
    mat_header = copy_record(CINC, tmp_path)
    mat = mat_header.with_suffix(".mat")
    mat.write_bytes(mat.read_bytes()[:50_000])
    with pytest.raises(EcgFileError, match=r"HR06009\.mat does not match HR06009\.hea.*after its 24-byte preamble"):
        read_ecg_file(mat_header)


def test_wfdb_header_data_mismatch(tmp_path):
    header = copy_record(PTBXL_500, tmp_path)
    lines = header.read_text().splitlines()
    header.write_text("\n".join([lines[0].replace(" 12 ", " 11 ", 1), *lines[1:12]]) + "\n")
    with pytest.raises(EcgFileError, match="00001_hr.hea"):
        read_ecg_file(header)


def test_wfdb_damaged_samples_fail_the_checksum(tmp_path):
    header = copy_record(PTBXL_500, tmp_path)
    dat = header.with_suffix(".dat")
    data = bytearray(dat.read_bytes())
    data[1000:1010] = bytes(10)
    dat.write_bytes(bytes(data))
    with pytest.raises(EcgFileError, match="do not match the header's checksums"):
        read_ecg_file(header)


def test_missing_lead_is_named(tmp_path):
    header = copy_record(PTBXL_500, tmp_path)
    header.write_text(header.read_text().replace(" V6\n", " X6\n"))
    ecg = read_ecg_file(header)  # any leads can be read...
    with pytest.raises(EcgFileError, match=r"00001_hr\.hea does not hold a standard 12-lead ECG: leads V6"):
        ecg.standard_leads()  # ...but not as a 12-lead ECG


def write_csv(path: Path, signal: np.ndarray, rate: int, heading: list[str], time_column: bool = True) -> Path:
    rows = [(["time_s"] if time_column else []) + heading]
    for i, column in enumerate(signal.T):
        rows.append(([f"{i / rate:.6f}"] if time_column else []) + [f"{v:.6g}" for v in column])
    path.write_text("\n".join(",".join(row) for row in rows) + "\n")
    return path


def test_csv_round_trip_of_a_real_record(tmp_path):
    real = read_ecg_file(PTBXL_500.with_suffix(".hea"))
    ecg = read_ecg_file(write_csv(tmp_path / "ecg.csv", real.signal, 500, list(real.lead_names)))
    assert ecg.format == "CSV" and ecg.sampling_rate == 500 and ecg.lead_names == real.lead_names
    np.testing.assert_allclose(ecg.signal, real.signal, atol=1e-5)
    in_uv = write_csv(tmp_path / "uv.csv", real.signal * 1000, 500, [f"{n} (uV)" for n in real.lead_names], False)
    np.testing.assert_allclose(read_ecg_file(in_uv, sampling_rate=500).signal, real.signal, atol=1e-5)
    with pytest.raises(EcgFileError, match=r"uv\.csv has no time column .* the rate cannot be guessed"):
        read_ecg_file(in_uv)


def test_csv_bad_cells(tmp_path):
    signal = np.zeros((12, 1000))
    bad = write_csv(tmp_path / "nan.csv", signal, 500, list(STANDARD_LEADS))
    bad.write_text(bad.read_text().replace("\n0.004000,0,", "\n0.004000,nan,", 1))
    with pytest.raises(EcgFileError, match=r"nan\.csv: leads I contain invalid \(NaN"):
        read_ecg_file(bad)
    text = write_csv(tmp_path / "text.csv", signal, 500, list(STANDARD_LEADS))
    text.write_text(text.read_text().replace("\n0.004000,0,0,", "\n0.004000,0,oops,", 1))
    with pytest.raises(EcgFileError, match=r"text\.csv, row 4, column II: not a number"):
        read_ecg_file(text)


def test_unsupported_and_missing_files(tmp_path):
    with pytest.raises(EcgFileError, match=r"scan\.pdf: not a supported ECG file"):
        read_ecg_file(tmp_path / "scan.pdf")
    with pytest.raises(EcgFileError, match=r"gone\.xml: the file is missing"):
        read_ecg_file(tmp_path / "gone.xml")


def test_one_wfdb_reader_for_single_files_and_sources(tmp_path):
    """A damaged sample in a Challenge .mat: the single-file reader and the batch reader (one code path)
    refuse it with the same sentence; the file reader once skipped checksums of files with a preamble."""
    from esi.data.schema import RecordError
    from esi.data.wfdb_record import read_wfdb

    header = copy_record(CINC, tmp_path)
    mat = header.with_suffix(".mat")
    data = bytearray(mat.read_bytes())
    data[24 + 2 * 12 * 100 : 24 + 2 * 12 * 100 + 2] = (1234).to_bytes(2, "little", signed=True)  # lead I, sample 100
    mat.write_bytes(bytes(data))
    with pytest.raises(RecordError) as batch:
        read_wfdb(header.with_suffix(""), "HR06009", "Challenge record")
    assert batch.value.problem.startswith("checksum mismatch in leads ['I']: the samples do not match the header's")
    with pytest.raises(EcgFileError) as single:
        read_ecg_file(header)
    assert str(single.value) == f"HR06009.hea: {batch.value.problem}."
