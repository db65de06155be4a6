"""ESI model, configuration and feature extractor (the files that ship to the Hub as remote code)."""

from .configuration_esi import EsiConfig, EsiDecoderConfig, EsiEcgConfig
from .feature_extraction_esi import EsiFeatureExtractor
from .modeling_esi import (
    LORA_TARGET_MODULES,
    EsiForEcgCaptioning,
    EsiForEcgClassification,
    EsiModel,
    EsiOutput,
    EsiPreTrainedModel,
    lora_target_modules,
)
from .processing_esi import EsiProcessor

__all__ = [
    "EsiConfig",
    "EsiEcgConfig",
    "EsiDecoderConfig",
    "EsiModel",
    "EsiForEcgClassification",
    "EsiForEcgCaptioning",
    "EsiPreTrainedModel",
    "EsiOutput",
    "EsiFeatureExtractor",
    "EsiProcessor",
    "LORA_TARGET_MODULES",
    "lora_target_modules",
]
