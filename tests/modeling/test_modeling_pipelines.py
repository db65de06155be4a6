"""`pipeline(task, model=folder, trust_remote_code=True)` for the tasks a saved ESI folder registers,
run in a clean process that cannot import this repository, on an array and on a WFDB record path."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import wfdb
from transformers import AutoTokenizer

from modeling_esi import EsiFeatureExtractor, EsiModel
from tests.helpers import REPO_ROOT, save_tiny_esi

RECORD = REPO_ROOT / "data" / "ptbxl_sample" / "records100" / "00000" / "00001_lr"
LEADS = ["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"]

CHILD = """
import json, sys
repo, folder, record, array_path = sys.argv[1:5]
sys.path[:] = [p for p in sys.path if p not in ("", ".", repo)]
import numpy as np
from transformers import pipeline
leads = ["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"]
array = np.load(array_path)
report = {}
extract = pipeline("ecg-feature-extraction", model=folder, trust_remote_code=True)
report["embedding_array"] = extract(array, sampling_rate=500, lead_names=leads)
# The Hub's standard task name runs the same pipeline.
report["embedding_record"] = pipeline("feature-extraction", model=folder, trust_remote_code=True)(record)
classify = pipeline("zero-shot-ecg-classification", model=folder, trust_remote_code=True)
labels = ["normal ECG", "atrial fibrillation", "left bundle branch block"]
report["zero_shot"] = classify(record, candidate_labels=labels)
caption = pipeline("ecg-captioning", model=folder, trust_remote_code=True)
report["caption"] = caption(record, max_new_tokens=6)
report["caption_batch"] = caption([array, array], sampling_rate=500, lead_names=leads, max_new_tokens=4, num_beams=2)
report["pipeline_module"] = type(caption).__module__
print("ESI_REPORT " + json.dumps(report))
"""


@pytest.mark.slow
def test_pipelines_from_a_saved_folder_in_a_clean_process(tmp_path: Path):
    folder = save_tiny_esi(tmp_path / "model")
    config = json.loads((folder / "config.json").read_text())
    assert set(config["custom_pipelines"]) == {
        "feature-extraction", "ecg-feature-extraction", "zero-shot-ecg-classification", "ecg-captioning"
    }  # fmt: skip
    assert (folder / "pipeline_esi.py").exists()
    array = np.random.default_rng(0).standard_normal((12, 5000))
    np.save(tmp_path / "ecg.npy", array)

    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_MODULES_CACHE=str(tmp_path / "modules"), HF_HUB_OFFLINE="1")
    result = subprocess.run(
        [sys.executable, "-c", CHILD, str(REPO_ROOT), str(folder), str(RECORD), str(tmp_path / "ecg.npy")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=400,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    line = next(line for line in result.stdout.splitlines() if line.startswith("ESI_REPORT "))
    report = json.loads(line.removeprefix("ESI_REPORT "))
    assert report["pipeline_module"].startswith("transformers_modules.")

    # The pipelines compute what the model computes on the feature extractor's output.
    model = EsiModel.from_pretrained(folder).eval()
    extractor = EsiFeatureExtractor.from_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    signal = wfdb.rdrecord(str(RECORD))
    features = extractor(signal.p_signal, sampling_rate=signal.fs, lead_names=signal.sig_name, return_tensors="pt")
    with torch.no_grad():
        expected = torch.nn.functional.normalize(model.get_ecg_features(**features).pooler_output, dim=-1)[0]
        caption_ids = model.generate(**features, max_new_tokens=6)
        labels = ["normal ECG", "atrial fibrillation", "left bundle branch block"]
        text = tokenizer(labels, padding=True, return_tensors="pt")
        scores = model.zero_shot_logits(
            features["input_values"], text["input_ids"], text["attention_mask"], features["ecg_attention_mask"]
        )[0].softmax(-1)
    np.testing.assert_allclose(report["embedding_record"], expected.numpy(), rtol=1e-4, atol=1e-5)
    assert len(report["embedding_array"]) == model.config.projection_dim
    ranked = sorted(zip(labels, scores.tolist(), strict=True), key=lambda pair: -pair[1])
    assert [item["label"] for item in report["zero_shot"]] == [label for label, _ in ranked]
    np.testing.assert_allclose([item["score"] for item in report["zero_shot"]], [s for _, s in ranked], rtol=1e-4)
    assert report["caption"] == [
        {"generated_text": tokenizer.batch_decode(caption_ids, skip_special_tokens=True)[0]}
    ]  # fmt: skip
    assert len(report["caption_batch"]) == 2 and report["caption_batch"][0] == report["caption_batch"][1]


def test_pipeline_input_errors_name_the_problem(tmp_path: Path):
    from modeling_esi.pipeline_esi import read_ecg_input

    with pytest.raises(ValueError, match="sampling_rate= and lead_names="):
        read_ecg_input(np.zeros((12, 1000)), None, LEADS)
    item = read_ecg_input(str(RECORD), None, None)
    assert item["sampling_rate"] == 100 and [name.casefold() for name in item["lead_names"]] == [
        name.casefold() for name in LEADS
    ]
    assert item["name"] == str(RECORD) and item["signal"].shape == (1000, 12)
