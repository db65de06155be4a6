"""A caption vocabulary cut down to the tokens the training captions use (`--trim-vocabulary`).

The caption decoder's output layer spans the tokenizer's whole vocabulary (30,522 WordPiece tokens for
all-MiniLM-L6-v2) at every caption position: on a CPU it is most of a pretraining step, although template
captions use about a thousand of those tokens and the loss can only teach the rest to stay unlikely.
Trimming keeps the tokens that occur in the training captions (cut to `max_text_length`) and the special
tokens, in their original order, and shrinks the tokenizer, the decoder's (tied) embeddings and output
layer and the text tower's word embeddings alike, so the saved model and tokenizer stay consistent.

WordPiece takes the longest matching piece, and every piece of the training captions is kept, so the trimmed
tokenizer splits those captions exactly as before (checked); other text may fall back to `[UNK]` more often.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from modeling_esi import EsiModel


def caption_token_ids(tokenizer, captions: list[str], max_length: int, chunk: int = 4096) -> np.ndarray:
    """Sorted ids of the tokens the captions use (as the collator cuts them) and of every special token."""
    used = set(tokenizer.all_special_ids)
    for start in range(0, len(captions), chunk):
        ids = tokenizer(list(captions[start : start + chunk]), truncation=True, max_length=max_length)["input_ids"]
        used.update(token for row in ids for token in row)
    return np.array(sorted(used), dtype=np.int64)


def trimmed_tokenizer(tokenizer, kept: np.ndarray, captions: list[str], max_length: int):
    """A tokenizer of the same class over the `kept` tokens, renumbered 0..len(kept)-1 in their original order;
    raises if it does not split `captions` into the same tokens as `tokenizer`."""
    tokens = tokenizer.convert_ids_to_tokens(kept.tolist())
    trimmed = type(tokenizer)(
        vocab={token: index for index, token in enumerate(tokens)},
        do_lower_case=getattr(tokenizer, "do_lower_case", True),
        model_max_length=tokenizer.model_max_length,
    )
    renumber = np.full(len(tokenizer), -1, dtype=np.int64)
    renumber[kept] = np.arange(len(kept))
    for start in range(0, len(captions), 4096):
        chunk = list(captions[start : start + 4096])
        before = tokenizer(chunk, truncation=True, max_length=max_length)["input_ids"]
        after = trimmed(chunk, truncation=True, max_length=max_length)["input_ids"]
        for caption, old, new in zip(chunk, before, after, strict=True):
            if renumber[old].tolist() != new:
                raise ValueError(f"the trimmed vocabulary splits this caption differently: {caption[:120]!r}")
    return trimmed


def _rows(embedding: nn.Embedding, kept: torch.Tensor) -> nn.Embedding:
    trimmed = nn.Embedding(len(kept), embedding.embedding_dim, padding_idx=None)
    trimmed.weight = nn.Parameter(embedding.weight.detach()[kept].clone(), requires_grad=embedding.weight.requires_grad)
    return trimmed


def trim_model_vocabulary(model: EsiModel, kept: np.ndarray) -> None:
    """Keep the `kept` rows of the decoder's tied embeddings / output layer and of the tower's word embeddings;
    the special token ids of the config follow their tokens."""
    index = torch.as_tensor(kept)
    decoder = model.text_decoder
    decoder.embed_tokens = _rows(decoder.embed_tokens, index)
    decoder.lm_head = nn.Linear(decoder.embed_tokens.embedding_dim, len(kept), bias=False)
    decoder.lm_head.weight = decoder.embed_tokens.weight  # tied, as the model's _tied_weights_keys declare
    tower = model.text_model.embeddings
    tower.word_embeddings = _rows(tower.word_embeddings, index)
    renumber = {int(old): new for new, old in enumerate(kept)}
    config = model.config
    config.text_config.vocab_size = len(kept)
    config.pad_token_id, config.bos_token_id, config.eos_token_id = (
        renumber[config.pad_token_id],
        renumber[config.bos_token_id],
        renumber[config.eos_token_id],
    )
