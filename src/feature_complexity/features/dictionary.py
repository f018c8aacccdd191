"""``fit_dictionary``: the stable entry point for learning the features on the penultimate layer.

Notation (docs/ARCHITECTURE.md): ``A`` activations ``(n_samples, d)``, ``D`` dictionary ``(k, d)``
with atoms as rows. The method is a registered :class:`~.base.DictionaryLearner` (``"nmf"``,
``"semi_nmf"``, ``"sae"`` …); this module checks the inputs, resolves ``learner="auto"`` (NMF for
non-negative activations, Semi-NMF for signed ones, with a message) and hands over.
"""

from __future__ import annotations

import warnings

import numpy as np

from .._validation import as_array, as_class_indices
from .base import SCOPES, Dictionary, DictionaryLearner, get_learner

__all__ = ["Dictionary", "fit_dictionary", "resolve_learner", "usable_classes"]


def _validate_activations(A: object) -> np.ndarray:
    """``A (n, d)`` as a finite float copy, or a ``ValueError`` naming the problem."""
    A = as_array(A, "A", 2, expected="2-D (n_samples, d) penultimate activations",
                 fix="; pool spatial maps first (global average pooling)")
    if A.shape[0] == 0 or A.shape[1] == 0:
        raise ValueError(f"A is empty (shape {A.shape}); pass at least one image and one unit")
    A = A.astype(np.float64 if A.dtype == np.float64 else np.float32, copy=True)
    bad = ~np.isfinite(A)
    if bad.any():
        raise ValueError(
            f"A contains {int(bad.sum())} non-finite values (NaN or inf) in {int(bad.any(axis=1).sum())} of "
            f"{A.shape[0]} images; drop those images or fix the activation extraction (run the model in "
            "float32, check the inputs for NaN)")
    return A


def resolve_learner(learner: str, A_min: float) -> str:
    """``"auto"`` -> ``"nmf"`` for non-negative activations, ``"semi_nmf"`` for signed ones (said
    once with a warning); any other name is returned unchanged."""
    from .nmf import NEGATIVE_TOLERANCE

    if learner != "auto":
        return learner
    if A_min >= -NEGATIVE_TOLERANCE:
        return "nmf"
    warnings.warn(f"the penultimate activations are signed (min {A_min:.3g}): NMF does not apply, the "
                  "dictionary is Semi-NMF (signed atoms, non-negative codes); choose with --learner",
                  stacklevel=3)
    return "semi_nmf"


def usable_classes(classes: np.ndarray, n_atoms_per_class: int, *, n_classes: int | None = None
                   ) -> tuple[np.ndarray, list[int], list[int]]:
    """Which classes can be fitted: ``(fitted, empty, too_small)``. A class with fewer samples than
    atoms cannot give ``r`` atoms; it is skipped (with a warning by the caller) when others can."""
    counts = np.bincount(classes, minlength=n_classes or 0)
    fitted = np.flatnonzero(counts >= n_atoms_per_class)
    empty = np.flatnonzero(counts == 0).tolist()
    small = np.flatnonzero((counts > 0) & (counts < n_atoms_per_class)).tolist()
    return fitted, empty, small


def fit_dictionary(
    A: np.ndarray,
    image_class: np.ndarray | None,
    n_atoms_per_class: int = 10,
    *,
    method: str = "per_class",
    learner: str | DictionaryLearner = "auto",
    n_atoms: int | None = None,
    n_classes: int | None = None,
    seed: int = 0,
    max_iter: int = 500,
    device: str = "cpu",
    skip_empty_classes: bool = True,
    progress: bool = False,
    nmf_solver: str | None = None,
) -> Dictionary:
    """Fit the dictionary ``D`` on penultimate activations.

    Args:
        A: activations ``(n_samples, d)`` (pooled vectors, or spatial positions / crops).
        image_class: ``(n_samples,)`` class of each row in ``0 .. n_classes-1`` (the label, or the
            prediction where unknown); required for ``method="per_class"``.
        n_atoms_per_class: ``r``, atoms per class (paper: 10).
        method: the scope, ``"per_class"`` (paper, CRAFT) or ``"global"``.
        learner: ``"auto"`` (NMF when ``A ≥ 0``, else Semi-NMF, with a warning), ``"nmf"``,
            ``"semi_nmf"``, ``"sae"``, any registered name, or a learner instance with its own
            options (e.g. ``NMFLearner(solver="sklearn")``, ``SAELearner(SAEOptions(top_k=16))``).
        n_atoms: atoms of a global dictionary (default ``r * n_classes``, or ``r`` without classes).
        n_classes: number of classes (default ``image_class.max() + 1``).
        seed: seeds the fit.
        max_iter: iteration budget of the fit (per class for NMF / Semi-NMF; the SAE trains for
            its ``epochs`` instead).
        device: where iterative learners run (``"cpu"``, ``"cuda"``).
        skip_empty_classes: give classes with no image (or fewer than ``r``) no atoms, with a
            warning, instead of raising.
        progress: progress bar.
        nmf_solver: when the learner is NMF (by name or by ``"auto"``), its solver (``"hals"``,
            ``"accelerated"``, ``"sklearn"``; default: the learner's, hals).

    Returns:
        :class:`Dictionary` with ``.D (k, d)`` and ``.feature_class (k,)`` (class order).

    Raises:
        ValueError: non-finite activations, NMF on signed activations, no class large enough,
            inconsistent shapes or options.
    """
    if method not in SCOPES:
        raise ValueError(f"method must be 'per_class' or 'global', got {method!r}")
    A = _validate_activations(A)
    n, d = A.shape
    if max_iter < 1:
        raise ValueError(f"max_iter must be >= 1, got {max_iter}")
    r = int(n_atoms_per_class)
    if r < 1:
        raise ValueError(f"n_atoms_per_class must be >= 1, got {n_atoms_per_class}")
    impl, name = _learner(learner, A, nmf_solver)
    _check_learner(impl, name, method, A)
    classes = _image_classes(image_class, n)
    if method == "global":
        k = n_atoms if n_atoms is not None else r * (int(classes.max()) + 1 if classes is not None else 1)
        if k < 1:
            raise ValueError(f"method='global' needs n_atoms >= 1, got {n_atoms}")
        return impl.fit(A, classes, scope="global", n_atoms_per_class=r, n_atoms=int(k), seed=seed,
                        max_iter=max_iter, device=device, progress=progress)
    if classes is None:
        raise ValueError("method='per_class' needs the class of every image (row of A); pass the labels (or "
                         "the model's predictions where labels are unknown), or use method='global'")
    fitted = _fitted_classes(classes, r, d, n_classes, skip_empty_classes)
    keep = np.isin(classes, fitted)
    dictionary = impl.fit(A[keep], classes[keep], scope="per_class", n_atoms_per_class=r, n_atoms=None,
                          seed=seed, max_iter=max_iter, device=device, progress=progress)
    _warn_zero_atoms(dictionary)
    return dictionary


