"""Windows of variable-length ECGs: random crops for training, covering windows for evaluation, masks on padding.

The record-level tests run on the real CPSC 2018 sample (10-60 s records), prepared with the Challenge reader.
"""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch

from esi.data.challenge import ChallengeSource
from esi.data.prepare import PrepareOptions, prepare_source
from esi.data.torch_dataset import EcgCollator, EcgDataset, EcgWindows, load_dataset_folder
from esi.data.windows import mean_by_record, parse_window_count, random_start, signal_lengths, window_starts
from esi.eval.classification import load_classifier, make_window_loader, predict
from esi.train.retrieval_eval import embed_ecg_text
from modeling_esi import EsiFeatureExtractor
from tests.helpers import SHARED, finetune_in_process, pretrain_in_process, tiny_train_args

CPSC = SHARED / "cpsc2018-sample"
RATE = 100  # prepared rate; the model reads 10 s = 1000 samples
LONGEST = "A0113"  # 60 s


def test_random_start_is_uniform_and_draws_nothing_for_a_short_record():
    rng = np.random.default_rng(0)
    starts = {random_start(6000, 1000, rng) for _ in range(50)}
    assert len(starts) > 30 and min(starts) >= 0 and max(starts) <= 5000
    before = rng.bit_generator.state
    assert random_start(1000, 1000, rng) == 0 and random_start(600, 1000, rng) == 0
    assert rng.bit_generator.state == before  # augmentations drawn next are unchanged by windowing


@pytest.mark.parametrize(
    ("samples", "count", "starts"),
    [
        (600, None, [0]),
        (1000, None, [0]),
        (2500, None, [0, 1000, 1500]),  # the last window ends at the record's end
        (6000, None, [0, 1000, 2000, 3000, 4000, 5000]),
        (6000, 1, [0]),
        (6000, 3, [0, 2500, 5000]),
        (2500, 5, [0, 1000, 1500]),
    ],
)
def test_window_starts(samples, count, starts):
    assert window_starts(samples, 1000, count) == starts


def test_window_count_option_and_errors():
    assert parse_window_count("all") is None and parse_window_count("3") == 3
    for bad in ("0", "-2", "many"):
        with pytest.raises(ValueError, match="--eval-windows must be 'all' or a positive integer"):
            parse_window_count(bad)


def test_mean_by_record_refuses_a_record_without_window():
    values = np.array([[1.0], [3.0], [5.0]])
    np.testing.assert_allclose(mean_by_record(values, np.array([0, 0, 1]), 2), [[2.0], [5.0]])
    with pytest.raises(ValueError, match=r"records without a window: \[1\]"):
        mean_by_record(values, np.array([0, 0, 2]), 3)


@pytest.fixture(scope="module")
def cpsc(tmp_path_factory) -> Path:
    """The 150 CPSC 2018 records prepared at 100 Hz with the Challenge reader (on disk, memory-mapped)."""
    if not CPSC.is_dir():
        pytest.skip("needs ../shared/cpsc2018-sample")
    out = tmp_path_factory.mktemp("cpsc") / "prepared"
    prepare_source(ChallengeSource(CPSC, sampling_rate=RATE), out, PrepareOptions(num_proc=2))
    return out


def _offset(whole: np.ndarray, window: np.ndarray) -> int:
    """Where `window` lies in `whole` (it must be an exact slice of every lead)."""
    length = window.shape[1]
    for start in range(whole.shape[1] - length + 1):
        if np.array_equal(whole[:, start : start + length], window):
            return start
    raise AssertionError("the window is not a slice of the record")


def _split_with(prepared: datasets.DatasetDict, record: str) -> tuple[datasets.Dataset, int]:
    for split in prepared.values():
        names = split["record_name"]
        if record in names:
            return split, names.index(record)
    raise AssertionError(f"{record} not prepared")


