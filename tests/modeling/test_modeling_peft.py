"""LoRA on the ECG encoder with the classification head fully trained: save adapter, reload, same logits;
PEFT's SEQ_CLS task type, AutoPeftModel (with and without a task type) and the one home of the LoRA targets."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from peft import (
    AutoPeftModel,
    LoraConfig,
    PeftModel,
    PeftModelForSequenceClassification,
    TaskType,
    get_peft_model,
)
from torch import nn
from transformers import AutoModelForSequenceClassification

from modeling_esi import LORA_TARGET_MODULES, EsiForEcgClassification, lora_target_modules
from tests.helpers import REPO_ROOT, tiny_config


@pytest.mark.slow
def test_lora_adapter_round_trip(tmp_path: Path):
    torch.manual_seed(0)
    config = tiny_config(num_labels=5, problem_type="multi_label_classification")
    EsiForEcgClassification(config).save_pretrained(tmp_path / "base")
    base = EsiForEcgClassification.from_pretrained(tmp_path / "base")
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=LORA_TARGET_MODULES, modules_to_save=["classifier"])
    model = get_peft_model(base, lora)
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in name or "classifier" in name for name in trainable)
    assert any("stem.0.lora_A" in name for name in trainable) and any(
        "stages.1.0.1.lora_A" in name for name in trainable
    )
    assert any(".pwconv2.lora_B" in name for name in trainable)

    ecg = torch.randn(4, 12, 1000, generator=torch.Generator().manual_seed(3))
    labels = torch.tensor([[1.0, 0, 0, 1, 0]] * 4)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    model.train()
    model(input_values=ecg, labels=labels).loss.backward()
    optimizer.step()
    model.eval()
    with torch.no_grad():
        logits = model(input_values=ecg).logits
    model.save_pretrained(tmp_path / "adapter")

    fresh = EsiForEcgClassification.from_pretrained(tmp_path / "base").eval()
    with torch.no_grad():
        assert not torch.allclose(fresh(ecg).logits, logits)  # the step changed something the adapter must carry
    reloaded = PeftModel.from_pretrained(fresh, tmp_path / "adapter").eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(input_values=ecg).logits, logits)


AUTO_PEFT_CHILD = """
import sys
repo, adapter, expected = sys.argv[1], sys.argv[2], sys.argv[3]
sys.path[:] = [p for p in sys.path if p not in ("", ".", repo)]
import torch
from peft import AutoPeftModelForSequenceClassification
model = AutoPeftModelForSequenceClassification.from_pretrained(adapter, trust_remote_code=True).eval()
saved = torch.load(expected)
with torch.no_grad():
    logits = model(input_values=saved["ecg"], ecg_attention_mask=saved["mask"]).logits
torch.testing.assert_close(logits, saved["logits"])
print("ESI_OK", type(model).__name__, type(model.base_model.model).__module__)
"""


@pytest.mark.slow
def test_lora_through_peft_seq_cls_task_type_and_auto_peft_model(tmp_path: Path):
    """LoRA with PEFT's own sequence-classification task type; the adapter reloads with
    AutoPeftModelForSequenceClassification as remote code, in a process that cannot import this repository."""
    torch.manual_seed(0)
    config = tiny_config(num_labels=3, problem_type="multi_label_classification")
    EsiForEcgClassification(config).save_pretrained(tmp_path / "base")
    base = AutoModelForSequenceClassification.from_pretrained(tmp_path / "base", trust_remote_code=True)
    lora = LoraConfig(task_type=TaskType.SEQ_CLS, r=4, lora_alpha=8, target_modules=lora_target_modules(base))
    model = get_peft_model(base, lora)
    assert isinstance(model, PeftModelForSequenceClassification)
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert any("classifier" in name for name in trainable)  # SEQ_CLS trains the head in full
    assert all("lora_" in name or "classifier" in name for name in trainable)

    ecg = torch.randn(2, 12, 1000, generator=torch.Generator().manual_seed(3))
    mask = torch.ones(2, 1000, dtype=torch.long)
    mask[1, 800:] = 0
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    model.train()
    # PEFT's wrapper passes input_ids/attention_mask/inputs_embeds=None through; the ECG mask rides in kwargs.
    loss = model(input_values=ecg, ecg_attention_mask=mask, labels=torch.tensor([[1.0, 0, 1]] * 2)).loss
    loss.backward()
    optimizer.step()
    model.eval()
    with torch.no_grad():
        logits = model(input_values=ecg, ecg_attention_mask=mask).logits
    model.save_pretrained(tmp_path / "adapter")
    torch.save({"ecg": ecg, "mask": mask, "logits": logits}, tmp_path / "expected.pt")

    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_MODULES_CACHE=str(tmp_path / "modules"), HF_HUB_OFFLINE="1")
    result = subprocess.run(
        [sys.executable, "-c", AUTO_PEFT_CHILD, str(REPO_ROOT), str(tmp_path / "adapter"),
         str(tmp_path / "expected.pt")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "ESI_OK PeftModelForSequenceClassification transformers_modules." in result.stdout


def test_auto_peft_model_needs_and_honours_import_allowlist(tmp_path: Path):
    """Without a task type, AutoPeftModel imports the base class named in the adapter: peft 0.21 refuses a
    package outside its allowlist and loads it with `import_allowlist=[...]`."""
    torch.manual_seed(0)
    EsiForEcgClassification(tiny_config(num_labels=2)).save_pretrained(tmp_path / "base")
    base = EsiForEcgClassification.from_pretrained(tmp_path / "base")
    model = get_peft_model(base, LoraConfig(r=4, target_modules=LORA_TARGET_MODULES, modules_to_save=["classifier"]))
    model.save_pretrained(tmp_path / "adapter")
    ecg = torch.randn(1, 12, 1000)
    with pytest.raises(ValueError, match="import_allowlist"):
        AutoPeftModel.from_pretrained(tmp_path / "adapter")
    loaded = AutoPeftModel.from_pretrained(tmp_path / "adapter", import_allowlist=["modeling_esi"]).eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_values=ecg).logits, model.eval()(input_values=ecg).logits)


@pytest.mark.parametrize("architecture", ["convnextv2", "resnet1d"])
def test_lora_targets_cover_every_ungrouped_layer_of_the_encoder(architecture: str):
    """One home for the LoRA targets: every nn.Linear and ungrouped nn.Conv1d of the ECG encoder, nothing else."""
    model = EsiForEcgClassification(tiny_config(ecg_config=dict(architecture=architecture, size="atto")))
    pattern = re.compile(lora_target_modules(model))
    targeted = {name for name, _ in model.named_modules() if pattern.fullmatch(name)}
    expected = {
        f"ecg_model.{name}"
        for name, module in model.ecg_model.named_modules()
        if isinstance(module, nn.Linear) or (isinstance(module, nn.Conv1d) and module.groups == 1)
    }
    assert targeted == expected and len(expected) > 4
    assert lora_target_modules(model.config) == lora_target_modules(model)
    peft_model = get_peft_model(model, LoraConfig(task_type=TaskType.SEQ_CLS, r=4, target_modules=pattern.pattern))
    assert sum("lora_A" in name for name, _ in peft_model.named_parameters()) == len(expected)
