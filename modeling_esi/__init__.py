"""ESI model, configuration and feature extractor (the files that ship to the Hub as remote code)."""

from .configuration_esi import EsiConfig, EsiDecoderConfig, EsiEcgConfig
from .feature_extraction_esi import EsiFeatureExtractor
from .modeling_esi import EsiForEcgClassification, EsiModel, EsiOutput, EsiPreTrainedModel

__all__ = [
    "EsiConfig",
    "EsiEcgConfig",
    "EsiDecoderConfig",
    "EsiModel",
    "EsiForEcgClassification",
    "EsiPreTrainedModel",
    "EsiOutput",
    "EsiFeatureExtractor",
]
