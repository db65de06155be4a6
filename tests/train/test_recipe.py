"""The pretraining recipe's parts: augmentations, weight decay, frozen/cached text tower, truncation, arguments,
and loading caption folders independently of their names."""

from __future__ import annotations

import logging
import re
import shutil
from dataclasses import replace

import datasets
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from transformers import AutoTokenizer

from esi.data.augment import EcgAugmentConfig, augment_ecg
from esi.data.torch_dataset import EcgCollator, join_captions, load_dataset_folder
from esi.train.arguments import ModelArguments, parse_args
from esi.train.data import caption_truncation, report_truncation
from esi.train.optim import decay_parameter_names
from esi.train.pretrain import set_train_mode
from esi.train.text_cache import restore_text_tower, use_cached_text_tower
from modeling_esi import EsiFeatureExtractor
from tests.helpers import tiny_esi_model

LEADS = ["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"]


@pytest.fixture(scope="module")
def record(prepared_sample) -> np.ndarray:
    """A real 10 s, 100 Hz record whose limb leads obey Einthoven/Goldberger exactly (derived from I and II)."""
    row = datasets.load_from_disk(str(prepared_sample))["train"].with_format("numpy")[0]
    assert list(row["lead_names"]) == LEADS
    signal = row["signal"].astype(np.float32).copy()
    lead_i, lead_ii = signal[0].copy(), signal[1].copy()
    signal[2], signal[3] = lead_ii - lead_i, -(lead_i + lead_ii) / 2
    signal[4], signal[5] = lead_i - lead_ii / 2, lead_ii - lead_i / 2
    return signal


def only(**enabled) -> EcgAugmentConfig:
    return EcgAugmentConfig(**{**EcgAugmentConfig.disabled().__dict__, "probability": 1.0, **enabled})


def extract(signals: list[np.ndarray]) -> dict:
    return EsiFeatureExtractor()(signals, sampling_rate=100, lead_names=LEADS, return_tensors="np")


def relation_residual(signal: np.ndarray) -> float:
    lead_i, lead_ii = signal[0], signal[1]
    expected = [lead_ii - lead_i, -(lead_i + lead_ii) / 2, lead_i - lead_ii / 2, lead_ii - lead_i / 2]
    return max(float(np.abs(signal[2 + k] - e).max()) for k, e in enumerate(expected))


TRANSFORMS = {
    "crop": dict(min_crop_fraction=0.8),
    "baseline_wander": dict(baseline_wander_mv=0.1),
    "noise": dict(noise_std_mv=0.02),
}


@pytest.mark.parametrize("name", TRANSFORMS)
def test_each_augmentation_survives_the_feature_extractor(record, name):
    """After the per-lead z-score the model sees a different ECG (amplitude scaling would not survive it)."""
    rng = np.random.default_rng(3)
    augmented = augment_ecg(record, 100, LEADS, only(**TRANSFORMS[name]), rng)
    original, changed = extract([record]), extract([augmented])
    length = int(changed["ecg_attention_mask"].sum())
    diff = np.abs(changed["input_values"][0, :, :length] - original["input_values"][0, :, :length]).mean()
    assert diff > 0.05, f"{name} changed the model input by only {diff:.4f} (z-units)"


def test_amplitude_scaling_would_be_removed_by_the_z_score(record):
    # Why the redesign dropped it: the extractor undoes any per-lead scaling exactly.
    scaled = record * np.linspace(0.8, 1.2, 12, dtype=np.float32)[:, None]
    np.testing.assert_allclose(extract([scaled])["input_values"], extract([record])["input_values"], atol=1e-4)


