"""ESI: an ECG encoder trained against cardiology text with a contrastive (CLIP) and a captioning (CoCa) loss.

Research software, not a diagnostic device.
"""

from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn
import torch.nn.functional as F
from torch import nn
from transformers import BertConfig, BertModel, PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import SequenceClassifierOutput
from transformers.utils import ModelOutput

from .configuration_esi import EsiConfig, EsiDecoderConfig, EsiEcgConfig


@dataclass
class EsiEcgEncoderOutput(ModelOutput):
    """
    last_hidden_state (`(B, N, C)`): ECG token sequence after the final LayerNorm (N time steps).
    pooler_output (`(B, C)`): masked mean of `last_hidden_state` over valid tokens.
    token_mask (`(B, N)`, *optional*): which tokens overlap valid input samples (when a mask was given).
    hidden_states (`tuple` of `(B, N_s, C_s)`, *optional*): the output of the stem and of every stage.
    """

    last_hidden_state: torch.FloatTensor | None = None
    pooler_output: torch.FloatTensor | None = None
    token_mask: torch.BoolTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None


@dataclass
class EsiOutput(ModelOutput):
    """
    loss (`()`): `contrastive_loss_weight * contrastive_loss + caption_loss_weight * caption_loss`.
    contrastive_loss (`()`): symmetric InfoNCE between ECG and text embeddings (gathered over processes).
    caption_loss (`()`): next-token cross-entropy of the caption decoder (padding ignored).
    logits_per_ecg (`(B, B_global)`), logits_per_text (`(B, B_global)`): scaled cosine similarities of the local
        rows against all columns (B_global = world size x B under torch.distributed, else B).
    ecg_embeds (`(B, projection_dim)`), text_embeds (`(B, projection_dim)`): L2-normalised embeddings.
    caption_logits (`(B, L-1, vocab)`): decoder logits for tokens 1..L-1.
    ecg_last_hidden_state (`(B, N, C)`), ecg_pooler_output (`(B, C)`): ECG encoder outputs.
    text_last_hidden_state (`(B, L, H)`): text encoder output.
    ecg_hidden_states, text_hidden_states (`tuple`, *optional*): per-stage / per-layer states.
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


def masked_mean(hidden: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean of `hidden` (B, N, C) over N where `mask` (B, N) is true; plain mean without a mask."""
    if mask is None:
        return hidden.mean(dim=1)
    weights = mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)


# ---------------------------------------------------------------------------------------------------------------
# ECG encoders. Both work on (B, C, T) and hand the final (B, N, C) token sequence to `EsiEcgEncoder`.
# ---------------------------------------------------------------------------------------------------------------


class EsiGRN(nn.Module):
    """ConvNeXt-V2 global response normalisation over time, channels-last input (B, N, C)."""

    def __init__(self, dim: int):
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(1, 1, dim))
        self.beta = nn.Parameter(torch.zeros(1, 1, dim))

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        # Norms in float32: bf16 sums of squares over hundreds of steps lose too much precision.
        global_norm = torch.linalg.vector_norm(hidden.float(), ord=2, dim=1, keepdim=True)
        relative = (global_norm / (global_norm.mean(dim=-1, keepdim=True) + 1e-6)).to(hidden.dtype)
        return self.gamma * (hidden * relative) + self.beta + hidden