def _learner(learner: str | DictionaryLearner, A: np.ndarray, nmf_solver: str | None
             ) -> tuple[DictionaryLearner, str]:
    """The learner instance and its name: a given instance as it is, else the registered one
    (``"auto"`` resolved on ``A``), an NMF with ``nmf_solver`` when one is asked for."""
    if isinstance(learner, DictionaryLearner):
        return learner, learner.name
    name = resolve_learner(learner, float(A.min()))
    if name == "nmf" and nmf_solver is not None:
        from .nmf import NMFLearner

        return NMFLearner(solver=nmf_solver), name
    return get_learner(name), name


def _check_learner(impl: DictionaryLearner, name: str, method: str, A: np.ndarray) -> None:
    """Refuse signed activations for a non-negative learner, and a scope the learner lacks."""
    if impl.requires_nonnegative:  # before any class bookkeeping: the most useful message first
        from .nmf import check_nonnegative

        check_nonnegative(A)
    if method not in impl.scopes:
        raise ValueError(f"learner {name!r} supports {' and '.join(impl.scopes)} dictionaries, not "
                         f"{method!r}; use --dictionary {impl.scopes[0]}")


def _image_classes(image_class: np.ndarray | None, n: int) -> np.ndarray | None:
    """``image_class`` as ``(n,)`` non-negative class indices (``None`` stays ``None``)."""
    if image_class is None:
        return None
    classes = as_class_indices(as_array(image_class, "image_class", 1), "image_class")
    if classes.shape != (n,):
        raise ValueError(f"image_class must have shape ({n},), one class per row of A, got {classes.shape}")
    if (classes < 0).any():
        raise ValueError(f"{int((classes < 0).sum())} rows have a negative class (unknown label); use "
                         "the model's predictions for them: np.where(labels >= 0, labels, logits.argmax(1))")
    return classes


def _fitted_classes(classes: np.ndarray, r: int, d: int, n_classes: int | None,
                    skip_empty_classes: bool) -> np.ndarray:
    """The classes a per-class dictionary fits: those with at least ``r`` images (warns about the rest)."""
    if r > d:
        raise ValueError(f"n_atoms_per_class={r} is larger than the activation dimension d={d}; use at most "
                         f"{d} atoms per class (--atoms-per-class)")
    n_cls = int(classes.max()) + 1 if n_classes is None else int(n_classes)
    if classes.max() >= n_cls:
        raise ValueError(f"image_class goes up to {int(classes.max())} but n_classes={n_cls}; pass n_classes "
                         f"> {int(classes.max())} (the model's number of classes) or leave it None")
    fitted, empty, small = usable_classes(classes, r, n_classes=n_cls)
    if fitted.size == 0:
        counts = np.bincount(classes)
        raise ValueError(f"no class has {r} images for {r} atoms (the largest has {int(counts.max())}); use "
                         f"--atoms-per-class {max(1, int(counts.max()))} or more images per class")
    if (empty or small) and not skip_empty_classes:
        c = (small or empty)[0]
        count = int(np.sum(classes == c))
        raise ValueError(f"class {c} has {'no images' if count == 0 else f'{count} images'} for {r} atoms per "
                         "class; pass skip_empty_classes=True to give such classes no atoms")
    if small:
        warnings.warn(f"{len(small)} classes have fewer images than --atoms-per-class {r} and get no "
                      f"atoms (e.g. classes {small[:10]})", stacklevel=3)
    return fitted


def _warn_zero_atoms(dictionary: Dictionary) -> None:
    """Warn about atoms that are exactly zero (a collapsed fit); they are kept so that the class
    layout stays ``r`` atoms per class. Their codes will be 0."""
    zero = np.flatnonzero(~dictionary.D.any(axis=1))
    if zero.size:
        classes = np.unique(dictionary.feature_class[zero])[:10].tolist()
        warnings.warn(f"{zero.size} of {dictionary.n_atoms} atoms are all zero (degenerate fit), e.g. atoms "
                      f"{zero[:10].tolist()} of classes {classes}; their codes will be 0. Fewer atoms per "
                      "class usually avoids this", stacklevel=3)
