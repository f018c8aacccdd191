"""feature-complexity: what a vision model's features look like, when they are learned, where
they flow, and how their complexity relates to their importance (Fel et al., NeurIPS 2024).

Notation, fixed once (see docs/ARCHITECTURE.md): ``A`` penultimate activations ``(n_images, d)``,
``D`` dictionary ``(k, d)`` with atoms as rows, ``Z`` codes ``(n_images, k)``, ``z`` one feature,
``I_V`` V-information, ``K`` complexity, ``Γ`` importance.

Importing this package is cheap: numpy only. Torch, scikit-learn, matplotlib and UMAP are
imported by the functions that need them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> module that defines it; resolved on first access (PEP 562)
_LAZY: dict[str, str] = {
    "complexity": "feature_complexity.complexity",
    "ComplexityResult": "feature_complexity.complexity",
    "RidgeProbeStats": "feature_complexity.complexity",
    "ModelSpec": "feature_complexity.models.spec",
    "BlockBranches": "feature_complexity.models.spec",
    "build_model": "feature_complexity.models.registry",
    "spec_from_module": "feature_complexity.models.registry",
    "extract_activations": "feature_complexity.activations",
    "Activations": "feature_complexity.activations",
    "fit_dictionary": "feature_complexity.features",
    "encode": "feature_complexity.features",
    "Dictionary": "feature_complexity.features",
    "importance": "feature_complexity.importance",
    "run_analysis": "feature_complexity.pipeline",
    "RunConfig": "feature_complexity.pipeline",
}

__all__ = sorted(_LAZY) + ["__version__"]

if TYPE_CHECKING:
    from .activations import Activations, extract_activations
    from .complexity import ComplexityResult, RidgeProbeStats, complexity
    from .features import Dictionary, encode, fit_dictionary
    from .importance import importance
    from .models.registry import build_model, spec_from_module
    from .models.spec import BlockBranches, ModelSpec
    from .pipeline import RunConfig, run_analysis


def __getattr__(name: str) -> Any:
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module 'feature_complexity' has no attribute '{name}'")
    value = getattr(importlib.import_module(module_name), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
