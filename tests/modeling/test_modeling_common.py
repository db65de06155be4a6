"""The contracts transformers' common tests check (CLIP-style ModelTesterMixin / ConfigTester), run on every ESI
head: config round trip, save/load, determinism, hidden states (shapes and gradients), attentions, resized
embeddings, a training step, gradient checkpointing, tuple outputs, the feature extractor / tokenizer / processor
outputs feeding the model directly, padding that the encoder cannot see, and saved folders without local paths."""

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModel, AutoProcessor, AutoTokenizer, BertConfig, GenerationConfig

from esi.text_encoder import default_text_model_path
from modeling_esi import (
    EsiConfig,
    EsiFeatureExtractor,
    EsiForEcgCaptioning,
    EsiForEcgClassification,
    EsiModel,
    EsiProcessor,
)
from tests.helpers import BATCH, TEXT_LEN, VOCAB, T, make_config, make_inputs, model_heads

LEADS = ["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"]


def build(model_class: type, architecture: str = "convnextv2", **overrides) -> torch.nn.Module:
    torch.manual_seed(0)
    model = model_class(make_config(architecture, **overrides))
    # GRN starts as the identity (gamma = beta = 0); random values make the contracts exercise it.
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if ".grn." in name:
                parameter.normal_(std=0.5)
    return model


def first_tensor(output) -> torch.Tensor:
    return output.loss if output.loss is not None else output[0]


def test_config_round_trip(tmp_path: Path):
    config = make_config(problem_type="multi_label_classification")
    assert EsiConfig.from_dict(config.to_dict()).to_dict() == config.to_dict()
    assert EsiConfig(**json.loads(config.to_json_string())).to_dict() == config.to_dict()
    config.save_pretrained(tmp_path)
    reloaded = EsiConfig.from_pretrained(tmp_path, num_labels=2)
    assert reloaded.num_labels == 2 and reloaded.problem_type == "multi_label_classification"
    assert isinstance(reloaded.text_config, BertConfig) and reloaded.ecg_config.hidden_sizes == [16, 32]
    assert reloaded.decoder_config.max_position_embeddings == 32
    # Common attributes every transformers config has.
    for name in ("return_dict", "output_hidden_states", "output_attentions", "id2label", "label2id"):
        assert hasattr(reloaded, name), name


@pytest.mark.parametrize("model_class", model_heads())
def test_save_load_round_trip_and_determinism(tmp_path: Path, model_class: type):
    model = build(model_class).eval()
    inputs = make_inputs(model_class)
    with torch.no_grad():
        first, second = model(**inputs), model(**inputs)
    torch.testing.assert_close(first_tensor(first), first_tensor(second), rtol=0, atol=0)
    model.save_pretrained(tmp_path)
    reloaded, info = model_class.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    with torch.no_grad():
        again = reloaded.eval()(**inputs)
    for key, value in first.items():
        if isinstance(value, torch.Tensor):
            torch.testing.assert_close(again[key], value, rtol=0, atol=0, msg=key)


@pytest.mark.parametrize("model_class", model_heads())
def test_return_dict_false_gives_the_same_values(model_class: type):
    model = build(model_class).eval()
    inputs = make_inputs(model_class)
    with torch.no_grad():
        as_dict, as_tuple = model(**inputs), model(**inputs, return_dict=False)
    values = [value for value in as_dict.values() if value is not None]
    assert isinstance(as_tuple, tuple) and len(as_tuple) == len(values)
    for expected, actual in zip(values, as_tuple, strict=True):
        if isinstance(expected, torch.Tensor):
            torch.testing.assert_close(actual, expected)