class EsiConvNextBlock(GradientCheckpointingLayer):
    """Depthwise conv -> LayerNorm -> pointwise MLP with GRN, residual. (B, C, T) -> (B, C, T)."""

    def __init__(self, config: EsiEcgConfig, dim: int):
        super().__init__()
        self.dwconv = nn.Conv1d(dim, dim, config.kernel_size, padding=config.kernel_size // 2, groups=dim)
        self.layernorm = nn.LayerNorm(dim, eps=config.layer_norm_eps)
        self.pwconv1 = nn.Linear(dim, config.mlp_ratio * dim)
        self.act = nn.GELU()
        self.grn = EsiGRN(config.mlp_ratio * dim)
        self.pwconv2 = nn.Linear(config.mlp_ratio * dim, dim)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        residual = hidden
        hidden = self.dwconv(hidden).transpose(1, 2)
        hidden = self.pwconv2(self.grn(self.act(self.pwconv1(self.layernorm(hidden)))))
        return residual + hidden.transpose(1, 2)


class EsiChannelsLayerNorm(nn.LayerNorm):
    """LayerNorm over the channels of a (B, C, T) tensor."""

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return super().forward(hidden.transpose(1, 2)).transpose(1, 2)


class EsiStagedBackbone(nn.Module):
    """A stem followed by stages; subclasses build `self.stem` and `self.stages`."""

    stem: nn.Module
    stages: nn.ModuleList

    def forward(self, input_values: torch.Tensor) -> list[torch.Tensor]:
        """(B, C_in, T) -> stem output and each stage's output, each (B, C_s, N_s)."""
        states = [self.stem(input_values)]
        for stage in self.stages:
            states.append(stage(states[-1]))
        return states


class EsiConvNextEncoder(EsiStagedBackbone):
    """1-D ConvNeXt-V2: patchify stem, then stages separated by LayerNorm + stride-2 convolutions."""

    def __init__(self, config: EsiEcgConfig):
        super().__init__()
        widths = config.hidden_sizes
        self.stem = nn.Sequential(
            nn.Conv1d(config.in_channels, widths[0], config.stem_stride, stride=config.stem_stride),
            EsiChannelsLayerNorm(widths[0], eps=config.layer_norm_eps),
        )
        self.stages = nn.ModuleList()
        for index, (depth, width) in enumerate(zip(config.depths, widths, strict=True)):
            downsample = (
                nn.Sequential(
                    EsiChannelsLayerNorm(widths[index - 1], eps=config.layer_norm_eps),
                    nn.Conv1d(widths[index - 1], width, 2, stride=2),
                )
                if index > 0
                else nn.Identity()
            )
            self.stages.append(nn.Sequential(downsample, *(EsiConvNextBlock(config, width) for _ in range(depth))))


class EsiResNetBlock(GradientCheckpointingLayer):
    """1-D basic residual block (two convolutions with BatchNorm). (B, C_in, T) -> (B, C_out, T / stride)."""

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

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.norm1(self.conv1(hidden)))
        return F.relu(self.norm2(self.conv2(out)) + self.shortcut(hidden))