def test_augmented_ecgs_keep_the_heart_rate_their_text_states(prepared_sample, sample_captions):
    from esi.cqa.measurements import measure_ecg

    signals = datasets.load_from_disk(str(prepared_sample))["train"].with_format("numpy")
    captions = load_dataset_folder(sample_captions)["train"]
    stated = {
        ecg_id: float(match.group(1))
        for ecg_id, caption in zip(captions["ecg_id"], captions["caption"], strict=True)
        if "sinus rhythm" in caption.lower() and (match := re.search(r"(\d+(?:\.\d+)?) bpm", caption))
    }
    rows = [row for row, ecg_id in enumerate(signals["ecg_id"]) if int(ecg_id) in stated][:4]
    assert len(rows) == 4
    config = replace(EcgAugmentConfig(), probability=1.0)  # every transform, every time
    for row in rows:
        record = signals[row]
        for seed in range(3):
            augmented = augment_ecg(record["signal"], 100, LEADS, config, np.random.default_rng([seed, row]))
            rate = measure_ecg(augmented, 100, LEADS).heart_rate_bpm
            assert abs(rate - stated[int(record["ecg_id"])]) <= 2.0, (int(record["ecg_id"]), seed, rate)


def test_augmentations_keep_einthoven_and_goldberger_relations(record):
    assert relation_residual(record) < 1e-6
    config = EcgAugmentConfig(probability=1.0, baseline_wander_mv=0.3, noise_std_mv=0.05)
    for seed in range(5):
        augmented = augment_ecg(record, 100, LEADS, config, np.random.default_rng(seed))
        assert relation_residual(augmented) < 1e-5, seed
        assert not np.allclose(augmented[:, : min(augmented.shape[1], 700)], record[:, : min(augmented.shape[1], 700)])


def test_baseline_wander_has_one_phase_for_all_leads(record):
    augmented = augment_ecg(record, 100, LEADS, only(baseline_wander_mv=0.3), np.random.default_rng(0))
    drift = (augmented - record)[[0, 1, 6, 7, 8, 9, 10, 11]]  # the independent leads
    singular = np.linalg.svd(drift, compute_uv=False)
    assert singular[1] / singular[0] < 1e-4, "each lead drifts with its own phase"


def test_crop_is_masked_not_zero_filled(record):
    config = only(min_crop_fraction=0.8, noise_std_mv=0.02)
    augmented = augment_ecg(record, 100, LEADS, config, np.random.default_rng(1))
    assert 800 <= augmented.shape[1] < 1000
    # The crop is a window of the record itself (plus noise), not a shifted copy with a zero tail.
    collator = EcgCollator(EsiFeatureExtractor(), 100, LEADS)
    batch = collator([{"signal": augmented, "ecg_id": 1}, {"signal": record, "ecg_id": 2}])
    mask = batch["ecg_attention_mask"]
    assert mask[0].sum() == augmented.shape[1] and mask[1].sum() == 1000
    assert torch.all(batch["input_values"][0, :, augmented.shape[1] :] == 0), "padding carries signal or noise"


def test_augmentation_depends_only_on_its_generator(record):
    config = EcgAugmentConfig(probability=1.0)
    first = augment_ecg(record, 100, LEADS, config, np.random.default_rng([7, 0, 5]))
    again = augment_ecg(record, 100, LEADS, config, np.random.default_rng([7, 0, 5]))
    other = augment_ecg(record, 100, LEADS, config, np.random.default_rng([7, 1, 5]))
    np.testing.assert_array_equal(first, again)
    assert first.shape != other.shape or not np.array_equal(first, other)


def test_weight_decay_spares_norms_grn_biases_embeddings_and_temperature():
    model = tiny_esi_model()
    decay = decay_parameter_names(model)
    spared = set(dict(model.named_parameters())) - decay
    # ConvNeXt's stem and downsampling norms are LayerNorms whose names do not say so.
    norm_params = {
        f"{module_name}.{p}"
        for module_name, module in model.named_modules()
        if isinstance(module, torch.nn.LayerNorm)
        for p, _ in module.named_parameters(recurse=False)
    }
    by_name = {n for n in dict(model.named_parameters()) if any(k in n for k in ("bias", "norm", "grn.", "embed"))}
    assert spared == norm_params | by_name | {"logit_scale"}
    assert any(".grn.gamma" in n for n in spared) and any(".grn.beta" in n for n in spared)
    assert "text_decoder.embed_tokens.weight" in spared and "text_model.embeddings.word_embeddings.weight" in spared
    assert any(n.startswith("ecg_model.backbone.stem") for n in norm_params - by_name)
    assert "text_decoder.layers.0.self_attn.q_proj.weight" in decay
    assert any(n.startswith("ecg_model.backbone.stages") and n.endswith("pwconv1.weight") for n in decay)