def test_lengths_come_from_offsets_and_records_are_kept_whole(cpsc):
    prepared = load_dataset_folder(cpsc)
    lengths = {}
    for split in prepared.values():
        rows = split.with_format("numpy")
        for row, samples in zip(rows, signal_lengths(split), strict=True):
            assert row["signal"].shape == (12, samples)
            lengths[row["record_name"]] = int(samples)
    assert len(lengths) == 150
    assert min(lengths.values()) == 10 * RATE and lengths[LONGEST] == 60 * RATE  # nothing cropped to 10 s


def test_training_windows_of_a_60_s_record_move_each_epoch_and_replay_exactly(cpsc):
    split, row = _split_with(load_dataset_folder(cpsc), LONGEST)
    whole = split.with_format("numpy")[row]["signal"]
    ecgs = EcgDataset(split, seed=3, window_s=10.0)
    starts = []
    for epoch in range(12):
        ecgs.set_epoch(epoch)
        window = ecgs[row]["signal"]
        assert window.shape == (12, 10 * RATE)
        starts.append(_offset(whole, window))
    assert len(set(starts)) >= 8, starts  # different offsets, not the first 10 s every time
    replay = EcgDataset(split, seed=3, window_s=10.0)
    replay.set_epoch(5)
    np.testing.assert_array_equal(replay[row]["signal"], whole[:, starts[5] : starts[5] + 10 * RATE])
    first = EcgDataset(split, seed=3, window_s=10.0, window="first")
    first.set_epoch(5)
    np.testing.assert_array_equal(first[row]["signal"], whole[:, : 10 * RATE])


def test_a_record_shorter_than_the_window_is_padded_and_masked(cpsc):
    split = load_dataset_folder(cpsc)["train"]
    lengths = signal_lengths(split)
    short = int(np.flatnonzero(lengths == 10 * RATE)[0])
    extractor = EsiFeatureExtractor(duration_s=12.0)  # a model reading 12 s windows
    ecgs = EcgDataset(split, window_s=extractor.duration_s)
    batch = EcgCollator(extractor, ecgs.sampling_rate, ecgs.lead_names)([ecgs[short]])
    assert batch["input_values"].shape == (1, 12, 1200)
    assert batch["ecg_attention_mask"][0].tolist() == [1] * 1000 + [0] * 200
    assert not batch["input_values"][0, :, 1000:].any()


@pytest.mark.slow
def test_evaluation_windows_cover_each_record_and_average_to_one_prediction(cpsc, tiny_esi):
    split, row = _split_with(load_dataset_folder(cpsc), LONGEST)
    lengths = signal_lengths(split)
    windows = EcgWindows(EcgDataset(split, window_s=10.0))
    for record, samples in enumerate(lengths):
        covered = np.zeros(samples, dtype=bool)
        for (r, start), item_record in zip(windows.windows, windows.records, strict=True):
            if r == record:
                assert item_record == record
                covered[start : start + 10 * RATE] = True
        assert covered.all(), f"record {record}: samples never evaluated"
    assert (windows.records == row).sum() == 6 and len(windows) > len(split)

    model = load_classifier(tiny_esi, num_labels=3)
    extractor = EsiFeatureExtractor.from_pretrained(tiny_esi)
    all_windows = make_window_loader(split, extractor, batch_size=16)
    per_record = predict(model, all_windows)
    assert per_record.shape == (len(split), 3)
    with torch.no_grad():
        batches = list(all_windows)
        per_window = torch.cat(
            [
                torch.sigmoid(model(b["input_values"], ecg_attention_mask=b["ecg_attention_mask"]).logits)
                for b in batches
            ]
        ).numpy()
    records = torch.cat([b["records"] for b in batches]).numpy()
    np.testing.assert_allclose(per_record[row], per_window[records == row].mean(axis=0), rtol=1e-5)
    first_only = predict(model, make_window_loader(split, extractor, batch_size=16, count=1))
    ten_seconds = lengths == 10 * RATE
    np.testing.assert_allclose(first_only[ten_seconds], per_record[ten_seconds], rtol=1e-5)
    assert not np.allclose(first_only[row], per_record[row])  # the 60 s record is scored on all of it


