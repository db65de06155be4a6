"""EsiFeatureExtractor on real PTB-XL records: lead mapping, resampling, crop/pad, filters, refusals."""

from pathlib import Path

import numpy as np
import pytest
import torch
import wfdb
from scipy.signal import resample_poly as scipy_resample_poly

from modeling_esi import EsiFeatureExtractor
from modeling_esi.feature_extraction_esi import bandpass, resample_poly

SAMPLE = Path(__file__).resolve().parent.parent / "data" / "ptbxl_sample"
PTBXL_LEADS = ["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"]


@pytest.fixture(scope="module")
def record_100hz() -> wfdb.Record:
    return wfdb.rdrecord(str(SAMPLE / "records100" / "00000" / "00001_lr"))


@pytest.fixture(scope="module")
def record_500hz() -> wfdb.Record:
    return wfdb.rdrecord(str(SAMPLE / "records500" / "00000" / "00001_hr"))


def test_ptbxl_record_round_trip(record_100hz: wfdb.Record):
    extractor = EsiFeatureExtractor(do_normalize=False)
    features = extractor(record_100hz.p_signal, sampling_rate=100, lead_names=record_100hz.sig_name)
    assert features["input_values"].shape == (1, 12, 1000) and features["input_values"].dtype == np.float32
    np.testing.assert_allclose(features["input_values"][0], record_100hz.p_signal.T.astype(np.float32))
    assert features["ecg_attention_mask"].sum() == 1000
    # (leads x time) and torch input give the same answer as (time x leads) numpy.
    again = extractor(torch.from_numpy(record_100hz.p_signal.T.copy()), sampling_rate=100, lead_names=PTBXL_LEADS)
    np.testing.assert_array_equal(again["input_values"], features["input_values"])


def test_leads_are_mapped_by_name(record_100hz: wfdb.Record):
    extractor = EsiFeatureExtractor(do_normalize=False)
    reference = extractor(record_100hz.p_signal, sampling_rate=100, lead_names=PTBXL_LEADS)["input_values"]
    # MIMIC-IV-ECG order swaps aVL and aVF; the names sort it out.
    mimic_order = ["I", "II", "III", "aVR", "aVF", "aVL", "V1", "V2", "V3", "V4", "V5", "V6"]
    permutation = [PTBXL_LEADS.index(name) for name in mimic_order]
    swapped = record_100hz.p_signal[:, permutation]
    features = extractor(swapped, sampling_rate=100, lead_names=[name.upper() for name in mimic_order])
    np.testing.assert_array_equal(features["input_values"], reference)


def test_500hz_is_resampled_like_scipy(record_100hz: wfdb.Record, record_500hz: wfdb.Record):
    extractor = EsiFeatureExtractor(do_normalize=False)
    features = extractor(record_500hz.p_signal, sampling_rate=500, lead_names=record_500hz.sig_name)
    assert features["input_values"].shape == (1, 12, 1000)
    expected = scipy_resample_poly(record_500hz.p_signal.T, 1, 5, axis=-1)
    np.testing.assert_allclose(features["input_values"][0], expected, atol=5e-3)
    # PTB-XL's own 100 Hz version of the same recording is close too (it was made with another filter).
    correlation = np.corrcoef(features["input_values"][0, 1], record_100hz.p_signal[:, 1])[0, 1]
    assert correlation > 0.95


@pytest.mark.parametrize("orig, target", [(360, 100), (250, 100), (100, 500), (128, 100)])
def test_resample_poly_matches_scipy(orig: int, target: int):
    signal = np.random.default_rng(0).standard_normal((3, 4 * orig))
    ours = resample_poly(signal, orig, target)
    theirs = scipy_resample_poly(signal, target, orig, axis=-1)
    assert ours.shape == theirs.shape
    np.testing.assert_allclose(ours, theirs, atol=1e-2)


def test_bandpass_removes_drift_and_attenuates_high_frequencies():
    rate = 100
    t = np.arange(1000) / rate
    beat = np.sin(2 * np.pi * 5 * t)
    drift = 2.0 + 0.5 * np.sin(2 * np.pi * 0.05 * t)
    middle = slice(100, 900)
    filtered = bandpass((beat + drift)[None], rate, 0.5, 40.0)[0]
    assert np.abs(filtered[middle] - beat[middle]).max() < 0.05
    high = np.sin(2 * np.pi * 48 * t)
    assert np.abs(bandpass(high[None], rate, 0.5, 40.0)[0][middle]).max() < 0.35


