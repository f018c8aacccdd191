"""Semi-NMF dictionaries for signed activations (Ding, Li & Jordan 2010, "Convex and
Semi-Nonnegative Matrix Factorizations").

Notation (docs/ARCHITECTURE.md): ``A`` activations ``(n_samples, d)``, signed (a ViT's
penultimate layer, or any layer without a final ReLU); ``D`` dictionary ``(k, d)``, atoms as rows,
**signed**; ``U`` the fit's codes ``(n_samples, k)``, ``U >= 0``; ``A ≈ U D``. Codes of new inputs
are non-negative least squares against the signed ``D`` (:func:`..nnls.encode`), so a feature's
value is still "how much of this direction", never negative.

Algorithm (alternating minimisation of ``||A − U D||²_F``, monotone):

- ``D`` step: the exact least-squares ``D = (UᵀU)⁻¹ UᵀA`` (Ding et al.'s update), with a ridge of
  1e-10 × the mean diagonal so that an atom whose codes are all zero gets ``D = 0`` instead of a
  singular solve.
- ``U`` step: five HALS sweeps (each an exact minimisation over one column of ``U`` at a time) on
  the NNLS problem ``min_{U >= 0} ||A − U D||²``, the same batched sweep as the NMF solver
  (:func:`.nmf.hals_sweep`). They reuse ``D Aᵀ``, so extra sweeps cost no pass over ``A``. Ding et
  al.'s multiplicative rule also decreases the objective, but does less per pass.
- Start (Gillis & Kumar 2015, "Exact and heuristic algorithms for semi-nonnegative matrix
  factorization"): the rank-``(k−1)`` truncated SVD ``V W`` of ``A`` written with ``k``
  non-negative columns, ``U0 = [V − 1 min(V), 1]``, reproduces ``V W`` exactly; so the first ``D``
  step starts at or below the best rank-``(k−1)`` error. Deterministic given ``seed`` (the
  randomized SVD's draws).
- Stop: scikit-learn's rule on the ``U`` sweep's projected-gradient violation (``D`` is exact after
  its step), relative to the first iteration's, ``tol = 1e-4``.

Per class, classes are batched, padded and stopped one by one exactly as for NMF (see
:mod:`.nmf`): a class's atoms do not depend on which classes share its chunk.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from .._validation import as_array
from .base import Dictionary, DictionaryLearner, register_learner
from .nmf import (
    DEFAULT_BATCH_BYTES,
    PerClassFit,
    WarningSummary,
    _each,
    _row_mask,
    bmm,
    fit_per_class,
    hals_sweep,
    iterate_until_converged,
    make_dictionary,
    randomized_svd,
    squared_errors,
    svd_choices,
    torch_device,
    warn_outside,
)

if TYPE_CHECKING:  # torch is heavy; imported inside the functions that need it
    import torch

__all__ = ["SemiNMFLearner", "semi_nmf", "semi_nmf_init", "least_squares_atoms", "semi_nmf_per_class",
           "semi_nmf_global"]


def semi_nmf_init(X: torch.Tensor, n_rows: np.ndarray, k: int, *, seed: int, d: int | None = None
                  ) -> torch.Tensor:
    """Gillis & Kumar's SVD start ``U0 = [V − 1 min(V), c 1]`` for every problem of a batch.

    Args:
        X: ``(B, n_pad, d_pad)`` activations, zero outside each problem's ``n_rows x d`` block.
        n_rows: ``(B,)`` real rows per problem.
        k: atoms. ``k − 1`` SVD directions are used (at most ``min(n, d)``; any further columns,
            only possible for an overcomplete global dictionary, start as seeded uniform noise).
        seed: the randomized SVD's draws (and the noise's).
        d: real columns (default ``d_pad``).

    Returns:
        ``U0ᵀ (B, k, n_pad)`` ``>= 0``, zero on padding rows.
    """
    import torch

    B, n_pad, d_pad = X.shape
    d = d_pad if d is None else d
    rows = _row_mask(n_rows, n_pad, X)  # (B, n_pad, 1)
    m = min(k - 1, int(min(n_rows.min(), d)))
    scale = torch.linalg.vector_norm(X, dim=(1, 2)) / torch.as_tensor(np.sqrt(n_rows * k), dtype=X.dtype,
                                                                          device=X.device)
    cols = [rows * scale[:, None, None]]  # the constant column carries the shifts
    if m >= 1:
        U, S, _ = randomized_svd(X, n_rows, m, seed=seed, d=d)
        V = U * S[:, None, :]
        low = torch.where(rows > 0, V, torch.inf).amin(dim=1, keepdim=True)
        cols.insert(0, (V - low) * rows)
    if k - 1 > m:
        noise = np.random.RandomState(seed).random_sample((n_pad, k - 1 - m))
        cols.append(torch.as_tensor(noise, dtype=X.dtype, device=X.device) * rows * scale[:, None, None])
    return torch.cat(cols, dim=2).mT.contiguous()


def least_squares_atoms(Ut: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
    """The exact ``D = argmin_D ||X − U D||²`` per problem, ``(UᵀU + εI)⁻¹ UᵀX`` solved in float64.

    Args:
        Ut: ``(B, k, n)`` codes, transposed.
        X: ``(B, n, d)``.

    Returns:
        ``D (B, k, d)`` in ``X``'s dtype (zero on columns where ``X`` is zero).
    """
    import torch

    G = bmm(Ut, Ut.mT).to(torch.float64)
    R = bmm(Ut, X).to(torch.float64)
    diag = torch.diagonal(G, dim1=1, dim2=2)
    ridge = 1e-10 * diag.mean(dim=1).clamp(min=torch.finfo(torch.float64).tiny)
    G = G + ridge[:, None, None] * torch.eye(G.shape[1], dtype=G.dtype, device=G.device)
    D = _each(lambda g, r: (torch.cholesky_solve(r, torch.linalg.cholesky(g)),), G, R)[0]
    return D.to(X.dtype)


def _semi_iteration(const: dict[str, torch.Tensor], state: dict[str, torch.Tensor], sweeps: int
                    ) -> torch.Tensor:
    """``D`` ← least squares given ``U``; then ``sweeps`` HALS sweeps on ``U`` given ``D`` (they
    reuse ``D Aᵀ`` and ``D Dᵀ``: extra sweeps cost no pass over ``A``). Returns the first sweep's
    ``(B,)`` violation (``D``'s gradient is zero after its exact step)."""
    X, Ut = const["X"], state["Ut"]
    D = least_squares_atoms(Ut, X)
    state["D"] = D
    C, G = bmm(D, X.mT), bmm(D, D.mT)
    violation = hals_sweep(Ut, C, G)
    for _ in range(sweeps - 1):
        hals_sweep(Ut, C, G)
    return violation


def semi_nmf(X: torch.Tensor, Ut: torch.Tensor, *, max_iter: int, tol: float = 1e-4, sweeps: int = 5,
             on_finish: Callable[[int], None] | None = None
             ) -> tuple[torch.Tensor, torch.Tensor, np.ndarray, np.ndarray]:
    """Semi-NMF ``X_b ≈ U_b D_b`` (``U_b >= 0``, ``D_b`` signed) of every problem of a batch.

    Args:
        X: ``(B, n, d)`` signed activations (padding zero).
        Ut: ``(B, k, n)`` start for ``Uᵀ`` (``>= 0``, zero on padding rows), e.g.
            :func:`semi_nmf_init`.
        max_iter: iteration budget of each problem (one ``D`` step and one ``U`` sweep each).
        tol: stop a problem when its violation falls to ``tol`` times its first one.
        sweeps: HALS sweeps of the ``U`` step (many make it the exact NNLS of alternating least
            squares; they cost ``n k²`` each against ``n d k`` for a pass over ``A``).

    Returns:
        ``Uᵀ (B, k, n)``, ``D (B, k, d)`` (the least-squares atoms of the final ``U``),
        ``n_iter (B,)``, ``converged (B,)``.
    """
    import torch

    state = {"Ut": Ut.contiguous().clone(), "D": torch.zeros(X.shape[0], Ut.shape[1], X.shape[2],
                                                                dtype=X.dtype, device=X.device)}
    step = functools.partial(_semi_iteration, sweeps=sweeps)
    out, n_iter, converged = iterate_until_converged(step, {"X": X}, state, max_iter=max_iter, tol=tol,
                                                     on_finish=on_finish)
    return out["Ut"], least_squares_atoms(out["Ut"], X), n_iter, converged


def semi_nmf_per_class(A: np.ndarray, classes: np.ndarray, r: int, *, seed: int = 0, max_iter: int = 200,
                       tol: float = 1e-4, device: str = "cpu", max_batch_bytes: int = DEFAULT_BATCH_BYTES,
                       progress: bool = False) -> PerClassFit:
    """Semi-NMF with ``r`` signed atoms on the rows of every class, batched.

    Args:
        A: ``(n_samples, d)`` activations (any sign).
        classes: ``(n_samples,)`` class of each row; each class needs ``>= r`` rows.
        r: atoms per class.
        seed: the start's randomized SVD draws.
        max_iter, tol: iteration budget and stopping tolerance of each class.
        device: ``"cpu"`` or ``"cuda"``.
        max_batch_bytes: padded activations held per chunk of classes.
        progress: a progress bar over classes.
    """
    d = A.shape[1]

    def solve(X: Any, n_rows: np.ndarray, d_real: int, on_finish: Callable[[int], None] | None):
        Ut0 = semi_nmf_init(X, n_rows, r, seed=seed, d=d_real)
        return semi_nmf(X, Ut0, max_iter=max_iter, tol=tol, on_finish=on_finish)

    return fit_per_class(A, classes, solve, key=lambda n: svd_choices(n, d, max(r - 1, 1)), device=device,
                         max_batch_bytes=max_batch_bytes, progress=progress, desc="Semi-NMF per class")


def semi_nmf_global(A: np.ndarray, k: int, *, seed: int = 0, max_iter: int = 200, tol: float = 1e-4,
                    device: str = "cpu") -> tuple[np.ndarray, float, int, bool]:
    """One Semi-NMF with ``k`` atoms on all rows of ``A (n, d)`` (``k`` may exceed ``min(n, d)``).

    Returns:
        ``D (k, d)``, squared error, iterations, converged.
    """
    import torch

    X = torch.from_numpy(np.ascontiguousarray(A)).to(torch_device(device))[None]
    Ut0 = semi_nmf_init(X, np.array([A.shape[0]]), k, seed=seed)
    Ut, D, n_iter, converged = semi_nmf(X, Ut0, max_iter=max_iter, tol=tol)
    return D[0].cpu().numpy(), float(squared_errors(X, Ut, D)[0]), int(n_iter[0]), bool(converged[0])


@register_learner("semi_nmf")
class SemiNMFLearner(DictionaryLearner):
    """Semi-NMF ``A ≈ U D`` with ``U >= 0`` and signed atoms ``D``; codes by NNLS against ``D``.

    Args:
        tol: stopping tolerance (violation relative to the first iteration's).
        max_batch_bytes: memory bound of one chunk of classes (padded activations).
    """

    def __init__(self, tol: float = 1e-4, max_batch_bytes: int = DEFAULT_BATCH_BYTES) -> None:
        if not tol >= 0:
            raise ValueError(f"tol must be >= 0, got {tol}")
        if max_batch_bytes < 1:
            raise ValueError(f"max_batch_bytes must be >= 1, got {max_batch_bytes}")
        self.tol, self.max_batch_bytes = float(tol), int(max_batch_bytes)

    def fit(self, A: np.ndarray, classes: np.ndarray | None, *, scope: str, n_atoms_per_class: int,
            n_atoms: int | None, seed: int, max_iter: int, device: str, progress: bool) -> Dictionary:
        with WarningSummary():
            if scope == "global":
                if n_atoms is None:
                    raise ValueError("a global Semi-NMF needs n_atoms")
                D, sq_err, _, converged = semi_nmf_global(A, n_atoms, seed=seed, max_iter=max_iter, tol=self.tol,
                                                          device=device)
                failed, feature_class, r = ([] if converged else [-1]), np.full(n_atoms, -1), None
            else:
                if classes is None:
                    raise ValueError("a per-class Semi-NMF needs the class of every row")
                fit = semi_nmf_per_class(A, classes, n_atoms_per_class, seed=seed, max_iter=max_iter,
                                         tol=self.tol, device=device, max_batch_bytes=self.max_batch_bytes,
                                         progress=progress)
                D, sq_err, r = fit.D, float(fit.sq_err.sum()), n_atoms_per_class
                failed, feature_class = fit.labels[~fit.converged].tolist(), np.repeat(fit.labels, r)
        if failed:
            what = "global Semi-NMF" if scope == "global" else f"Semi-NMF of {len(failed)} classes (e.g. {failed[:10]})"
            warn_outside(f"{what} did not converge in max_iter={max_iter} iterations (tol={self.tol}); "
                         "raise max_iter for a tighter fit")
        return make_dictionary(D.astype(A.dtype, copy=False), feature_class, scope, r, sq_err, A, self.name)

    def encode(self, dictionary: Dictionary, A: Any, **options: Any) -> np.ndarray:
        """NNLS codes against the signed atoms (see :func:`feature_complexity.features.encode`)."""
        from .nnls import encode

        return np.asarray(encode(as_array(A, "A", 2), dictionary.D, **options))
