"""The encoder-only release (`esi-export-encoder`): what its folder holds, how it loads and fine-tunes, its card, and
that it works in a virtual environment with nothing but torch and transformers."""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from esi.checksum import weights_sha256
from esi.constants import RELEASED_ENCODER_DIR
from esi.publish import check_encoder_folder
from esi.release import MAX_SIZE_BYTES, REFERENCE_RECORD, export_encoder, read_reference_record
from tests.helpers import REPO_ROOT, save_tiny_esi

# What a user with only torch + transformers runs: read the reference record with numpy (WFDB format 16, as PTB-XL
# stores it), embed it with AutoModel, and build the classification head; prints the embedding as JSON.
CLEAN_VENV_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    import numpy as np, torch
    from transformers import AutoFeatureExtractor, AutoModel, AutoModelForSequenceClassification

    folder, record = sys.argv[1], sys.argv[2]
    header = Path(record + ".hea").read_text().splitlines()
    _, num_leads, rate, length = header[0].split()[:4]
    rows = [line.split() for line in header[1 : 1 + int(num_leads)]]
    gains = np.array([float(row[2].split("(")[0]) for row in rows])
    baselines = np.array([float(row[2].split("(")[1].split(")")[0]) for row in rows])
    digital = np.fromfile(str(Path(record).parent / rows[0][0]), dtype="<i2").reshape(int(length), int(num_leads))
    signal = ((digital - baselines) / gains).T
    model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
    extractor = AutoFeatureExtractor.from_pretrained(folder, trust_remote_code=True)
    inputs = extractor(signal, sampling_rate=int(rate), lead_names=[row[-1] for row in rows], return_tensors="pt")
    with torch.no_grad():
        embedding = model(**inputs).ecg_embeds[0]
    head = AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True, num_labels=5)
    print(json.dumps({"model": type(model).__name__, "head": type(head).__name__, "embedding": embedding.tolist()}))
    """
)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_esi(tmp_path_factory.mktemp("release") / "model")


@pytest.fixture(scope="module")
def tiny_release(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    checksum = weights_sha256(tiny_model)
    downstream = {
        "results": [
            {"name": "Linear probe: PTB-XL superdiagnostic, 10% labels", "value": 0.71234, "weights_sha256": checksum},
            {"name": "Linear probe: another model's weights", "value": 0.99, "weights_sha256": "0" * 64},
        ],
        "markdown": "| task | macro AUROC |\n|---|---|\n| superdiagnostic | 0.712 |",
        "weights_sha256": checksum,
    }
    folder = tmp_path_factory.mktemp("release") / "encoder"
    return export_encoder(
        tiny_model, folder, downstream, reference_signal=read_reference_record(REPO_ROOT / REFERENCE_RECORD)
    )


def test_release_holds_the_ecg_tower_its_code_preprocessor_licence_and_card(tiny_release: Path):
    with safe_open(str(tiny_release / "model.safetensors"), "pt") as weights:
        prefixes = {key.split(".")[0] for key in weights.keys()}
    assert prefixes == {"ecg_model", "ecg_projection"}  # no text tower, decoder, text projection or logit scale
    names = {path.name for path in tiny_release.iterdir()}
    assert {
        "config.json",
        "preprocessor_config.json",
        "LICENSE",
        "README.md",
        "modeling_esi.py",
        "release.json",
    } <= names
    assert "Apache License" in (tiny_release / "LICENSE").read_text()
    release = json.loads((tiny_release / "release.json").read_text())
    assert release["weights_sha256"] == weights_sha256(tiny_release) and release["size_bytes"] <= MAX_SIZE_BYTES
    assert json.loads((tiny_release / "config.json").read_text())["auto_map"]["AutoModel"].endswith(
        "EsiEcgModelWithProjection"
    )


def test_release_embeds_as_the_full_model_does_and_fine_tunes_with_lora(tiny_model: Path, tiny_release: Path):
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import AutoModel, AutoModelForSequenceClassification, pipeline

    from modeling_esi import lora_target_modules

    encoder = AutoModel.from_pretrained(tiny_release, trust_remote_code=True).eval()
    full = AutoModel.from_pretrained(tiny_model, trust_remote_code=True).eval()
    assert type(encoder).__name__ == "EsiEcgModelWithProjection"
    ecg = torch.randn(2, 12, 1000)
    with torch.no_grad():
        assert torch.equal(encoder(input_values=ecg).ecg_embeds, full.get_ecg_features(ecg).pooler_output)
    record = str(REPO_ROOT / REFERENCE_RECORD)
    released, trained = (
        torch.tensor(pipeline("ecg-feature-extraction", model=str(folder), trust_remote_code=True)(record))
        for folder in (tiny_release, tiny_model)
    )
    assert torch.allclose(released, trained, atol=1e-6)  # the pipeline runs without a tokenizer
    base = AutoModelForSequenceClassification.from_pretrained(
        tiny_release, trust_remote_code=True, num_labels=5, problem_type="multi_label_classification"
    )
    assert torch.equal(base.ecg_model.layernorm.weight, encoder.ecg_model.layernorm.weight)
    model = get_peft_model(base, LoraConfig(task_type=TaskType.SEQ_CLS, r=4, target_modules=lora_target_modules(base)))
    model(input_values=ecg, labels=torch.tensor([[1.0, 0, 0, 0, 1], [0, 1, 0, 0, 0]])).loss.backward()
    trained = {name for name, p in model.named_parameters() if p.grad is not None}
    assert any("lora_" in name for name in trained) and any("classifier" in name for name in trained)


def test_release_card_is_valid_and_quotes_only_results_of_the_exported_weights(tiny_model: Path, tiny_release: Path):
    from huggingface_hub import ModelCard

    card = ModelCard((tiny_release / "README.md").read_text())  # parses the YAML and its model-index
    assert card.data.library_name == "transformers" and card.data.pipeline_tag == "feature-extraction"
    results = card.data.eval_results
    assert [r.metric_value for r in results] == [0.7123]  # the other model's 0.99 stays off
    assert results[0].metric_args == {"weights_sha256": weights_sha256(tiny_model)}
    assert weights_sha256(tiny_release) in card.text and "float32" in card.text
    assert check_encoder_folder(tiny_release) == tiny_release


def test_publish_refuses_a_release_whose_card_or_weights_changed(tiny_release: Path, tmp_path: Path):
    import shutil

    copy = shutil.copytree(tiny_release, tmp_path / "copy")
    (copy / "README.md").write_text((copy / "README.md").read_text().replace("0.7123", "0.9"))
    with pytest.raises(ValueError, match="README.md is out of date"):
        check_encoder_folder(copy)
    shutil.copy(tiny_release / "README.md", copy / "README.md")
    (copy / "model.safetensors").write_bytes((copy / "model.safetensors").read_bytes() + b" ")
    with pytest.raises(ValueError, match="not the file release.json names"):
        check_encoder_folder(copy)


def test_bfloat16_release_halves_the_weights(tiny_model: Path, tiny_release: Path, tmp_path: Path):
    folder = export_encoder(tiny_model, tmp_path / "bf16", dtype="bfloat16")
    release = json.loads((folder / "release.json").read_text())
    assert release["dtype"] == "bfloat16" and "reference_embedding" not in release
    assert release["size_bytes"] < 0.6 * json.loads((tiny_release / "release.json").read_text())["size_bytes"]


def _check_in_clean_venv(venv_dir: Path, folder: Path, tmp_path: Path) -> None:
    reference = json.loads((folder / "release.json").read_text())["reference_embedding"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules")}
    env.pop("PYTHONPATH", None)  # nothing of this repository or the dev venv
    result = subprocess.run(
        [venv_dir / "bin" / "python", "-c", CLEAN_VENV_SCRIPT, str(folder), str(REPO_ROOT / reference["record"])],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert seen["model"] == "EsiEcgModelWithProjection" and seen["head"] == "EsiForEcgClassification"
    assert torch.allclose(torch.tensor(seen["embedding"]), torch.tensor(reference["embedding"]), atol=1e-4)


@pytest.mark.slow
def test_release_loads_and_embeds_in_a_torch_and_transformers_only_venv(
    torch_transformers_venv: Path, tiny_release: Path, tmp_path: Path
):
    _check_in_clean_venv(torch_transformers_venv, tiny_release, tmp_path)


@pytest.mark.slow
def test_the_committed_release_loads_and_embeds_its_reference_record_in_a_clean_venv(
    torch_transformers_venv: Path, tmp_path: Path
):
    folder = REPO_ROOT / RELEASED_ENCODER_DIR
    assert (folder / "release.json").exists(), f"{folder} is missing: export it with python -m model_cards.build"
    assert weights_sha256(folder) == json.loads((folder / "release.json").read_text())["weights_sha256"]
    _check_in_clean_venv(torch_transformers_venv, folder, tmp_path)


@pytest.mark.slow
def test_app_on_the_released_encoder_probes_and_finds_similar_records(tiny_release: Path, tmp_path: Path):
    from esi.app.analysis import Analyser

    analyser = Analyser(REPO_ROOT / "data" / "ptbxl_sample", tiny_release, tmp_path / "cache")
    analysis = analyser.analyse_sample(analyser.catalogue.ecg_ids[0])
    assert analysis.predictions.method.startswith("Linear probe")
    assert set(analysis.predictions.probabilities) == {"CD", "HYP", "MI", "NORM", "STTC"}
    assert analysis.caption is None and len(analysis.neighbours) == 5


def test_a_release_names_no_folder_of_the_training_machine():
    from esi.release import without_local_paths

    summary = {"text_model": "/home/me/venv/site-packages/minilm/model", "runs": ["/data/x.json", "rel/y"], "steps": 3}
    assert without_local_paths(summary) == {"text_model": "model", "runs": ["x.json", "rel/y"], "steps": 3}
    shipped = (REPO_ROOT / RELEASED_ENCODER_DIR / "training_summary.json").read_text()
    assert '": "/' not in shipped and '"/' not in shipped