@pytest.mark.parametrize("architecture", ["convnextv2", "resnet1d"])
def test_hidden_states_shapes_and_gradients(architecture: str):
    model = build(EsiModel, architecture)
    inputs = make_inputs(EsiModel)
    inputs["input_values"].requires_grad_(True)
    out = model(**inputs, output_hidden_states=True)
    ecg_states = out.ecg_hidden_states
    assert len(ecg_states) == 1 + len(model.config.ecg_config.depths)  # stem + each stage
    tokens = T // model.config.ecg_config.stem_stride
    expected = [(BATCH, tokens, 16), (BATCH, tokens, 16), (BATCH, -(-tokens // 2) if architecture == "resnet1d"
                                                                   else tokens // 2, 32)]  # fmt: skip
    assert [tuple(state.shape) for state in ecg_states] == expected
    assert len(out.text_hidden_states) == model.config.text_config.num_hidden_layers + 1
    assert out.text_hidden_states[0].shape == (BATCH, TEXT_LEN, 32)
    for state in (*ecg_states, *out.text_hidden_states):
        state.retain_grad()
    out.loss.backward()
    # Saliency on intermediate features: every returned state lies on the path to the loss.
    for index, state in enumerate((*ecg_states, *out.text_hidden_states)):
        assert state.grad is not None and state.grad.abs().sum() > 0, index
    # The padded samples of ECG row 1 get no gradient: they do not reach the output.
    input_grad = inputs["input_values"].grad
    assert input_grad[1, :, 704:].abs().max() == 0 and input_grad[1, :, :704].abs().max() > 0
    classifier = build(EsiForEcgClassification, architecture)
    logits = classifier(**make_inputs(EsiForEcgClassification), output_hidden_states=True)
    assert [tuple(state.shape) for state in logits.hidden_states] == expected


def test_attentions_pass_through():
    model = build(EsiModel, attn_implementation="eager").eval()
    inputs = make_inputs(EsiModel)
    with torch.no_grad():
        out = model(**inputs, output_attentions=True, return_loss=False)
        plain = model(**inputs, return_loss=False)
    text_layers, decoder = model.config.text_config.num_hidden_layers, model.config.decoder_config
    assert len(out.text_attentions) == text_layers
    assert out.text_attentions[0].shape == (BATCH, 2, TEXT_LEN, TEXT_LEN)
    assert len(out.decoder_attentions) == len(out.cross_attentions) == decoder.num_hidden_layers
    tokens = out.ecg_last_hidden_state.shape[1]
    assert out.decoder_attentions[0].shape == (BATCH, decoder.num_attention_heads, TEXT_LEN - 1, TEXT_LEN - 1)
    assert out.cross_attentions[0].shape == (BATCH, decoder.num_attention_heads, TEXT_LEN - 1, tokens)
    for weights in (*out.text_attentions, *out.decoder_attentions, *out.cross_attentions):
        torch.testing.assert_close(weights.sum(dim=-1), torch.ones(weights.shape[:-1]))
    # Causal: no weight on later caption tokens; no weight on ECG tokens that are padding.
    assert torch.triu(out.decoder_attentions[0], diagonal=1).abs().max() == 0
    valid_tokens = int(out.cross_attentions[0].new_tensor(704 // 8 // 2))
    assert out.cross_attentions[0][1, :, :, valid_tokens:].abs().max() == 0
    # The explicit attention path computes what SDPA computes.
    torch.testing.assert_close(out.caption_logits, plain.caption_logits, rtol=1e-5, atol=1e-5)
    assert plain.text_attentions is None and plain.decoder_attentions is None


@pytest.mark.parametrize("new_size", [VOCAB + 13, VOCAB - 22])
def test_resize_token_embeddings_keeps_towers_consistent(tmp_path: Path, new_size: int):
    model = build(EsiModel)
    embeddings = model.resize_token_embeddings(new_size)
    assert embeddings.num_embeddings == new_size
    assert model.text_decoder.embed_tokens.num_embeddings == new_size
    assert model.text_decoder.lm_head.out_features == new_size
    assert model.text_model.embeddings.word_embeddings.num_embeddings == new_size
    assert model.config.text_config.vocab_size == new_size
    assert model.text_decoder.lm_head.weight.data_ptr() == model.text_decoder.embed_tokens.weight.data_ptr()
    inputs = make_inputs(EsiModel)
    inputs["input_ids"][:, 1] = new_size - 1
    out = model(**inputs)
    assert torch.isfinite(out.loss)
    assert model(**inputs, return_loss=False).caption_logits.shape[-1] == new_size
    model.save_pretrained(tmp_path)
    reloaded = EsiModel.from_pretrained(tmp_path)
    assert reloaded.text_model.embeddings.word_embeddings.num_embeddings == new_size
    with torch.no_grad():
        torch.testing.assert_close(reloaded.eval()(**inputs).loss, model.eval()(**inputs).loss)


@pytest.mark.parametrize("model_class", model_heads())
def test_training_step_reaches_every_parameter(model_class: type):
    model = build(model_class).train()
    inputs = make_inputs(model_class)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss = model(**inputs).loss
    loss.backward()
    missing = [name for name, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, missing
    optimizer.step()
    optimizer.zero_grad()
    assert model(**inputs).loss < loss


@pytest.mark.parametrize("model_class", model_heads())
def test_gradient_checkpointing_gives_the_same_gradients(model_class: type):
    inputs = make_inputs(model_class)
    results = []
    for checkpointing in (False, True):
        model = build(model_class).train()
        if checkpointing:
            model.gradient_checkpointing_enable()
            assert model.is_gradient_checkpointing
        loss = model(**inputs).loss
        loss.backward()
        results.append((loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}))
    (loss, grads), (loss_ckpt, grads_ckpt) = results
    torch.testing.assert_close(loss_ckpt, loss)
    for name, grad in grads.items():
        torch.testing.assert_close(grads_ckpt[name], grad, rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize("problem_type", ["multi_label_classification", "single_label_classification", "regression"])
def test_classification_loss_is_transformers_sequence_classification_loss(problem_type: str):
    num_labels = 1 if problem_type == "regression" else 4
    model = build(EsiForEcgClassification, problem_type=problem_type, num_labels=num_labels).eval()
    assert model.loss_type == "ForSequenceClassification"
    inputs = make_inputs(EsiForEcgClassification)
    labels = {
        "multi_label_classification": inputs["labels"],
        "single_label_classification": torch.tensor([0, 3, 1]),
        "regression": torch.tensor([0.5, -1.0, 2.0]),
    }[problem_type]
    out = model(input_values=inputs["input_values"], labels=labels)
    logits = out.logits
    expected = {
        "multi_label_classification": lambda: F.binary_cross_entropy_with_logits(logits, labels),
        "single_label_classification": lambda: F.cross_entropy(logits, labels),
        "regression": lambda: F.mse_loss(logits.squeeze(-1), labels),
    }[problem_type]()
    torch.testing.assert_close(out.loss, expected)


def test_feature_extractor_tokenizer_and_processor_feed_the_model(tmp_path: Path):
    model = build(EsiModel).eval()
    tokenizer = AutoTokenizer.from_pretrained(default_text_model_path())
    extractor = EsiFeatureExtractor()
    rng = np.random.default_rng(0)
    ecgs = [rng.standard_normal((12, 5000)), rng.standard_normal((12, 3520))]  # 10 s and 7.04 s at 500 Hz
    texts = ["sinus rhythm", "atrial fibrillation with rapid ventricular response"]
    features = extractor(ecgs, sampling_rate=500, lead_names=LEADS, return_tensors="pt")
    text = tokenizer(texts, padding=True, return_tensors="pt")
    assert "token_type_ids" in text and "ecg_attention_mask" in features
    with torch.no_grad():
        ecg_embeds = model.get_ecg_features(**features).pooler_output
        text_embeds = model.get_text_features(**text).pooler_output
        out = model(**features, **text)
        classifier = build(EsiForEcgClassification).eval()
        torch.testing.assert_close(
            classifier(**features).logits,
            classifier(features["input_values"], ecg_attention_mask=features["ecg_attention_mask"]).logits,
        )
    torch.testing.assert_close(F.normalize(ecg_embeds, dim=-1), out.ecg_embeds)
    torch.testing.assert_close(F.normalize(text_embeds, dim=-1), out.text_embeds)

    processor = EsiProcessor(extractor, tokenizer, max_text_length=model.config.decoder_config.max_position_embeddings)
    processor.save_pretrained(tmp_path)
    reloaded = AutoProcessor.from_pretrained(tmp_path, trust_remote_code=True)
    assert type(reloaded).__name__ == "EsiProcessor" and reloaded.max_text_length == 32
    batch = reloaded(ecgs=ecgs, text=texts, sampling_rate=500, lead_names=LEADS, return_tensors="pt")
    assert set(batch) == {"input_values", "ecg_attention_mask", "input_ids", "attention_mask", "token_type_ids"}
    with torch.no_grad():
        from_processor = model(**batch)
    torch.testing.assert_close(from_processor.logits_per_ecg, out.logits_per_ecg)
    long_text = reloaded(text=["word " * 100], return_tensors="pt")
    assert long_text["input_ids"].shape[1] == 32  # truncated to what the decoder can read


@pytest.mark.parametrize("architecture", ["convnextv2", "resnet1d"])
def test_padding_is_invisible(architecture: str):
    """Issue 11 item 6: 704 samples padded to 1,000 embed as the 704 samples alone (stem bias + LayerNorm,
    depthwise convolutions and GRN all mask)."""
    model = build(EsiModel, architecture, ecg_config=dict(architecture=architecture, size="atto")).eval()
    extractor = EsiFeatureExtractor()
    signal = np.random.default_rng(1).standard_normal((12, 704))
    padded = extractor(signal, sampling_rate=100, lead_names=LEADS, return_tensors="pt")  # to 1,000, with a mask
    alone = extractor(signal, sampling_rate=100, lead_names=LEADS, padding="longest", return_tensors="pt")
    assert padded["input_values"].shape[-1] == 1000 and alone["input_values"].shape[-1] == 704
    garbage = padded["input_values"].clone()
    garbage[..., 704:] = 30.0  # whatever lies in the padding must not matter
    with torch.no_grad():
        reference = model.get_ecg_features(**alone).pooler_output
        for values in (padded["input_values"], garbage):
            embedding = model.get_ecg_features(values, padded["ecg_attention_mask"]).pooler_output
            relative = ((embedding - reference).norm() / reference.norm()).item()
            assert relative < 1e-4, relative


def test_mask_must_be_right_padding():
    model = build(EsiModel).eval()
    mask = torch.ones(1, T, dtype=torch.long)
    mask[0, 100:200] = 0
    with pytest.raises(ValueError, match=r"rows \[0\] are not right padding"):
        model.get_ecg_features(torch.randn(1, 12, T), mask)


def test_generate_with_generation_config(tmp_path: Path):
    model = build(EsiModel).eval()
    ecg = make_inputs(EsiModel)["input_values"][:2]
    greedy = model.generate(ecg, max_new_tokens=6)
    assert torch.equal(model.generate(ecg, max_new_tokens=6, use_cache=False), greedy)
    # Greedy = argmax of the full (uncached) decoder at every step.
    manual = torch.full((2, 1), 101)
    tokens = model.ecg_model(ecg).last_hidden_state
    for _ in range(6):
        manual = torch.cat([manual, model.text_decoder(manual, tokens).logits[:, -1].argmax(-1, keepdim=True)], 1)
    assert torch.equal(greedy, manual)
    beams = model.generate(ecg, generation_config=GenerationConfig(num_beams=3, max_new_tokens=5))
    assert beams.shape[0] == 2 and (beams[:, 0] == 101).all()
    sampling = GenerationConfig(do_sample=True, top_k=20, temperature=1.5, max_new_tokens=5)
    torch.manual_seed(3)
    first = model.generate(ecg, generation_config=sampling)
    torch.manual_seed(3)
    assert torch.equal(model.generate(ecg, generation_config=sampling), first)
    # The captioning head loads the same towers from an EsiModel folder and generates the same text.
    model.save_pretrained(tmp_path)
    captioner = EsiForEcgCaptioning.from_pretrained(tmp_path).eval()
    assert torch.equal(captioner.generate(input_values=ecg, max_new_tokens=6), greedy)
    assert sum(p.numel() for p in captioner.parameters()) < sum(p.numel() for p in model.parameters())


def test_saved_folder_has_no_local_paths(tmp_path: Path):
    text_model = default_text_model_path()
    config = make_config()
    model = EsiModel.from_text_pretrained(str(text_model), config=copy.deepcopy(config))
    folder = tmp_path / "esi"
    model.save_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(text_model)
    EsiProcessor(EsiFeatureExtractor(), tokenizer, max_text_length=32).save_pretrained(folder)
    loaded = AutoModel.from_pretrained(folder, trust_remote_code=True)
    loaded.save_pretrained(tmp_path / "again")
    for saved in (folder, tmp_path / "again"):
        for path in saved.glob("*.json"):
            text = path.read_text()
            for local in (str(tmp_path), str(text_model), str(Path.home()), "/work/"):
                assert local not in text, f"{path.name} contains {local}"
