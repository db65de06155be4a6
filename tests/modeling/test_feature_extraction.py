"""EsiFeatureExtractor on real PTB-XL records: lead mapping, resampling, crop/pad, filters, refusals."""

from pathlib import Path

import numpy as np
import pytest
import torch
import wfdb
from scipy.signal import resample_poly as scipy_resample_poly

from modeling_esi import EsiFeatureExtractor
from modeling_esi.feature_extraction_esi import bandpass, resample_poly
from tests.helpers import PTBXL_SAMPLE

PTBXL_LEADS = ["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"]


@pytest.fixture(scope="module")
def record_100hz() -> wfdb.Record:
    return wfdb.rdrecord(str(PTBXL_SAMPLE / "records100" / "00000" / "00001_lr"))


@pytest.fixture(scope="module")
def record_500hz() -> wfdb.Record:
    return wfdb.rdrecord(str(PTBXL_SAMPLE / "records500" / "00000" / "00001_hr"))


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


def test_padding_strategies(record_100hz: wfdb.Record):
    """The sequence feature-extraction contracts: max_length (default), longest, do_not_pad, multiples, batch vs
    single consistency, and outputs named so `model(**features)` works."""
    extractor = EsiFeatureExtractor()
    short, full = record_100hz.p_signal[:600], record_100hz.p_signal
    kwargs = dict(sampling_rate=100, lead_names=PTBXL_LEADS)
    default = extractor([short, full], **kwargs)
    assert set(default) == set(extractor.model_input_names) == {"input_values", "ecg_attention_mask"}
    assert default["input_values"].shape == (2, 12, 1000)
    np.testing.assert_array_equal(default["ecg_attention_mask"].sum(axis=1), [600, 1000])
    assert not default["input_values"][0, :, 600:].any()  # padding_value 0
    longest = extractor([short, short[:500]], padding="longest", **kwargs)
    assert longest["input_values"].shape == (2, 12, 600)
    np.testing.assert_array_equal(longest["ecg_attention_mask"].sum(axis=1), [600, 500])
    assert extractor(short, padding=True, pad_to_multiple_of=64, **kwargs)["input_values"].shape == (1, 12, 640)
    unpadded = extractor([short, full], padding="do_not_pad", **kwargs)
    assert [values.shape for values in unpadded["input_values"]] == [(12, 600), (12, 1000)]
    with pytest.raises(ValueError, match="padding=True"):
        extractor([short, full], padding=False, return_tensors="pt", **kwargs)
    assert extractor(full, max_length=400, **kwargs)["input_values"].shape == (1, 12, 400)
    with pytest.raises(ValueError, match="padding must be one of"):
        extractor(short, padding="left", **kwargs)
    # A record's values do not depend on what else is in the batch.
    alone = extractor(short, **kwargs)
    np.testing.assert_array_equal(alone["input_values"][0], default["input_values"][0])
    tensors = extractor([short, full], return_tensors="pt", **kwargs)
    assert tensors["input_values"].dtype == torch.float32 and tensors["ecg_attention_mask"].dtype == torch.int32


def test_pad_handles_lead_by_time_arrays():
    extractor = EsiFeatureExtractor()
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((12, 700)).astype(np.float32), rng.standard_normal((12, 1000)).astype(np.float32)
    padded = extractor.pad({"input_values": [a, b]}, return_tensors="np")
    assert padded["input_values"].shape == (2, 12, 1000)
    np.testing.assert_array_equal(padded["input_values"][0, :, :700], a)
    np.testing.assert_array_equal(padded["ecg_attention_mask"].sum(axis=1), [700, 1000])
    # A list of single-ECG dicts (what a DataLoader collates), with masks that already mark padding.
    mask_a = np.r_[np.ones(650), np.zeros(50)].astype(np.int32)
    items = [{"input_values": a, "ecg_attention_mask": mask_a}, {"input_values": b}]
    stacked = extractor.pad(items, padding="max_length", max_length=1200, return_tensors="pt")
    assert stacked["input_values"].shape == (2, 12, 1200)
    assert stacked["ecg_attention_mask"].sum(dim=1).tolist() == [650, 1000]
    truncated = extractor.pad({"input_values": [a, b]}, padding="max_length", max_length=800, truncation=True)
    assert truncated["input_values"].shape == (2, 12, 800)
    with pytest.raises(ValueError, match="truncation=True"):
        extractor.pad({"input_values": [a, b]}, padding="max_length", max_length=800)
    with pytest.raises(ValueError, match=r"ECG #0 of the batch: expected input_values \(12 leads, T\)"):
        extractor.pad({"input_values": [a.T]})
