"""Captioned-dataset pipeline on the embedded sample: outputs, card, sharding + merge, kill + resume, bad input."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from datasets import DatasetDict, load_dataset, load_from_disk

from esi.cqa.run import generate_captions, merge_outputs, push_captions
from tests.helpers import REPO_ROOT


def _by_id(output_dir: Path) -> dict[int, dict]:
    # force_redownload: datasets keys its cache of a local folder by folder name and data_files patterns,
    # so an older folder of the same name (an earlier pytest session) would be served otherwise.
    rows = {}
    for split in load_dataset(str(output_dir), download_mode="force_redownload").values():
        for row in split:
            assert row["ecg_id"] not in rows, f"ecg_id {row['ecg_id']} appears twice"
            rows[row["ecg_id"]] = row
    return rows


@pytest.fixture(scope="module")
def input_ids(prepared_sample) -> dict[str, list[int]]:
    return {name: split["ecg_id"] for name, split in load_from_disk(str(prepared_sample)).items()}


@pytest.fixture(scope="module")
def full_run(prepared_sample, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cqa") / "full"
    threads = torch.get_num_threads()
    summary = generate_captions(prepared_sample, out, backend="template", records_per_file=100, num_workers=2)
    assert torch.get_num_threads() == threads  # the run's one torch thread per op is undone after it
    assert summary["complete"] and summary["rows_written"] == 300
    assert summary["faithfulness"] == {"pass": 300}
    return out


@pytest.mark.slow
def test_full_run_loads_with_datasets_and_has_a_card(full_run, input_ids):
    loaded = load_dataset(str(full_run), download_mode="force_redownload")
    assert {name: split.num_rows for name, split in loaded.items()} == {k: len(v) for k, v in input_ids.items()}
    for name, split in loaded.items():
        assert sorted(split["ecg_id"]) == sorted(input_ids[name]) and set(split["split"]) == {name}
    row = loaded["train"][0]
    for column in (
        "caption",
        "heart_rate_bpm",
        "qtc_bazett_ms",
        "qrs_axis_deg",
        "st_deviation_V5_mv",
        "statements",
        "statement_descriptions",
        "retrieved_passage_ids",
        "prompt_hash",
        "faithfulness_issues",
    ):
        assert column in row
    assert row["backend"] == "template" and row["model_id"] == "esi-cqa-template-v1"
    assert row["statements"] and row["retrieved_passage_ids"][0].startswith("scp:")
    assert f"{row['heart_rate_bpm']:.0f} bpm" in row["caption"]
    captions = [c for split in loaded.values() for c in split["caption"]]
    assert not [c for c in captions if re.search(r"\b(treat|therap|manag|should)", c, re.IGNORECASE)]
    assert len({c.split(". ")[0].split(" a ")[0] for c in captions}) >= 3  # phrasing varies between records

    card = (full_run / "README.md").read_text()
    header = card.split("---")[1]
    assert "license: cc-by-4.0" in header and "configs:" in header
    for name in input_ids:
        assert f"- split: {name}\n    path: data/{name}-*.parquet" in header
    assert "machine-generated" in card and "pass 300 (100.0%)" in card and "Wagner P" in card
    assert "`qtc_bazett_ms`" in card and "Creative Commons Attribution 4.0" in (full_run / "LICENSE.txt").read_text()


@pytest.mark.slow
def test_refuses_non_empty_output_and_changed_options(full_run, prepared_sample):
    with pytest.raises(FileExistsError, match="not empty; pass --resume"):
        generate_captions(prepared_sample, full_run)
    with pytest.raises(ValueError, match="different options: records_per_file was 100, now 50"):
        generate_captions(prepared_sample, full_run, records_per_file=50, resume=True)


@pytest.mark.slow
def test_two_shards_plus_merge_equal_one_full_run(full_run, prepared_sample, tmp_path):
    options = dict(num_samples=20, records_per_file=8, num_shards=2, num_workers=1)
    shards = [tmp_path / f"shard{i}" for i in range(2)]
    summaries = [generate_captions(prepared_sample, d, shard_index=i, **options) for i, d in enumerate(shards)]
    assert not any(s["complete"] for s in summaries) and not (shards[0] / "README.md").exists()
    assert sum(s["rows_written"] for s in summaries) == 60
    with pytest.raises(ValueError, match="incomplete"):
        merge_outputs(shards[:1], tmp_path / "partial")
    with pytest.raises(ValueError, match="overlapping shards"):
        merge_outputs([shards[0], shards[0]], tmp_path / "twice")
    with pytest.raises(ValueError, match="not a complete captioned dataset"):
        push_captions(shards[0], "someone/never-pushed")

    merged = merge_outputs(shards, tmp_path / "merged")
    assert merged["rows_per_split"] == {"train": 20, "validation": 20, "test": 20}
    rows, full = _by_id(tmp_path / "merged"), _by_id(full_run)
    assert len(rows) == 60
    for ecg_id, row in rows.items():
        for column in ("caption", "prompt_hash", "heart_rate_bpm", "statements", "retrieved_passage_ids"):
            assert row[column] == full[ecg_id][column], (ecg_id, column)
    assert "configs:" in (tmp_path / "merged" / "README.md").read_text()


@pytest.mark.slow
def test_killed_run_resumes_without_duplicates_or_gaps(full_run, prepared_sample, input_ids, tmp_path):
    out = tmp_path / "killed"
    journal = out / ".cqa" / "journal.jsonl"
    cmd = [sys.executable, str(REPO_ROOT / "cqa_generate.py"), "--dataset", str(prepared_sample),
           "--output-dir", str(out), "--records-per-file", "25", "--num-workers", "2"]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        while not (journal.exists() and journal.read_text().count("\n") >= 1):
            assert proc.poll() is None, "the run ended before its first unit was committed"
            assert time.monotonic() < deadline, "no unit committed within 300 s"
            time.sleep(0.1)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the CLI and its measurement workers, mid-run
        proc.wait()
    committed = [json.loads(line)["unit"] for line in journal.read_text().splitlines()]
    assert 1 <= len(committed) < 14 and not (out / "README.md").exists()

    summary = generate_captions(prepared_sample, out, records_per_file=25, resume=True)
    assert summary["complete"] and summary["rows_written"] == 300 - 25 * len(committed)
    rows, full = _by_id(out), _by_id(full_run)
    assert sorted(rows) == sorted(i for ids in input_ids.values() for i in ids)
    assert all(rows[i]["caption"] == full[i]["caption"] for i in rows)
    assert not list((out / "data").glob(".*tmp*"))


def test_bad_record_is_named(prepared_sample, tmp_path):
    test_split = load_from_disk(str(prepared_sample))["test"].select(range(3))
    bad_id = test_split[1]["ecg_id"]
    broken = test_split.map(lambda r: {"scp_codes": "{'NORM': 100" if r["ecg_id"] == bad_id else r["scp_codes"]})
    DatasetDict({"test": broken}).save_to_disk(str(tmp_path / "broken"))
    with pytest.raises(ValueError, match=f"ecg_id={bad_id}: scp_codes is not a JSON object"):
        generate_captions(tmp_path / "broken", tmp_path / "out", num_workers=1, encoder_path=None)
