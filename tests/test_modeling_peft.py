"""LoRA on the ECG encoder with the classification head fully trained: save adapter, reload, same logits."""

from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model

from modeling_esi import EsiForEcgClassification
from modeling_esi.modeling_esi import LORA_TARGET_MODULES
from tests.test_modeling_esi import tiny_config


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