@pytest.mark.slow
def test_pretraining_retrieval_evaluation_is_one_row_per_record(cpsc, tiny_esi):
    from accelerate import Accelerator
    from transformers import AutoTokenizer

    from modeling_esi import EsiModel

    split, _ = _split_with(load_dataset_folder(cpsc), LONGEST)
    captions = [f"caption {name}" for name in split["record_name"]]
    windows = EcgWindows(EcgDataset(split, captions, window_s=10.0))
    extractor = EsiFeatureExtractor.from_pretrained(tiny_esi)
    collator = EcgCollator(extractor, RATE, windows.ecgs.lead_names, AutoTokenizer.from_pretrained(tiny_esi), 32)
    loader = torch.utils.data.DataLoader(windows, batch_size=8, collate_fn=collator)
    ecg, text = embed_ecg_text(EsiModel.from_pretrained(tiny_esi), loader, Accelerator(cpu=True))
    assert len(windows) > len(split) and ecg.shape[0] == text.shape[0] == len(split)
    torch.testing.assert_close(ecg.norm(dim=-1), torch.ones(len(split)))


def test_finetune_scores_each_variable_length_record_once(cpsc, tiny_esi, tmp_path):
    result = finetune_in_process(
        ["--model", str(tiny_esi), "--dataset", str(cpsc), "--output-dir", str(tmp_path), "--task", "superdiagnostic",
         "--method", "linear_probe", "--epochs", "3", "--bootstrap-samples", "10", "--eval-windows", "all"]
    )  # fmt: skip
    test = load_dataset_folder(cpsc)["test"]
    assert result["test_records"] == len(test) and result["args"]["eval_windows"] == "all"
    scores = np.load(tmp_path / "test_scores.npz")["scores"]
    assert scores.shape == (len(test), len(result["classes"]))
    assert sum(len(window_starts(int(n), 10 * RATE)) for n in signal_lengths(test)) > len(test)
    assert json.loads((tmp_path / "results.json").read_text())["args"]["train_window"] == "random"


def test_bad_eval_windows_option_is_refused(tmp_path, capsys):
    from esi.train.arguments import parse_args

    with pytest.raises(SystemExit):
        finetune_in_process(["--model", "m", "--dataset", "d", "--output-dir", str(tmp_path), "--eval-windows", "0"])
    assert "--eval-windows must be 'all' or a positive integer" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse_args(["--signals", "s", "--captions", "c", "--output-dir", str(tmp_path), "--eval-windows", "some"])
    assert "--eval-windows must be 'all' or a positive integer, got 'some'" in capsys.readouterr().err


@pytest.mark.slow
def test_pretraining_on_variable_length_records_evaluates_each_record_once(cpsc, tiny_text_model, tmp_path):
    prepared = load_dataset_folder(cpsc)
    captions = tmp_path / "captions" / "data"
    captions.mkdir(parents=True)
    rows = [(i, "; ".join(s["text"] for s in st)) for split in prepared.values() for i, st in
            zip(split["ecg_id"], split["statements"], strict=True)]  # fmt: skip
    datasets.Dataset.from_dict({"ecg_id": [i for i, _ in rows], "caption": [c for _, c in rows]}).to_parquet(
        str(captions / "train-00000-of-00001.parquet")
    )
    out = tmp_path / "run"
    args = tiny_train_args(cpsc, captions.parent, tiny_text_model, out, "--max-steps", "2", "--eval-windows", "all")
    pretrain_in_process(args)
    summary = json.loads((out / "model" / "training_summary.json").read_text())
    assert summary["args"]["train_window"] == "random" and summary["steps"] == 2
    validation = prepared["validation"]
    windows = sum(len(window_starts(int(n), 10 * RATE)) for n in signal_lengths(validation))
    assert windows > len(validation)
    # Recall is over records, not windows: each value is a multiple of 1 / records.
    assert any(0 < value < 1 for value in summary["validation"].values())
    for value in summary["validation"].values():
        assert value * len(validation) == pytest.approx(round(value * len(validation)), abs=1e-6)
