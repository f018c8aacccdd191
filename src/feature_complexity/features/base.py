"""The dictionary-learner contract (after overcomplete's ``fit / encode / decode / get_dictionary``).

Notation (docs/ARCHITECTURE.md): ``A`` activations ``(n_images, d)``, ``D`` dictionary ``(k, d)``
with atoms as rows, ``Z`` codes ``(n_images, k)``, ``decode(Z) ≈ A``.

A dictionary method is a :class:`DictionaryLearner` registered under a short name with
:func:`register_learner`. Its :meth:`~DictionaryLearner.fit` returns a :class:`Dictionary`, the
fitted state that everything downstream talks to: codes (:meth:`Dictionary.encode`), importance
and fidelity through :meth:`Dictionary.decode` (differentiable on torch tensors), heatmaps,
dynamics and the report. Nothing downstream knows which method made it.

Adding a method (e.g. a sparse autoencoder) is one module with a subclass and one
``@register_learner("name")`` line; its learner-specific arrays (encoder weights, biases) live
in :attr:`Dictionary.extra` and are saved with the dictionary.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import numpy as np

__all__ = ["Dictionary", "DictionaryLearner", "LEARNERS", "register_learner", "get_learner", "SCOPES"]

#: How atoms relate to classes: ``"per_class"`` (atoms fitted on each class's images and stacked,
#: the paper's default) or ``"global"`` (one dictionary on all images, ``feature_class = -1``).
SCOPES = ("per_class", "global")


@dataclass
class Dictionary:
    """A fitted dictionary and how to encode with it.

    Attributes:
        D: atoms as rows, ``(k, d)``.
        feature_class: ``(k,)`` int, the class each atom was extracted for; ``-1`` for atoms of a
            global dictionary.
        method: the registered learner that made it (``"nmf"``, ``"semi_nmf"``, ``"sae"`` …).
        scope: ``"per_class"`` or ``"global"``.
        n_atoms_per_class: ``r`` of a per-class dictionary, ``None`` for a global one.
        reconstruction_error: relative Frobenius error ``||A − decode(Z)||_F / ||A||_F`` of the fit
            on its own training samples (each class reconstructed by its own atoms when per class).
        extra: learner-specific arrays (e.g. an encoder), saved and loaded with the dictionary.
    """

    D: np.ndarray
    feature_class: np.ndarray
    method: str
    scope: str
    n_atoms_per_class: int | None
    reconstruction_error: float
    extra: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def n_atoms(self) -> int:
        """Number of atoms ``k``."""
        return int(self.D.shape[0])

    @property
    def learner(self) -> "DictionaryLearner":
        """The learner that encodes and decodes with this dictionary."""
        return get_learner(self.method)

    def get_dictionary(self) -> np.ndarray:
        """``D`` ``(k, d)``."""
        return self.D

    def encode(self, A: Any, **options: Any) -> np.ndarray:
        """Codes ``Z (n_images, k)`` of activations ``A (n_images, d)``; options go to the learner
        (e.g. ``device``, ``batch_size``)."""
        return self.learner.encode(self, A, **options)

    def decode(self, Z: Any) -> Any:
        """``decode(Z) ≈ A``: numpy in, numpy out; a torch tensor in, a differentiable tensor out
        (on ``Z``'s device and dtype), so that importance can take gradients with respect to ``Z``."""
        return self.learner.decode(self, Z)

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the dictionary (and :attr:`extra`) to one ``.npz`` file, atomically."""
        from ..io import save_npz

        extra = {f"extra__{k}": np.asarray(v) for k, v in self.extra.items()}
        save_npz(
            path,
            D=self.D,
            feature_class=np.asarray(self.feature_class, dtype=np.int64),
            method=np.array(self.method),
            scope=np.array(self.scope),
            # npz holds arrays only; -1 encodes "not a per-class dictionary".
            n_atoms_per_class=np.array(-1 if self.n_atoms_per_class is None else self.n_atoms_per_class),
            reconstruction_error=np.array(float(self.reconstruction_error)),
            **extra,
        )

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> "Dictionary":
        """Read a dictionary written by :meth:`save` (also the files of version 0.1, whose
        ``method`` was ``"per_class"``/``"global"`` NMF)."""
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"no dictionary file at {path}; fit one with fit_dictionary first")
        with np.load(path, allow_pickle=False) as f:
            missing = {"D", "feature_class", "method"} - set(f.files)
            if missing:
                raise ValueError(f"{path} is not a dictionary file: missing {sorted(missing)}; "
                                 "write it with Dictionary.save")
            method = str(f["method"])
            scope = str(f["scope"]) if "scope" in f.files else method
            if method in SCOPES:  # a 0.1 file: NMF, the method named its scope
                method = "nmf"
            r = int(f["n_atoms_per_class"]) if "n_atoms_per_class" in f.files else -1
            err = float(f["reconstruction_error"]) if "reconstruction_error" in f.files else float("nan")
            extra = {k.removeprefix("extra__"): f[k] for k in f.files if k.startswith("extra__")}
            return cls(D=f["D"], feature_class=f["feature_class"].astype(np.int64), method=method,
                       scope=scope, n_atoms_per_class=None if r < 0 else r, reconstruction_error=err,
                       extra=extra)


class DictionaryLearner(ABC):
    """A dictionary method: fits a :class:`Dictionary` and encodes / decodes with it.

    Subclasses set :attr:`name` (the registry key), :attr:`scopes` (which of :data:`SCOPES` they
    support) and :attr:`requires_nonnegative` (``fit`` refuses signed activations), and implement
    :meth:`fit` and :meth:`encode`. The default :meth:`decode` is ``Z @ D`` (plus
    ``extra["decoder_bias"]`` when present).
    """

    name: ClassVar[str]
    scopes: ClassVar[tuple[str, ...]] = SCOPES
    requires_nonnegative: ClassVar[bool] = False
    #: the codes are non-negative (NNLS codes, ReLU/TopK encoders)
    nonnegative_codes: ClassVar[bool] = True

    @abstractmethod
    def fit(
        self,
        A: np.ndarray,
        classes: np.ndarray | None,
        *,
        scope: str,
        n_atoms_per_class: int,
        n_atoms: int | None,
        seed: int,
        max_iter: int,
        device: str,
        progress: bool,
    ) -> Dictionary:
        """Fit on ``A (n_samples, d)``; ``classes (n_samples,)`` (>= 0) is required for
        ``scope="per_class"``. Returns atoms in class order for a per-class scope."""

    @abstractmethod
    def encode(self, dictionary: Dictionary, A: Any, **options: Any) -> np.ndarray:
        """Codes ``Z (n_images, k)`` of ``A (n_images, d)`` against ``dictionary``."""

    def decode(self, dictionary: Dictionary, Z: Any) -> Any:
        """``Z @ D (+ bias)``; a torch tensor gives a differentiable tensor on its device/dtype."""
        bias = dictionary.extra.get("decoder_bias")
        if hasattr(Z, "detach"):  # torch, without importing it here
            import torch

            D = torch.as_tensor(dictionary.D, dtype=Z.dtype, device=Z.device)
            out = Z @ D
            return out if bias is None else out + torch.as_tensor(bias, dtype=Z.dtype, device=Z.device)
        out = np.asarray(Z) @ dictionary.D
        return out if bias is None else out + bias


#: registered learners by name (see :func:`register_learner`)
LEARNERS: dict[str, DictionaryLearner] = {}

_L = TypeVar("_L", bound=type[DictionaryLearner])


def register_learner(name: str) -> Callable[[_L], _L]:
    """Class decorator: ``@register_learner("sae")`` makes the learner available by that name to
    :func:`~feature_complexity.features.fit_dictionary`, the CLI (``--learner``) and saved runs."""

    def wrap(cls: _L) -> _L:
        cls.name = name
        LEARNERS[name] = cls()
        return cls

    return wrap


def get_learner(name: str) -> DictionaryLearner:
    """The learner registered as ``name``; a clear error lists the known ones."""
    _load_builtin_learners()
    try:
        return LEARNERS[name]
    except KeyError:
        raise ValueError(f"unknown dictionary learner {name!r}; known: {', '.join(sorted(LEARNERS))}") from None


#: modules of the built-in learners, imported on first lookup (each registers itself on import;
#: by name, like ``ANALYSIS_MODULES`` and ``BUILTIN_FAMILY_MODULES``: base imports no learner)
BUILTIN_LEARNER_MODULES: tuple[str, ...] = ("nmf", "seminmf", "sae")


def _load_builtin_learners() -> None:
    """Import the built-in learner modules (each registers itself on import)."""
    import importlib

    for module in BUILTIN_LEARNER_MODULES:
        importlib.import_module(f"{__package__}.{module}")

