"""Analyses over a run's results, each a :class:`~feature_complexity.stages.Stage`.

An analysis is a module with plain functions over arrays (returning a dataclass) and a
``STAGE`` that says what it needs, how it is saved, its report section, its figures and its
per-feature columns. Adding one is one module plus one entry in :data:`ANALYSIS_MODULES`; the
run's stage loop, the feature table and the report pick it up from there. No analysis reads or
rewrites another's files.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..stages import Stage

__all__ = ["ANALYSIS_MODULES", "analysis_stages"]

#: the analysis modules of a run, in the order they run
ANALYSIS_MODULES: tuple[str, ...] = (
    "flow",
    "metafeatures",
    "evidence",
    "factors",
    "locality",
    "redundancy",
    "robustness",
    "support",
    "hierarchy",
    "controls",
)


def analysis_stages() -> list["Stage"]:
    """The ``STAGE`` (or ``STAGES``) of every module in :data:`ANALYSIS_MODULES`."""
    out: list["Stage"] = []
    for name in ANALYSIS_MODULES:
        module = importlib.import_module(f"{__name__}.{name}")
        out.extend(getattr(module, "STAGES", None) or (module.STAGE,))
    return out
