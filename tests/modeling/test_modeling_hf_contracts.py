"""The contracts a CLIP/SigLIP user of transformers 5 relies on, on every ESI head: feature methods returning a
`BaseModelOutputWithPooling` with the projected embedding as `pooler_output`, an attention switch that really
switches (eager and SDPA equal), `_supports_sdpa` only where there is attention, the config's output flags,
`base_model`, and bfloat16 embeddings that match float32 on real PTB-XL records."""

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import wfdb
from peft import LoraConfig, TaskType, get_peft_model
from torch import nn
from torch.overrides import TorchFunctionMode
from transformers.modeling_outputs import BaseModelOutputWithPooling

from modeling_esi import EsiFeatureExtractor, EsiForEcgCaptioning, EsiForEcgClassification, EsiModel
from modeling_esi.modeling_esi import EsiPatchConv1d, lora_target_modules
from tests.helpers import BATCH, PTBXL_SAMPLE, make_config, make_inputs, model_heads

PTBXL_RECORDS = sorted((PTBXL_SAMPLE / "records100").rglob("*.hea"))


def build(model_class: type, **overrides) -> nn.Module:
    """A small head with every weight random (GRN included: it starts as the identity)."""
    torch.manual_seed(0)
    model = model_class(make_config(**overrides))
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if ".grn." in name:
                parameter.normal_(std=0.5)
    return model.eval()


