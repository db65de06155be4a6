"""ESI model configuration: an ECG encoder, a BERT text encoder and a causal caption decoder (CoCa-style)."""

import math

from transformers import BertConfig, PreTrainedConfig

from .leads import PTBXL_LEAD_ORDER

# (depths, hidden_sizes) of the 1-D ConvNeXt-V2 stages, following the 2-D ConvNeXt-V2 family's names.
ECG_ENCODER_PRESETS: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    "atto": ((2, 2, 6, 2), (40, 80, 160, 320)),
    "femto": ((2, 2, 6, 2), (48, 96, 192, 384)),
    "pico": ((2, 2, 6, 2), (64, 128, 256, 512)),
    "nano": ((2, 2, 8, 2), (80, 160, 320, 640)),
    "tiny": ((3, 3, 9, 3), (96, 192, 384, 768)),
    "base": ((3, 3, 27, 3), (128, 256, 512, 1024)),
}
ECG_ARCHITECTURES = ("convnextv2", "resnet1d")


class EsiEcgConfig(PreTrainedConfig):
    r"""
    Configuration of the ECG encoder.

    Args:
        architecture (`str`, defaults to `"convnextv2"`): `"convnextv2"` (1-D ConvNeXt-V2 with GRN, depthwise
            convolutions and LayerNorm) or `"resnet1d"` (1-D ResNet with basic blocks and BatchNorm).
        size (`str`, defaults to `"atto"`): preset for `depths`/`hidden_sizes`, one of `ECG_ENCODER_PRESETS`.
            Ignored for a field that is given explicitly.
        depths, hidden_sizes (`list[int]`, *optional*): blocks and channels per stage; each stage after the
            first halves the time resolution.
        in_channels (`int`, defaults to 12): ECG leads, in `lead_names` order.
        lead_names (`list[str]`): the lead order the encoder expects (PTB-XL order by default).
        sampling_rate (`int`, defaults to 100): Hz. duration_s (`float`, defaults to 10.0): seconds.
        stem_stride (`int`, defaults to 8): the stem patchifies the signal into windows of this many samples
            (80 ms at 100 Hz; the default atto encoder then yields 15 tokens of 640 ms for 10 s).
        kernel_size (`int`, defaults to 7): depthwise (ConvNeXt) or regular (ResNet) kernel size.
        mlp_ratio (`int`, defaults to 4): ConvNeXt inverted-bottleneck expansion.
    """

    model_type = "esi_ecg"
    base_config_key = "ecg_config"

    architecture: str = "convnextv2"
    size: str | None = "atto"
    depths: list[int] | tuple[int, ...] | None = None
    hidden_sizes: list[int] | tuple[int, ...] | None = None
    in_channels: int = 12
    lead_names: list[str] | tuple[str, ...] = PTBXL_LEAD_ORDER
    sampling_rate: int = 100
    duration_s: float = 10.0
    stem_stride: int = 8
    kernel_size: int = 7
    mlp_ratio: int = 4
    layer_norm_eps: float = 1e-6
    initializer_range: float = 0.02

    def __post_init__(self, **kwargs):
        if self.architecture not in ECG_ARCHITECTURES:
            raise ValueError(f"architecture must be one of {ECG_ARCHITECTURES}, got {self.architecture!r}")
        if self.depths is None or self.hidden_sizes is None:
            if self.size not in ECG_ENCODER_PRESETS:
                raise ValueError(f"size must be one of {list(ECG_ENCODER_PRESETS)}, got {self.size!r}")
            preset_depths, preset_sizes = ECG_ENCODER_PRESETS[self.size]
            self.depths = list(self.depths if self.depths is not None else preset_depths)
            self.hidden_sizes = list(self.hidden_sizes if self.hidden_sizes is not None else preset_sizes)
        self.depths, self.hidden_sizes, self.lead_names = (
            list(self.depths),
            list(self.hidden_sizes),
            list(self.lead_names),
        )
        if len(self.depths) != len(self.hidden_sizes):
            raise ValueError(f"depths {self.depths} and hidden_sizes {self.hidden_sizes} differ in length")
        if len(self.lead_names) != self.in_channels:
            raise ValueError(f"lead_names has {len(self.lead_names)} names but in_channels is {self.in_channels}")
        super().__post_init__(**kwargs)

    @property
    def num_samples(self) -> int:
        """Input length T = sampling_rate x duration_s."""
        return round(self.sampling_rate * self.duration_s)


