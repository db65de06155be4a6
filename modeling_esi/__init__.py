"""ESI model, configuration and feature extractor (the files that ship to the Hub as remote code).

Names are imported on first use (PEP 562), so `modeling_esi.leads` and the command-line tools that need only
lead names do not pay for importing torch.
"""

import importlib

_SUBMODULE_OF = {
    "EsiConfig": "configuration_esi",
    "EsiEcgConfig": "configuration_esi",
    "EsiDecoderConfig": "configuration_esi",
    "EsiModel": "modeling_esi",
    "EsiForEcgClassification": "modeling_esi",
    "EsiForEcgCaptioning": "modeling_esi",
    "EsiEcgModelWithProjection": "modeling_esi",
    "EsiPreTrainedModel": "modeling_esi",
    "EsiOutput": "modeling_esi",
    "LORA_TARGET_MODULES": "modeling_esi",
    "lora_target_modules": "modeling_esi",
    "EsiFeatureExtractor": "feature_extraction_esi",
    "EsiProcessor": "processing_esi",
}

__all__ = list(_SUBMODULE_OF)


def __getattr__(name: str):
    if name not in _SUBMODULE_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_SUBMODULE_OF[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
