"""ESI: an ECG encoder trained against cardiology text with a contrastive (CLIP) and a captioning (CoCa) loss.

Research software, not a diagnostic device.
"""

from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn
import torch.nn.functional as F
from torch import nn
from transformers import BertConfig, BertModel, GenerationMixin, PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.cache_utils import Cache, DynamicCache
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPooling, SequenceClassifierOutput
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.utils import ModelOutput, can_return_tuple

from .configuration_esi import EsiConfig, EsiDecoderConfig, EsiEcgConfig

# Imported (not only named in the config) so that save_pretrained ships pipeline_esi.py with this file.
from .pipeline_esi import ESI_CUSTOM_PIPELINES


@dataclass
class EsiEcgEncoderOutput(BaseModelOutputWithPooling):
    """
    last_hidden_state (`(B, N, C)`): ECG token sequence after the final LayerNorm (N time steps).
    pooler_output (`(B, C)`): masked mean of `last_hidden_state` over valid tokens; in the output of
        `EsiModel.get_ecg_features`, its projection into the shared space (`(B, projection_dim)`).
    hidden_states (`tuple` of `(B, N_s, C_s)`, *optional*): the output of the stem and of every stage.
    attentions: always None (the ECG encoder is convolutional).
    token_mask (`(B, N)`, *optional*): which tokens overlap valid input samples (when a mask was given).
    """

    token_mask: torch.BoolTensor | None = None


@dataclass
class EsiOutput(ModelOutput):
    """
    loss (`()`): `contrastive_loss_weight * contrastive_loss + caption_loss_weight * caption_loss`.
    contrastive_loss (`()`): symmetric InfoNCE between ECG and text embeddings (gathered over processes); pairs
        with the same text are positives of each other (`config.same_text_positives`, `text_ids`).
    caption_loss (`()`): next-token cross-entropy of the caption decoder (padding ignored).
    logits_per_ecg (`(B, B_global)`), logits_per_text (`(B, B_global)`): scaled cosine similarities of the local
        rows against all columns (B_global = world size x B under torch.distributed with `return_loss=True`,
        else B: without a loss nothing is gathered).
    ecg_embeds (`(B, projection_dim)`), text_embeds (`(B, projection_dim)`): L2-normalised embeddings.
    caption_logits (`(B, L-1, vocab)`): decoder logits for tokens 1..L-1; only without `return_loss` (the caption
        loss computes logits at target positions only, never over the padded `(B, L-1, vocab)` block).
    ecg_last_hidden_state (`(B, N, C)`), ecg_pooler_output (`(B, C)`): ECG encoder outputs.
    text_last_hidden_state (`(B, L, H)`): text encoder output.
    ecg_hidden_states, text_hidden_states (`tuple`, *optional*): per-stage / per-layer states.
    decoder_hidden_states (`tuple` of `(B, L-1, D)`, *optional*): the caption decoder's embeddings and layers.
    text_attentions, decoder_attentions, cross_attentions (`tuple`, *optional*): per-layer attention weights
        of the text tower, the decoder's self-attention and its cross-attention to the ECG tokens.
    """

    loss: torch.FloatTensor | None = None
    contrastive_loss: torch.FloatTensor | None = None
    caption_loss: torch.FloatTensor | None = None
    logits_per_ecg: torch.FloatTensor | None = None
    logits_per_text: torch.FloatTensor | None = None
    ecg_embeds: torch.FloatTensor | None = None
    text_embeds: torch.FloatTensor | None = None
    caption_logits: torch.FloatTensor | None = None
    ecg_last_hidden_state: torch.FloatTensor | None = None
    ecg_pooler_output: torch.FloatTensor | None = None
    text_last_hidden_state: torch.FloatTensor | None = None
    ecg_hidden_states: tuple[torch.FloatTensor, ...] | None = None
    text_hidden_states: tuple[torch.FloatTensor, ...] | None = None
    text_attentions: tuple[torch.FloatTensor, ...] | None = None
    decoder_attentions: tuple[torch.FloatTensor, ...] | None = None
    cross_attentions: tuple[torch.FloatTensor, ...] | None = None
    decoder_hidden_states: tuple[torch.FloatTensor, ...] | None = None