def test_crop_pad_and_normalise(record_100hz: wfdb.Record):
    extractor = EsiFeatureExtractor(do_bandpass=True)
    short = record_100hz.p_signal[:600]
    long = np.concatenate([record_100hz.p_signal, record_100hz.p_signal])
    features = extractor([short, long], sampling_rate=100, lead_names=PTBXL_LEADS, return_tensors="pt")
    values, mask = features["input_values"], features["ecg_attention_mask"]
    assert values.shape == (2, 12, 1000) and mask.shape == (2, 1000)
    assert mask[0].sum() == 600 and mask[1].sum() == 1000
    assert (values[0, :, 600:] == 0).all()
    torch.testing.assert_close(values[0, :, :600].mean(dim=1), torch.zeros(12), atol=1e-4, rtol=0)
    torch.testing.assert_close(values[0, :, :600].std(dim=1, unbiased=False), torch.ones(12), atol=1e-3, rtol=0)


def test_missing_leads(record_100hz: wfdb.Record):
    extractor = EsiFeatureExtractor()
    limb = record_100hz.p_signal[:, :6]
    with pytest.raises(ValueError, match=r"missing lead\(s\) \['V1'"):
        extractor(limb, sampling_rate=100, lead_names=PTBXL_LEADS[:6])
    features = extractor(limb, sampling_rate=100, lead_names=PTBXL_LEADS[:6], allow_missing_leads=True)
    np.testing.assert_array_equal(features["lead_mask"], [[1] * 6 + [0] * 6])
    assert (features["input_values"][0, 6:] == 0).all() and features["input_values"][0, :6].std() > 0


def test_refusals_name_the_record_and_problem(record_100hz: wfdb.Record):
    extractor = EsiFeatureExtractor()
    signal = record_100hz.p_signal.copy()
    with pytest.raises(ValueError, match="sampling_rate must be given"):
        extractor(signal, lead_names=PTBXL_LEADS)
    with pytest.raises(ValueError, match="lead_names must be given"):
        extractor(signal, sampling_rate=100)
    with pytest.raises(ValueError, match=r"unknown lead name\(s\) \['V7'\]"):
        extractor(signal, sampling_rate=100, lead_names=PTBXL_LEADS[:-1] + ["V7"])
    signal[10, 4] = np.nan
    with pytest.raises(ValueError, match=r"00001_lr: contains NaN or infinite samples in lead\(s\) \['aVL'\]"):
        extractor(signal, sampling_rate=100, lead_names=PTBXL_LEADS, record_names=["00001_lr"])
    signal[10, 4] = np.inf
    with pytest.raises(ValueError, match="ECG #1 of the batch: contains NaN"):
        extractor([record_100hz.p_signal, signal], sampling_rate=100, lead_names=PTBXL_LEADS)
    with pytest.raises(ValueError, match="ambiguous"):
        extractor(np.zeros((12, 12)), sampling_rate=100, lead_names=PTBXL_LEADS)
    with pytest.raises(ValueError, match="does not match the 12 leads"):
        extractor(np.zeros((11, 500)), sampling_rate=100, lead_names=PTBXL_LEADS)
    with pytest.raises(ValueError, match="lists a lead twice"):
        extractor(np.zeros((12, 500)), sampling_rate=100, lead_names=PTBXL_LEADS[:-1] + ["ii"])


def test_save_and_reload(tmp_path: Path, record_500hz: wfdb.Record):
    extractor = EsiFeatureExtractor(do_bandpass=True, bandpass_high_hz=35.0)
    extractor.save_pretrained(tmp_path)
    assert (tmp_path / "preprocessor_config.json").exists()
    reloaded = EsiFeatureExtractor.from_pretrained(tmp_path)
    assert reloaded.to_dict() == extractor.to_dict()
    args = dict(sampling_rate=500, lead_names=record_500hz.sig_name)
    np.testing.assert_array_equal(
        reloaded(record_500hz.p_signal, **args)["input_values"],
        extractor(record_500hz.p_signal, **args)["input_values"],
    )