class EsiResNetEncoder(EsiStagedBackbone):
    """1-D ResNet: strided stem, then stages of basic blocks; each stage after the first halves the time axis."""

    def __init__(self, config: EsiEcgConfig):
        super().__init__()
        widths = config.hidden_sizes
        self.stem = nn.Sequential(
            nn.Conv1d(config.in_channels, widths[0], config.stem_stride, stride=config.stem_stride, bias=False),
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


class EsiEcgEncoder(nn.Module):
    """ECG tower: backbone + final LayerNorm. (B, 12, T) -> tokens (B, N, C) and pooled (B, C)."""

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
        if ecg_attention_mask is not None:
            # Padded samples are zeroed so the padding value cannot leak into valid tokens' receptive fields.
            input_values = input_values * ecg_attention_mask.unsqueeze(1).to(input_values.dtype)
        states = self.backbone(input_values)
        tokens = self.layernorm(states[-1].transpose(1, 2))
        token_mask = None
        if ecg_attention_mask is not None:
            # A token is valid when its share of the input window holds any valid sample.
            pooled_mask = F.adaptive_max_pool1d(ecg_attention_mask[:, None].float(), tokens.shape[1])
            token_mask = pooled_mask[:, 0] > 0
        return EsiEcgEncoderOutput(
            last_hidden_state=tokens,
            pooler_output=masked_mean(tokens, token_mask),
            token_mask=token_mask,
            hidden_states=tuple(state.transpose(1, 2) for state in states) if output_hidden_states else None,
        )


# ---------------------------------------------------------------------------------------------------------------
# Caption decoder: causal self-attention over caption tokens, cross-attention to the ECG token sequence.
# ---------------------------------------------------------------------------------------------------------------


class EsiAttention(nn.Module):
    """Multi-head attention through `F.scaled_dot_product_attention`; `mask` is boolean, True = may attend."""

    def __init__(self, config: EsiDecoderConfig, kv_dim: int | None = None):
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.dropout = config.dropout
        kv_dim = kv_dim or config.hidden_size
        self.q_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.k_proj = nn.Linear(kv_dim, config.hidden_size)
        self.v_proj = nn.Linear(kv_dim, config.hidden_size)
        self.out_proj = nn.Linear(config.hidden_size, config.hidden_size)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(-1, (self.num_heads, -1)).transpose(1, 2)  # (B, L, D) -> (B, heads, L, D/heads)

    def forward(self, hidden: torch.Tensor, context: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """hidden (B, L, D), context (B, S, kv_dim), mask broadcastable to (B, heads, L, S) -> (B, L, D)."""
        attended = F.scaled_dot_product_attention(
            self._heads(self.q_proj(hidden)),
            self._heads(self.k_proj(context)),
            self._heads(self.v_proj(context)),
            attn_mask=mask,
            dropout_p=self.dropout if self.training else 0.0,
        )
        return self.out_proj(attended.transpose(1, 2).flatten(2))


class EsiDecoderLayer(GradientCheckpointingLayer):
    """Pre-norm transformer decoder layer: causal self-attention, ECG cross-attention, MLP."""

    def __init__(self, config: EsiDecoderConfig, ecg_dim: int):
        super().__init__()
        self.self_attn_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.self_attn = EsiAttention(config)
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
        self, hidden: torch.Tensor, ecg_tokens: torch.Tensor, self_mask: torch.Tensor, cross_mask: torch.Tensor | None
    ) -> torch.Tensor:
        normed = self.self_attn_norm(hidden)
        hidden = hidden + self.self_attn(normed, normed, self_mask)
        hidden = hidden + self.cross_attn(self.cross_attn_norm(hidden), ecg_tokens, cross_mask)
        return hidden + self.mlp(self.mlp_norm(hidden))


class EsiCaptionDecoder(nn.Module):
    """Token ids (B, L) + ECG tokens (B, N, C) -> next-token logits (B, L, vocab)."""

    def __init__(self, config: EsiDecoderConfig, vocab_size: int, ecg_dim: int):
        super().__init__()
        self.config = config
        self.embed_tokens = nn.Embedding(vocab_size, config.hidden_size)
        self.embed_positions = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.layers = nn.ModuleList(EsiDecoderLayer(config, ecg_dim) for _ in range(config.num_hidden_layers))
        self.final_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.lm_head = nn.Linear(config.hidden_size, vocab_size, bias=False)

    def forward(
        self,
        input_ids: torch.Tensor,
        ecg_tokens: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        ecg_token_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        length = input_ids.shape[1]
        if length > self.config.max_position_embeddings:
            raise ValueError(
                f"caption of {length} tokens exceeds the decoder's max_position_embeddings "
                f"({self.config.max_position_embeddings}); truncate when tokenising"
            )
        positions = torch.arange(length, device=input_ids.device)
        hidden = self.embed_tokens(input_ids) + self.embed_positions(positions)
        causal = torch.ones(length, length, dtype=torch.bool, device=input_ids.device).tril()
        self_mask = causal[None, None]
        if attention_mask is not None:
            # Padding keys are hidden; the diagonal stays visible so no query row is fully masked.
            keys = attention_mask.bool()[:, None, None, :] | torch.eye(length, dtype=torch.bool, device=causal.device)
            self_mask = self_mask & keys
        cross_mask = ecg_token_mask[:, None, None, :] if ecg_token_mask is not None else None
        for layer in self.layers:
            hidden = layer(hidden, ecg_tokens, self_mask, cross_mask)
        return self.lm_head(self.final_norm(hidden))


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


def contrastive_loss(
    ecg_embeds: torch.Tensor, text_embeds: torch.Tensor, logit_scale: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Symmetric InfoNCE of local rows against all processes' columns (open_clip's local loss).

    ecg_embeds, text_embeds: (B, D), L2-normalised. Returns (loss, logits_per_ecg (B, W*B), logits_per_text (B, W*B)).
    Averaged over processes (as DDP does), the gradients equal those of one process holding the whole batch.
    """
    all_ecg, rank = gather_with_grad(ecg_embeds)
    all_text, _ = gather_with_grad(text_embeds)
    logits_per_ecg = logit_scale * ecg_embeds @ all_text.t()
    logits_per_text = logit_scale * text_embeds @ all_ecg.t()
    labels = torch.arange(ecg_embeds.shape[0], device=ecg_embeds.device) + rank * ecg_embeds.shape[0]
    loss = (F.cross_entropy(logits_per_ecg.float(), labels) + F.cross_entropy(logits_per_text.float(), labels)) / 2
    return loss, logits_per_ecg, logits_per_text


def caption_targets(input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """Labels for tokens 1..L-1 (B, L-1), padding replaced by -100 so cross-entropy ignores it."""
    labels = input_ids[:, 1:].clone()
    if attention_mask is not None:
        labels = labels.masked_fill(attention_mask[:, 1:] == 0, -100)
    return labels


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
    base_model_prefix = "esi"
    main_input_name = "input_values"
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _no_split_modules = ["EsiConvNextBlock", "EsiResNetBlock", "EsiDecoderLayer", "BertLayer"]

    def save_pretrained(self, save_directory, *args, **kwargs) -> None:
        # All ESI heads share one config and one code file: list every Auto class in `auto_map`, so a
        # pretraining folder also loads with AutoModelForSequenceClassification (and a classifier with AutoModel).
        self.config.auto_map = {**(getattr(self.config, "auto_map", None) or {}), **ESI_AUTO_MAP}
        super().save_pretrained(save_directory, *args, **kwargs)

    def _init_weights(self, module: nn.Module) -> None:
        # Linear/Conv/Embedding/LayerNorm/BatchNorm: transformers' defaults (normal(0.02), ones/zeros).
        super()._init_weights(module)
        if isinstance(module, EsiGRN):
            init.zeros_(module.gamma)
            init.zeros_(module.beta)
        elif isinstance(module, EsiModel):
            init.constant_(module.logit_scale, self.config.logit_scale_init_value)

    def _encode_ecg(
        self, input_values: torch.Tensor, ecg_attention_mask: torch.Tensor | None, output_hidden_states: bool = False
    ) -> EsiEcgEncoderOutput:
        return self.ecg_model(input_values, ecg_attention_mask, output_hidden_states=output_hidden_states)


class EsiModel(EsiPreTrainedModel):
    r"""
    ESI pretraining model: ECG encoder, BERT text encoder and a causal caption decoder attending to the ECG tokens.

    The text tokenizer is BERT WordPiece (all-MiniLM-L6-v2's); save it beside the model with
    `tokenizer.save_pretrained(folder)` so `AutoTokenizer.from_pretrained(folder)` finds it.
    """

    _tied_weights_keys = {"text_decoder.lm_head.weight": "text_decoder.embed_tokens.weight"}

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
        pretrained = BertModel.from_pretrained(text_model_path, add_pooling_layer=False)
        model.text_model.load_state_dict(pretrained.state_dict())
        return model

    def get_input_embeddings(self) -> nn.Module:
        return self.text_decoder.embed_tokens

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.text_decoder.embed_tokens = value

    def get_output_embeddings(self) -> nn.Module:
        return self.text_decoder.lm_head

    def _text_pooled(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, output_hidden_states=False):
        outputs = self.text_model(
            input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=output_hidden_states
        )
        # Mean over real tokens, as sentence-transformers pools all-MiniLM-L6-v2.
        return outputs, masked_mean(outputs.last_hidden_state, attention_mask)

    def get_ecg_features(
        self, input_values: torch.FloatTensor, ecg_attention_mask: torch.Tensor | None = None
    ) -> torch.FloatTensor:
        """(B, 12, T) -> projected ECG embeddings (B, projection_dim), not normalised."""
        return self.ecg_projection(self._encode_ecg(input_values, ecg_attention_mask).pooler_output)

    def get_text_features(
        self, input_ids: torch.LongTensor, attention_mask: torch.Tensor | None = None
    ) -> torch.FloatTensor:
        """(B, L) token ids -> projected text embeddings (B, projection_dim), not normalised."""
        return self.text_projection(self._text_pooled(input_ids, attention_mask)[1])

    def clamped_logit_scale(self) -> torch.Tensor:
        """exp(logit_scale) with logit_scale clamped at `config.logit_scale_max` (CLIP caps it at 100)."""
        return self.logit_scale.clamp(max=self.config.logit_scale_max).exp()

    def forward(
        self,
        input_values: torch.FloatTensor,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        ecg_attention_mask: torch.Tensor | None = None,
        return_loss: bool = True,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> EsiOutput | tuple:
        r"""
        input_values (`(B, 12, T)`): ECGs in `config.ecg_config.lead_names` order (see `EsiFeatureExtractor`).
        input_ids (`(B, L)`), attention_mask (`(B, L)`): BERT-tokenised captions, `[CLS] ... [SEP] [PAD]...`.
            The text encoder reads all of them; the decoder reads ids[:, :-1] and predicts ids[:, 1:].
        ecg_attention_mask (`(B, T)`): 1 for real samples, 0 for padding.
        return_loss: compute the losses (needs `input_ids`).
        """
        output_hidden_states = bool(
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
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
            text, text_pooled = self._text_pooled(input_ids, attention_mask, output_hidden_states)
            text_embeds = F.normalize(self.text_projection(text_pooled), dim=-1)
            caption_logits = self.text_decoder(
                input_ids[:, :-1],
                ecg.last_hidden_state,
                attention_mask[:, :-1] if attention_mask is not None else None,
                ecg.token_mask,
            )
            clip_loss, logits_per_ecg, logits_per_text = contrastive_loss(
                ecg_embeds, text_embeds, self.clamped_logit_scale()
            )
            output.text_embeds = text_embeds
            output.text_last_hidden_state = text.last_hidden_state
            output.text_hidden_states = text.hidden_states
            output.caption_logits = caption_logits
            output.logits_per_ecg, output.logits_per_text = logits_per_ecg, logits_per_text
            if return_loss:
                labels = caption_targets(input_ids, attention_mask)
                output.contrastive_loss = clip_loss
                output.caption_loss = F.cross_entropy(caption_logits.flatten(0, 1).float(), labels.flatten())
                output.loss = (
                    self.config.contrastive_loss_weight * output.contrastive_loss
                    + self.config.caption_loss_weight * output.caption_loss
                )
        return output if return_dict else output.to_tuple()

    @torch.no_grad()
    def zero_shot_logits(
        self,
        input_values: torch.FloatTensor,
        class_input_ids: torch.LongTensor,
        class_attention_mask: torch.Tensor | None = None,
        ecg_attention_mask: torch.Tensor | None = None,
    ) -> torch.FloatTensor:
        """Cosine similarity x logit scale between ECGs (B, 12, T) and class prompts (K, L) -> (B, K)."""
        ecg = F.normalize(self.get_ecg_features(input_values, ecg_attention_mask), dim=-1)
        text = F.normalize(self.get_text_features(class_input_ids, class_attention_mask), dim=-1)
        return self.clamped_logit_scale() * ecg @ text.t()

    @torch.no_grad()
    def generate_caption(
        self,
        input_values: torch.FloatTensor,
        max_new_tokens: int = 64,
        num_beams: int = 1,
        ecg_attention_mask: torch.Tensor | None = None,
    ) -> torch.LongTensor:
        """Greedy (`num_beams=1`) or beam-search captions: (B, 12, T) -> token ids (B, <= 1 + max_new_tokens).

        Each row starts with BOS (`[CLS]`) and is padded with `[PAD]` after its EOS (`[SEP]`); decode with the
        tokenizer's `batch_decode(..., skip_special_tokens=True)`. Beams are ranked by mean token log-probability.
        """
        max_new_tokens = min(max_new_tokens, self.config.decoder_config.max_position_embeddings - 1)
        ecg = self._encode_ecg(input_values, ecg_attention_mask)
        batch = input_values.shape[0]
        # Every beam is a row: ECG tokens are repeated per beam.
        ecg_tokens = ecg.last_hidden_state.repeat_interleave(num_beams, dim=0)
        token_mask = ecg.token_mask.repeat_interleave(num_beams, dim=0) if ecg.token_mask is not None else None
        sequences = torch.full((batch * num_beams, 1), self.config.bos_token_id, device=input_values.device)
        scores = torch.zeros(batch, num_beams, device=input_values.device)
        scores[:, 1:] = float("-inf")  # all beams start identical; keep one alive at step 0
        lengths = torch.zeros(batch * num_beams, device=input_values.device)
        finished = torch.zeros(batch * num_beams, dtype=torch.bool, device=input_values.device)
        for _ in range(max_new_tokens):
            logits = self.text_decoder(sequences, ecg_tokens, ecg_token_mask=token_mask)[:, -1].float()
            log_probs = logits.log_softmax(dim=-1)
            # A finished beam only extends with PAD, at no cost.
            log_probs[finished] = float("-inf")
            log_probs[finished, self.config.pad_token_id] = 0.0
            vocab = log_probs.shape[-1]
            candidates = (scores.view(-1, 1) + log_probs).view(batch, num_beams * vocab)
            scores, flat = candidates.topk(num_beams, dim=-1)
            beam_rows = (flat // vocab + torch.arange(batch, device=flat.device)[:, None] * num_beams).view(-1)
            tokens = (flat % vocab).view(-1, 1)
            sequences = torch.cat([sequences[beam_rows], tokens], dim=1)
            lengths = lengths[beam_rows] + (~finished[beam_rows]).float()
            finished = finished[beam_rows] | (tokens[:, 0] == self.config.eos_token_id)
            if finished.all():
                break
        best = (scores.view(-1) / lengths.clamp(min=1)).view(batch, num_beams).argmax(dim=-1)
        return sequences.view(batch, num_beams, -1)[torch.arange(batch), best]


# PEFT LoRA targets of the ConvNeXt-V2 encoder (see EsiForEcgClassification); a full-match regex.
LORA_TARGET_MODULES = r".*\.(pwconv1|pwconv2)|ecg_model\.backbone\.stem\.0|ecg_model\.backbone\.stages\.\d+\.0\.1"


class EsiForEcgClassification(EsiPreTrainedModel):
    r"""
    ECG encoder with a linear head on the pooled embedding, for diagnosis / rhythm classification.

    Loads the pretrained ECG encoder from an [`EsiModel`] folder (shared submodule name `ecg_model`):
    `EsiForEcgClassification.from_pretrained(folder, num_labels=5, problem_type="multi_label_classification")`.
    `problem_type`: `"multi_label_classification"` (BCE on multi-hot float labels), `"single_label_classification"`
    (cross-entropy on class ids) or `"regression"` (MSE); inferred from the labels when unset, as transformers does.
    Registered for `AutoModelForSequenceClassification`, transformers' conventional class for one prediction per
    input sequence (it has no ECG-specific auto class).

    LoRA (PEFT) targets for the default ConvNeXt-V2 encoder: the pointwise `nn.Linear` layers `pwconv1`/`pwconv2`
    of every block and the `nn.Conv1d` stem and downsampling layers: `target_modules=LORA_TARGET_MODULES`, with
    `modules_to_save=["classifier"]`. The depthwise `dwconv` layers are left out: PEFT's LoRA needs the rank to be
    divisible by a convolution's groups. For `architecture="resnet1d"`: `target_modules=["conv1", "conv2"]`.
    """

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
        input_values: torch.FloatTensor,
        labels: torch.Tensor | None = None,
        ecg_attention_mask: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> SequenceClassifierOutput | tuple:
        r"""
        input_values (`(B, 12, T)`); labels (`(B, num_labels)` floats for multi-label, `(B,)` ids for
        single-label, `(B,)` or `(B, num_labels)` floats for regression); returns logits (B, num_labels).
        """
        output_hidden_states = bool(
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        ecg = self._encode_ecg(input_values, ecg_attention_mask, output_hidden_states)
        logits = self.classifier(self.dropout(ecg.pooler_output))
        loss = self._loss(logits, labels) if labels is not None else None
        output = SequenceClassifierOutput(loss=loss, logits=logits, hidden_states=ecg.hidden_states)
        return output if return_dict else output.to_tuple()

    def _loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.config.problem_type is None:
            if self.config.num_labels == 1:
                self.config.problem_type = "regression"
            elif labels.dtype in (torch.long, torch.int):
                self.config.problem_type = "single_label_classification"
            else:
                self.config.problem_type = "multi_label_classification"
        logits = logits.float()
        if self.config.problem_type == "regression":
            return F.mse_loss(logits.squeeze(-1), labels.float().view_as(logits.squeeze(-1)))
        if self.config.problem_type == "single_label_classification":
            return F.cross_entropy(logits, labels.view(-1).long())
        return F.binary_cross_entropy_with_logits(logits, labels.float())


EsiModel.register_for_auto_class("AutoModel")
EsiForEcgClassification.register_for_auto_class("AutoModelForSequenceClassification")

__all__ = [
    "LORA_TARGET_MODULES",
    "EsiPreTrainedModel",
    "EsiModel",
    "EsiForEcgClassification",
    "EsiOutput",
    "EsiEcgEncoderOutput",
]
