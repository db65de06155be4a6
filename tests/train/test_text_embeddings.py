"""esi-train --text-embeddings: precomputed tower embeddings stand in for the tower, exactly and loudly."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer

from esi.data.torch_dataset import load_dataset_folder
from esi.text_encoder import default_text_model_path
from esi.train.arguments import parse_args
from esi.train.text_cache import load_text_embeddings, use_cached_text_tower
from modeling_esi.modeling_esi import masked_mean
from tests.helpers import tiny_esi_model


def tower_embeddings(model, tokenizer, captions: list[str], max_length: int) -> np.ndarray:
    """Each caption embedded alone (no batch padding), as a precomputing script would."""
    model.text_model.eval()
    with torch.no_grad():
        out = []
        for caption in captions:
            text = tokenizer([caption], truncation=True, max_length=max_length, return_tensors="pt")
            hidden = model.text_model(**text).last_hidden_state
            out.append(masked_mean(hidden, text["attention_mask"])[0].numpy())
    return np.stack(out)


def test_precomputed_embeddings_give_the_towers_loss_and_refuse_other_text(sample_captions, tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(default_text_model_path())
    captions = load_dataset_folder(sample_captions)["train"]["caption"][:6]
    text = tokenizer(captions, padding=True, truncation=True, max_length=48, return_tensors="pt")
    ecg = torch.randn(6, 12, 1000)
    model = tiny_esi_model()
    model.text_model.requires_grad_(False)
    model.eval()
    plain = model(ecg, text["input_ids"], text["attention_mask"], return_loss=True)

    path = tmp_path / "emb.npz"
    np.savez(path, captions=np.array(captions), embeddings=tower_embeddings(model, tokenizer, captions, 48))
    precomputed = load_text_embeddings(path, 48)
    tower = model.text_model
    cache = use_cached_text_tower(model, tokenizer, captions, 48, precomputed=precomputed)
    assert len(cache) == len(set(captions))
    cached = model(ecg, text["input_ids"], text["attention_mask"], return_loss=True)
    torch.testing.assert_close(cached.text_embeds, plain.text_embeds, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(cached.loss, plain.loss, rtol=1e-5, atol=1e-6)

    other = tokenizer(["an ECG nobody embedded"], padding=True, return_tensors="pt")
    with pytest.raises(ValueError, match="not among the precomputed"):
        model.text_model(other["input_ids"], other["attention_mask"])
    model.text_model = tower
    with pytest.raises(ValueError, match="have no precomputed text embedding"):
        use_cached_text_tower(model, tokenizer, [*captions, "unseen caption"], 48, precomputed=precomputed)
    # two captions that read as the same first tokens must not carry different embeddings
    clash = {captions[0]: precomputed[captions[0]], captions[0] + " tail": precomputed[captions[0]] + 1}
    with pytest.raises(ValueError, match="same tokens as another caption"):
        use_cached_text_tower(model, tokenizer, list(clash), 4, precomputed=clash)

    np.savez(tmp_path / "bad.npz", captions=np.array(captions[:2]), embeddings=np.full((2, 4), np.nan))
    with pytest.raises(ValueError, match="non-finite"):
        load_text_embeddings(tmp_path / "bad.npz", 48)
    np.savez(
        tmp_path / "cut.npz", captions=np.array(captions), embeddings=np.ones((6, 4)), max_text_length=np.array(128)
    )
    with pytest.raises(ValueError, match="embeds the first 128 tokens"):
        load_text_embeddings(tmp_path / "cut.npz", 48)


def test_text_embeddings_need_a_frozen_tower(capsys):
    with pytest.raises(SystemExit):
        parse_args(["--signals", "s", "--captions", "c", "--output-dir", "o", "--text-embeddings", "e.npz"])
    assert "--text-embeddings needs --freeze-text-tower" in capsys.readouterr().err


def test_trimmed_vocabulary_splits_captions_alike_and_restricts_the_caption_softmax(sample_captions):
    from esi.train.vocabulary import caption_token_ids, trim_model_vocabulary, trimmed_tokenizer

    tokenizer = AutoTokenizer.from_pretrained(default_text_model_path())
    captions = load_dataset_folder(sample_captions)["train"]["caption"][:6]
    kept = caption_token_ids(tokenizer, captions, 48)
    assert set(tokenizer.all_special_ids) <= set(kept.tolist()) and len(kept) < 1000
    trimmed = trimmed_tokenizer(tokenizer, kept, captions, 48)
    assert len(trimmed) == len(kept) and trimmed.decode(trimmed(captions[0])["input_ids"], skip_special_tokens=True)

    ecg = torch.randn(6, 12, 1000)
    model = tiny_esi_model().eval()
    full = tokenizer(captions, padding=True, truncation=True, max_length=48, return_tensors="pt")
    before = model(ecg, full["input_ids"], full["attention_mask"], return_loss=True)
    logits = model(ecg, full["input_ids"], full["attention_mask"], return_loss=False).caption_logits
    trim_model_vocabulary(model, kept)
    assert model.text_decoder.lm_head.weight is model.text_decoder.embed_tokens.weight
    assert model.config.bos_token_id == trimmed.cls_token_id and model.config.eos_token_id == trimmed.sep_token_id
    small = trimmed(captions, padding=True, truncation=True, max_length=48, return_tensors="pt")
    after = model(ecg, small["input_ids"], small["attention_mask"], return_loss=True)
    # The trimmed decoder's loss is the full decoder's cross-entropy restricted to the kept tokens.
    restricted = logits[..., torch.as_tensor(kept)]
    targets = small["input_ids"][:, 1:].masked_fill(small["attention_mask"][:, 1:] == 0, -100)
    expected = torch.nn.functional.cross_entropy(restricted.flatten(0, 1), targets.flatten())
    torch.testing.assert_close(after.caption_loss, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(after.contrastive_loss, before.contrastive_loss, rtol=1e-5, atol=1e-6)
    assert model.generate_caption(ecg[:1], max_new_tokens=4).max() < len(kept)