class CountSdpaCalls(TorchFunctionMode):
    """Counts the calls of torch's `scaled_dot_product_attention` made inside the `with` block."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func is F.scaled_dot_product_attention:
            self.calls += 1
        return func(*args, **(kwargs or {}))


# Feature methods (CLIP's get_image_features / get_text_features in transformers 5)


def test_get_ecg_features_is_a_pooled_output_with_the_projection():
    model = build(EsiModel)
    inputs = make_inputs(EsiModel)
    with torch.no_grad():
        features = model.get_ecg_features(inputs["input_values"], inputs["ecg_attention_mask"])
        encoded = model.ecg_model(inputs["input_values"], inputs["ecg_attention_mask"])
        forward = model(**inputs, return_loss=False)
        as_tuple = model.get_ecg_features(inputs["input_values"], inputs["ecg_attention_mask"], return_dict=False)
        with_states = model.get_ecg_features(inputs["input_values"], output_hidden_states=True)
    assert isinstance(features, BaseModelOutputWithPooling)
    assert features.pooler_output.shape == (BATCH, model.config.projection_dim)
    torch.testing.assert_close(features.pooler_output, model.ecg_projection(encoded.pooler_output))
    torch.testing.assert_close(features.last_hidden_state, forward.ecg_last_hidden_state)
    torch.testing.assert_close(F.normalize(features.pooler_output, dim=-1), forward.ecg_embeds)
    assert features.hidden_states is None and features.token_mask.shape == features.last_hidden_state.shape[:2]
    assert isinstance(as_tuple, tuple) and torch.equal(as_tuple[1], features.pooler_output)
    assert len(with_states.hidden_states) == 1 + len(model.config.ecg_config.depths)


def test_get_text_features_is_a_pooled_output_with_the_projection():
    model = build(EsiModel)
    inputs = make_inputs(EsiModel)
    text = {"input_ids": inputs["input_ids"], "attention_mask": inputs["attention_mask"]}
    with torch.no_grad():
        features = model.get_text_features(**text)
        forward = model(**inputs, return_loss=False)
        detailed = build(EsiModel, attn_implementation="eager").get_text_features(
            **text, output_hidden_states=True, output_attentions=True
        )
    assert isinstance(features, BaseModelOutputWithPooling)
    assert features.pooler_output.shape == (BATCH, model.config.projection_dim)
    torch.testing.assert_close(F.normalize(features.pooler_output, dim=-1), forward.text_embeds)
    torch.testing.assert_close(features.last_hidden_state, forward.text_last_hidden_state)
    assert features.hidden_states is None and features.attentions is None
    assert len(detailed.hidden_states) == model.config.text_config.num_hidden_layers + 1
    assert len(detailed.attentions) == model.config.text_config.num_hidden_layers


# Attention implementation


@pytest.mark.parametrize("model_class", [EsiModel, EsiForEcgCaptioning])
def test_eager_and_sdpa_are_both_used_and_agree(model_class: type):
    inputs = make_inputs(model_class)
    if model_class is EsiModel:
        inputs["return_loss"] = False  # with the loss, EsiModel computes logits only at target positions
    outputs = {}
    for implementation in ("eager", "sdpa"):
        model = build(model_class, attn_implementation=implementation)
        assert model.text_decoder.layers[0].self_attn.config._attn_implementation == implementation
        with torch.no_grad(), CountSdpaCalls() as counter:
            outputs[implementation] = model(**inputs)
        layers = model.config.decoder_config.num_hidden_layers
        # eager: no SDPA anywhere; sdpa: every decoder layer's self- and cross-attention (and the text tower).
        assert counter.calls == 0 if implementation == "eager" else counter.calls >= 2 * layers
    logits = "caption_logits" if model_class is EsiModel else "logits"
    torch.testing.assert_close(outputs["eager"][logits], outputs["sdpa"][logits], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(outputs["eager"].loss, outputs["sdpa"].loss, rtol=1e-5, atol=1e-5)


def test_set_attn_implementation_switches_a_loaded_model(tmp_path: Path):
    build(EsiModel).save_pretrained(tmp_path)
    model = EsiModel.from_pretrained(tmp_path).eval()
    assert model.config.decoder_config._attn_implementation == "sdpa"
    inputs = make_inputs(EsiModel)
    with torch.no_grad():
        sdpa = model(**inputs).caption_logits
        model.set_attn_implementation("eager")
        with CountSdpaCalls() as counter:
            eager = model(**inputs).caption_logits
    assert model.config.decoder_config._attn_implementation == "eager" and counter.calls == 0
    torch.testing.assert_close(eager, sdpa, rtol=1e-5, atol=1e-5)


def test_generation_is_the_same_under_both_implementations():
    inputs = make_inputs(EsiModel)
    ids = [
        build(EsiModel, attn_implementation=implementation).generate(
            inputs["input_values"], inputs["ecg_attention_mask"], max_new_tokens=8, do_sample=False
        )
        for implementation in ("eager", "sdpa")
    ]
    assert torch.equal(ids[0], ids[1])


def test_sdpa_is_declared_only_where_there_is_attention(tmp_path: Path):
    assert EsiModel._supports_sdpa and EsiForEcgCaptioning._supports_sdpa
    assert not EsiForEcgClassification._supports_sdpa
    build(EsiForEcgClassification).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="scaled_dot_product_attention"):
        EsiForEcgClassification.from_pretrained(tmp_path, attn_implementation="sdpa")
    assert EsiForEcgClassification.from_pretrained(tmp_path).config._attn_implementation == "eager"


# Output flags from the config, base model


@pytest.mark.parametrize("model_class", model_heads())
def test_config_output_flags_are_honoured(model_class: type):
    inputs = make_inputs(model_class)
    # Attention weights exist under the eager implementation only (as in transformers); the classifier has none.
    attention = (
        {} if model_class is EsiForEcgClassification else dict(output_attentions=True, attn_implementation="eager")
    )
    model = build(model_class, output_hidden_states=True, **attention)
    with torch.no_grad():
        out = model(**inputs)
        quiet = model(**inputs, output_hidden_states=False, output_attentions=False)
    layers = model.config.decoder_config.num_hidden_layers
    if model_class is EsiModel:
        assert len(out.ecg_hidden_states) == 1 + len(model.config.ecg_config.depths)
        assert len(out.decoder_hidden_states) == layers + 1 and len(out.decoder_attentions) == layers
        assert len(out.text_attentions) == model.config.text_config.num_hidden_layers
        assert quiet.decoder_hidden_states is None and quiet.decoder_attentions is None
    elif model_class is EsiForEcgCaptioning:
        assert len(out.hidden_states) == layers + 1
        assert len(out.attentions) == len(out.cross_attentions) == layers
        assert quiet.hidden_states is None and quiet.attentions is None
    else:
        assert len(out.hidden_states) == 1 + len(model.config.ecg_config.depths)
        assert quiet.hidden_states is None


@pytest.mark.parametrize("model_class", model_heads())
def test_base_model_is_the_ecg_encoder(model_class: type):
    model = build(model_class)
    assert model.base_model is model.ecg_model and model.base_model is not model


# bfloat16 (torch's oneDNN bf16 Conv1d with kernel == stride is wrong on CPU for the stem's shapes)


def test_patch_convolution_is_a_conv1d_with_the_same_parameters():
    torch.manual_seed(0)
    conv = nn.Conv1d(12, 40, 8, stride=8)
    patch = EsiPatchConv1d(12, 40, 8, stride=8)
    patch.load_state_dict(conv.state_dict())  # checkpoints of an nn.Conv1d stem load unchanged
    signal = torch.randn(2, 12, 1003)  # 1003 = 125 windows and 3 left-over samples, as the convolution drops them
    torch.testing.assert_close(patch(signal), conv(signal), rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        bf16 = patch.to(torch.bfloat16)(signal.bfloat16()).float()
    assert F.cosine_similarity(bf16.flatten(), conv(signal).flatten(), dim=0) > 0.999
    with pytest.raises(ValueError, match="stride == kernel"):
        EsiPatchConv1d(12, 40, 8, stride=4)


@pytest.mark.parametrize("architecture", ["convnextv2", "resnet1d"])
def test_bfloat16_embeddings_match_float32_on_ptbxl_records(tmp_path: Path, architecture: str):
    config = make_config(ecg_config=dict(architecture=architecture, size="atto"))
    torch.manual_seed(0)
    model = EsiModel(config)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if ".grn." in name:
                parameter.normal_(std=0.5)
    model.save_pretrained(tmp_path)
    records = [wfdb.rdrecord(str(path.with_suffix(""))) for path in PTBXL_RECORDS[:16]]
    features = EsiFeatureExtractor()(
        [record.p_signal for record in records], sampling_rate=100, lead_names=records[0].sig_name, return_tensors="pt"
    )
    embeddings = {}
    for dtype in (torch.float32, torch.bfloat16):
        loaded = EsiModel.from_pretrained(tmp_path, dtype=dtype).eval()
        assert loaded.ecg_model.backbone.stem[0].weight.dtype == dtype
        with torch.no_grad():
            output = loaded.get_ecg_features(features["input_values"].to(dtype), features["ecg_attention_mask"])
        embeddings[dtype] = output.pooler_output.float()
    cosine = F.cosine_similarity(embeddings[torch.float32], embeddings[torch.bfloat16], dim=-1)
    assert cosine.min() >= 0.999, cosine


@pytest.mark.parametrize("architecture", ["convnextv2", "resnet1d"])
def test_lora_wraps_the_patch_convolutions_and_keeps_padding_masked(architecture: str):
    """PEFT builds a LoRA convolution as the wrapped layer's class with nn.Conv1d's arguments; the wrapped stem
    and blocks still shorten the valid lengths (row 1 is padded), so a fresh adapter changes nothing."""
    model = build(
        EsiForEcgClassification, ecg_config=dict(architecture=architecture, depths=[1, 1], hidden_sizes=[16, 32])
    )
    inputs = make_inputs(EsiForEcgClassification)
    with torch.no_grad():
        before = model(**inputs).logits
    peft_model = get_peft_model(
        model, LoraConfig(task_type=TaskType.SEQ_CLS, r=4, target_modules=lora_target_modules(model))
    )
    stem = peft_model.base_model.model.ecg_model.backbone.stem[0]
    assert isinstance(stem.lora_A["default"], EsiPatchConv1d)
    with torch.no_grad():
        torch.testing.assert_close(peft_model(**inputs).logits, before)  # LoRA's B starts at zero
