"""The demo's pretraining recipe (`esi.demo.pretraining_arguments`) trains what docs/training.md says: the CPU claim
benchmark's caption decoder (2 layers, 128 wide) over the tokens of the sample's captions, saved so that the
folder reloads with its own (trimmed) tokenizer."""

from dataclasses import replace

import pytest
import torch
from transformers import AutoModel, AutoTokenizer

from esi.data.torch_dataset import join_captions, load_dataset_folder
from esi.demo import DEMO_DECODER_LAYERS, DEMO_DECODER_WIDTH, pretraining_arguments
from esi.train.pretrain import pretrain


@pytest.mark.slow
def test_demo_recipe_trains_the_small_decoder_over_the_captions_tokens(prepared_sample, sample_captions, tmp_path):
    data, model_args, optim, run = pretraining_arguments(prepared_sample, sample_captions, tmp_path, steps=2)
    model_dir = pretrain(replace(data, eval_split="none"), model_args, optim, run)

    model = AutoModel.from_pretrained(model_dir, trust_remote_code=True)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    decoder = model.config.decoder_config
    assert (decoder.num_hidden_layers, decoder.hidden_size) == (DEMO_DECODER_LAYERS, DEMO_DECODER_WIDTH)
    signals = load_dataset_folder(prepared_sample)["train"]
    captions = join_captions(signals, load_dataset_folder(sample_captions), "train")
    used = {token for ids in tokenizer(captions, truncation=True, max_length=data.max_text_length)["input_ids"]
            for token in ids}  # fmt: skip
    assert len(tokenizer) == model.text_decoder.lm_head.out_features < 30522
    assert tokenizer.unk_token_id not in used  # the trimmed vocabulary covers the sample's captions
    text = tokenizer(captions[:2], padding=True, return_tensors="pt")
    with torch.no_grad():
        features = model.get_text_features(**text).pooler_output
    assert features.shape == (2, model.config.projection_dim) and torch.isfinite(features).all()
