"""Dictionary learning on the penultimate layer: the paper's features as NMF atoms.

Notation (docs/ARCHITECTURE.md): ``A`` penultimate activations ``(n_images, d)`` (non-negative
after a ReLU), ``D`` dictionary ``(k, d)`` with atoms as rows, ``D ≥ 0``.

Default, as in the paper (CRAFT / LENS, paper-method.md §2.2 and §9.4): for every class ``c``,
``sklearn.decomposition.NMF`` with ``r`` components on the rows of ``A`` whose class is ``c``;
its ``components_`` ``W_c (r, d)`` are the class's atoms, stacked in class order into
``D (n_classes * r, d)``; ``feature_class[i]`` is the class atom ``i`` was extracted for. The
option ``method="global"`` fits one NMF with ``k`` atoms on all rows (``feature_class = -1``).
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .._validation import as_array, as_class_indices

__all__ = ["Dictionary", "fit_dictionary", "NEGATIVE_TOLERANCE"]

#: Activations down to this value are treated as rounding noise of a ReLU output and clipped to 0.
NEGATIVE_TOLERANCE = 1e-6


@dataclass
class Dictionary:
    """A fitted dictionary.

    Attributes:
        D: atoms as rows, ``(k, d)``, non-negative.
        feature_class: ``(k,)`` int, the class each atom was extracted for; ``-1`` for atoms of a
            global dictionary.
        method: ``"per_class"`` or ``"global"``.
        n_atoms_per_class: ``r`` for a per-class dictionary, ``None`` for a global one.
        reconstruction_error: relative Frobenius error ``||A − U D||_F / ||A||_F`` of the NMF fit
            itself (``U`` the NMF's own codes, each class reconstructed by its own atoms).
    """

    D: np.ndarray
    feature_class: np.ndarray
    method: str
    n_atoms_per_class: int | None
    reconstruction_error: float

    @property
    def n_atoms(self) -> int:
        """Number of atoms ``k``."""
        return int(self.D.shape[0])

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the dictionary to an ``.npz`` file atomically.

        The file is written to a temporary file in the same folder and moved into place with
        ``os.replace``, so a crash mid-write never leaves a truncated ``dictionary.npz`` that a
        resumed run would trust.
        """
        from ..io import save_npz

        save_npz(
            path,
            D=self.D,
            feature_class=self.feature_class.astype(np.int64),
            method=np.array(self.method),
            # npz holds arrays only; -1 encodes "not a per-class dictionary".
            n_atoms_per_class=np.array(-1 if self.n_atoms_per_class is None else self.n_atoms_per_class),
            reconstruction_error=np.array(float(self.reconstruction_error)),
        )

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Dictionary:
        """Read a dictionary written by :meth:`save`."""
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"no dictionary file at {path}; fit one with fit_dictionary first")
        with np.load(path, allow_pickle=False) as f:
            missing = {"D", "feature_class", "method"} - set(f.files)
            if missing:
                raise ValueError(
                    f"{path} is not a dictionary file: missing {sorted(missing)}; "
                    f"write it with Dictionary.save"
                )
            r = int(f["n_atoms_per_class"]) if "n_atoms_per_class" in f.files else -1
            err = float(f["reconstruction_error"]) if "reconstruction_error" in f.files else np.nan
            return cls(
                D=f["D"],
                feature_class=f["feature_class"].astype(np.int64),
                method=str(f["method"]),
                n_atoms_per_class=None if r < 0 else r,
                reconstruction_error=err,
            )


def _validate_activations(A: np.ndarray) -> np.ndarray:
    """Check ``A (n_images, d)`` for NMF and return a float copy with tiny negatives clipped."""
    A = as_array(
        A, "A", 2, expected="2-D (n_images, d) penultimate activations",
        fix="; pool spatial maps first (global average pooling)",
    )
    if A.shape[0] == 0 or A.shape[1] == 0:
        raise ValueError(f"A is empty (shape {A.shape}); pass at least one image and one unit")
    A = A.astype(np.float64 if A.dtype == np.float64 else np.float32, copy=True)
    bad = ~np.isfinite(A)
    if bad.any():
        rows = int(bad.any(axis=1).sum())
        raise ValueError(
            f"A contains {int(bad.sum())} non-finite values (NaN or inf) in {rows} of "
            f"{A.shape[0]} images; drop those images or fix the activation extraction "
            f"(e.g. run the model in float32, check the inputs for NaN)"
        )
    lo = float(A.min())
    if lo < -NEGATIVE_TOLERANCE:
        raise ValueError(
            f"penultimate activations must be ≥ 0 for NMF (min is {lo:.3g}, "
            f"{int((A < -NEGATIVE_TOLERANCE).sum())} negative values); the penultimate layer "
            f"should follow a ReLU. Pass the post-ReLU (pooled) activations"
        )
    np.clip(A, 0, None, out=A)  # negatives above the tolerance are rounding noise
    return A


