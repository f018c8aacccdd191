"""Model descriptions (:class:`ModelSpec`) and the built-in model families.

``build_model``, ``known_models``, ``spec_from_module``, ``load_checkpoint`` and
``read_state_dict`` come from :mod:`.registry`, ``spatial_tokens`` from :mod:`.spatial`, all
resolved on first access so that importing this package does not import torch (nor timm).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .spec import IMAGENET_MEAN, IMAGENET_STD, BlockBranches, ModelSpec

_REGISTRY = ("build_model", "known_models", "spec_from_module", "load_checkpoint", "read_state_dict")
_LAZY = {**dict.fromkeys(_REGISTRY, "registry"), "spatial_tokens": "spatial"}

__all__ = ["BlockBranches", "ModelSpec", "IMAGENET_MEAN", "IMAGENET_STD", "build_model", "known_models",
           "spec_from_module", "load_checkpoint", "read_state_dict", "spatial_tokens"]

if TYPE_CHECKING:
    from .registry import build_model, known_models, load_checkpoint, read_state_dict, spec_from_module
    from .spatial import spatial_tokens


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module '{__name__}' has no attribute '{name}'")