def masked_mean(hidden: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean of `hidden` (B, N, C) over N where `mask` (B, N) is true; plain mean without a mask."""
    if mask is None:
        return hidden.mean(dim=1)
    weights = mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)


# ---------------------------------------------------------------------------------------------------------------
# ECG encoders. Both work on (B, C, T) and hand the final (B, N, C) token sequence to `EsiEcgEncoder`.
# ---------------------------------------------------------------------------------------------------------------


def conv_output_lengths(lengths: torch.Tensor, conv: nn.Conv1d) -> torch.Tensor:
    """Valid output length of `conv` for inputs whose first `lengths` samples are valid: the length the same
    convolution gives on the unpadded input, so every valid output position sees only real samples and the
    zeros the unpadded convolution would also pad with."""
    (kernel,), (stride,), (padding,), (dilation,) = conv.kernel_size, conv.stride, conv.padding, conv.dilation
    return ((lengths + 2 * padding - dilation * (kernel - 1) - 1).div(stride, rounding_mode="floor") + 1).clamp(min=0)


def unwrapped(layer: nn.Module) -> nn.Module:
    """The layer an adapter wraps (PEFT's LoRA keeps it as `base_layer`), or the layer itself: lengths follow the
    wrapped convolution's kernel, stride and padding."""
    return getattr(layer, "base_layer", layer)


def lengths_to_mask(lengths: torch.Tensor, size: int) -> torch.Tensor:
    """(B,) valid lengths -> (B, size) boolean mask of the valid prefix."""
    return torch.arange(size, device=lengths.device)[None] < lengths[:, None]


def _zero_padding(hidden: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Zero the padded time steps of a (B, C, N) tensor; `mask` is (B, N) boolean or None (no padding)."""
    return hidden if mask is None else hidden * mask[:, None].to(hidden.dtype)


class EsiPatchConv1d(nn.Conv1d):
    """A convolution over non-overlapping windows (kernel == stride, no padding): the patchify stem and the
    downsampling layers. (B, C_in, T) -> (B, C_out, T // kernel).

    Same parameters as `nn.Conv1d` (checkpoints load unchanged), computed as one matrix product over the windows:
    torch's oneDNN bfloat16 CPU convolution gives wrong results for some of these shapes (12 -> 40 channels with
    kernel 8: cosine ~0.2 to float32), while the matrix product is right in every dtype."""

    def __init__(self, *args, **kwargs):
        # nn.Conv1d's signature: PEFT's LoRA builds its low-rank convolutions as the wrapped layer's class.
        super().__init__(*args, **kwargs)
        if self.stride != self.kernel_size or self.padding != (0,) or self.dilation != (1,) or self.groups != 1:
            raise ValueError(f"EsiPatchConv1d needs stride == kernel and no padding, dilation or groups: {self}")

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        (kernel,) = self.kernel_size
        windows = hidden.shape[-1] // kernel
        # (B, C_in, N * k) -> (B, N, C_in * k), flattened in the order of the weight's (C_in, k) axes.
        patches = hidden[..., : windows * kernel].unflatten(-1, (windows, kernel)).transpose(1, 2).flatten(2)
        return F.linear(patches, self.weight.flatten(1), self.bias).transpose(1, 2)


class EsiGRN(nn.Module):
    """ConvNeXt-V2 global response normalisation over time, channels-last input (B, N, C)."""

    def __init__(self, dim: int):
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(1, 1, dim))
        self.beta = nn.Parameter(torch.zeros(1, 1, dim))

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        # The global norm runs over valid time steps only, so padding cannot change a record's response.
        valid = hidden.float() if mask is None else hidden.float() * mask[:, :, None]
        # Norms in float32: bf16 sums of squares over hundreds of steps lose too much precision.
        global_norm = torch.linalg.vector_norm(valid, ord=2, dim=1, keepdim=True)
        relative = (global_norm / (global_norm.mean(dim=-1, keepdim=True) + 1e-6)).to(hidden.dtype)
        return self.gamma * (hidden * relative) + self.beta + hidden


class EsiConvNextBlock(GradientCheckpointingLayer):
    """Depthwise conv -> LayerNorm -> pointwise MLP with GRN, residual. (B, C, T) -> (B, C, T).

    `mask` (B, T): valid time steps; the input must be zero elsewhere, and the output is zeroed there, so the
    depthwise convolution of the next block sees the same zeros as on the unpadded record."""

    def __init__(self, config: EsiEcgConfig, dim: int):
        super().__init__()
        self.dwconv = nn.Conv1d(dim, dim, config.kernel_size, padding=config.kernel_size // 2, groups=dim)
        self.layernorm = nn.LayerNorm(dim, eps=config.layer_norm_eps)
        self.pwconv1 = nn.Linear(dim, config.mlp_ratio * dim)
        self.act = nn.GELU()
        self.grn = EsiGRN(config.mlp_ratio * dim)
        self.pwconv2 = nn.Linear(config.mlp_ratio * dim, dim)

    def output_length(self, length: int) -> int:
        return length

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        residual = hidden
        hidden = self.dwconv(hidden).transpose(1, 2)
        hidden = self.pwconv2(self.grn(self.act(self.pwconv1(self.layernorm(hidden))), mask))
        return _zero_padding(residual + hidden.transpose(1, 2), mask)


class EsiChannelsLayerNorm(nn.LayerNorm):
    """LayerNorm over the channels of a (B, C, T) tensor."""

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return super().forward(hidden.transpose(1, 2)).transpose(1, 2)


class EsiStagedBackbone(nn.Module):
    """A stem followed by stages; subclasses build `self.stem` and `self.stages` (`nn.Sequential`s of layers
    and residual blocks)."""

    stem: nn.Sequential
    stages: nn.ModuleList

    def forward(
        self, input_values: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> tuple[list[torch.Tensor], torch.Tensor | None]:
        """(B, C_in, T) and valid lengths (B,) -> channels-last outputs of the stem and each stage (B, N_s, C_s),
        and the valid lengths of the last one. Padded time steps are zero after every layer.

        The returned states are the tensors the next stage reads, so gradients reach them (saliency)."""
        hidden, lengths = self._run(self.stem, input_values, lengths)
        states = [hidden.transpose(1, 2)]
        for stage in self.stages:
            hidden, lengths = self._run(stage, states[-1].transpose(1, 2), lengths)
            states.append(hidden.transpose(1, 2))
        return states, lengths

    def _run(
        self, layers: nn.Sequential, hidden: torch.Tensor, lengths: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        for layer in layers:
            if isinstance(layer, nn.Sequential):
                hidden, lengths = self._run(layer, hidden, lengths)
            elif isinstance(layer, (EsiConvNextBlock, EsiResNetBlock)):
                if lengths is not None and isinstance(layer, EsiResNetBlock):
                    lengths = conv_output_lengths(lengths, unwrapped(layer.conv1))
                mask = None if lengths is None else lengths_to_mask(lengths, layer.output_length(hidden.shape[-1]))
                hidden = layer(hidden, mask)
            else:
                hidden = layer(hidden)
                if lengths is not None:
                    if isinstance(unwrapped(layer), nn.Conv1d):
                        lengths = conv_output_lengths(lengths, unwrapped(layer))
                    # Biases, norms and activations make zeros non-zero: re-zero the padding after each layer.
                    hidden = _zero_padding(hidden, lengths_to_mask(lengths, hidden.shape[-1]))
        return hidden, lengths


class EsiConvNextEncoder(EsiStagedBackbone):
    """1-D ConvNeXt-V2: patchify stem, then stages separated by LayerNorm + stride-2 convolutions."""

    def __init__(self, config: EsiEcgConfig):
        super().__init__()
        widths = config.hidden_sizes
        self.stem = nn.Sequential(
            EsiPatchConv1d(config.in_channels, widths[0], config.stem_stride, stride=config.stem_stride),
            EsiChannelsLayerNorm(widths[0], eps=config.layer_norm_eps),
        )
        self.stages = nn.ModuleList()
        for index, (depth, width) in enumerate(zip(config.depths, widths, strict=True)):
            downsample = (
                nn.Sequential(
                    EsiChannelsLayerNorm(widths[index - 1], eps=config.layer_norm_eps),
                    EsiPatchConv1d(widths[index - 1], width, 2, stride=2),
                )
                if index > 0
                else nn.Identity()
            )
            self.stages.append(nn.Sequential(downsample, *(EsiConvNextBlock(config, width) for _ in range(depth))))


class EsiResNetBlock(GradientCheckpointingLayer):
    """1-D basic residual block (two convolutions with BatchNorm). (B, C_in, T) -> (B, C_out, T / stride).

    `mask` (B, T / stride): valid output steps (eval-mode BatchNorm is per step, so masking makes padding
    invisible at inference; in training mode BatchNorm's batch statistics still see padded steps)."""

    def __init__(self, config: EsiEcgConfig, in_dim: int, out_dim: int, stride: int):
        super().__init__()
        padding = config.kernel_size // 2
        self.conv1 = nn.Conv1d(in_dim, out_dim, config.kernel_size, stride=stride, padding=padding, bias=False)
        self.norm1 = nn.BatchNorm1d(out_dim)
        self.conv2 = nn.Conv1d(out_dim, out_dim, config.kernel_size, padding=padding, bias=False)
        self.norm2 = nn.BatchNorm1d(out_dim)
        self.shortcut = (
            nn.Sequential(nn.Conv1d(in_dim, out_dim, 1, stride=stride, bias=False), nn.BatchNorm1d(out_dim))
            if stride != 1 or in_dim != out_dim
            else nn.Identity()
        )

    def output_length(self, length: int) -> int:
        return int(conv_output_lengths(torch.tensor([length]), unwrapped(self.conv1)))

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        out = _zero_padding(F.relu(self.norm1(self.conv1(hidden))), mask)
        return _zero_padding(F.relu(self.norm2(self.conv2(out)) + self.shortcut(hidden)), mask)


class EsiResNetEncoder(EsiStagedBackbone):
    """1-D ResNet: strided stem, then stages of basic blocks; each stage after the first halves the time axis."""

    def __init__(self, config: EsiEcgConfig):
        super().__init__()
        widths = config.hidden_sizes
        self.stem = nn.Sequential(
            EsiPatchConv1d(config.in_channels, widths[0], config.stem_stride, stride=config.stem_stride, bias=False),
            nn.BatchNorm1d(widths[0]),
            nn.ReLU(),
        )
        self.stages = nn.ModuleList()
        in_dim = widths[0]
        for index, (depth, width) in enumerate(zip(config.depths, widths, strict=True)):
            blocks = [EsiResNetBlock(config, in_dim, width, stride=1 if index == 0 else 2)]
            blocks += [EsiResNetBlock(config, width, width, stride=1) for _ in range(depth - 1)]
            self.stages.append(nn.Sequential(*blocks))
            in_dim = width


def valid_lengths(ecg_attention_mask: torch.Tensor, num_samples: int) -> torch.Tensor:
    """(B, T) mask of a right-padded batch -> valid lengths (B,). Raises unless each row is ones then zeros."""
    if ecg_attention_mask.dim() != 2 or ecg_attention_mask.shape[1] != num_samples:
        raise ValueError(
            f"ecg_attention_mask must be (batch, {num_samples} samples), got {tuple(ecg_attention_mask.shape)}"
        )
    mask = ecg_attention_mask.bool()
    lengths = mask.sum(dim=1)
    bad = (mask != lengths_to_mask(lengths, num_samples)).any(dim=1).nonzero().flatten().tolist()
    if bad:
        raise ValueError(
            f"ecg_attention_mask rows {bad} are not right padding (ones, then zeros); the encoder needs each "
            "record's valid samples first (EsiFeatureExtractor pads on the right)"
        )
    return lengths


class EsiEcgEncoder(nn.Module):
    """ECG tower: backbone + final LayerNorm. (B, 12, T) -> tokens (B, N, C) and pooled (B, C).

    With `ecg_attention_mask` (right padding), every layer ignores padded samples: a padded record embeds as the
    same record unpadded (up to float rounding; for ResNet encoders in eval mode)."""

    def __init__(self, config: EsiEcgConfig):
        super().__init__()
        self.config = config
        backbone = EsiConvNextEncoder if config.architecture == "convnextv2" else EsiResNetEncoder
        self.backbone = backbone(config)
        self.layernorm = nn.LayerNorm(config.hidden_sizes[-1], eps=config.layer_norm_eps)

    def forward(
        self,
        input_values: torch.Tensor,
        ecg_attention_mask: torch.Tensor | None = None,
        output_hidden_states: bool = False,
    ) -> EsiEcgEncoderOutput:
        if input_values.dim() != 3 or input_values.shape[1] != self.config.in_channels:
            raise ValueError(
                f"input_values must be (batch, {self.config.in_channels} leads, time), got {tuple(input_values.shape)}"
            )
        lengths = None
        if ecg_attention_mask is not None:
            lengths = valid_lengths(ecg_attention_mask, input_values.shape[-1])
            input_values = _zero_padding(input_values, lengths_to_mask(lengths, input_values.shape[-1]))
        states, lengths = self.backbone(input_values, lengths)
        tokens = self.layernorm(states[-1])
        token_mask = None if lengths is None else lengths_to_mask(lengths, tokens.shape[1])
        return EsiEcgEncoderOutput(
            last_hidden_state=tokens,
            pooler_output=masked_mean(tokens, token_mask),
            token_mask=token_mask,
            hidden_states=tuple(states) if output_hidden_states else None,
        )


# ---------------------------------------------------------------------------------------------------------------
# Caption decoder: causal self-attention over caption tokens, cross-attention to the ECG token sequence.
# ---------------------------------------------------------------------------------------------------------------


def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float = 1.0,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention from the explicit scores. query (B, heads, L, d), key and value (B, heads, S, d), boolean
    `attention_mask` broadcastable to (B, heads, L, S), True = may attend -> output (B, L, heads, d) (the layout
    of transformers' attention functions) and the weights (B, heads, L, S)."""
    scores = query @ key.transpose(-1, -2) * scaling
    if attention_mask is not None:
        scores = scores.masked_fill(~attention_mask, float("-inf"))
    weights = scores.softmax(dim=-1)
    attended = F.dropout(weights, dropout, module.training) @ value
    return attended.transpose(1, 2), weights


class EsiAttention(nn.Module):
    """Multi-head attention; `mask` is boolean, True = may attend. Self-attention keys/values go through a
    `Cache` during generation (`layer_idx` is the layer's slot in it).

    `config._attn_implementation` picks the kernel through transformers' attention interface: `"sdpa"` (torch's
    `scaled_dot_product_attention`) or `"eager"` (`eager_attention_forward`, which is also used whenever the
    weights are asked for: SDPA does not return them)."""

    # Masks are always explicit (causal and padding for self-attention, valid ECG tokens for cross-attention).
    is_causal = False

    def __init__(self, config: EsiDecoderConfig, kv_dim: int | None = None, layer_idx: int | None = None):
        super().__init__()
        self.config = config
        self.num_heads = config.num_attention_heads
        self.scaling = (config.hidden_size // config.num_attention_heads) ** -0.5
        self.dropout = config.dropout
        self.layer_idx = layer_idx
        kv_dim = kv_dim or config.hidden_size
        self.q_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.k_proj = nn.Linear(kv_dim, config.hidden_size)
        self.v_proj = nn.Linear(kv_dim, config.hidden_size)
        self.out_proj = nn.Linear(config.hidden_size, config.hidden_size)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(-1, (self.num_heads, -1)).transpose(1, 2)  # (B, L, D) -> (B, heads, L, D/heads)

    def forward(
        self,
        hidden: torch.Tensor,
        context: torch.Tensor,
        mask: torch.Tensor | None,
        cache: Cache | None = None,
        output_attentions: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """hidden (B, L, D), context (B, S, kv_dim), mask broadcastable to (B, heads, L, S') -> (B, L, D) and,
        with `output_attentions`, the attention weights (B, heads, L, S')."""
        query, key, value = (
            self._heads(self.q_proj(hidden)),
            self._heads(self.k_proj(context)),
            self._heads(self.v_proj(context)),
        )
        if cache is not None:
            key, value = cache.update(key, value, self.layer_idx)
        implementation = "eager" if output_attentions else self.config._attn_implementation
        attention = ALL_ATTENTION_FUNCTIONS.get_interface(implementation, eager_attention_forward)
        attended, weights = attention(
            self, query, key, value, mask, dropout=self.dropout if self.training else 0.0, scaling=self.scaling
        )
        return self.out_proj(attended.flatten(2)), weights if output_attentions else None


class EsiDecoderLayer(GradientCheckpointingLayer):
    """Pre-norm transformer decoder layer: causal self-attention, ECG cross-attention, MLP."""

    def __init__(self, config: EsiDecoderConfig, ecg_dim: int, layer_idx: int):
        super().__init__()
        self.self_attn_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.self_attn = EsiAttention(config, layer_idx=layer_idx)
        self.cross_attn_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.cross_attn = EsiAttention(config, kv_dim=ecg_dim)
        self.mlp_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = nn.Sequential(
            nn.Linear(config.hidden_size, config.intermediate_size),
            ACT2FN[config.hidden_act],
            nn.Linear(config.intermediate_size, config.hidden_size),
            nn.Dropout(config.dropout),
        )

    def forward(
        self,
        hidden: torch.Tensor,
        ecg_tokens: torch.Tensor,
        self_mask: torch.Tensor,
        cross_mask: torch.Tensor | None,
        cache: Cache | None = None,
        output_attentions: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        normed = self.self_attn_norm(hidden)
        attended, self_weights = self.self_attn(normed, normed, self_mask, cache, output_attentions)
        hidden = hidden + attended
        # Cross-attention keys are recomputed each step: N ECG tokens (15 for 10 s) cost less than a cache slot.
        attended, cross_weights = self.cross_attn(
            self.cross_attn_norm(hidden), ecg_tokens, cross_mask, output_attentions=output_attentions
        )
        hidden = hidden + attended
        return hidden + self.mlp(self.mlp_norm(hidden)), self_weights, cross_weights


@dataclass
class EsiDecoderOutput(ModelOutput):
    """logits (`(B, L, vocab)`, *optional*); last_hidden_state (`(B, L, D)`): the final-normed states the output
    layer reads; hidden_states (embeddings + each layer, `(B, L, D)`); attentions and cross_attentions (per
    layer, `(B, heads, L, past + L)` and `(B, heads, L, N)`)."""

    logits: torch.FloatTensor | None = None
    last_hidden_state: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None
    cross_attentions: tuple[torch.FloatTensor, ...] | None = None


class EsiCaptionDecoder(nn.Module):
    """Token ids (B, L) + ECG tokens (B, N, C) -> next-token logits (B, L, vocab)."""

    def __init__(self, config: EsiDecoderConfig, vocab_size: int, ecg_dim: int):
        super().__init__()
        self.config = config
        self.embed_tokens = nn.Embedding(vocab_size, config.hidden_size)
        self.embed_positions = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.layers = nn.ModuleList(
            EsiDecoderLayer(config, ecg_dim, index) for index in range(config.num_hidden_layers)
        )
        self.final_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.lm_head = nn.Linear(config.hidden_size, vocab_size, bias=False)

    def forward(
        self,
        input_ids: torch.Tensor,
        ecg_tokens: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        ecg_token_mask: torch.Tensor | None = None,
        cache: Cache | None = None,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
        return_logits: bool = True,
    ) -> EsiDecoderOutput:
        """`attention_mask` covers the cached tokens and the new ones (B, past + L); `cache` holds the
        self-attention keys/values of the `past` tokens already decoded. `return_logits=False` skips the output
        layer (a loss applies it to the positions it scores: see `caption_loss`)."""
        length = input_ids.shape[1]
        past = cache.get_seq_length() if cache is not None else 0
        if past + length > self.config.max_position_embeddings:
            raise ValueError(
                f"caption of {past + length} tokens exceeds the decoder's max_position_embeddings "
                f"({self.config.max_position_embeddings}); truncate when tokenising (or lower max_new_tokens)"
            )
        positions = torch.arange(past, past + length, device=input_ids.device)
        hidden = self.embed_tokens(input_ids) + self.embed_positions(positions)
        keys = torch.arange(past + length, device=input_ids.device)
        diagonal = keys[None] == positions[:, None]
        self_mask = (keys[None] <= positions[:, None])[None, None]
        if attention_mask is not None:
            # Padding keys are hidden; the diagonal stays visible so no query row is fully masked.
            self_mask = self_mask & (attention_mask.bool()[:, None, None, -(past + length) :] | diagonal)
        cross_mask = ecg_token_mask[:, None, None, :] if ecg_token_mask is not None else None
        all_hidden, self_weights, cross_weights = [hidden], [], []
        for layer in self.layers:
            hidden, attn, cross = layer(hidden, ecg_tokens, self_mask, cross_mask, cache, output_attentions)
            all_hidden.append(hidden)
            self_weights.append(attn)
            cross_weights.append(cross)
        hidden = self.final_norm(hidden)
        return EsiDecoderOutput(
            logits=self.lm_head(hidden) if return_logits else None,
            last_hidden_state=hidden,
            hidden_states=tuple(all_hidden) if output_hidden_states else None,
            attentions=tuple(self_weights) if output_attentions else None,
            cross_attentions=tuple(cross_weights) if output_attentions else None,
        )


# ---------------------------------------------------------------------------------------------------------------
# Losses
# ---------------------------------------------------------------------------------------------------------------


def gather_with_grad(local: torch.Tensor) -> tuple[torch.Tensor, int]:
    """All ranks' rows (world x B, D) with autograd through the gather, and this rank's index.

    Without an initialised process group (or with one process) the input is returned as is.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return local, 0
    return torch.cat(dist_fn.all_gather(local), dim=0), dist.get_rank()


def gather_ids(local: torch.Tensor) -> torch.Tensor:
    """All ranks' ids (world x B,), in rank order, without autograd; the input itself without a process group."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return local
    parts = [torch.empty_like(local) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, local.contiguous())
    return torch.cat(parts)


# Two primes below 2**31 and a base for `text_identity`'s polynomial hashes: a row's sum of up to 2**13 terms, each
# a token id (< 2**18) times a power (< 2**31), stays below 2**62, inside int64.
TEXT_HASH_MODULI = (2_147_483_629, 2_147_483_587)
TEXT_HASH_BASE = 1_000_003


def text_identity(input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.LongTensor:
    """Per-row text identity of right-padded token ids: (B, L) -> (B,) int64, equal for rows with the same tokens.

    Two polynomial hashes of the non-padding tokens (modulo two ~2**31 primes, packed into one int64), computed
    on the ids' device, so they can be compared across processes and batches: different texts collide with a
    probability of about (L / 2**31)**2 per pair. Padding (and how much of it there is) does not matter.
    """
    ids = input_ids.long() if attention_mask is None else input_ids.long() * attention_mask.long()
    hashes = []
    for modulus in TEXT_HASH_MODULI:
        powers = torch.tensor([pow(TEXT_HASH_BASE, k, modulus) for k in range(ids.shape[1])], device=ids.device)
        hashes.append((ids * powers).sum(dim=1) % modulus)
    return hashes[0] * 2**31 + hashes[1]


def multi_positive_nll(logits: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
    """Mean over rows of -log(softmax mass on the row's positives): (B, N) logits, (B, N) bool -> `()`.

    With one positive per row this is cross-entropy; with several, any of them counts as the match, so identical
    texts are never pushed apart as negatives. Every row needs at least one positive."""
    logits = logits.float()
    return (logits.logsumexp(dim=1) - logits.masked_fill(~positives, float("-inf")).logsumexp(dim=1)).mean()


def contrastive_loss(
    ecg_embeds: torch.Tensor,
    text_embeds: torch.Tensor,
    logit_scale: torch.Tensor,
    text_ids: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Symmetric (multi-positive) InfoNCE of local rows against all processes' columns (open_clip's local loss).

    ecg_embeds, text_embeds: (B, D), L2-normalised. text_ids (`(B,)` int64, *optional*): which text each pair
    carries (e.g. `text_identity(input_ids, attention_mask)`, or any id that is equal exactly when the texts are);
    gathered from every process like the embeddings. A pair is positive when it is the ECG's own pair or its text
    id equals the ECG's, and each direction scores -log of the softmax mass on the positives (`multi_positive_nll`).
    Without `text_ids` only the own pair is positive: CLIP's InfoNCE.
    Returns (loss `()`, logits_per_ecg (B, W*B), logits_per_text (B, W*B)). Averaged over processes (as DDP
    does), the gradients equal those of one process holding the whole batch.
    """
    all_ecg, rank = gather_with_grad(ecg_embeds)
    all_text, _ = gather_with_grad(text_embeds)
    logits_per_ecg = logit_scale * ecg_embeds @ all_text.t()
    logits_per_text = logit_scale * text_embeds @ all_ecg.t()
    batch = ecg_embeds.shape[0]
    own = torch.arange(batch, device=ecg_embeds.device) + rank * batch
    positives = F.one_hot(own, logits_per_ecg.shape[1]).bool()
    if text_ids is not None:
        positives |= text_ids[:, None] == gather_ids(text_ids)[None, :]
    loss = (multi_positive_nll(logits_per_ecg, positives) + multi_positive_nll(logits_per_text, positives)) / 2
    return loss, logits_per_ecg, logits_per_text


def caption_targets(input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """Labels for tokens 1..L-1 (B, L-1), padding replaced by -100 so cross-entropy ignores it."""
    labels = input_ids[:, 1:].clone()
    if attention_mask is not None:
        labels = labels.masked_fill(attention_mask[:, 1:] == 0, -100)
    return labels


class TargetCrossEntropy(torch.autograd.Function):
    """Mean cross-entropy of logits (K, V) at their target ids (K,): the value of `F.cross_entropy(logits, targets)`.

    The backward is `(softmax(logits) - one_hot(targets)) / K` computed from the saved log-probabilities in one
    pass, where `F.cross_entropy`'s fills a (K, V) zero gradient for the NLL and then runs the log-softmax
    backward over it, which with a 30,522-token vocabulary was a large share of a CPU pretraining step
    (`python -m benchmarks.bench_train --profile-step`). Not twice differentiable."""

    @staticmethod
    def forward(ctx, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        log_probs = logits.log_softmax(dim=-1)
        ctx.save_for_backward(log_probs, targets)
        return -log_probs.gather(1, targets[:, None]).mean()

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        log_probs, targets = ctx.saved_tensors
        gradient = log_probs.exp()  # not in place: the saved tensor must survive a backward with retain_graph
        gradient[torch.arange(len(targets), device=targets.device), targets] -= 1
        return gradient.mul_(grad / len(targets)), None


def caption_loss(hidden: torch.Tensor, lm_head: nn.Module, labels: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy, with the output layer applied only where there is a target.

    hidden (B, L, D): the decoder's `last_hidden_state`; labels (B, L): target ids, -100 where ignored (padding).
    The K target positions are gathered before `lm_head`, so the logits are (K, vocab) instead of (B, L, vocab):
    padded positions cost nothing. The value is the mean over the K targets, the same as cross-entropy over the
    full logits with `ignore_index=-100`. Returns a scalar (`()`).
    """
    targets = labels != -100
    logits = lm_head(hidden[targets])
    return TargetCrossEntropy.apply(logits.float(), labels[targets])


# ---------------------------------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------------------------------


ESI_AUTO_MAP = {
    "AutoModel": "modeling_esi.EsiModel",
    "AutoModelForSequenceClassification": "modeling_esi.EsiForEcgClassification",
}


class EsiPreTrainedModel(PreTrainedModel):
    config_class = EsiConfig
    config: EsiConfig
    # The ECG encoder, which every head holds under this name (`model.base_model`).
    base_model_prefix = "ecg_model"
    main_input_name = "input_values"
    supports_gradient_checkpointing = True
    _supports_sdpa = True  # the text tower and the caption decoder; the classifier has no attention
    _no_split_modules = ["EsiConvNextBlock", "EsiResNetBlock", "EsiDecoderLayer", "BertLayer"]

    # The pipelines a saved folder registers (`custom_pipelines` in its config), where the class has them.
    _custom_pipelines: dict | None = None

    def __init__(self, config: EsiConfig):
        super().__init__(config)
        # The towers follow the implementation resolved for the whole model unless one was asked for them
        # (`attn_implementation={"decoder_config": "eager"}`): the caption decoder is a plain module, and the text
        # tower would otherwise pick its own default even where the model resolved to eager.
        for key in config.sub_configs:
            if getattr(config, key)._attn_implementation is None:
                getattr(config, key)._attn_implementation = config._attn_implementation

    def save_pretrained(self, save_directory, *args, **kwargs) -> None:
        # All ESI heads share one config and one code file: list every Auto class in `auto_map`, so a
        # pretraining folder also loads with AutoModelForSequenceClassification (and a classifier with AutoModel).
        # A class registered for AutoModel itself (the ECG-only model) then names itself there in `super()`.
        self.config.auto_map = {**(getattr(self.config, "auto_map", None) or {}), **ESI_AUTO_MAP}
        if self._custom_pipelines:
            self.config.custom_pipelines = self._custom_pipelines
        super().save_pretrained(save_directory, *args, **kwargs)

    def _init_weights(self, module: nn.Module) -> None:
        # Linear/Conv/Embedding/LayerNorm/BatchNorm: transformers' defaults (normal(0.02), ones/zeros).
        super()._init_weights(module)
        if isinstance(module, EsiGRN):
            init.zeros_(module.gamma)
            init.zeros_(module.beta)
        elif isinstance(module, EsiModel):
            init.constant_(module.logit_scale, self.config.logit_scale_init_value)

    def _output_flags(self, output_attentions: bool | None, output_hidden_states: bool | None) -> tuple[bool, bool]:
        """The call's `output_attentions` / `output_hidden_states`, or the config's where the call leaves them None."""
        return (
            bool(output_attentions if output_attentions is not None else self.config.output_attentions),
            bool(output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states),
        )

    def _encode_ecg(
        self, input_values: torch.Tensor, ecg_attention_mask: torch.Tensor | None, output_hidden_states: bool = False
    ) -> EsiEcgEncoderOutput:
        return self.ecg_model(input_values, ecg_attention_mask, output_hidden_states=output_hidden_states)


class _BertModelWithoutPooler(BertModel):
    """A BERT checkpoint's encoder without its pooler: ESI mean-pools the text tokens, so leaving a checkpoint's
    pooler weights unused is expected and not reported as unexpected keys when loading."""

    _keys_to_ignore_on_load_unexpected = [r"^pooler\."]


class EsiCaptionEmbeddingsMixin:
    """Input/output embeddings of a model holding the caption decoder (`text_decoder`); the two are tied."""

    text_decoder: EsiCaptionDecoder

    def get_input_embeddings(self) -> nn.Module:
        return self.text_decoder.embed_tokens

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.text_decoder.embed_tokens = value

    def get_output_embeddings(self) -> nn.Module:
        return self.text_decoder.lm_head

    def set_output_embeddings(self, value: nn.Module) -> None:
        self.text_decoder.lm_head = value


class EsiModel(EsiCaptionEmbeddingsMixin, EsiPreTrainedModel):
    r"""
    ESI pretraining model: ECG encoder, BERT text encoder and a causal caption decoder attending to the ECG tokens.

    The text tokenizer is BERT WordPiece (all-MiniLM-L6-v2's); save it beside the model with
    `tokenizer.save_pretrained(folder)` so `AutoTokenizer.from_pretrained(folder)` finds it. `EsiProcessor`
    (`AutoProcessor`) bundles tokenizer and feature extractor: `model(**processor(ecgs=..., text=...))`.
    Captions: `model.generate(input_values=..., ecg_attention_mask=..., generation_config=...)` (see
    [`EsiForEcgCaptioning`]).
    """

    _tied_weights_keys = {"text_decoder.lm_head.weight": "text_decoder.embed_tokens.weight"}
    _custom_pipelines = ESI_CUSTOM_PIPELINES

    def __init__(self, config: EsiConfig):
        super().__init__(config)
        ecg_dim = config.ecg_config.hidden_sizes[-1]
        self.ecg_model = EsiEcgEncoder(config.ecg_config)
        self.text_model = BertModel(config.text_config, add_pooling_layer=False)
        self.text_decoder = EsiCaptionDecoder(config.decoder_config, config.text_config.vocab_size, ecg_dim)
        self.ecg_projection = nn.Linear(ecg_dim, config.projection_dim, bias=False)
        self.text_projection = nn.Linear(config.text_config.hidden_size, config.projection_dim, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(config.logit_scale_init_value))
        self.post_init()

    @classmethod
    def from_text_pretrained(cls, text_model_path: str, config: EsiConfig | None = None, **config_kwargs) -> "EsiModel":
        """A new ESI model whose text tower starts from a BERT-family folder (e.g. the offline all-MiniLM-L6-v2).

        The folder's `BertConfig` replaces `config.text_config`; the other towers are randomly initialised.
        """
        config = config if config is not None else EsiConfig(**config_kwargs)
        config.text_config = BertConfig.from_pretrained(text_model_path)
        model = cls(config)
        pretrained = _BertModelWithoutPooler.from_pretrained(text_model_path, add_pooling_layer=False)
        model.text_model.load_state_dict(pretrained.state_dict())
        return model

    def resize_token_embeddings(self, new_num_tokens: int | None = None, *args, **kwargs) -> nn.Embedding:
        """Resize the caption decoder's embeddings and LM head (tied) and the text tower's word embeddings
        together: captions are tokenised once for both, so their vocabularies must stay equal."""
        embeddings = super().resize_token_embeddings(new_num_tokens, *args, **kwargs)
        self.text_model.resize_token_embeddings(embeddings.num_embeddings, *args, **kwargs)
        self.config.text_config.vocab_size = embeddings.num_embeddings
        return embeddings

    def _text_outputs(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        token_type_ids: torch.Tensor | None = None,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
    ):
        outputs = self.text_model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            output_hidden_states=output_hidden_states,
            output_attentions=output_attentions,
        )
        # Mean over real tokens, as sentence-transformers pools all-MiniLM-L6-v2.
        return outputs, masked_mean(outputs.last_hidden_state, attention_mask)

    @can_return_tuple
    def get_ecg_features(
        self,
        input_values: torch.FloatTensor,
        ecg_attention_mask: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        **kwargs,
    ) -> EsiEcgEncoderOutput | tuple:
        """The ECG tower's outputs with the projected embedding as `pooler_output`, as CLIP's `get_image_features`:
        (B, 12, T) -> `pooler_output` (B, projection_dim), not normalised; `last_hidden_state` (B, N, C),
        `token_mask` (B, N) and, with `output_hidden_states`, the stem and stage outputs.
        `model.get_ecg_features(**feature_extractor(...)).pooler_output` works (other keys, e.g. `lead_mask`, are
        ignored); `return_dict=False` gives the tuple."""
        _, output_hidden_states = self._output_flags(None, output_hidden_states)
        ecg = self._encode_ecg(input_values, ecg_attention_mask, output_hidden_states)
        ecg.pooler_output = self.ecg_projection(ecg.pooler_output)
        return ecg

    @can_return_tuple
    def get_text_features(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPooling | tuple:
        """The text tower's outputs with the projected embedding as `pooler_output`, as CLIP's `get_text_features`:
        (B, L) token ids -> `pooler_output` (B, projection_dim), not normalised (a projection of the mean over
        real tokens); `last_hidden_state` (B, L, H); per-layer `hidden_states` / `attentions` when asked.
        `model.get_text_features(**tokenizer(texts, return_tensors="pt")).pooler_output` works."""
        output_attentions, output_hidden_states = self._output_flags(output_attentions, output_hidden_states)
        text, pooled = self._text_outputs(
            input_ids, attention_mask, token_type_ids, output_hidden_states, output_attentions
        )
        return BaseModelOutputWithPooling(
            last_hidden_state=text.last_hidden_state,
            pooler_output=self.text_projection(pooled),
            hidden_states=text.hidden_states,
            attentions=text.attentions,
        )

    def clamped_logit_scale(self) -> torch.Tensor:
        """exp(logit_scale) with logit_scale clamped at `config.logit_scale_max` (CLIP caps it at 100)."""
        return self.logit_scale.clamp(max=self.config.logit_scale_max).exp()

    def forward(
        self,
        input_values: torch.FloatTensor,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        ecg_attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        return_loss: bool = True,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        text_ids: torch.LongTensor | None = None,
        **kwargs,
    ) -> EsiOutput | tuple:
        r"""
        input_values (`(B, 12, T)`): ECGs in `config.ecg_config.lead_names` order (see `EsiFeatureExtractor`).
        input_ids (`(B, L)`), attention_mask (`(B, L)`), token_type_ids (`(B, L)`, optional): BERT-tokenised
            captions, `[CLS] ... [SEP] [PAD]...`. The text encoder reads all of them; the decoder reads
            ids[:, :-1] and predicts ids[:, 1:].
        ecg_attention_mask (`(B, T)`): 1 for real samples, 0 for (right) padding, as the feature extractor returns.
        return_loss: compute the losses (needs `input_ids`). Only then are embeddings gathered across processes
            (a collective every rank must enter); without it, logits compare the local batch only, so inference
            inside a process group never blocks on other ranks. With it, `caption_logits` is not returned: the
            caption loss computes logits at target positions only (pass `return_loss=False` for the logits).
        output_attentions: text-tower and caption-decoder attention weights (the ECG encoder is convolutional).
        text_ids (`(B,)` int64, *optional*): text identity for the contrastive loss (see `contrastive_loss`): pairs
            with equal ids, on any process, are positives of each other. Without it and with
            `config.same_text_positives`, it is `text_identity(input_ids, attention_mask)` (same tokens, same text).
        """
        output_attentions, output_hidden_states = self._output_flags(output_attentions, output_hidden_states)
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        ecg = self._encode_ecg(input_values, ecg_attention_mask, output_hidden_states)
        ecg_embeds = F.normalize(self.ecg_projection(ecg.pooler_output), dim=-1)
        output = EsiOutput(
            ecg_embeds=ecg_embeds,
            ecg_last_hidden_state=ecg.last_hidden_state,
            ecg_pooler_output=ecg.pooler_output,
            ecg_hidden_states=ecg.hidden_states,
        )
        if input_ids is not None:
            decoded = self._add_text_outputs(
                output,
                ecg,
                input_ids,
                attention_mask,
                token_type_ids,
                return_loss,
                output_attentions,
                output_hidden_states,
            )
            self._logits_and_losses(output, input_ids, attention_mask, text_ids, decoded, return_loss)
        return output if return_dict else output.to_tuple()

    def _add_text_outputs(
        self,
        output: EsiOutput,
        ecg: EsiEcgEncoderOutput,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None,
        token_type_ids: torch.Tensor | None,
        return_loss: bool,
        output_attentions: bool,
        output_hidden_states: bool,
    ):
        """Set `output`'s text-tower and caption-decoder outputs; the decoder's output, for the caption loss."""
        text, text_pooled = self._text_outputs(
            input_ids, attention_mask, token_type_ids, output_hidden_states, output_attentions
        )
        output.text_embeds = F.normalize(self.text_projection(text_pooled), dim=-1)
        decoded = self.text_decoder(
            input_ids[:, :-1],
            ecg.last_hidden_state,
            attention_mask[:, :-1] if attention_mask is not None else None,
            ecg.token_mask,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_logits=not return_loss,
        )
        output.text_last_hidden_state = text.last_hidden_state
        output.text_hidden_states = text.hidden_states
        output.text_attentions = text.attentions
        output.decoder_attentions = decoded.attentions
        output.cross_attentions = decoded.cross_attentions
        output.decoder_hidden_states = decoded.hidden_states
        output.caption_logits = decoded.logits
        return decoded

    def _logits_and_losses(
        self,
        output: EsiOutput,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None,
        text_ids: torch.LongTensor | None,
        decoded,
        return_loss: bool,
    ) -> None:
        """Set `output`'s ECG-text logits and, with `return_loss`, its contrastive and caption losses and their
        weighted sum (the contrastive loss gathers embeddings across processes; see `forward`)."""
        logit_scale = self.clamped_logit_scale()
        if not return_loss:
            output.logits_per_ecg = logit_scale * output.ecg_embeds @ output.text_embeds.t()
            output.logits_per_text = output.logits_per_ecg.t()
            return
        if text_ids is None and self.config.same_text_positives:
            text_ids = text_identity(input_ids, attention_mask)
        output.contrastive_loss, output.logits_per_ecg, output.logits_per_text = contrastive_loss(
            output.ecg_embeds, output.text_embeds, logit_scale, text_ids
        )
        labels = caption_targets(input_ids, attention_mask)
        output.caption_loss = caption_loss(decoded.last_hidden_state, self.text_decoder.lm_head, labels)
        output.loss = (
            self.config.contrastive_loss_weight * output.contrastive_loss
            + self.config.caption_loss_weight * output.caption_loss
        )

    @torch.no_grad()
    def zero_shot_logits(
        self,
        input_values: torch.FloatTensor,
        class_input_ids: torch.LongTensor,
        class_attention_mask: torch.Tensor | None = None,
        ecg_attention_mask: torch.Tensor | None = None,
    ) -> torch.FloatTensor:
        """Cosine similarity x logit scale between ECGs (B, 12, T) and class prompts (K, L) -> (B, K)."""
        ecg = F.normalize(self.get_ecg_features(input_values, ecg_attention_mask).pooler_output, dim=-1)
        text = F.normalize(self.get_text_features(class_input_ids, class_attention_mask).pooler_output, dim=-1)
        return self.clamped_logit_scale() * ecg @ text.t()

    def captioner(self) -> "EsiForEcgCaptioning":
        """An [`EsiForEcgCaptioning`] view sharing this model's ECG encoder and decoder (no copy of weights)."""
        captioner = self.__dict__.get("_captioner")
        if captioner is None:
            with torch.device("meta"):
                captioner = EsiForEcgCaptioning(self.config)
            captioner.ecg_model, captioner.text_decoder = self.ecg_model, self.text_decoder
            # Kept out of `_modules`: the view must not add its (shared) weights to this model's state dict.
            self.__dict__["_captioner"] = captioner
        return captioner.train(self.training)

    def generate(self, input_values: torch.FloatTensor, ecg_attention_mask: torch.Tensor | None = None, **kwargs):
        """Captions through transformers' `GenerationMixin.generate` (greedy, beam search, sampling; KV cache):
        `model.generate(input_values, ecg_attention_mask, generation_config=GenerationConfig(num_beams=3))`.
        Returns token ids (B, <= 1 + max_new_tokens) starting with BOS (`[CLS]`); decode with
        `tokenizer.batch_decode(ids, skip_special_tokens=True)`."""
        return self.captioner().generate(input_values=input_values, ecg_attention_mask=ecg_attention_mask, **kwargs)

    def generate_caption(
        self,
        input_values: torch.FloatTensor,
        max_new_tokens: int = 64,
        num_beams: int = 1,
        ecg_attention_mask: torch.Tensor | None = None,
    ) -> torch.LongTensor:
        """Greedy (`num_beams=1`) or beam-search captions (shortcut for `generate`): (B, 12, T) -> token ids
        (B, <= 1 + max_new_tokens), padded with `[PAD]` after EOS (`[SEP]`)."""
        ids = self.generate(
            input_values, ecg_attention_mask, max_new_tokens=max_new_tokens, num_beams=num_beams, do_sample=False
        )
        # transformers' beam search fills finished beams with EOS when the pad id is 0 (falsy): pad after EOS.
        after_eos = (ids == self.config.eos_token_id).long().cumsum(dim=1).roll(1, dims=1) > 0
        after_eos[:, 0] = False
        return ids.masked_fill(after_eos, self.config.pad_token_id)


@dataclass
class EsiCaptioningOutput(ModelOutput):
    """
    loss (`()`, *optional*): next-token cross-entropy against `labels` (shifted inside, -100 ignored).
    logits (`(B, L, vocab)`): next-token logits for every input position.
    cache (`Cache`, *optional*): the decoder's self-attention keys/values, for the next generation step.
    ecg_last_hidden_state (`(B, N, C)`), ecg_token_mask (`(B, N)`, *optional*): the encoded ECG, reused by
        generation after the first step.
    hidden_states, attentions, cross_attentions: the decoder's (see `EsiDecoderOutput`).
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    cache: Cache | None = None
    ecg_last_hidden_state: torch.FloatTensor | None = None
    ecg_token_mask: torch.BoolTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None
    cross_attentions: tuple[torch.FloatTensor, ...] | None = None


class EsiForEcgCaptioning(EsiCaptionEmbeddingsMixin, EsiPreTrainedModel, GenerationMixin):
    r"""
    ECG encoder and caption decoder of ESI as a `GenerationMixin` model (as open_clip's CoCa generates).

    The ECG is encoded once, at the first step; later steps read it from the generation kwargs and the decoder's
    self-attention keys/values from a `DynamicCache`. Loads the two towers from an [`EsiModel`] folder
    (`EsiForEcgCaptioning.from_pretrained(folder)`), or use `EsiModel.generate`, which shares the weights.
    """

    main_input_name = "input_ids"  # the caption prompt (BOS when omitted); the ECG goes in as `input_values`
    _tied_weights_keys = {"text_decoder.lm_head.weight": "text_decoder.embed_tokens.weight"}
    _keys_to_ignore_on_load_unexpected = [r"^text_model\.", r"^(ecg|text)_projection\.", r"^logit_scale$"]

    def __init__(self, config: EsiConfig):
        super().__init__(config)
        ecg_dim = config.ecg_config.hidden_sizes[-1]
        self.ecg_model = EsiEcgEncoder(config.ecg_config)
        self.text_decoder = EsiCaptionDecoder(config.decoder_config, config.text_config.vocab_size, ecg_dim)
        self.post_init()
        # transformers' default of 20 tokens is far shorter than a caption; the decoder's limit is the cap
        # (a saved generation_config.json still overrides it on from_pretrained).
        self.generation_config.max_length = config.decoder_config.max_position_embeddings

    def forward(
        self,
        input_ids: torch.LongTensor,
        input_values: torch.FloatTensor | None = None,
        ecg_attention_mask: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        ecg_last_hidden_state: torch.FloatTensor | None = None,
        ecg_token_mask: torch.Tensor | None = None,
        cache: Cache | None = None,
        use_cache: bool | None = None,
        labels: torch.LongTensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> EsiCaptioningOutput | tuple:
        r"""
        input_ids (`(B, L)`): caption tokens so far (with a `cache`, only the new ones).
        input_values (`(B, 12, T)`) and ecg_attention_mask (`(B, T)`): the ECG, or its encoding
            `ecg_last_hidden_state` (`(B, N, C)`) and `ecg_token_mask` (`(B, N)`) from an earlier step.
        attention_mask (`(B, past + L)`): caption padding. labels (`(B, L)`): targets, shifted inside.
        """
        output_attentions, output_hidden_states = self._output_flags(output_attentions, output_hidden_states)
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        if ecg_last_hidden_state is None:
            if input_values is None:
                raise ValueError("pass the ECG as input_values (or its encoding as ecg_last_hidden_state)")
            ecg = self._encode_ecg(input_values, ecg_attention_mask)
            ecg_last_hidden_state, ecg_token_mask = ecg.last_hidden_state, ecg.token_mask
        # A cache only when asked (generate asks); a training pass has no use for one.
        use_cache = bool(use_cache)
        if use_cache and cache is None:
            cache = DynamicCache()
        decoded = self.text_decoder(
            input_ids,
            ecg_last_hidden_state,
            attention_mask,
            ecg_token_mask,
            cache if use_cache else None,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
        )
        loss = None
        if labels is not None:
            loss = self.loss_function(decoded.logits, labels, vocab_size=decoded.logits.shape[-1], **kwargs)
        output = EsiCaptioningOutput(
            loss=loss,
            logits=decoded.logits,
            cache=cache if use_cache else None,
            ecg_last_hidden_state=ecg_last_hidden_state,
            ecg_token_mask=ecg_token_mask,
            hidden_states=decoded.hidden_states,
            attentions=decoded.attentions,
            cross_attentions=decoded.cross_attentions,
        )
        return output if return_dict else output.to_tuple()

    def prepare_inputs_for_generation(self, input_ids: torch.LongTensor, **kwargs) -> dict:
        model_inputs = super().prepare_inputs_for_generation(input_ids, **kwargs)
        if model_inputs.get("ecg_last_hidden_state") is not None:
            # Encoded at the first step; the raw ECG is not read again.
            model_inputs.pop("input_values", None)
            model_inputs.pop("ecg_attention_mask", None)
        return model_inputs

    def _update_model_kwargs_for_generation(self, outputs, model_kwargs: dict, *args, **kwargs) -> dict:
        model_kwargs = super()._update_model_kwargs_for_generation(outputs, model_kwargs, *args, **kwargs)
        model_kwargs["ecg_last_hidden_state"] = outputs.ecg_last_hidden_state
        model_kwargs["ecg_token_mask"] = outputs.ecg_token_mask
        return model_kwargs


def lora_target_modules(model_or_config: "PreTrainedModel | EsiConfig | EsiEcgConfig") -> str:
    """PEFT LoRA `target_modules` (a full-match regex) for the ECG encoder of an ESI model or config.

    ConvNeXt-V2: the pointwise `nn.Linear` layers `pwconv1`/`pwconv2` of every block, the `nn.Conv1d` stem and
    the downsampling convolutions. ResNet: the stem and every block's convolutions (including 1x1 shortcuts).
    Depthwise convolutions are left out: PEFT's LoRA needs the rank to be divisible by a convolution's groups.
    BatchNorm and LayerNorm stay frozen; the classification head is trained in full (`modules_to_save`).
    """
    config = getattr(model_or_config, "config", model_or_config)
    config = getattr(config, "ecg_config", config)
    if config.architecture == "resnet1d":
        return r".*ecg_model\.backbone\.(stem\.0|stages\.\d+\.\d+\.(conv1|conv2|shortcut\.0))"
    return r".*ecg_model\.backbone\.(stem\.0|stages\.\d+\.0\.1|stages\.\d+\.\d+\.(pwconv1|pwconv2))"


# The targets for the default (ConvNeXt-V2) encoder.
LORA_TARGET_MODULES = lora_target_modules(EsiEcgConfig())


class EsiForEcgClassification(EsiPreTrainedModel):
    r"""
    ECG encoder with a linear head on the pooled embedding, for diagnosis / rhythm classification.

    Loads the pretrained ECG encoder from an [`EsiModel`] folder (shared submodule name `ecg_model`):
    `EsiForEcgClassification.from_pretrained(folder, num_labels=5, problem_type="multi_label_classification")`.
    `problem_type`: `"multi_label_classification"` (BCE on multi-hot float labels), `"single_label_classification"`
    (cross-entropy on class ids) or `"regression"` (MSE); inferred from the labels when unset. The loss is
    transformers' `ForSequenceClassification` loss (`loss_type`). Registered for
    `AutoModelForSequenceClassification`, transformers' conventional class for one prediction per input sequence.

    LoRA (PEFT): `LoraConfig(task_type=TaskType.SEQ_CLS, target_modules=lora_target_modules(model))`; the
    `SEQ_CLS` task type trains the `classifier` head in full (PEFT's `modules_to_save`).
    """

    _supports_sdpa = False  # convolutional: no attention to implement
    # Loading from an EsiModel folder: the text tower, decoder and projections are expected leftovers.
    _keys_to_ignore_on_load_unexpected = [
        r"^text_model\.",
        r"^text_decoder\.",
        r"^(ecg|text)_projection\.",
        r"^logit_scale$",
    ]

    def __init__(self, config: EsiConfig):
        super().__init__(config)
        self.ecg_model = EsiEcgEncoder(config.ecg_config)
        self.dropout = nn.Dropout(config.classifier_dropout)
        self.classifier = nn.Linear(config.ecg_config.hidden_sizes[-1], config.num_labels)
        self.encoder_frozen = False
        self.loss_type = "ForSequenceClassification"
        self.post_init()

    def freeze_encoder(self) -> None:
        """Linear probing: no gradients into the encoder, and its BatchNorm statistics (ResNet) stay fixed."""
        self.ecg_model.requires_grad_(False)
        self.encoder_frozen = True
        self.ecg_model.eval()

    def train(self, mode: bool = True) -> "EsiForEcgClassification":
        super().train(mode)
        if self.encoder_frozen:
            self.ecg_model.eval()
        return self

    def forward(
        self,
        input_values: torch.FloatTensor | None = None,
        labels: torch.Tensor | None = None,
        ecg_attention_mask: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        input_ids: None = None,
        inputs_embeds: None = None,
        attention_mask: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        **kwargs,
    ) -> SequenceClassifierOutput | tuple:
        r"""
        input_values (`(B, 12, T)`); ecg_attention_mask (`(B, T)`); labels (`(B, num_labels)` floats for
        multi-label, `(B,)` ids for single-label, `(B,)` or `(B, num_labels)` floats for regression); returns
        logits (B, num_labels). `input_ids`, `inputs_embeds`, `attention_mask` and `output_attentions` exist for
        PEFT's sequence-classification wrapper, which always passes them: this head has no text input and no
        attention, so `attention_mask` may only repeat the ECG mask.
        """
        if input_values is None or input_ids is not None or inputs_embeds is not None:
            raise ValueError("EsiForEcgClassification reads ECGs: pass input_values (B, 12, T), not token ids")
        if attention_mask is not None:
            if ecg_attention_mask is not None and not torch.equal(attention_mask, ecg_attention_mask):
                raise ValueError("attention_mask and ecg_attention_mask differ; pass the ECG mask once")
            ecg_attention_mask = attention_mask
        _, output_hidden_states = self._output_flags(None, output_hidden_states)
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        ecg = self._encode_ecg(input_values, ecg_attention_mask, output_hidden_states)
        logits = self.classifier(self.dropout(ecg.pooler_output))
        loss = None
        if labels is not None:
            loss = self.loss_function(labels=labels, pooled_logits=logits.float(), config=self.config)
        output = SequenceClassifierOutput(loss=loss, logits=logits, hidden_states=ecg.hidden_states)
        return output if return_dict else output.to_tuple()


@dataclass
class EsiEcgModelOutput(ModelOutput):
    """
    Outputs of [`EsiEcgModelWithProjection`] (the ECG counterpart of CLIP's `CLIPVisionModelOutput`).

    ecg_embeds (`(B, projection_dim)`): the projected embedding, not normalised (what `get_ecg_features` returns).
    last_hidden_state (`(B, N, C)`), pooler_output (`(B, C)`), token_mask (`(B, N)`), hidden_states (`tuple`,
        *optional*): the ECG encoder's outputs (see [`EsiEcgEncoderOutput`]).
    """

    ecg_embeds: torch.FloatTensor | None = None
    last_hidden_state: torch.FloatTensor | None = None
    pooler_output: torch.FloatTensor | None = None
    token_mask: torch.BoolTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None


class EsiEcgModelWithProjection(EsiPreTrainedModel):
    r"""
    The ECG side of [`EsiModel`]: ECG encoder and projection into the shared ECG-text space, without the text tower
    and the caption decoder (like transformers' `CLIPVisionModelWithProjection`). This is what the released
    encoder-only checkpoint holds; `AutoModel` loads it as this class and `AutoModelForSequenceClassification`
    as [`EsiForEcgClassification`] (same `ecg_model` weights, new head).

    Built from an `EsiModel` folder it keeps the ECG encoder and projection and drops the rest:
    `EsiEcgModelWithProjection.from_pretrained(esi_folder).save_pretrained(encoder_folder)`.
    """

    _keys_to_ignore_on_load_unexpected = [r"^text_model\.", r"^text_decoder\.", r"^text_projection\.", r"^logit_scale$"]
    # The pipelines that need only the ECG side (the embedding), under every task name they are registered for.
    _custom_pipelines = {
        task: spec for task, spec in ESI_CUSTOM_PIPELINES.items() if spec["impl"].endswith("FeatureExtractionPipeline")
    }

    def __init__(self, config: EsiConfig):
        super().__init__(config)
        self.ecg_model = EsiEcgEncoder(config.ecg_config)
        self.ecg_projection = nn.Linear(config.ecg_config.hidden_sizes[-1], config.projection_dim, bias=False)
        self.post_init()

    # The very method of the full model, so both give the same embedding from the same weights.
    get_ecg_features = EsiModel.get_ecg_features

    def forward(
        self,
        input_values: torch.FloatTensor,
        ecg_attention_mask: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> EsiEcgModelOutput | tuple:
        r"""
        input_values (`(B, 12, T)`), ecg_attention_mask (`(B, T)`, 1 = real sample): the feature extractor's
        outputs, so `model(**feature_extractor(ecg, ...))` works (other keys, e.g. `lead_mask`, are ignored).
        """
        output_hidden_states = bool(
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        ecg = self._encode_ecg(input_values, ecg_attention_mask, output_hidden_states)
        output = EsiEcgModelOutput(
            ecg_embeds=self.ecg_projection(ecg.pooler_output),
            last_hidden_state=ecg.last_hidden_state,
            pooler_output=ecg.pooler_output,
            token_mask=ecg.token_mask,
            hidden_states=ecg.hidden_states,
        )
        return output if return_dict else output.to_tuple()


EsiModel.register_for_auto_class("AutoModel")
EsiEcgModelWithProjection.register_for_auto_class("AutoModel")
EsiForEcgClassification.register_for_auto_class("AutoModelForSequenceClassification")

__all__ = [
    "LORA_TARGET_MODULES",
    "lora_target_modules",
    "EsiPreTrainedModel",
    "EsiModel",
    "EsiForEcgCaptioning",
    "EsiForEcgClassification",
    "EsiEcgModelWithProjection",
    "EsiEcgModelOutput",
    "EsiOutput",
    "EsiCaptioningOutput",
    "EsiEcgEncoderOutput",
]