def _fit_nmf(
    X: np.ndarray, n_components: int, *, seed: int, max_iter: int, init: str
) -> tuple[np.ndarray, float, bool]:
    """One sklearn NMF; returns ``(components_ (r, d), squared error, converged)``."""
    from sklearn.decomposition import NMF
    from sklearn.exceptions import ConvergenceWarning

    nmf = NMF(n_components=n_components, init=init, random_state=seed, max_iter=max_iter)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        nmf.fit(X)
    converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
    for w in caught:  # re-emit anything that is not the convergence warning we summarise
        if not issubclass(w.category, ConvergenceWarning):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return nmf.components_, float(nmf.reconstruction_err_) ** 2, converged


def fit_dictionary(
    A: np.ndarray,
    classes: np.ndarray | None,
    *,
    method: str = "per_class",
    n_atoms_per_class: int = 10,
    n_atoms: int | None = None,
    n_classes: int | None = None,
    seed: int = 0,
    max_iter: int = 500,
    skip_empty_classes: bool = False,
    progress: bool = True,
) -> Dictionary:
    """Fit the dictionary ``D`` of non-negative atoms on penultimate activations.

    Args:
        A: penultimate activations ``(n_images, d)``, ≥ 0 (values down to ``-1e-6`` are clipped).
        classes: ``(n_images,)`` int class of each image in ``0 .. n_classes-1`` — the label, or
            the model's prediction where the label is unknown (the caller resolves ``-1``).
            Required for ``method="per_class"``, ignored for ``"global"`` (may be ``None``).
        method: ``"per_class"`` (the paper's, CRAFT-style) or ``"global"``.
        n_atoms_per_class: ``r``, atoms per class for ``"per_class"``.
        n_atoms: ``k``, atoms of the global dictionary; required for ``"global"``.
        n_classes: number of classes; default ``classes.max() + 1``. Classes without images are
            an error unless ``skip_empty_classes``.
        seed: ``random_state`` of every NMF (nndsvda initialisation is deterministic; the seed
            matters for the ``"random"`` init used when ``k > min(n_images, d)``).
        max_iter: NMF iteration budget (sklearn's coordinate-descent solver).
        skip_empty_classes: give classes with no image no atoms instead of raising.
        progress: tqdm bar over classes.

    Returns:
        A :class:`Dictionary`; per-class: ``D (n_fitted_classes * r, d)`` in class order.

    Raises:
        ValueError: negative or non-finite activations, a class with fewer images than atoms,
            a class with no images, inconsistent shapes or options.
    """
    if method not in ("per_class", "global"):
        raise ValueError(f"method must be 'per_class' or 'global', got {method!r}")
    A = _validate_activations(A)
    n, d = A.shape
    if max_iter < 1:
        raise ValueError(f"max_iter must be >= 1, got {max_iter}")

    if method == "global":
        if n_atoms is None or n_atoms < 1:
            raise ValueError(
                f"method='global' needs n_atoms >= 1 (the number of atoms k), got {n_atoms}"
            )
        # nndsvda is built from an SVD and cannot give more atoms than min(n, d); an
        # overcomplete dictionary needs a random start.
        init = "nndsvda" if n_atoms <= min(n, d) else "random"
        W, sq_err, converged = _fit_nmf(A, n_atoms, seed=seed, max_iter=max_iter, init=init)
        if not converged:
            warnings.warn(
                f"global NMF did not converge in max_iter={max_iter} iterations; "
                f"raise max_iter for a tighter fit",
                stacklevel=2,
            )
        D = W.astype(A.dtype)
        _warn_zero_atoms(D, np.full(n_atoms, -1))
        norm2 = float(np.sum(A.astype(np.float64) ** 2))
        return Dictionary(
            D=D,
            feature_class=np.full(n_atoms, -1, dtype=np.int64),
            method="global",
            n_atoms_per_class=None,
            reconstruction_error=float(np.sqrt(sq_err / norm2)) if norm2 > 0 else 0.0,
        )

    if classes is None:
        raise ValueError(
            "method='per_class' needs the class of every image; pass the labels, or the "
            "model's predictions where labels are unknown, or use method='global'"
        )
    classes = np.asarray(classes)
    if classes.shape != (n,):
        raise ValueError(
            f"classes must have shape (n_images,) = ({n},), got {classes.shape}; one class per "
            f"row of A"
        )
    classes = as_class_indices(classes, "classes")
    if (classes < 0).any():
        raise ValueError(
            f"{int((classes < 0).sum())} images have a negative class (unknown label); replace "
            f"them with the model's predictions, e.g. np.where(labels >= 0, labels, "
            f"logits.argmax(1))"
        )
    r = int(n_atoms_per_class)
    if r < 1:
        raise ValueError(f"n_atoms_per_class must be >= 1, got {n_atoms_per_class}")
    if r > d:
        raise ValueError(
            f"n_atoms_per_class={r} is larger than the activation dimension d={d}; the "
            f"per-class NMF (nndsvda init) needs r <= d. Use fewer atoms per class"
        )
    n_cls = int(classes.max()) + 1 if n_classes is None else int(n_classes)
    if classes.max() >= n_cls:
        raise ValueError(
            f"classes go up to {int(classes.max())} but n_classes={n_cls}; pass n_classes > "
            f"the largest class index"
        )
    counts = np.bincount(classes, minlength=n_cls)
    empty = np.flatnonzero(counts == 0)
    if empty.size and not skip_empty_classes:
        raise ValueError(
            f"class {int(empty[0])} has no images ({empty.size} empty classes in total: "
            f"{empty[:10].tolist()}); pass images of every class, a smaller n_classes, or "
            f"skip_empty_classes=True to give those classes no atoms"
        )
    small = np.flatnonzero((counts > 0) & (counts < r))
    if small.size:
        c = int(small[0])
        raise ValueError(
            f"class {c} has {int(counts[c])} images but n_atoms_per_class={r} "
            f"({small.size} classes are too small: {small[:10].tolist()}); use fewer atoms per "
            f"class (n_atoms_per_class <= {int(counts[counts > 0].min())}) or more images"
        )

    fitted = np.flatnonzero(counts > 0)
    iterator = fitted
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(fitted, desc="NMF per class", unit="class")
    blocks: list[np.ndarray] = []
    sq_err_total = 0.0
    not_converged: list[int] = []
    for c in iterator:
        W, sq_err, converged = _fit_nmf(
            A[classes == c], r, seed=seed, max_iter=max_iter, init="nndsvda"
        )
        blocks.append(W.astype(A.dtype))
        sq_err_total += sq_err
        if not converged:
            not_converged.append(int(c))
    if not_converged:
        warnings.warn(
            f"NMF did not converge in max_iter={max_iter} iterations for {len(not_converged)} "
            f"classes (e.g. {not_converged[:10]}); raise max_iter for a tighter fit",
            stacklevel=2,
        )
    D = np.concatenate(blocks, axis=0)
    feature_class = np.repeat(fitted, r).astype(np.int64)
    _warn_zero_atoms(D, feature_class)
    norm2 = float(np.sum(A.astype(np.float64) ** 2))
    return Dictionary(
        D=D,
        feature_class=feature_class,
        method="per_class",
        n_atoms_per_class=r,
        reconstruction_error=float(np.sqrt(sq_err_total / norm2)) if norm2 > 0 else 0.0,
    )


def _warn_zero_atoms(D: np.ndarray, feature_class: np.ndarray) -> None:
    """Warn about atoms that are exactly zero (NMF collapsed them); they are kept so that the
    atom count and the class layout stay ``r`` per class. Their codes will be 0."""
    zero = np.flatnonzero(~D.any(axis=1))
    if zero.size:
        warnings.warn(
            f"{zero.size} of {D.shape[0]} atoms are all zero (degenerate NMF), e.g. atoms "
            f"{zero[:10].tolist()} of classes {np.unique(feature_class[zero])[:10].tolist()}; "
            f"their codes will be 0. Fewer atoms per class usually avoids this",
            stacklevel=3,
        )
