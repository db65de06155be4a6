"""finetune.py end to end on the embedded PTB-XL sample with a tiny ESI model, plus its building blocks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from esi.eval.classification import METHODS, choose_thresholds, load_task, lora_target_modules
from esi.eval.subject_id import gallery_and_probes, subject_identification
from esi.knowledge.prompts import class_prompts
from modeling_esi import EsiFeatureExtractor, EsiForEcgClassification
from tests.helpers import finetune_in_process

FAST = ["--bootstrap-samples", "20", "--eval-batch-size", "100"]
EPOCHS = {"linear_probe": "30", "lora": "1", "full": "1", "supervised_scratch": "1"}


def run(tiny_esi, prepared_sample, out, *extra) -> dict:
    argv = ["--model", str(tiny_esi), "--dataset", str(prepared_sample), "--output-dir", str(out), *FAST, *extra]
    result = finetune_in_process(argv)
    assert json.loads((out / "results.json").read_text())["method"] == result["method"]
    assert "not a diagnostic device" in (out / "results.md").read_text()
    return result


def check_classification(result: dict, out: Path) -> None:
    assert 0.0 <= result["macro_auroc"] <= 1.0
    assert result["macro_auroc_ci"][0] <= result["macro_auroc"] <= result["macro_auroc_ci"][1]
    assert set(result["per_class_auroc"]) == set(result["classes"]) == set(result["thresholds"])
    assert not set(result["classes"]) & set(result["dropped_classes"])
    assert 1 <= result["epochs_run"] and (out / "roc.png").stat().st_size > 0
    saved = np.load(out / "test_scores.npz")
    assert saved["scores"].shape == saved["labels"].shape == (result["test_records"], len(result["classes"]))


@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS)
def test_every_method_on_superdiagnostic(tiny_esi, prepared_sample, tmp_path, method):
    result = run(tiny_esi, prepared_sample, tmp_path, "--method", method, "--epochs", EPOCHS[method])
    check_classification(result, tmp_path)
    assert result["task"] == "superdiagnostic" and result["random_init"] == (method == "supervised_scratch")
    if method == "lora":
        check_adapter_reload(tiny_esi, prepared_sample, tmp_path, result)
    else:
        assert (tmp_path / "model" / "config.json").is_file()
    card = (tmp_path / ("adapter" if method == "lora" else "model") / "README.md").read_text()
    meta = yaml.safe_load(card.split("---\n")[1])
    assert meta["base_model"] == Path(tiny_esi).resolve().name and str(tmp_path) not in card
    assert meta["library_name"] == ("peft" if method == "lora" else "transformers")


def check_adapter_reload(tiny_esi, prepared_sample, out: Path, result: dict) -> None:
    """Base model + PeftModel.from_pretrained(adapter) reproduces the run's test probabilities."""
    from peft import PeftModel

    adapter = json.loads((out / "adapter" / "adapter_config.json").read_text())
    base = EsiForEcgClassification.from_pretrained(tiny_esi, num_labels=len(result["classes"]))
    assert sorted(adapter["target_modules"]) == sorted(lora_target_modules(base))
    assert "classifier" in adapter["modules_to_save"]
    # PEFT's sequence-classification task type, and the base by the path it was given, relative to the working dir.
    assert adapter["task_type"] == "SEQ_CLS"
    assert Path(adapter["base_model_name_or_path"]).resolve() == Path(tiny_esi).resolve()
    assert not Path(adapter["base_model_name_or_path"]).is_absolute()
    # The card's reload call, run in a fresh process, gives the labels back.
    card = (out / "adapter" / "README.md").read_text()
    snippet = card.split("```python\n")[1].split("```")[0].replace("path/to/this/folder", str(out / "adapter"))
    check = "\nprint(json.dumps(model.config.id2label))"
    child = subprocess.run(
        [sys.executable, "-c", "import json\n" + snippet + check], capture_output=True, text=True, timeout=300
    )
    assert child.returncode == 0, child.stderr[-2000:]
    id2label = json.loads(child.stdout.strip().splitlines()[-1])
    assert list(id2label.values()) == result["classes"]
    reloaded = PeftModel.from_pretrained(base, out / "adapter").eval()
    test = load_task(prepared_sample, "superdiagnostic").splits["test"]
    extractor = EsiFeatureExtractor.from_pretrained(tiny_esi)
    inputs = extractor(
        np.stack(test["signal"]), sampling_rate=100, lead_names=test[0]["lead_names"], return_tensors="pt"
    )
    with torch.no_grad():
        probabilities = torch.sigmoid(reloaded(input_values=inputs["input_values"]).logits).numpy()
    np.testing.assert_allclose(probabilities, np.load(out / "test_scores.npz")["scores"], atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("task", ["subdiagnostic", "diagnostic", "form", "rhythm", "all"])
def test_every_task_under_linear_probe(tiny_esi, prepared_sample, tmp_path, task):
    result = run(tiny_esi, prepared_sample, tmp_path, "--task", task, "--random-init", "--epochs", "30")
    check_classification(result, tmp_path)
    assert result["method"] == "linear_probe" and result["random_init"] and result["task"] == task


def test_label_fraction_run_uses_fewer_patients(tiny_esi, prepared_sample, tmp_path):
    result = run(tiny_esi, prepared_sample, tmp_path, "--label-fraction", "0.1", "--epochs", "30")
    assert result["train_patients"] < 0.2 * 240 and result["train_records"] >= len(result["classes"])


def test_dropped_classes_are_listed(prepared_sample):
    data = load_task(prepared_sample, "all")
    assert data.dropped  # 300 records cannot hold all 71 statements in both train and test
    assert all(data.labels[s].shape[1] == len(data.class_names) for s in data.labels)
    assert data.labels["train"].any(0).all() and data.labels["test"].any(0).all()


def test_thresholds_maximise_validation_f1():
    labels = np.array([[1], [1], [0], [0], [1]])
    scores = np.array([[0.9], [0.6], [0.5], [0.2], [0.4]])
    assert choose_thresholds(labels, scores)[0] == pytest.approx(0.4)  # catches all three positives: F1 0.857
    assert choose_thresholds(np.zeros((3, 1)), np.zeros((3, 1)))[0] == 0.5


def test_subject_identification_constructed_case():
    patients = [1, 1, 2, 2, 2, 3, 4]
    ecg_ids = [10, 11, 25, 20, 21, 30, 40]
    gallery, probes = gallery_and_probes(patients, ecg_ids)
    assert sorted(gallery.tolist()) == [0, 3]  # earliest record of each patient with >= 2 records
    assert sorted(probes.tolist()) == [1, 2, 4]
    centres = {1: [1, 0, 0], 2: [0, 1, 0], 3: [0, 0, 1], 4: [1, 1, 1]}
    same = np.array([centres[p] for p in patients], dtype=float)
    assert subject_identification(same, patients, ecg_ids)["top1_accuracy"] == 1.0
    # every probe closer to the other patient's gallery record: top-1 0, top-2 (all gallery) 1
    swapped = same.copy()
    swapped[1], swapped[[2, 4]] = centres[2], centres[1]
    result = subject_identification(swapped, patients, ecg_ids, ks=(1, 2))
    assert result["top1_accuracy"] == 0.0 and result["top2_accuracy"] == 1.0
    # identical embeddings: ties count against the probe
    assert subject_identification(np.ones((7, 3)), patients, ecg_ids)["top1_accuracy"] == 0.0


def test_subject_identification_run(tiny_esi, prepared_sample, tmp_path):
    result = run(tiny_esi, prepared_sample, tmp_path, "--method", "subject_id")
    assert result["patients"] >= 2 and result["probes"] >= result["patients"]
    assert 0.0 <= result["top1_accuracy"] <= result["top5_accuracy"] <= 1.0


def test_zero_shot_prompts_and_run(tiny_esi, prepared_sample, tmp_path):
    from esi.knowledge import load_knowledge_base

    prompts, missing = class_prompts(["NORM", "MI", "STTC", "CD", "HYP", "AFIB"], load_knowledge_base())
    assert not missing
    assert prompts["AFIB"].startswith("Atrial fibrillation") and "infarction" in prompts["MI"].lower()
    result = run(tiny_esi, prepared_sample, tmp_path, "--method", "zero_shot", "--task", "superdiagnostic")
    assert 0.0 <= result["macro_auroc"] <= 1.0 and set(result["prompts"]) == set(result["classes"])


def test_captioning_run(tiny_esi, prepared_sample, sample_captions, tmp_path):
    result = run(
        tiny_esi,
        prepared_sample,
        tmp_path,
        *["--method", "captioning", "--captions", str(sample_captions), "--max-records", "4", "--max-new-tokens", "8"],
    )
    assert result["records"] == 4 and 0.0 <= result["token_f1"] <= 1.0 and 0.0 <= result["rouge_l"] <= 1.0
    lines = (tmp_path / "captions.jsonl").read_text().splitlines()
    assert len(lines) == 4 and json.loads(lines[0])["reference"]
