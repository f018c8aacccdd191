"""The model-family contract: how a family of architectures is built by name and described.

A family (torchvision's ResNets, the CIFAR ResNets, timm, …) is a :class:`ModelFamily` subclass
registered with :func:`register_family`. It says which names it accepts, builds the module with
the requested weights, and describes it as a :class:`~.spec.ModelSpec`: probe points (the
residual stream after every block, forward order), branches where they exist (skip and main of
every residual addition), penultimate, head (or none), preprocessing. Everything else —
:func:`~.registry.build_model`, the CLI's ``--model`` help, checkpoint loading, the run manifest —
reads this table.

Adding a family is one module with a subclass plus one line in :data:`BUILTIN_FAMILY_MODULES`
(or ``@register_family`` in your own code before calling ``build_model``).
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

if TYPE_CHECKING:
    import torch

    from .spec import ModelSpec

__all__ = ["ModelFamily", "FAMILIES", "BUILTIN_FAMILY_MODULES", "register_family", "families", "family_for"]


class ModelFamily(ABC):
    """One family of named architectures.

    Attributes:
        name: short family name (``"torchvision-resnet"``).
        kwargs: extra keyword arguments :meth:`build` accepts (``small-resnet``'s ``widths`` …).
        weights_help: what ``weights=`` means for this family, for messages and ``--help``.
        named_weights: whether ``weights=<name>`` means anything (else the registry refuses it
            rather than silently building random weights).
        headless: whether ``num_classes=0`` builds the model without a classification head.
        checkpoint_guess: whether the registry tries this family's names when it guesses which
            built-in model a mismatched ResNet checkpoint fits (each is built on the meta device:
            off for families of large non-ResNet models).
    """

    name: ClassVar[str]
    kwargs: ClassVar[tuple[str, ...]] = ()
    weights_help: ClassVar[str] = "no named weights: pass a local checkpoint"
    named_weights: ClassVar[bool] = False
    headless: ClassVar[bool] = False
    checkpoint_guess: ClassVar[bool] = True

    @abstractmethod
    def names(self) -> list[str]:
        """Names shown in ``--help`` (a pattern such as ``"timm:<name>"`` for open-ended families)."""

    def canonical(self, name: str) -> str | None:
        """The family's spelling of ``name`` if it accepts it, else ``None``."""
        key = name.strip().lower()
        return key if key in self.names() else None

    @abstractmethod
    def build(self, key: str, *, weights: str | None, num_classes: int | None,
              class_names: list[str] | None, **kwargs: Any) -> tuple["ModelSpec", dict[str, Any]]:
        """Build model ``key`` (randomly initialised when ``weights`` is ``None``; the caller loads
        a checkpoint afterwards). ``num_classes=0`` (only when :attr:`headless`): no head.
        Returns the spec and the resolved ``kwargs`` to record."""

    def kwargs_from_state(self, key: str, state: Mapping[str, "torch.Tensor"]) -> dict[str, Any]:
        """Family kwargs that a checkpoint's state dict implies (e.g. widths); default none."""
        return {}

    def head_classes(self, state: Mapping[str, "torch.Tensor"]) -> int | None:
        """Output width of the head stored in a state dict, if the family can tell."""
        for head in ("fc.weight", "linear.weight", "head.weight", "head.fc.weight", "classifier.weight"):
            if head in state and state[head].ndim == 2:
                return int(state[head].shape[0])
        return None


#: registered families, in the order names are looked up
FAMILIES: list[ModelFamily] = []

#: modules that define the built-in families (each registers its families on import)
BUILTIN_FAMILY_MODULES: tuple[str, ...] = ("feature_complexity.models.families",)

_F = TypeVar("_F", bound=type[ModelFamily])


def register_family(cls: _F) -> _F:
    """Class decorator: add an instance of ``cls`` to :data:`FAMILIES`."""
    if not any(type(f) is cls for f in FAMILIES):
        FAMILIES.append(cls())
    return cls


def families() -> list[ModelFamily]:
    """Every registered family (the built-in modules imported first)."""
    for module in BUILTIN_FAMILY_MODULES:
        importlib.import_module(module)
    return FAMILIES


def family_for(name: str) -> tuple[ModelFamily, str]:
    """The family that accepts ``name`` and its canonical spelling; a ``ValueError`` lists what exists."""
    if not isinstance(name, str):
        raise ValueError(f"model name must be a string, got {type(name).__name__}")
    for fam in families():
        key = fam.canonical(name)
        if key is not None:
            return fam, key
    known = ", ".join(n for fam in FAMILIES for n in fam.names())
    raise ValueError(f"unknown model '{name}'; known models are: {known} (for another architecture, wrap "
                     "your nn.Module with spec_from_module)")