def test_frozen_text_tower_is_deterministic_and_cache_matches_it(sample_captions):
    from esi.text_encoder import default_text_model_path

    tokenizer = AutoTokenizer.from_pretrained(default_text_model_path())
    captions = load_dataset_folder(sample_captions)["train"]["caption"][:6]
    text = tokenizer(captions, padding=True, truncation=True, max_length=48, return_tensors="pt")
    ecg = torch.randn(6, 12, 1000)
    model = tiny_esi_model()
    model.text_model.requires_grad_(False)
    set_train_mode(model, ModelArguments(freeze_text_tower=True))
    assert model.training and model.ecg_model.training and not model.text_model.training
    first = model.get_text_features(text["input_ids"], text["attention_mask"]).pooler_output
    torch.testing.assert_close(
        model.get_text_features(text["input_ids"], text["attention_mask"]).pooler_output, first, rtol=0, atol=0
    )

    torch.manual_seed(1)
    plain = model(ecg, text["input_ids"], text["attention_mask"], return_loss=True)
    cache = use_cached_text_tower(model, tokenizer, captions, max_length=48, batch_size=4)
    assert len(cache) == 6
    torch.manual_seed(1)
    cached = model(ecg, text["input_ids"], text["attention_mask"], return_loss=True)
    torch.testing.assert_close(cached.text_embeds, plain.text_embeds, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(cached.loss, plain.loss, rtol=1e-5, atol=1e-6)
    assert not any(k.startswith("text_model.") for k in model.state_dict())  # frozen weights not checkpointed
    restore_text_tower(model)
    assert any(k.startswith("text_model.") for k in model.state_dict())


def test_truncation_share_is_measured_and_warned(sample_captions, caplog):
    from esi.text_encoder import default_text_model_path

    tokenizer = AutoTokenizer.from_pretrained(default_text_model_path())
    captions = list(load_dataset_folder(sample_captions)["train"]["caption"])
    lengths = np.array([len(tokenizer(c)["input_ids"]) for c in captions])
    short = caption_truncation(tokenizer, captions, 64)
    assert short["truncated_token_share"] == pytest.approx(np.maximum(lengths - 64, 0).sum() / lengths.sum())
    assert short["truncated_caption_share"] == pytest.approx((lengths > 64).mean())
    full = caption_truncation(tokenizer, captions, int(lengths.max()))
    assert full["truncated_token_share"] == 0.0
    with caplog.at_level(logging.INFO, logger="esi.train"):
        report_truncation(short)
        report_truncation(full)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "cuts off" in warnings[0].getMessage()


def test_arguments_are_dataclasses_with_one_declaration_each():
    data, model, optim, run = parse_args(
        ["--signals", "S", "--captions", "C", "--output-dir", "O", "--no-augment", "--freeze-text-tower",
         "--per_device_batch_size", "4", "--max-text-length", "96"]
    )  # fmt: skip
    assert (data.signals, data.augment, data.max_text_length, model.freeze_text_tower) == ("S", False, 96, True)
    assert (optim.per_device_batch_size, run.output_dir, run.resume_from_checkpoint) == (4, "O", None)
    with pytest.raises(SystemExit):
        parse_args(["--signals", "S", "--captions", "C", "--output-dir", "O", "--cache-text-embeddings"])


def test_caption_folder_loads_by_content_not_by_name(sample_captions, tmp_path):
    """A/cap with many rows, then B/cap with fewer: B must load B's rows (datasets' cache keyed them by name)."""
    big, small = tmp_path / "A" / "cap", tmp_path / "B" / "cap"
    shutil.copytree(sample_captions, big)
    assert sum(len(s) for s in load_dataset_folder(big).values()) == 300
    small.mkdir(parents=True)
    full = load_dataset_folder(big)
    # A dataset card whose split sizes do not match the files (here: A's card): `datasets.load_dataset`, as
    # used before, failed with NonMatchingSplitsSizesError; the files alone decide what is loaded now.
    shutil.copy(big / "README.md", small / "README.md")
    (small / "data").mkdir()
    for split, rows in full.items():
        rows.select(range(len(rows) // 2)).to_parquet(str(small / "data" / f"{split}-00000-of-00001.parquet"))
    loaded = load_dataset_folder(small)
    assert {s: len(d) for s, d in loaded.items()} == {s: len(d) // 2 for s, d in full.items()}
    assert loaded["train"]["caption"] == full["train"]["caption"][: len(full["train"]) // 2]
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="neither a save_to_disk dataset nor Parquet"):
        load_dataset_folder(tmp_path / "empty")
    assert join_captions(loaded["train"], loaded, "train")[0] == loaded["train"]["caption"][0]


def caption_items(captions: list[str]) -> list[dict]:
    rng = np.random.default_rng(0)
    return [{"signal": rng.normal(size=(12, 1000)), "ecg_id": i, "caption": c} for i, c in enumerate(captions)]


def test_batches_pad_to_their_longest_caption_rounded_to_eight(sample_captions):
    from esi.text_encoder import default_text_model_path

    tokenizer = AutoTokenizer.from_pretrained(default_text_model_path())
    first, second = load_dataset_folder(sample_captions)["train"]["caption"][:2]
    captions = [first[:300], second[:90]]
    longest = max(len(ids) for ids in tokenizer(captions)["input_ids"])
    assert longest % 8 and longest < 320  # otherwise padding to the longest would already be a multiple of 8
    batch = EcgCollator(EsiFeatureExtractor(), 100, LEADS, tokenizer, max_text_length=320)(caption_items(captions))
    assert batch["input_ids"].shape[1] == -(-longest // 8) * 8  # the batch's own length, not the maximum
    # The maximum only truncates, even when it is not a multiple of 8.
    cut = EcgCollator(EsiFeatureExtractor(), 100, LEADS, tokenizer, max_text_length=21)(caption_items(captions))
    assert cut["input_ids"].shape[1] == 21 and (cut["input_ids"][:, -1] == tokenizer.sep_token_id).all()


def test_caption_loss_scores_target_positions_only_and_equals_the_full_logits_loss(sample_captions):
    from esi.text_encoder import default_text_model_path
    from modeling_esi.modeling_esi import caption_targets

    tokenizer = AutoTokenizer.from_pretrained(default_text_model_path())
    texts = load_dataset_folder(sample_captions)["train"]["caption"][:6]
    texts = [t[: 40 + 60 * (i % 3)] for i, t in enumerate(texts)]  # short (padded) and long (truncated) rows
    collator = EcgCollator(EsiFeatureExtractor(), 100, LEADS, tokenizer, max_text_length=37)
    batch = collator(caption_items(texts))
    batch.pop("ecg_ids")
    ids, mask = batch["input_ids"], batch["attention_mask"]
    assert (mask == 0).any() and (ids[:, -1] == tokenizer.sep_token_id).any()  # padding and truncation both occur
    model = tiny_esi_model().eval()
    scored_rows = []
    hook = model.text_decoder.lm_head.register_forward_hook(lambda m, i, o: scored_rows.append(i[0].shape[0]))
    loss = model(**batch, return_loss=True).caption_loss
    loss.backward()
    fast_grad = model.text_decoder.lm_head.weight.grad.clone()
    hook.remove()
    assert scored_rows == [int(mask[:, 1:].sum())]  # logits only where there is a target
    model.zero_grad()
    # The formula before the change: full (B, L-1, vocab) logits, padding ignored by index.
    logits = model(**batch, return_loss=False).caption_logits
    reference = F.cross_entropy(logits.flatten(0, 1), caption_targets(ids, mask).flatten())
    reference.backward()
    assert abs(loss.item() - reference.item()) <= 1e-6
    torch.testing.assert_close(fast_grad, model.text_decoder.lm_head.weight.grad, rtol=1e-5, atol=1e-7)