class EsiDecoderConfig(PreTrainedConfig):
    r"""
    Configuration of the causal caption decoder. Its vocabulary is the text encoder's (`text_config.vocab_size`):
    captions are BERT-tokenised once and used by both.

    Args:
        hidden_size (`int`, defaults to 256), num_hidden_layers (`int`, defaults to 4),
        num_attention_heads (`int`, defaults to 8), intermediate_size (`int`, defaults to 1024),
        max_position_embeddings (`int`, defaults to 256): longest caption (in tokens) the decoder can read.
        dropout (`float`, defaults to 0.0): dropout on attention and MLP outputs.
    """

    model_type = "esi_decoder"
    base_config_key = "decoder_config"

    hidden_size: int = 256
    num_hidden_layers: int = 4
    num_attention_heads: int = 8
    intermediate_size: int = 1024
    max_position_embeddings: int = 256
    hidden_act: str = "gelu"
    dropout: float = 0.0
    layer_norm_eps: float = 1e-5
    initializer_range: float = 0.02

    def __post_init__(self, **kwargs):
        if self.hidden_size % self.num_attention_heads != 0:
            raise ValueError(
                f"decoder hidden_size ({self.hidden_size}) is not a multiple of num_attention_heads "
                f"({self.num_attention_heads})"
            )
        super().__post_init__(**kwargs)


def _minilm_text_config() -> BertConfig:
    # Shaped like all-MiniLM-L6-v2 so its weights drop in (see `EsiModel.from_text_pretrained`).
    return BertConfig(
        vocab_size=30522, hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536
    )


class EsiConfig(PreTrainedConfig):
    r"""
    Configuration of [`EsiModel`] and [`EsiForEcgClassification`].

    Args:
        ecg_config (`dict` or `EsiEcgConfig`, *optional*): the ECG encoder.
        text_config (`dict` or `BertConfig`, *optional*): the text encoder; defaults to all-MiniLM-L6-v2's shape.
        decoder_config (`dict` or `EsiDecoderConfig`, *optional*): the caption decoder.
        projection_dim (`int`, defaults to 256): width of the shared ECG-text embedding space.
        logit_scale_init_value (`float`, defaults to ln(1/0.07)): initial log inverse temperature (CLIP's).
        logit_scale_max (`float`, defaults to ln(100)): the log inverse temperature is clamped here.
        contrastive_loss_weight (`float`, defaults to 1.0), caption_loss_weight (`float`, defaults to 2.0): CoCa's
            loss weights.
        same_text_positives (`bool`, defaults to True): in the contrastive loss, records whose captions have the
            same tokens are positives of each other, not negatives (multi-positive InfoNCE).
        pad_token_id, bos_token_id, eos_token_id (`int`): BERT's `[PAD]`=0, `[CLS]`=101, `[SEP]`=102.
        classifier_dropout (`float`, defaults to 0.0): dropout before the classification head.
    """

    model_type = "esi"
    sub_configs_defaults = {
        "ecg_config": EsiEcgConfig,
        "text_config": BertConfig,
        "decoder_config": EsiDecoderConfig,
    }

    ecg_config: dict | EsiEcgConfig | None = None
    text_config: dict | BertConfig | None = None
    decoder_config: dict | EsiDecoderConfig | None = None
    projection_dim: int = 256
    logit_scale_init_value: float = math.log(1 / 0.07)
    logit_scale_max: float = math.log(100.0)
    contrastive_loss_weight: float = 1.0
    caption_loss_weight: float = 2.0
    same_text_positives: bool = True
    classifier_dropout: float = 0.0
    initializer_range: float = 0.02
    pad_token_id: int = 0
    bos_token_id: int = 101
    eos_token_id: int = 102
    tie_word_embeddings: bool = True

    def __post_init__(self, **kwargs):
        if self.text_config is None:
            self.text_config = _minilm_text_config()
        super().__post_init__(**kwargs)
        if self.decoder_config.max_position_embeddings < 2:
            raise ValueError("decoder max_position_embeddings must be at least 2 (BOS plus one token)")

    def get_text_config(self, decoder: bool | None = None, encoder: bool | None = None) -> PreTrainedConfig:
        """The text side `generate` asks about: with `decoder=True` the caption decoder, whose layers the
        generation cache must match (the text encoder may have fewer); otherwise the text encoder's config."""
        if decoder and not encoder:
            return self.decoder_config
        return self.text_config


EsiConfig.register_for_auto_class()

__all__ = ["EsiConfig", "EsiEcgConfig", "EsiDecoderConfig", "ECG_ENCODER_PRESETS", "PTBXL_LEAD_ORDER"]
