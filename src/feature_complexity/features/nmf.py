"""NMF dictionaries: the paper's features (CRAFT / LENS, paper-method.md §2.2 and §9.4).

Notation (docs/ARCHITECTURE.md): ``A`` penultimate activations ``(n_samples, d)``, non-negative
after a ReLU; ``D`` dictionary ``(k, d)`` with atoms as rows, ``D ≥ 0``.

Per class (the default): for every class ``c``, NMF with ``r`` components on the rows of ``A``
whose class is ``c``; its atoms ``W_c (r, d)`` are stacked in class order into
``D (n_classes * r, d)``. Global: one NMF with ``k`` atoms on all rows. Codes of new inputs are
the non-negative least squares of each row against the whole ``D`` (:func:`..nnls.encode`), or
against its own class block with ``codes="per_class"``.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from .._validation import as_array
from .base import Dictionary, DictionaryLearner, register_learner

__all__ = ["NMFLearner", "NEGATIVE_TOLERANCE", "check_nonnegative"]

#: Activations down to this value are treated as rounding noise of a ReLU output and clipped to 0.
NEGATIVE_TOLERANCE = 1e-6


def check_nonnegative(A: np.ndarray, what: str = "penultimate activations") -> np.ndarray:
    """``A`` as a float copy with tiny negatives (``>= -1e-6``) clipped; a clear error otherwise."""
    lo = float(A.min()) if A.size else 0.0
    if lo < -NEGATIVE_TOLERANCE:
        raise ValueError(
            f"{what} must be ≥ 0 for NMF (min is {lo:.3g}, {int((A < -NEGATIVE_TOLERANCE).sum())} "
            "negative values): the model's penultimate layer is signed. Use a learner made for "
            "signed activations: --learner semi_nmf (or sae), or --learner auto"
        )
    return np.clip(A, 0, None)


def _fit_sklearn_nmf(X: np.ndarray, n_components: int, *, seed: int, max_iter: int, init: str
                     ) -> tuple[np.ndarray, float, bool]:
    """One scikit-learn NMF; returns ``(components_ (r, d), squared error, converged)``."""
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


@register_learner("nmf")
class NMFLearner(DictionaryLearner):
    """Non-negative matrix factorisation ``A ≈ U D`` with ``U, D ≥ 0``; codes by NNLS."""

    requires_nonnegative = True

    def fit(self, A: np.ndarray, classes: np.ndarray | None, *, scope: str, n_atoms_per_class: int,
            n_atoms: int | None, seed: int, max_iter: int, device: str, progress: bool) -> Dictionary:
        A = check_nonnegative(A)
        if scope == "global":
            assert n_atoms is not None
            # nndsvda is built from an SVD and cannot give more atoms than min(n, d); an
            # overcomplete dictionary needs a random start
            init = "nndsvda" if n_atoms <= min(A.shape) else "random"
            W, sq_err, converged = _fit_sklearn_nmf(A, n_atoms, seed=seed, max_iter=max_iter, init=init)
            if not converged:
                warnings.warn(f"global NMF did not converge in max_iter={max_iter} iterations; raise "
                              "max_iter for a tighter fit", stacklevel=3)
            return _dictionary(W.astype(A.dtype), np.full(n_atoms, -1), "global", None, sq_err, A, self.name)
        assert classes is not None
        fitted = np.unique(classes)
        iterator: Any = fitted
        if progress:
            from tqdm.auto import tqdm

            iterator = tqdm(fitted, desc="NMF per class", unit="class")
        blocks, sq_err_total, not_converged = [], 0.0, []
        for c in iterator:
            W, sq_err, converged = _fit_sklearn_nmf(A[classes == c], n_atoms_per_class, seed=seed,
                                                    max_iter=max_iter, init="nndsvda")
            blocks.append(W.astype(A.dtype))
            sq_err_total += sq_err
            if not converged:
                not_converged.append(int(c))
        if not_converged:
            warnings.warn(f"NMF did not converge in max_iter={max_iter} iterations for {len(not_converged)} "
                          f"classes (e.g. {not_converged[:10]}); raise max_iter for a tighter fit", stacklevel=3)
        feature_class = np.repeat(fitted, n_atoms_per_class)
        return _dictionary(np.concatenate(blocks), feature_class, "per_class", n_atoms_per_class,
                           sq_err_total, A, self.name)

    def encode(self, dictionary: Dictionary, A: Any, **options: Any) -> np.ndarray:
        """NNLS codes (see :func:`feature_complexity.features.encode`); ``codes="per_class"``
        encodes each row against every class block separately."""
        from .nnls import encode

        return np.asarray(encode(as_array(A, "A", 2), dictionary.D, **options))


def _dictionary(D: np.ndarray, feature_class: np.ndarray, scope: str, r: int | None, sq_err: float,
                A: np.ndarray, method: str) -> Dictionary:
    norm2 = float(np.sum(A.astype(np.float64) ** 2))
    return Dictionary(D=D, feature_class=np.asarray(feature_class, dtype=np.int64), method=method, scope=scope,
                      n_atoms_per_class=r,
                      reconstruction_error=float(np.sqrt(sq_err / norm2)) if norm2 > 0 else 0.0)
