"""The folders esi.publish assembles load as a user would load them from the Hub."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest
import yaml

from esi.publish import assemble_and_push as publish
from esi.publish import weights_sha256

USER_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from datasets import load_dataset
    from transformers import AutoFeatureExtractor, AutoModel, AutoModelForSequenceClassification

    model_dir, dataset_dir = sys.argv[1], sys.argv[2]
    model = AutoModel.from_pretrained(model_dir, trust_remote_code=True)
    head = AutoModelForSequenceClassification.from_pretrained(model_dir, trust_remote_code=True, num_labels=5)
    extractor = AutoFeatureExtractor.from_pretrained(model_dir, trust_remote_code=True)
    captions = load_dataset(dataset_dir)
    signals = load_dataset(dataset_dir, "signals")
    row = signals["test"].with_format("numpy")[0]
    inputs = extractor(row["signal"], sampling_rate=int(row["sampling_rate"]), lead_names=list(row["lead_names"]),
                       return_tensors="pt")
    print(json.dumps({
        "model_module": type(model).__module__,
        "head": type(head).__name__,
        "embedding_shape": list(model.get_ecg_features(inputs["input_values"]).pooler_output.shape),
        "splits": {k: v.num_rows for k, v in captions.items()},
        "signal_shape": list(row["signal"].shape),
        "caption_ids": sorted(captions["test"]["ecg_id"]) == sorted(signals["test"]["ecg_id"]),
    }))
    """
)


@pytest.mark.slow
def test_published_folders_load_offline_in_a_clean_process(
    tiny_pretrained_model, sample_captions, prepared_sample, tmp_path
):
    downstream = tmp_path / "downstream_summary.json"
    checksum = weights_sha256(tiny_pretrained_model)
    downstream.write_text(json.dumps({
        "results": [
            {"name": "PTB-XL superdiagnostic, linear probe, 100% labels", "value": 0.8123, "weights_sha256": checksum},
            {"name": "PTB-XL superdiagnostic, another model's weights", "value": 0.99, "weights_sha256": "0" * 64},
        ],
        "markdown": "| method | macro AUROC |\n|---|---|\n| linear probe | 0.812 |",
        "weights_sha256": checksum,
    }))  # fmt: skip
    folders = publish([
        "--model-dir", str(tiny_pretrained_model), "--captions-dir", str(sample_captions),
        "--signals-dir", str(prepared_sample), "--downstream", str(downstream),
        "--output-dir", str(tmp_path / "publish"),
    ])  # fmt: skip

    card = (folders["model"] / "README.md").read_text()
    meta = yaml.safe_load(card.split("---\n")[1])
    assert meta["library_name"] == "transformers"
    assert [r["metrics"][0]["value"] for r in meta["model-index"][0]["results"]] == [0.8123]
    assert "not a medical device" in card and "| linear probe | 0.812 |" in card
    assert not (folders["dataset"] / ".cqa").exists()
    dataset_meta = yaml.safe_load((folders["dataset"] / "README.md").read_text().split("---\n")[1])
    assert [c["config_name"] for c in dataset_meta["configs"]] == ["default", "signals"]

    user_dir = tmp_path / "user"
    user_dir.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["HF_MODULES_CACHE"] = str(tmp_path / "modules")
    env["HF_DATASETS_CACHE"] = str(tmp_path / "datasets_cache")
    result = subprocess.run(
        [sys.executable, "-c", USER_SCRIPT, str(folders["model"]), str(folders["dataset"])],
        cwd=user_dir, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert seen["model_module"].startswith("transformers_modules"), seen
    assert seen["head"] == "EsiForEcgClassification"
    assert seen["embedding_shape"] == [1, 32]
    assert seen["splits"] == {"train": 240, "validation": 30, "test": 30}
    assert seen["signal_shape"] == [12, 1000]
    assert seen["caption_ids"]


@pytest.mark.slow
def test_uploaded_files_carry_no_local_paths_and_cards_link_model_and_dataset(
    tiny_pretrained_model, sample_captions, prepared_sample, tmp_path
):
    from esi.hub import scrubbed_bytes, upload_files

    model_copy = tmp_path / "model-with-paths"
    shutil.copytree(tiny_pretrained_model, model_copy)
    local = str(tmp_path / "private" / "signals-folder")
    (model_copy / "training_summary.json").write_text(
        json.dumps({"args": {"signals": local, "captions": str(sample_captions)}, "steps": 3})
    )
    folders = publish([
        "--model-dir", str(model_copy), "--captions-dir", str(sample_captions), "--signals-dir", str(prepared_sample),
        "--output-dir", str(tmp_path / "publish"), "--model-repo-id", "", "--dataset-repo-id", "",
    ])  # fmt: skip
    model_folder, dataset_folder = folders["model"], folders["dataset"]
    for folder in (model_folder, dataset_folder):
        for name in upload_files(folder):
            text = scrubbed_bytes(folder / name).decode(errors="ignore")
            for secret in (str(tmp_path), "/work/", str(sample_captions.parent)):
                assert secret not in text, f"{folder.name}/{name} would upload the local path {secret}"

    from esi.publish import assemble_dataset_folder, assemble_model_folder

    model = assemble_model_folder(model_copy, tmp_path / "m", "me/esi-tiny", dataset_repo_id="me/esi-captions")
    meta = yaml.safe_load((model / "README.md").read_text().split("---\n")[1])
    assert meta["datasets"] == ["me/esi-captions"]
    assert 'repo = "me/esi-tiny"' in (model / "README.md").read_text()
    dataset = assemble_dataset_folder(sample_captions, tmp_path / "d", prepared_sample, model_repo_id="me/esi-tiny")
    card = (dataset / "README.md").read_text()
    dataset_meta = yaml.safe_load(card.split("---\n")[1])
    assert "https://huggingface.co/me/esi-tiny" in card
    assert dataset_meta["source_datasets"] == ["extended|ptb-xl"]
    info = dataset_meta["dataset_info"]
    assert {s["name"]: s["num_examples"] for s in info["splits"]} == {"train": 240, "validation": 30, "test": 30}
    assert {"name": "caption", "dtype": "string"} in info["features"]
    # The card's words agree with its configs: with a signals config it must not say the signals are absent.
    assert "signals are not repeated here" not in card and 'load_dataset(repo, "signals")' in card
    bare = assemble_dataset_folder(sample_captions, tmp_path / "d2")
    bare_card = (bare / "README.md").read_text()
    assert "signals are not repeated here" in bare_card and "config_name: signals" not in bare_card


@pytest.mark.slow
def test_downstream_results_of_other_weights_stay_off_the_card(tiny_pretrained_model, tmp_path):
    """`--downstream` attaches a result only when its weights_sha256 names the model being published."""
    downstream = tmp_path / "other_model.json"
    downstream.write_text(json.dumps({
        "results": [{"name": "PTB-XL superdiagnostic", "value": 0.91, "weights_sha256": "f" * 64},
                    {"name": "PTB-XL rhythm, no checksum", "value": 0.88}],
        "markdown": "| other model | 0.910 |",
        "weights_sha256": "f" * 64,
    }))  # fmt: skip
    folders = publish([
        "--model-dir", str(tiny_pretrained_model), "--downstream", str(downstream),
        "--output-dir", str(tmp_path / "publish"),
    ])  # fmt: skip
    card = (folders["model"] / "README.md").read_text()
    meta = yaml.safe_load(card.split("---\n")[1])
    assert "model-index" not in meta
    assert "0.910" not in card and "0.88" not in card
