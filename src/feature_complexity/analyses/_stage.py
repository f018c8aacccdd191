"""The stage of an analysis whose result is one dataclass (saved as ``<name>.npz``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["result_stage"]


def result_stage(name: str, compute: Callable[[Any], Any], cls: type, *, needs: tuple[str, ...],
                 optional: tuple[str, ...] = (), settings: tuple[str, ...] = (), inputs: tuple[str, ...] = (),
                 applies: Callable[[Any], bool] | None = None, section: str | None = None,
                 figures: Callable[[Any, Any], dict[str, Any]] | None = None,
                 columns: Callable[[Any], dict[str, Any]] | None = None) -> Any:
    """A :class:`~feature_complexity.stages.Stage` saving its dataclass result with
    :func:`~feature_complexity.io.save_dataclass` in ``<run>/<name>.npz``."""
    from ..io import load_dataclass, save_dataclass
    from ..stages import Stage

    file = f"{name}.npz"

    def save(result: Any, out: Path) -> None:
        save_dataclass(out / file, result)

    def load(out: Path) -> Any:
        return load_dataclass(out / file, cls)

    return Stage(name, compute, needs=needs, optional=optional, settings=settings, inputs=inputs, save=save,
                 load=load, outputs=(file,), applies=applies, section=section, figures=figures, columns=columns)
