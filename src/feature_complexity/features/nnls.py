"""Codes ``Z`` for fixed atoms: batched non-negative least squares in torch.

Notation (docs/ARCHITECTURE.md): ``A`` activations ``(n_images, d)``, ``D`` dictionary
``(k, d)`` with atoms as rows, ``Z`` codes ``(n_images, k)``. For every image ``a`` (a row of
``A``) we solve, independently,

    z(a) = argmin_{z >= 0} ||a - z D||²,

which is what the paper calls the feature values of an image (paper-method.md §2). ``D`` may be
signed (Semi-NMF, sparse autoencoders). SciPy's ``nnls`` solves one image at a time in a Python
loop, seconds per image at the paper's 10,000 atoms in 2,048 dimensions. Here all images of a
batch are solved at once, on CPU or CUDA:

- Working set (default, exact): each image starts from its 32 atoms of largest correlation; its
  NNLS on the working set ``W`` is solved exactly on the gathered Gram sub-block ``G_WW`` (block
  principal pivoting, Júdice & Pires 1994 / Kim & Park 2011; Lawson–Hanson where atoms are
  linearly dependent); the gradient on all ``k`` atoms comes from the rows of ``G = D Dᵀ`` of
  the image's support when the full Gram matrix is formed (many images), else from one product
  ``(a - z D) Dᵀ`` screened in float32 and confirmed in float64; atoms that would lower the
  residual join ``W``;
  repeat until none is left, when the KKT conditions hold on every atom. Images use ~50 atoms of
  10,000, so the sub-problems are small and the cost is a handful of ``(batch, d) x (d, k)``
  products per image.
- Lawson–Hanson (SciPy's own algorithm), batched on the full ``(k, k)`` Gram matrix: exact;
  each step is one batched Cholesky solve on every image's current support.
- FISTA (accelerated projected gradient, Beck & Teboulle 2009) with per-image adaptive restart
  (O'Donoghue & Candès 2015), step ``1/L`` with ``L`` the largest eigenvalue of ``D Dᵀ``, then
  conjugate-gradient steps on each image's support. Only products with ``D``; accurate when
  ``D Dᵀ`` is well conditioned, which NMF dictionaries are not: it is the fallback.

Per-class codes (``encode(..., blocks=feature_class)``) solve one small NNLS per image and
class, all batched together.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .._validation import as_array, as_class_indices

if TYPE_CHECKING:  # torch is heavy; imported inside the functions that need it
    import torch

__all__ = ["encode", "nnls_objective"]


def _as_numpy_2d(x: Any, name: str) -> np.ndarray:
    """Return ``x`` (numpy array or torch tensor) as a 2-D real array, or raise ``ValueError``."""
    arr = as_array(
        x, name, 2, expected="a 2-D array",
        fix=f"; pass {name} with one row per {'image' if name == 'A' else 'atom'}",
    )
    if not np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.complexfloating):
        raise ValueError(f"{name} must hold real numbers, got dtype {arr.dtype}")
    return arr


def _check_finite(arr: np.ndarray, name: str) -> None:
    bad = ~np.isfinite(arr)
    if bad.any():
        raise ValueError(
            f"{name} contains {int(bad.sum())} non-finite values (NaN or inf) out of {arr.size}; "
            f"remove or repair those rows before encoding (e.g. check the model's activations "
            f"for overflow, or drop the offending images)"
        )


def nnls_objective(A: np.ndarray, Z: np.ndarray, D: np.ndarray) -> np.ndarray:
    """Per-image squared residual ``||a - z D||²``.

    Args:
        A: activations ``(n_images, d)``.
        Z: codes ``(n_images, k)``.
        D: dictionary ``(k, d)``.

    Returns:
        ``(n_images,)`` float64 residuals.
    """
    R = np.asarray(A, dtype=np.float64) - np.asarray(Z, dtype=np.float64) @ np.asarray(
        D, dtype=np.float64
    )
    return np.einsum("nd,nd->n", R, R)


def _relative_kkt(A: np.ndarray, Z: np.ndarray, Dt: np.ndarray, G: np.ndarray) -> np.ndarray:
    """Per row, the projected-gradient (KKT) norm of ``min_{z≥0} ||a - z D||²`` at ``z``, over its
    value at ``z = 0`` (0 for a row whose optimum is ``z = 0``). ``Dt = Dᵀ (d, k)``, ``G = D Dᵀ``.

    Returns:
        ``(n_rows,)`` float64.
    """
    B = A @ Dt
    g = Z @ G - B
    g0 = np.linalg.norm(np.maximum(B, 0), axis=1)
    pg = np.linalg.norm(np.where(Z > 0, g, np.minimum(g, 0)), axis=1)
    return np.where(g0 > 0, pg / np.where(g0 > 0, g0, 1.0), 0.0)


def _largest_eigenvalue(D: torch.Tensor) -> float:
    """Largest eigenvalue of ``D Dᵀ`` (= of ``Dᵀ D``), the Lipschitz constant of the gradient.

    Computed exactly from the smaller of the two Gram matrices, in float64 for safety; at
    ``(k, d) = (10000, 2048)`` this is a 2048² symmetric eigenproblem, a fraction of a second.
    """
    import torch

    D64 = D.to(torch.float64)
    k, d = D64.shape
    gram = D64 @ D64.T if k <= d else D64.T @ D64
    return float(torch.linalg.eigvalsh(gram)[-1].item())


class _Problem:
    """The quadratic ``½ zᵀ G z - bᵀ z`` for a batch of images, with gradients done cheaply.

    ``grad(Z) = Z G - B`` with ``G = D Dᵀ`` and ``B = A Dᵀ``. When ``k`` is much larger than
    ``d``, forming ``Z G`` costs ``k²`` per image while ``(Z D) Dᵀ`` costs ``2 k d``, so the
    Gram matrix is used only when it is the cheaper route.
    """

    def __init__(self, D: torch.Tensor, G: torch.Tensor | None) -> None:
        self.D = D
        self.G = G

    def matvec(self, Z: torch.Tensor) -> torch.Tensor:
        """``Z G``, shape ``(batch, k)``."""
        if self.G is not None:
            return Z @ self.G
        return (Z @ self.D) @ self.D.T


def _projected_gradient_norm(Z: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Norm of the KKT residual of each row: the gradient where ``z > 0``, its negative part where
    ``z = 0`` (a positive gradient at a zero coordinate is optimal). Shape ``(batch,)``."""
    import torch

    pg = torch.where(Z > 0, g, g.clamp(max=0))
    return torch.linalg.vector_norm(pg, dim=1)


def _fista(
    prob: _Problem,
    B: torch.Tensor,
    L: float,
    *,
    max_iter: int,
    tol: float,
    check_every: int,
    Z0: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """FISTA with per-row gradient restart on a batch; converged rows leave the working set.

    Args:
        prob: the quadratic (dictionary and optional Gram matrix).
        B: ``A Dᵀ`` for the batch, ``(batch, k)``.
        L: largest eigenvalue of ``G``.
        max_iter: iteration budget.
        tol: stop a row when its projected-gradient norm falls below ``tol`` times its norm at
            ``Z = 0`` (which is ``||max(B, 0)||``).
        check_every: how often (in iterations) the true projected gradient is evaluated; it costs
            one extra product, so checking every iteration would nearly double the work.
        Z0: optional feasible start ``(batch, k)`` (default zeros).

    Returns:
        ``Z (batch, k)``, the per-row relative KKT residual reached ``(batch,)`` and the number
        of iterations the slowest row needed.
    """
    import torch

    n, k = B.shape
    Z_out = torch.zeros_like(B)
    rel_out = torch.zeros(n, dtype=B.dtype, device=B.device)
    # At Z = 0 the gradient is -B; its projected norm is the scale the tolerance is relative to.
    g0 = torch.linalg.vector_norm(B.clamp(min=0), dim=1)
    active = torch.nonzero(g0 > 0).flatten()  # an all-zero (or all-negative) b has z = 0
    if active.numel() == 0:
        return Z_out, rel_out, 0
    scale = g0[active]
    Bk = B[active]
    Z = torch.zeros_like(Bk) if Z0 is None else Z0[active].clamp(min=0)
    Y = Z.clone()
    t = torch.ones(Bk.shape[0], 1, dtype=B.dtype, device=B.device)
    step = 1.0 / L
    for it in range(1, max_iter + 1):
        gY = prob.matvec(Y) - Bk
        Z_new = (Y - step * gY).clamp(min=0)
        # Gradient restart: if the step goes against the momentum direction, the momentum is
        # overshooting for that row; reset it (row by row, so one hard image slows no other).
        restart = ((Y - Z_new) * (Z_new - Z)).sum(dim=1, keepdim=True) > 0
        t_new = 0.5 * (1.0 + torch.sqrt(1.0 + 4.0 * t * t))
        beta = torch.where(restart, torch.zeros_like(t), (t - 1.0) / t_new)
        t = torch.where(restart, torch.ones_like(t), t_new)
        Y = Z_new + beta * (Z_new - Z)
        Z = Z_new
        if it % check_every == 0 or it == max_iter:
            rel = _projected_gradient_norm(Z, prob.matvec(Z) - Bk) / scale
            done = rel <= tol
            if it == max_iter:
                done = torch.ones_like(done)
            if done.any():
                idx = active[done]
                Z_out[idx] = Z[done]
                rel_out[idx] = rel[done]
                keep = ~done
                active, scale, Bk = active[keep], scale[keep], Bk[keep]
                Z, Y, t = Z[keep], Y[keep], t[keep]
                if active.numel() == 0:
                    break
    return Z_out, rel_out, it


def _refine_on_support(
    prob: _Problem, B: torch.Tensor, Z: torch.Tensor, *, n_steps: int
) -> torch.Tensor:
    """Solve the unconstrained least squares restricted to each row's support, by batched CG.

    Near the optimum FISTA has found the right support but converges only linearly inside it;
    a handful of conjugate-gradient steps on ``G_SS z_S = b_S`` (``S`` = support of the row)
    reach the exact solution of that reduced system. The result is projected on ``z ≥ 0`` and
    kept for a row only if it lowers the objective, so this stage can only improve a code.

    Args:
        prob: the quadratic.
        B: ``A Dᵀ`` for the batch, ``(batch, k)``.
        Z: FISTA codes ``(batch, k)``.
        n_steps: CG iterations (at most the support size is ever needed in exact arithmetic).

    Returns:
        Refined codes ``(batch, k)``.
    """
    import torch

    mask = (Z > 0).to(Z.dtype)
    X = Z.clone()
    R = (B - prob.matvec(X)) * mask  # residual of the reduced system, zero off the support
    P = R.clone()
    rr = (R * R).sum(dim=1, keepdim=True)
    tiny = torch.finfo(Z.dtype).tiny
    for _ in range(n_steps):
        GP = prob.matvec(P) * mask
        pGp = (P * GP).sum(dim=1, keepdim=True)
        alpha = torch.where(pGp > tiny, rr / pGp.clamp(min=tiny), torch.zeros_like(pGp))
        X = X + alpha * P
        R = R - alpha * GP
        rr_new = (R * R).sum(dim=1, keepdim=True)
        beta = torch.where(rr > tiny, rr_new / rr.clamp(min=tiny), torch.zeros_like(rr))
        P = R + beta * P
        rr = rr_new

    def objective(V: torch.Tensor) -> torch.Tensor:
        return 0.5 * (V * prob.matvec(V)).sum(dim=1) - (B * V).sum(dim=1)

    # Coordinates that should be exactly 0 come out of CG as ±rounding noise; projecting them
    # back is harmless because the step is kept only where it lowers the objective.
    X = X.clamp(min=0)
    ok = objective(X) <= objective(Z)
    return torch.where(ok[:, None], X, Z)


# --------------------------------------------------------------------------------------------
# Small dense systems, shared by the torch solvers. ``G`` is either one ``(k, k)`` Gram matrix
# shared by every row, or one ``(P, m, m)`` Gram matrix per row (the working-set sub-problems and
# the per-class blocks); ``B`` is then ``(P, k)`` or ``(P, m)``.


def _rows_of(G: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """``G`` for the rows ``keep`` (a shared ``(k, k)`` Gram matrix is returned as it is)."""
    return G if G.ndim == 2 else G[keep]


def _gram_times(X: torch.Tensor, G: torch.Tensor) -> torch.Tensor:
    """``x G`` for every row ``x`` of ``X``, shape of ``X``."""
    import torch

    return X @ G if G.ndim == 2 else torch.bmm(X[:, None, :], G)[:, 0]


def _gather_gram(G: torch.Tensor, ix: torch.Tensor) -> torch.Tensor:
    """``G[ix_p, ix_p]`` for every row ``p`` of ``ix (P, s)``, shape ``(P, s, s)``."""
    import torch

    if G.ndim == 2:
        return G[ix[:, :, None], ix[:, None, :]]
    rows = torch.arange(ix.shape[0], device=ix.device)[:, None, None]
    return G[rows, ix[:, :, None], ix[:, None, :]]


def _atom_norms(G: torch.Tensor) -> torch.Tensor:
    """``sqrt(diag G)``, the atom norms ``||d_i||``: ``(k,)`` or ``(P, m)``."""
    return G.diagonal(dim1=-2, dim2=-1).clamp(min=0).sqrt()


def _rounding_bound(norms: torch.Tensor, X: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """Entrywise bound on the rounding noise of the negative gradient ``b - x G``, shape of ``B``.

    That noise is a few ``eps`` times ``|b_j| + sum_i |x_i| |G_ij|``. With a signed dictionary
    ``x G`` itself can be far smaller than that sum (cancellation), so it cannot stand in for it
    as it can when ``G, x >= 0``. The sum is bounded by Cauchy–Schwarz,
    ``|G_ij| <= ||d_i|| ||d_j||``, which costs O(m) per row instead of a second product with
    ``|G|``; for NMF atoms (non-negative, sharing a mean direction) it is within a small factor
    of ``x G``.
    """
    import torch

    eps = torch.finfo(B.dtype).eps
    return 16 * eps * (norms * (X.abs() * norms).sum(dim=1, keepdim=True) + B.abs())


def _cholesky_solve_unrolled(M: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Solve ``M x = b`` for a batch of small SPD matrices ``M (P, s, s)`` by a Cholesky
    factorisation written as ``O(s)`` whole-batch operations.

    For hundreds of thousands of systems of size ~10 (per-class codes: one per image and
    class) LAPACK's per-matrix calls cost more than the arithmetic; this runs the same
    column-by-column algorithm on all of them at once, with the batch as the last (contiguous)
    dimension so that every operation streams through memory.

    Returns:
        ``x (P, s)`` and a ``(P,)`` bool mask of the matrices with a non-positive pivot (not
        positive definite in floating point), whose ``x`` is meaningless.
    """
    import torch

    P, s = b.shape
    Mt = M.permute(1, 2, 0).contiguous()  # (s, s, P)
    L = torch.zeros_like(Mt)
    failed = torch.zeros(P, dtype=torch.bool, device=b.device)
    for j in range(s):
        pivot = Mt[j, j] - (L[j, :j] * L[j, :j]).sum(dim=0)
        failed |= ~(pivot > 0)
        L[j, j] = pivot.clamp(min=torch.finfo(b.dtype).tiny).sqrt()
        if j + 1 < s:
            L[j + 1 :, j] = (Mt[j + 1 :, j] - (L[j + 1 :, :j] * L[j, :j]).sum(dim=1)) / L[j, j]
    y = b.T.contiguous()  # (s, P), overwritten by the forward then the backward substitution
    for j in range(s):
        y[j] = (y[j] - (L[j, :j] * y[:j]).sum(dim=0)) / L[j, j]
    for j in reversed(range(s)):
        y[j] = (y[j] - (L[j + 1 :, j] * y[j + 1 :]).sum(dim=0)) / L[j, j]
    return y.T, failed


def _factor_and_solve(
    Gs: torch.Tensor, bs: torch.Tensor, jitter: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Solve the SPD systems ``Gs x = bs`` (``(P, s, s)``, ``(P, s)``) by Cholesky with a ridge
    ``jitter (P or 1, 1, 1)`` that grows (x1000, three times) only for the rows that fail to
    factorise. Returns ``x`` and the ``(P,)`` mask of rows that never factorised."""
    import torch

    eye = torch.eye(Gs.shape[1], dtype=Gs.dtype, device=Gs.device)
    small = Gs.shape[1] <= _UNROLLED_MAX
    for _ in range(4):
        if small:
            x, failed = _cholesky_solve_unrolled(Gs + jitter * eye, bs)
        else:
            chol, info = torch.linalg.cholesky_ex(Gs + jitter * eye)
            failed = info > 0
        if not bool(failed.any()):
            break
        jitter = torch.where(failed[:, None, None], jitter * 1e3, jitter)
    if not small:
        x = torch.cholesky_solve(bs[:, :, None], chol)[:, :, 0]
    return x, failed


def _solve_on_support(
    G: torch.Tensor, B: torch.Tensor, F: torch.Tensor, *, max_elements: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Solve ``G_FF x_F = b_F`` for every row, with ``x = 0`` off the passive set ``F``.

    Each row's passive set is gathered into a compact ``(s_max, s_max)`` system (padded with
    identity rows), so the cost follows the support size, not ``k``: with 10,000 atoms and a
    support of a few hundred, the Cholesky factorisations stay cheap. Per-row systems of at
    most ``_UNROLLED_MAX`` coordinates are masked in place instead (nothing to gain by
    compacting them). Rows are processed in chunks of at most ``max_elements`` matrix entries
    to bound memory.

    Args:
        G: Gram matrix ``(k, k)`` shared by all rows, or ``(batch, k, k)``, one per row.
        B: ``A Dᵀ`` ``(batch, k)``.
        F: passive sets ``(batch, k)`` bool.
        max_elements: memory bound for one chunk of gathered systems.

    Returns:
        ``X (batch, k)`` and a ``(batch,)`` bool mask of the rows whose ``G_FF`` could be
        factorised (``X`` is 0 on the others).
    """
    import torch

    n, k = B.shape
    X = torch.zeros_like(B)
    solved = torch.ones(n, dtype=torch.bool, device=B.device)
    size = F.sum(dim=1)
    s_max = int(size.max().item()) if n else 0
    if s_max == 0:
        return X, solved
    compact = G.ndim == 2 or k > _UNROLLED_MAX
    if compact:  # passive indices first (a stable sort keeps them in order), then the rest
        idx = torch.argsort((~F).to(torch.int8), dim=1, stable=True)[:, :s_max]
        valid = torch.arange(s_max, device=B.device)[None, :] < size[:, None]
    width = s_max if compact else k
    eye = torch.eye(width, dtype=B.dtype, device=B.device)
    zero = torch.zeros((), dtype=B.dtype, device=B.device)
    # A tiny ridge keeps the factorisation defined if rounding makes G_FF numerically singular
    # (Lawson–Hanson keeps D_F of full rank in exact arithmetic).
    ridge = 10 * torch.finfo(B.dtype).eps * G.diagonal(dim1=-2, dim2=-1).mean(dim=-1)
    rows = max(1, max_elements // (width * width))
    for s in range(0, n, rows):
        e = min(s + rows, n)
        Gr = G if G.ndim == 2 else G[s:e]
        ix, vl = (idx[s:e], valid[s:e]) if compact else (None, F[s:e])
        pair = vl[:, :, None] & vl[:, None, :]
        Gs = torch.where(pair, _gather_gram(Gr, ix) if ix is not None else Gr, eye)
        bs = torch.where(vl, B[s:e].gather(1, ix) if ix is not None else B[s:e], zero)
        xs, failed = _factor_and_solve(Gs, bs, (ridge if G.ndim == 2 else ridge[s:e]).reshape(-1, 1, 1))
        xs = torch.where(vl & ~failed[:, None], xs, zero)
        if ix is not None:  # i.e. compact
            X[s:e].scatter_(1, ix, xs)
        else:
            X[s:e] = xs
        solved[s:e] = ~failed
    return X, solved


def _step_towards(
    X: torch.Tensor, S: torch.Tensor, P: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Lawson–Hanson's inner step: move from the feasible ``X`` towards the solution ``S`` on
    ``P`` as far as ``X`` stays non-negative, and drop from ``P`` what reached zero.

    Returns:
        The new ``X``, the new ``P`` and a ``(batch,)`` mask of the rows where ``S`` was
        infeasible (those must re-solve on the smaller ``P`` before admitting anything).
    """
    import torch

    eps = torch.finfo(X.dtype).eps
    bad = P & (S <= 0)
    infeasible = bad.any(dim=1)
    # Largest step from x towards s keeping every coordinate of P non-negative.
    ratio = torch.where(bad, X / (X - S).clamp(min=torch.finfo(X.dtype).tiny), 2 + 0 * X)
    alpha = ratio.amin(dim=1, keepdim=True).clamp(0, 1)
    X = torch.where(infeasible[:, None], X + alpha * (S - X), S)
    # Coordinates that reached zero (up to rounding) leave the support.
    tiny = 16 * eps * X.abs().amax(dim=1, keepdim=True)
    P = P & ~(infeasible[:, None] & (X <= tiny))
    return torch.where(P, X, 0 * X), P, infeasible


def _lawson_hanson(
    G: torch.Tensor,
    B: torch.Tensor,
    *,
    max_steps: int,
    max_elements: int,
    allowed: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Lawson–Hanson active-set NNLS (the algorithm of ``scipy.optimize.nnls``), batched.

    Every row keeps a passive set ``P`` (its support). A step either (a) admits the coordinate
    with the most negative gradient when the current ``x`` solves the problem on ``P``, or
    (b) when the unconstrained solution ``s`` on ``P`` has a non-positive entry, moves from
    ``x`` towards ``s`` until the first coordinate hits zero and drops it. Rows are in different
    phases at the same time; each step costs one batched support solve for all rows. Adding one
    coordinate at a time keeps ``D_P`` of full rank, so unlike block pivoting this stays exact
    on overcomplete dictionaries (``k > d``), whose NNLS solutions are not unique.

    Args:
        G: Gram matrix ``(k, k)``, or ``(batch, k, k)`` one per row.
        B: ``A Dᵀ`` ``(batch, k)``.
        max_steps: budget of steps (at least the largest support size is needed).
        max_elements: memory bound for the support solves.
        allowed: ``(batch, k)`` bool, the coordinates a row may use (default all); the others
            stay 0 (padding of the per-row problems).

    Returns:
        ``X (batch, k)`` (≥ 0) and a ``(batch,)`` bool mask of converged rows.
    """
    import torch

    n, k = B.shape
    dev = B.device
    minus_one = -torch.ones((), dtype=B.dtype, device=dev)
    X_out = torch.zeros_like(B)
    ok_out = torch.zeros(n, dtype=torch.bool, device=dev)
    active = torch.arange(n, device=dev)
    norms = _atom_norms(G)
    if allowed is None:
        allowed = torch.ones(n, k, dtype=torch.bool, device=dev)
    P = torch.zeros(n, k, dtype=torch.bool, device=dev)
    X = torch.zeros_like(B)
    # A row may admit a coordinate only when X solves its problem on P exactly (Lawson–Hanson's
    # outer loop); after a step back it first re-solves on the smaller P (the inner loop). The
    # two loops are merged so that every step costs exactly one support solve for all rows.
    may_add = torch.ones(n, dtype=torch.bool, device=dev)
    for step in range(max_steps + 1):
        W = B - _gram_times(X, G)  # negative gradient
        cand = torch.where(allowed & ~P & (W > _rounding_bound(norms, X, B)), W, minus_one)
        best, j = cand.max(dim=1)
        done = may_add & (best <= 0)
        if done.any():
            X_out[active[done]] = X[done]
            ok_out[active[done]] = True
            keep = ~done
            active, B, P, X, j = active[keep], B[keep], P[keep], X[keep], j[keep]
            may_add, allowed = may_add[keep], allowed[keep]
            if G.ndim == 3:
                G, norms = G[keep], norms[keep]
            if active.numel() == 0:
                break
        if step == max_steps:
            break
        rows = torch.nonzero(may_add).flatten()
        P[rows, j[rows]] = True
        S, _ = _solve_on_support(G, B, P, max_elements=max_elements)
        X, P, infeasible = _step_towards(X, S, P)
        may_add = ~infeasible
    if active.numel():
        X_out[active] = X.clamp(min=0)
    return X_out, ok_out


def _block_pivoting(
    G: torch.Tensor,
    B: torch.Tensor,
    valid: torch.Tensor,
    F: torch.Tensor,
    *,
    max_iter: int,
    max_elements: int,
    max_support: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Block principal pivoting for small NNLS problems (Júdice & Pires 1994; Kim & Park 2011).

    Every coordinate that breaks the KKT conditions (``x_i < 0`` on the passive set ``F``, or a
    negative gradient off it) changes side at once, so a warm start needs a handful of support
    solves where Lawson–Hanson needs one per coordinate that enters or leaves. When the number
    of violations stops decreasing for three exchanges, only the violation of largest index is
    flipped (Murty's rule), which terminates whenever ``G`` is positive definite. That needs
    linearly independent atoms: rows whose ``G_FF`` does not factorise, whose ``F`` grows past
    ``max_support`` (more atoms than dimensions are dependent) or that use up ``max_iter``
    come back with ``ok = False`` (for Lawson–Hanson to redo).

    Args:
        G: ``(P, m, m)`` per-row Gram matrices (or a shared ``(m, m)``).
        B: ``(P, m)`` right-hand sides ``b = a D_Wᵀ``.
        valid: ``(P, m)`` bool, the coordinates in use (the others are padding, kept at 0).
        F: ``(P, m)`` bool starting passive sets (a warm start).
        max_iter: exchange budget.
        max_elements: memory bound for the support solves.
        max_support: the dimension ``d``: a passive set larger than that is dependent.

    Returns:
        ``X (P, m)`` (≥ 0), its passive set ``(P, m)`` and the ``(P,)`` bool mask of solved rows.
    """
    import torch

    n, m = B.shape
    dev = B.device
    norms = _atom_norms(G)
    X_out, F_out = torch.zeros_like(B), torch.zeros_like(valid)
    ok_out = torch.zeros(n, dtype=torch.bool, device=dev)
    active = torch.arange(n, device=dev)
    F = F & valid
    best = torch.full((n,), m + 1, dtype=torch.long, device=dev)
    backup = torch.full((n,), 3, dtype=torch.long, device=dev)
    position = torch.arange(m, device=dev)
    for _ in range(max_iter):
        S, solved = _solve_on_support(G, B, F, max_elements=max_elements)
        solved &= F.sum(dim=1) <= max_support
        Y = _gram_times(S, G) - B  # gradient; 0 on F up to rounding
        bad = valid & torch.where(F, S < 0, Y < -_rounding_bound(norms, S, B))
        n_bad = bad.sum(dim=1)
        finished = (n_bad == 0) | ~solved
        if finished.any():
            rows, ok = active[finished], solved[finished]
            X_out[rows] = torch.where(ok[:, None], S[finished], 0 * S[finished])
            F_out[rows], ok_out[rows] = F[finished] & ok[:, None], ok
            keep = ~finished
            active, B, valid, F, bad = active[keep], B[keep], valid[keep], F[keep], bad[keep]
            n_bad, best, backup = n_bad[keep], best[keep], backup[keep]
            if G.ndim == 3:
                G, norms = G[keep], norms[keep]
            if active.numel() == 0:
                break
        improved = n_bad < best
        full = improved | (backup > 0)
        backup = torch.where(improved, 3, (backup - 1).clamp(min=0))
        best = torch.minimum(best, n_bad)
        last = torch.where(bad, position, -1).amax(dim=1, keepdim=True)
        F = F ^ torch.where(full[:, None], bad, position[None, :] == last)
    return X_out, F_out, ok_out


def _solve_small(
    G: torch.Tensor,
    B: torch.Tensor,
    valid: torch.Tensor,
    F: torch.Tensor,
    *,
    max_steps: int,
    max_elements: int,
    max_support: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Exact NNLS of many small problems: block pivoting, then Lawson–Hanson for the rows it
    could not settle (linearly dependent atoms). Shapes as in :func:`_block_pivoting`."""
    import torch

    X, F, ok = _block_pivoting(
        G, B, valid, F, max_iter=_BPP_MAX_ITER, max_elements=max_elements, max_support=max_support
    )
    if not bool(ok.all()):
        bad = torch.nonzero(~ok).flatten()
        X_lh, ok_lh = _lawson_hanson(
            _rows_of(G, bad), B[bad], max_steps=max_steps, max_elements=max_elements,
            allowed=valid[bad],
        )
        X[bad], F[bad], ok[bad] = X_lh, X_lh > 0, ok_lh
    return X, F, ok


# --------------------------------------------------------------------------------------------
# Working set on the whole dictionary (column generation): exact codes at k = 10,000

#: atoms in a row's first working set: its largest correlations ``b_j / ||d_j||``
_WS_FIRST = 32
#: at most this many violators join a row's working set per round
_WS_ADD = 32
#: systems up to this size are factorised by whole-batch operations, not per-matrix LAPACK calls
_UNROLLED_MAX = 16
#: exchange budget of block pivoting for one sub-problem (typically < 10 are used)
_BPP_MAX_ITER = 30
#: On the CPU, forming the full Gram matrix (``k² d / 2`` products, ~7 s at k = 10,000 on one
#: core) pays off once what it saves adds up to more: Gram sub-blocks gathered instead of
#: computed, and gradients from its rows instead of products with ``D`` (measured ~7 ms per
#: image at k = 10,000, one core), so from ``n * _GRAM_WIDTH² >= k²``: ~1,000 images
_GRAM_WIDTH = 320
#: atoms gathered at once for Gram sub-blocks: small temporaries are reused from cache, large
#: ones are fresh pages every round (measured 1.4x slower at 2^25 than at 2^20 on the CPU)
_GATHER_ELEMENTS = 2**20
#: with the full Gram matrix, gradients from its rows (measured 1.45x faster than products with D)
_GRADIENT_FROM_GRAM = True
#: rows per batch of the working-set method on the CPU, where larger batches only thrash the cache
_WS_CPU_ROWS = 256


class _GramBlocks:
    """Sub-blocks ``G[I, J] = D_I D_Jᵀ`` of the Gram matrix, for index sets that differ per row.

    Gathered from the full ``(k, k)`` Gram matrix when it was worth forming (many images for
    one dictionary), else computed from the gathered atoms with one batched product, in chunks
    of rows so that the gathered ``(rows, |I| + |J|, d)`` atoms stay within ``max_elements``.
    """

    def __init__(self, D: torch.Tensor, G: torch.Tensor | None, max_elements: int) -> None:
        self.D, self.G, self.max_elements = D, G, max_elements

    def __call__(self, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        """``(P, a, b)`` for the index sets ``rows (P, a)`` and ``cols (P, b)``."""
        import torch

        if self.G is not None:
            return self.G[rows[:, :, None], cols[:, None, :]]
        n, a, b = rows.shape[0], rows.shape[1], cols.shape[1]
        out = torch.empty(n, a, b, dtype=self.D.dtype, device=self.D.device)
        step = max(1, self.max_elements // ((a + b) * self.D.shape[1]))
        for s in range(0, n, step):
            e = min(s + step, n)
            out[s:e] = torch.bmm(self.D[rows[s:e]], self.D[cols[s:e]].transpose(1, 2))
        return out


def _gram_matrix(D: torch.Tensor, block: int = 1024) -> torch.Tensor:
    """``D Dᵀ (k, k)``: one triangle of blocks computed and mirrored (half the products)."""
    import torch

    k = D.shape[0]
    G = torch.empty(k, k, dtype=D.dtype, device=D.device)
    for s in range(0, k, block):
        e = min(s + block, k)
        part = D[s:e] @ D[s:].T
        G[s:e, s:] = part
        G[s:, s:e] = part.T
    return G


def _ws_start(
    A: torch.Tensor, B: torch.Tensor, g0: torch.Tensor, norms: torch.Tensor, gram: _GramBlocks
) -> dict[str, torch.Tensor]:
    """State of the rows being solved, each with its first working set: the atoms of largest
    ``b_j / ||d_j||``, those that alone would lower its residual most. All tensors of the state
    have the rows as first dimension, so the finished rows leave with one indexing."""
    import torch

    n = A.shape[0]
    safe = torch.where(norms > 0, norms, torch.ones_like(norms))
    idx = torch.topk(B / safe, min(_WS_FIRST, B.shape[1]), dim=1).indices
    m = idx.shape[1]
    return {
        "A": A, "B": B, "g0": g0, "a_norm": torch.linalg.vector_norm(A, dim=1), "idx": idx,
        # a zero atom explains nothing; keeping it out keeps every sub-problem positive definite
        "valid": norms[idx] > 0,
        "G": gram(idx, idx),
        "X": torch.zeros(n, m, dtype=A.dtype, device=A.device),
        "F": torch.zeros(n, m, dtype=torch.bool, device=A.device),
        "precise": torch.zeros(n, dtype=torch.bool, device=A.device),
    }


def _ws_relative_kkt(
    W: torch.Tensor, X: torch.Tensor, idx: torch.Tensor, g0: torch.Tensor
) -> torch.Tensor:
    """Relative KKT residual (as :func:`_relative_kkt`) from the negative gradient ``W (P, k)``
    and the codes ``X`` on the working sets ``idx (P, m)``, without forming ``Z (P, k)``:
    every atom contributes ``max(w_j, 0)²``, and those with ``z_j > 0`` also ``min(w_j, 0)²``."""
    import torch

    pos = W.clamp(min=0)
    on = W.gather(1, idx).clamp(max=0)
    pg2 = (pos * pos).sum(dim=1) + torch.where(X > 0, on * on, 0 * on).sum(dim=1)
    return torch.where(g0 > 0, pg2.sqrt() / g0.clamp(min=torch.finfo(W.dtype).tiny), 0 * g0)


def _ws_check(
    st: dict[str, torch.Tensor], D: torch.Tensor, D32: torch.Tensor, norms: torch.Tensor,
    inv_norms: torch.Tensor, *, R: torch.Tensor | None = None, W: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Negative gradient ``w = b - z G`` on all ``k`` atoms, and its violators off the working
    sets (``w_j`` above its rounding noise: adding atom ``j`` lowers the residual).

    Either ``W`` is given (computed from the full Gram matrix, exact in float64), or it is
    ``R Dᵀ`` with ``R = a - z D``. Then a row is screened in float32 first: the product is about
    twice as fast, and its noise only decides which atoms join, never that a row is finished.
    Once a row's float32 screen finds no violator it is checked in float64 (from then on in
    every round); only that check finishes it and gives its KKT residual.

    Returns:
        ``score (P, k)`` float32: ``w_j / ||d_j||`` of the violators, ``-inf`` elsewhere;
        ``done (P,)`` bool; ``rel (P,)`` relative KKT residual of the float64-checked rows.
    """
    import torch

    P, k = st["B"].shape
    idx, X = st["idx"], st["X"]
    dev = st["B"].device
    # w_j takes d-term dot products (b_j, G_ij or R d_j) and a sum over the working set; its
    # rounding noise over ||d_j|| is a few sqrt(d) eps times ||a|| + sum_i x_i ||d_i||, which
    # also bounds ||R||.
    scale = 8 * math.sqrt(D.shape[1]) * (st["a_norm"] + (X * norms[idx]).sum(dim=1))
    minus_inf = torch.tensor(-math.inf, device=dev)
    score = torch.full((P, k), -math.inf, dtype=torch.float32, device=dev)
    rel = torch.zeros(P, dtype=st["B"].dtype, device=dev)
    done = torch.zeros(P, dtype=torch.bool, device=dev)
    if W is not None:
        st["precise"][:] = True
    cheap = ~st["precise"]
    if R is not None and bool(cheap.any()):
        s32 = (R[cheap].float() @ D32.T) * inv_norms.float()
        s32.scatter_(1, idx[cheap], -math.inf)
        noise = torch.finfo(torch.float32).eps * scale[cheap, None].float()
        score[cheap] = torch.where(s32 > noise, s32, minus_inf)
        st["precise"][cheap] = ~(score[cheap] > -math.inf).any(dim=1)
    exact = st["precise"]
    if bool(exact.any()):
        if W is None:
            assert R is not None  # the caller gives W or R
            W = R[exact] @ D.T
        rel[exact] = _ws_relative_kkt(W, X[exact], idx[exact], st["g0"][exact])
        s64 = W * inv_norms
        s64.scatter_(1, idx[exact], -math.inf)
        viol = s64 > torch.finfo(W.dtype).eps * scale[exact, None]
        score[exact] = torch.where(viol, s64, minus_inf).float()
        done[exact] = ~viol.any(dim=1)
    return score, done, rel


def _gradient_from_gram(st: dict[str, torch.Tensor], G: torch.Tensor) -> torch.Tensor:
    """``w = b - z G (P, k)`` from the rows of the full Gram matrix of each row's support:
    reading ~50 rows of ``G`` costs less than a ``(P, d) x (d, k)`` product, and is exact in
    float64 (no float32 screen needed)."""
    import torch

    on = st["X"] > 0
    s = int(on.sum(dim=1).max().item())
    if s == 0:
        return st["B"].clone()
    order = torch.argsort((~on).to(torch.int8), dim=1, stable=True)[:, :s]
    support, weight = st["idx"].gather(1, order), st["X"].gather(1, order)  # weight 0 = padding
    return st["B"] - torch.nn.functional.embedding_bag(support, G, per_sample_weights=weight, mode="sum")


def _ws_grow(st: dict[str, torch.Tensor], score: torch.Tensor, gram: _GramBlocks) -> None:
    """Add each row's strongest violators (at most ``_WS_ADD``) to its working set, extending
    its Gram sub-block by the new rows and columns only. Slots of a row with fewer violators
    than the batch's widest addition are padding (``valid = False``)."""
    import torch

    n_new = int((score > -math.inf).sum(dim=1).max().item())
    top, new = torch.topk(score, min(_WS_ADD, n_new), dim=1)
    m = st["idx"].shape[1]
    cols = torch.cat([st["idx"], new], dim=1)
    block = gram(new, cols)  # rows of the new atoms against the old and new atoms
    st["G"] = torch.cat([torch.cat([st["G"], block[:, :, :m].transpose(1, 2)], dim=2), block], 1)
    st["idx"] = cols
    st["valid"] = torch.cat([st["valid"], top > -math.inf], dim=1)
    st["X"] = torch.cat([st["X"], torch.zeros_like(top, dtype=st["X"].dtype)], dim=1)
    st["F"] = torch.cat([st["F"], torch.zeros_like(top, dtype=torch.bool)], dim=1)


def _working_set(
    A: torch.Tensor, D: torch.Tensor, D32: torch.Tensor, norms: torch.Tensor, gram: _GramBlocks,
    *, max_steps: int, max_elements: int, max_width: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Exact NNLS codes of a batch on the whole dictionary by growing working sets.

    Round: solve every row's NNLS on its working set ``W`` exactly (:func:`_solve_small`
    on the gathered Gram sub-block ``G_WW``), compute the gradient on all ``k`` atoms (from the
    rows of the full Gram matrix, or one product with ``D``), add the violators; a row is finished
    when no atom off ``W`` violates the KKT conditions. ``W`` only grows, so this ends; the
    optimum on ``W`` is then optimal on all atoms (the KKT conditions hold everywhere).

    Args:
        A: ``(P, d)`` float64 activations; ``D``/``D32``: ``(k, d)`` float64/float32 atoms;
        norms: ``(k,)`` atom norms; gram: the Gram sub-block source.
        max_steps, max_elements: Lawson–Hanson budget and memory bound of the sub-problems.
        max_width: a row whose working set would grow past this stops unfinished.

    Returns:
        ``Z (P, k)``, ``rel (P,)`` relative KKT residual and ``ok (P,)`` (finished rows; the
        others hold the best codes found and ``rel = 0``).
    """
    import torch

    n, k = A.shape[0], D.shape[0]
    B = A @ D.T
    g0 = torch.linalg.vector_norm(B.clamp(min=0), dim=1)
    Z = torch.zeros(n, k, dtype=A.dtype, device=A.device)
    rel = torch.zeros(n, dtype=A.dtype, device=A.device)
    ok = g0 == 0  # b <= 0 on every atom: z = 0 satisfies the KKT conditions
    rows = torch.nonzero(~ok).flatten()
    st = _ws_start(A[rows], B[rows], g0[rows], norms, gram)
    inv_norms = torch.where(norms > 0, 1 / norms.clamp(min=torch.finfo(A.dtype).tiny), 0 * norms)
    for _ in range(k + 1):
        if rows.numel() == 0:
            break
        b = st["B"].gather(1, st["idx"])
        st["X"], st["F"], solved = _solve_small(
            st["G"], b, st["valid"], st["F"], max_steps=max_steps, max_elements=max_elements,
            max_support=D.shape[1],
        )
        if gram.G is not None and _GRADIENT_FROM_GRAM:
            score, done, rel_r = _ws_check(st, D, D32, norms, inv_norms, W=_gradient_from_gram(st, gram.G))
        else:
            R = st["A"] - torch.nn.functional.embedding_bag(
                st["idx"], D, per_sample_weights=st["X"], mode="sum"
            )
            score, done, rel_r = _ws_check(st, D, D32, norms, inv_norms, R=R)
        go_on = ~done & solved & (st["idx"].shape[1] + _WS_ADD <= max_width)
        stop = ~go_on
        Z[rows[stop]] = Z[rows[stop]].scatter_add_(1, st["idx"][stop], st["X"][stop])
        fin = done & solved
        rel[rows[fin]], ok[rows[fin]] = rel_r[fin], True
        rows, score = rows[go_on], score[go_on]
        st = {key: value[go_on] for key, value in st.items()}
        if rows.numel():
            _ws_grow(st, score, gram)
    if rows.numel():  # unreachable: every round adds an atom that no row's set had
        Z[rows] = Z[rows].scatter_add_(1, st["idx"], st["X"])
    return Z, rel, ok


# --------------------------------------------------------------------------------------------
# Per-class codes: every row against every block of atoms separately

#: blocks of up to this many atoms are solved as one batch of (image, block) problems; larger
#: ones one block at a time with the whole-dictionary solver
_PAIR_MAX_ATOMS = 64


def _block_layout(blocks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The blocks as a padded table.

    Returns:
        ``labels (n_blocks,)`` sorted; ``idx (n_blocks, r_max)`` the atoms of each block in
        increasing order, padded with its first atom; ``valid (n_blocks, r_max)`` bool, False on
        the padding.
    """
    labels, inverse, counts = np.unique(blocks, return_inverse=True, return_counts=True)
    order = np.argsort(inverse, kind="stable")  # atoms grouped by block, increasing within one
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    slot = np.arange(blocks.size) - np.repeat(starts, counts)
    idx = np.repeat(order[starts][:, None], counts.max(), axis=1)
    valid = np.zeros(idx.shape, dtype=bool)
    idx[inverse[order], slot] = order
    valid[inverse[order], slot] = True
    return labels, idx, valid


def _encode_pairs(
    A: torch.Tensor, D: torch.Tensor, idx: torch.Tensor, valid: torch.Tensor, Gc: torch.Tensor,
    *, max_steps: int, max_elements: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-class codes of a batch: one small NNLS per (image, block), all solved together.

    Args:
        A: ``(P, d)`` float64 activations; D: ``(k, d)`` float64 atoms.
        idx, valid: the ``(n_blocks, r)`` block table of :func:`_block_layout`.
        Gc: ``(n_blocks, r, r)`` Gram matrix of each block.
        max_steps, max_elements: Lawson–Hanson budget and memory bound of the small solves.

    Returns:
        ``Z (P, k)``; ``rel (P,)``, the KKT residual of the block-diagonal problem over its
        value at ``z = 0``; ``ok (P,)``.
    """
    import torch

    P, (nb, r), k = A.shape[0], idx.shape, D.shape[0]
    B = A @ D.T
    b = B[:, idx].reshape(P * nb, r)
    G, use = Gc.repeat(P, 1, 1), valid.repeat(P, 1)
    X, _, ok = _solve_small(
        G, b, use, torch.zeros_like(use), max_steps=max_steps, max_elements=max_elements,
        max_support=D.shape[1],
    )
    g = _gram_times(X, G) - b
    pg = torch.where(use, torch.where(X > 0, g, g.clamp(max=0)), 0 * g)
    pg2 = (pg * pg).sum(dim=1).reshape(P, nb).sum(dim=1)
    g0 = torch.linalg.vector_norm(B.clamp(min=0), dim=1)
    rel = torch.where(g0 > 0, pg2.sqrt() / g0.clamp(min=torch.finfo(A.dtype).tiny), 0 * g0)
    Z = torch.zeros(P, k, dtype=A.dtype, device=A.device)
    Z.scatter_add_(1, idx.reshape(1, -1).expand(P, -1), X.reshape(P, nb * r))
    return Z, rel, ok.reshape(P, nb).all(dim=1)


def _encode_all_pairs(
    A_np: np.ndarray, D_np: np.ndarray, idx_np: np.ndarray, valid_np: np.ndarray, s: _Settings
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`_encode_pairs` over batches of images; returns ``Z``, ``rel`` and the ``(n,)``
    mask of images with a block the small solvers could not settle."""
    import torch

    n, k = A_np.shape[0], D_np.shape[0]
    nb, r = idx_np.shape
    D = torch.as_tensor(D_np, dtype=torch.float64, device=s.device)
    idx = torch.as_tensor(idx_np, device=s.device)
    valid = torch.as_tensor(valid_np, device=s.device)
    Dg = D[idx]
    Gc = torch.bmm(Dg, Dg.transpose(1, 2))
    # About four copies of the (image, block) systems live at once, plus a few (P, k) arrays.
    # On the CPU the solves stream through these arrays many times: batches of ~16 MB of
    # systems stay in cache and were measured ~1.5x faster than batches of hundreds of MB.
    budget = 8 * 2**21 if s.device.type == "cpu" else s.max_memory // 4
    rows = max(1, min(s.batch_size, budget // (8 * nb * r * r), s.max_memory // (8 * (4 * nb * r * (r + 2) + 4 * k))))
    Z_all, rel_all = np.zeros((n, k), dtype=s.np_dtype), np.zeros(n)
    unsettled = np.zeros(n, dtype=bool)
    with torch.no_grad():
        for i in _batches(n, rows, s.progress):
            Ab = torch.from_numpy(np.array(A_np[i : i + rows], dtype=np.float64)).to(s.device)
            Z, rel, ok = _encode_pairs(
                Ab, D, idx, valid, Gc, max_steps=s.steps(r, D_np.shape[1]),
                max_elements=s.max_elements,
            )
            Z_all[i : i + rows], rel_all[i : i + rows] = Z.cpu().numpy(), rel.cpu().numpy()
            unsettled[i : i + rows] = ~ok.cpu().numpy()
    return Z_all, rel_all, unsettled


def _encode_blocks(
    A_np: np.ndarray, D_np: np.ndarray, blocks: np.ndarray, s: _Settings
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-class codes: ``z`` restricted to block ``c`` is ``NNLS(a, D[blocks == c])``.

    Small blocks with the default solver go through :func:`_encode_all_pairs`; otherwise every
    block is one whole-dictionary solve with ``s.method``. The relative KKT residual of a row
    is that of the block-diagonal problem, ``sqrt(sum_c pg_c²) / sqrt(sum_c g0_c²)``.
    """
    labels, idx, valid = _block_layout(blocks)
    if s.method == "working_set" and idx.shape[1] <= _PAIR_MAX_ATOMS:
        return _encode_all_pairs(A_np, D_np, idx, valid, s)
    n, k = A_np.shape[0], D_np.shape[0]
    Z = np.zeros((n, k), dtype=s.np_dtype)
    pg2, g02 = np.zeros(n), np.zeros(n)
    fallback = np.zeros(n, dtype=bool)
    A64 = A_np.astype(np.float64)
    for c in range(labels.size):
        atoms = idx[c][valid[c]]
        Z[:, atoms], rel_c, fb = _encode_dense(A_np, D_np[atoms], s)
        g0_c = np.linalg.norm(np.maximum(A64 @ D_np[atoms].astype(np.float64).T, 0), axis=1)
        pg2 += (rel_c * g0_c) ** 2
        g02 += g0_c**2
        fallback |= fb
    rel = np.sqrt(np.divide(pg2, g02, out=np.zeros(n), where=g02 > 0))
    return Z, rel, fallback


# --------------------------------------------------------------------------------------------
# Drivers: batches, memory, fallbacks


@dataclass(frozen=True)
class _Settings:
    """The solver options of one :func:`encode` call (see its docstring)."""

    device: Any  # torch.device
    batch_size: int
    max_iter: int
    tol: float
    dtype: Any  # torch.float32 or torch.float64, the output precision
    method: str
    max_steps: int | None  # None: 3 min(k, d) + 10 of the problem at hand
    refine: bool
    check_every: int
    progress: bool
    max_memory: int

    @property
    def max_elements(self) -> int:
        """Entries of one chunk of gathered small systems: an eighth of the budget in float64."""
        return max(2**16, self.max_memory // 64)

    @property
    def np_dtype(self) -> type[np.floating[Any]]:
        import torch

        return np.float32 if self.dtype == torch.float32 else np.float64

    def steps(self, k: int, d: int) -> int:
        """Lawson–Hanson step budget for ``k`` atoms in ``d`` dimensions."""
        return self.max_steps if self.max_steps is not None else 3 * min(k, d) + 10


def _batches(n: int, size: int, progress: bool) -> Iterator[int]:
    """Batch starts ``0, size, 2 size …``, with a tqdm bar in images (images/s, ETA)."""
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n, desc="NNLS codes", unit="img", mininterval=1.0)
    try:
        for start in range(0, n, size):
            yield start
            if bar is not None:
                bar.update(min(size, n - start))
    finally:
        if bar is not None:
            bar.close()


def _torch_relative_kkt(Z: torch.Tensor, B: torch.Tensor, prob: _Problem) -> torch.Tensor:
    """Relative KKT residual of the rows of ``Z`` (as :func:`_relative_kkt`), ``(batch,)``."""
    import torch

    g0 = torch.linalg.vector_norm(B.clamp(min=0), dim=1)
    pg = _projected_gradient_norm(Z, prob.matvec(Z) - B)
    return torch.where(g0 > 0, pg / g0.clamp(min=torch.finfo(B.dtype).tiny), 0 * pg)


def _encode_scipy(
    A_np: np.ndarray, D_np: np.ndarray, s: _Settings
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``scipy.optimize.nnls`` row by row; rows out of steps are finished by the active set."""
    from dataclasses import replace

    from scipy.optimize import nnls

    n, k = A_np.shape[0], D_np.shape[0]
    Z_all, rel_all = np.zeros((n, k), dtype=s.np_dtype), np.zeros(n)
    fallback = np.zeros(n, dtype=bool)
    Dt64 = np.ascontiguousarray(D_np.T, dtype=np.float64)  # (d, k): nnls solves Dᵀ z ≈ a
    G64 = D_np.astype(np.float64) @ Dt64
    rows: Iterable[int] = range(n)
    if s.progress:
        from tqdm.auto import tqdm

        rows = tqdm(rows, desc="NNLS codes", unit="img", mininterval=1.0)
    for r in rows:
        a = A_np[r].astype(np.float64)
        try:
            z = nnls(Dt64, a, maxiter=s.steps(k, D_np.shape[1]))[0]
        except RuntimeError:  # "Maximum number of iterations reached": no partial result
            fallback[r] = True
            continue
        Z_all[r] = z
        rel_all[r] = _relative_kkt(a[None], z[None], Dt64, G64)[0]
    if fallback.any():
        # SciPy keeps nothing of a row it gives up on: those rows go to the batched active
        # set, which hands its own unsettled rows to FISTA
        Z_u, _, _ = _encode_torch(A_np[fallback], D_np, replace(s, method="active_set"))
        Z_all[fallback] = Z_u
        rel_all[fallback] = _relative_kkt(
            A_np[fallback].astype(np.float64), Z_u.astype(np.float64), Dt64, G64
        )
    return Z_all, rel_all, fallback


def _encode_torch(
    A_np: np.ndarray, D_np: np.ndarray, s: _Settings
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The whole-``G`` solvers: batched Lawson–Hanson (``"active_set"``) or FISTA."""
    import torch

    n, d = A_np.shape
    k = D_np.shape[0]
    # The active-set solves work on the Gram matrix, which squares the conditioning of D, and
    # NMF atoms (all non-negative, sharing a mean direction) are poorly conditioned: in float32
    # cond(D Dᵀ)·eps is often of order 1. So that method always computes in float64; ``dtype``
    # then only sets the output precision.
    work = torch.float64 if s.method == "active_set" else s.dtype
    eff_tol = max(float(s.tol), 10.0 * torch.finfo(work).eps)
    Dt = torch.as_tensor(D_np, dtype=work, device=s.device)
    L = _largest_eigenvalue(Dt)
    Z_all, rel_all = np.zeros((n, k), dtype=s.np_dtype), np.zeros(n)
    fallback = np.zeros(n, dtype=bool)
    if L == 0 or n == 0:  # an all-zero dictionary explains nothing: every code is zero
        return Z_all, rel_all, fallback
    # FISTA's gradient costs k² per image with the Gram matrix, 2kd through D.
    use_gram = s.method == "active_set" or k <= 2 * d
    prob = _Problem(Dt, Dt @ Dt.T if use_gram else None)
    with torch.no_grad():
        for i in _batches(n, s.batch_size, s.progress):
            Bb = torch.from_numpy(np.array(A_np[i : i + s.batch_size])).to(device=s.device, dtype=work) @ Dt.T
            if s.method == "active_set":
                assert prob.G is not None  # use_gram is always on for active_set
                Zb, ok = _lawson_hanson(
                    prob.G, Bb, max_steps=s.steps(k, d), max_elements=s.max_elements
                )
                if not bool(ok.all()):
                    bad = torch.nonzero(~ok).flatten()
                    fallback[i + bad.cpu().numpy()] = True
                    Zf, _, _ = _fista(
                        prob, Bb[bad], L, max_iter=s.max_iter, tol=eff_tol,
                        check_every=s.check_every, Z0=Zb[bad],
                    )
                    Zb[bad] = _refine_on_support(prob, Bb[bad], Zf, n_steps=min(k, 50))
            else:
                Zb, _, _ = _fista(
                    prob, Bb, L, max_iter=s.max_iter, tol=eff_tol, check_every=s.check_every
                )
                if s.refine:
                    Zb = _refine_on_support(prob, Bb, Zb, n_steps=min(k, 50))
            Z_all[i : i + s.batch_size] = Zb.cpu().numpy()
            rel_all[i : i + s.batch_size] = _torch_relative_kkt(Zb, Bb, prob).cpu().numpy()
    return Z_all, rel_all, fallback


def _ws_batch_rows(k: int, s: _Settings, fixed_bytes: int) -> int:
    """Rows per batch of the working-set method within ``max_memory``: a few ``(rows, k)``
    arrays (``B``, the float64 and float32 gradients, the scores, the codes: about 48 bytes per
    atom) and the Gram sub-blocks of a typical working set (``4 * _WS_FIRST`` atoms)."""
    per_row = 48 * k + 3 * 8 * (4 * _WS_FIRST) ** 2
    return max(1, min(s.batch_size, _WS_CPU_ROWS if s.device.type == "cpu" else s.batch_size,
                      (s.max_memory - fixed_bytes) // per_row))


def _ws_max_width(rows: int, s: _Settings) -> int:
    """Widest working set for a batch of ``rows``: their Gram sub-blocks (three copies live at
    once in the sub-problem solver) within a quarter of ``max_memory``."""
    return max(_WS_FIRST + _WS_ADD, int(math.sqrt(s.max_memory / (4 * 3 * 8 * rows))))


def _encode_working_set(
    A_np: np.ndarray, D_np: np.ndarray, s: _Settings
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exact codes by growing working sets (:func:`_working_set`), in batches within
    ``max_memory``. Rows a batch could not finish (their working set outgrew the batch's
    width) are redone one at a time, which allows the widest sets; what is still unfinished
    (or above ``tol``) is handed to FISTA from the best codes found (counted as fallback)."""
    import torch

    n, d = A_np.shape
    k = D_np.shape[0]
    D = torch.as_tensor(D_np, dtype=torch.float64, device=s.device)
    # The full Gram matrix costs k² d / 2 products once, the per-row sub-blocks it replaces
    # about _GRAM_WIDTH² d per image (on a GPU both are cheap and gathering from G is faster).
    fits = 8 * k * k <= s.max_memory // 2
    use_gram = fits and (s.device.type != "cpu" or n * _GRAM_WIDTH**2 >= k * k)
    gram = _GramBlocks(D, _gram_matrix(D) if use_gram else None, min(s.max_elements, _GATHER_ELEMENTS))
    parts = (D, D.float(), torch.linalg.vector_norm(D, dim=1), gram)
    rows = _ws_batch_rows(k, s, 12 * k * d + (8 * k * k if use_gram else 0))
    Z_all, rel_all = np.zeros((n, k), dtype=s.np_dtype), np.zeros(n)
    todo = np.zeros(n, dtype=bool)
    with torch.no_grad():
        for i in _batches(n, rows, s.progress):
            Ab = torch.from_numpy(np.array(A_np[i : i + rows], dtype=np.float64)).to(s.device)
            Z, rel, ok = _working_set(
                Ab, *parts, max_steps=s.steps(k, d), max_elements=s.max_elements,
                max_width=_ws_max_width(Ab.shape[0], s),
            )
            Z_all[i : i + rows], rel_all[i : i + rows] = Z.cpu().numpy(), rel.cpu().numpy()
            todo[i : i + rows] = ~(ok & (rel <= s.tol)).cpu().numpy()
        fallback = np.zeros(n, dtype=bool)
        for r in np.flatnonzero(todo):
            Ab = torch.from_numpy(np.array(A_np[r : r + 1], dtype=np.float64)).to(s.device)
            Z, rel, ok = _working_set(
                Ab, *parts, max_steps=s.steps(k, d), max_elements=s.max_elements,
                max_width=_ws_max_width(1, s),
            )
            if not bool(ok.all()) or float(rel.max()) > s.tol:
                fallback[r] = True
                Z, rel = _finish_with_fista(Ab, D, Z, s)
            Z_all[r], rel_all[r] = Z[0].cpu().numpy(), float(rel[0])
    return Z_all, rel_all, fallback


def _finish_with_fista(
    A: torch.Tensor, D: torch.Tensor, Z0: torch.Tensor, s: _Settings
) -> tuple[torch.Tensor, torch.Tensor]:
    """FISTA from ``Z0`` then conjugate gradients on the support (products with ``D`` only),
    keeping whichever of ``Z0`` and the result has the smaller objective; returns the codes and
    their relative KKT residual."""
    import torch

    prob = _Problem(D, None)
    B = A @ D.T
    Z, _, _ = _fista(
        prob, B, _largest_eigenvalue(D), max_iter=s.max_iter, tol=s.tol,
        check_every=s.check_every, Z0=Z0,
    )
    Z = _refine_on_support(prob, B, Z, n_steps=min(D.shape[0], 50))

    def residual(V: torch.Tensor) -> torch.Tensor:
        return torch.linalg.vector_norm(A - V @ D, dim=1)

    Z = torch.where((residual(Z) <= residual(Z0))[:, None], Z, Z0)
    return Z, _torch_relative_kkt(Z, B, prob)


def _encode_dense(
    A_np: np.ndarray, D_np: np.ndarray, s: _Settings
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Codes against the whole of ``D`` with ``s.method``: ``Z (n, k)``, the relative KKT
    residual ``(n,)`` and the ``(n,)`` mask of rows handed to a fallback solver."""
    if A_np.shape[0] == 0 or not np.any(D_np):  # an all-zero dictionary explains nothing
        n, k = A_np.shape[0], D_np.shape[0]
        return np.zeros((n, k), dtype=s.np_dtype), np.zeros(n), np.zeros(n, dtype=bool)
    if s.method == "scipy":
        return _encode_scipy(A_np, D_np, s)
    if s.method == "working_set":
        return _encode_working_set(A_np, D_np, s)
    return _encode_torch(A_np, D_np, s)


# --------------------------------------------------------------------------------------------
# Public entry point

_METHODS = ("auto", "working_set", "scipy", "active_set", "fista")


def _check_arrays(A: Any, D: Any) -> tuple[np.ndarray, np.ndarray]:
    """``A (n, d)`` and ``D (k, d)`` as finite real numpy arrays, or a ``ValueError``."""
    A_np = _as_numpy_2d(A, "A")
    D_np = _as_numpy_2d(D, "D")
    if A_np.shape[1] != D_np.shape[1]:
        raise ValueError(
            f"A has {A_np.shape[1]} columns but D has {D_np.shape[1]}: the atoms (rows of D, "
            f"shape (k, d)) must live in the same d-dimensional space as the activations "
            f"(rows of A, shape (n_images, d)); pass D, not D.T"
        )
    if D_np.shape[0] == 0:
        raise ValueError("D has no atoms (shape (0, d)); fit a dictionary first")
    _check_finite(A_np, "A")
    _check_finite(D_np, "D")
    return A_np, D_np


def _check_blocks(blocks: Any, k: int) -> np.ndarray | None:
    """``blocks`` as ``(k,)`` int64 labels, or ``None``; a ``ValueError`` names the problem."""
    if blocks is None:
        return None
    fix = "; pass one block (class) label per atom, e.g. blocks=dictionary.feature_class"
    arr = as_array(blocks, "blocks", 1, expected=f"a 1-D array of {k} labels", fix=fix)
    if arr.shape[0] != k:
        raise ValueError(f"blocks has {arr.shape[0]} labels but D has {k} atoms{fix}")
    return as_class_indices(arr, "blocks")


def _settings(
    device: Any, batch_size: int, max_iter: int, tol: float, dtype: Any, method: str,
    max_steps: int | None, refine: bool, check_every: int, progress: bool,
    max_memory: int | None,
) -> _Settings:
    """Validated options (``ValueError`` on a bad one); ``"auto"`` resolved."""
    import torch

    dtype = torch.float32 if dtype is None else dtype
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
    if method not in _METHODS:
        raise ValueError(f"method must be one of {', '.join(map(repr, _METHODS))}, got {method!r}")
    steps = 1 if max_steps is None else max_steps
    if min(batch_size, max_iter, check_every, steps) < 1:
        raise ValueError(
            f"batch_size, max_iter, check_every and max_steps must be >= 1, got {batch_size}, "
            f"{max_iter}, {check_every}, {max_steps}"
        )
    if not tol > 0:
        raise ValueError(f"tol must be > 0, got {tol}")
    dev = torch.device(device)
    if max_memory is None:
        max_memory = 2**33 if dev.type == "cuda" else 2**31
    if max_memory < 2**24:
        raise ValueError(f"max_memory is in bytes and must be at least 16 MiB, got {max_memory}")
    return _Settings(
        device=dev, batch_size=batch_size, max_iter=max_iter, tol=float(tol), dtype=dtype,
        method="working_set" if method == "auto" else method, max_steps=max_steps,
        refine=refine, check_every=check_every, progress=progress, max_memory=int(max_memory),
    )


def encode(
    A: np.ndarray | torch.Tensor,
    D: np.ndarray | torch.Tensor,
    *,
    device: str | torch.device = "cpu", batch_size: int = 4096, max_iter: int = 500, tol: float = 1e-6,
    dtype: torch.dtype | None = None, method: str = "auto", max_steps: int | None = None, refine: bool = True,
    check_every: int = 10, progress: bool = False, return_info: bool = False, blocks: np.ndarray | None = None,
    max_memory: int | None = None,
) -> np.ndarray | tuple[np.ndarray, dict[str, float]]:
    """Non-negative codes of every image on a fixed dictionary: ``Z = argmin_{Z≥0} ||A − Z D||²``.

    Each row is solved independently (the problem separates over images). The torch solvers
    treat all rows of a batch at once on ``device``, with no per-image Python loop. ``D`` may be
    signed (Semi-NMF, sparse autoencoders); the codes are non-negative either way.

    Solvers (``method``; the module docstring describes the algorithms):

    - ``"auto"`` (default) = ``"working_set"``, on the CPU and on a GPU.
    - ``"working_set"``: exact, for dictionaries of any size (10,000 atoms in 2,048 dimensions
      included); computes in float64. Rows it cannot finish (working set outgrowing
      ``max_memory``, KKT residual above ``tol``) go to FISTA (``n_fallback``).
    - ``"scipy"``: ``scipy.optimize.nnls`` image by image (compiled Lawson–Hanson, Python loop
      over images): the reference; seconds per image at 10,000 atoms.
    - ``"active_set"``: Lawson–Hanson batched on the full ``(k, k)`` Gram matrix: exact (matches
      SciPy to ~1e-12 whatever ``tol``) but each of its ≈ support-size steps costs ``k²`` per
      image. Rows not settled within ``max_steps`` continue with FISTA from where they stopped.
    - ``"fista"``: accelerated projected gradient, stopping when the projected-gradient (KKT) norm
      falls below ``tol`` times its value at ``z = 0``, then (``refine``) conjugate-gradient
      steps on each image's support. Accurate on well-conditioned dictionaries only.

    Per-class codes (``blocks``, e.g. a per-class dictionary's ``feature_class``): ``z`` restricted
    to block ``c`` is ``NNLS(a, D[blocks == c])``, as if each class's atoms alone had to explain
    the image (the cheaper reading of the paper, paper-method.md §2.2). Blocks of up to 64 atoms
    are solved as one batch of (image, block) problems; with another ``method``, or larger
    blocks, block by block.

    Args:
        A: activations ``(n_images, d)``, numpy array or torch tensor. Need not be non-negative.
        D: dictionary ``(k, d)``, atoms as rows, of any sign.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"`` … where the batches are solved.
        batch_size: at most this many images per batch (the working-set method also keeps a
            batch within ``max_memory``, and to 256 images on the CPU, which is faster there).
        max_iter: FISTA iteration budget per batch (also of the working-set fallback).
        tol: relative KKT tolerance: FISTA's stopping rule, floored at ``10 * eps`` of
            ``dtype`` (``~1.2e-6`` in float32) because below that the gradient itself is
            rounding noise; the working set's acceptance threshold for a finished row.
        dtype: ``torch.float32`` (default) or ``torch.float64``: the precision of the output,
            and of the computation for ``"fista"`` (the other torch methods compute in float64:
            NMF dictionaries are too ill-conditioned for float32 Gram matrices).
        method: ``"auto"``, ``"working_set"``, ``"scipy"``, ``"active_set"`` or ``"fista"``.
        max_steps: Lawson–Hanson step budget (also SciPy's ``maxiter``); default
            ``3 * min(k, d) + 10`` (a support never needs more than ``min(k, d)`` atoms).
        refine: FISTA only: finish with conjugate-gradient steps on each image's support.
        check_every: FISTA only: iterations between two evaluations of the stopping rule.
        progress: show a tqdm bar (images/s, ETA).
        return_info: also return a dict with ``max_relative_kkt`` and ``median_relative_kkt``
            (final projected-gradient norm over its value at ``z = 0``, over all images) and
            ``n_fallback`` (images handed to a fallback solver: FISTA for the torch methods,
            the batched active set for SciPy rows out of ``max_steps``).
        blocks: optional ``(k,)`` int block (class) label of every atom: per-class codes.
        max_memory: working-memory budget in bytes (default 2 GiB on the CPU, 8 GiB on a
            GPU). The working-set method keeps each batch within it and forms the full
            ``(k, k)`` float64 Gram matrix only when that takes at most half of it and enough
            images share it on the CPU (``n * 320² >= k²``: ~1,000 images at k = 10,000); otherwise
            Gram sub-blocks come from ``D``.

    Returns:
        ``Z`` as a numpy array ``(n_images, k)`` of dtype matching ``dtype`` (also when torch
        tensors are passed in), and the info dict when ``return_info``.

    Raises:
        ValueError: on wrong shapes, non-finite values, bad ``blocks`` or bad options.
    """
    s = _settings(device, batch_size, max_iter, tol, dtype, method, max_steps, refine,
                  check_every, progress, max_memory)
    A_np, D_np = _check_arrays(A, D)
    labels = _check_blocks(blocks, D_np.shape[0])
    Z, rel, fallback = _encode_dense(A_np, D_np, s) if labels is None else _encode_blocks(A_np, D_np, labels, s)
    return (Z, _info(rel, fallback, A_np.shape[0])) if return_info else Z


def _info(rel: np.ndarray, fallback: np.ndarray, n: int) -> dict[str, float]:
    """The ``return_info`` dict of :func:`encode` from the per-row relative KKT residuals and fallbacks."""
    return {
        "max_relative_kkt": float(rel.max()) if n else 0.0,
        "median_relative_kkt": float(np.median(rel)) if n else 0.0,
        "n_fallback": float(fallback.sum()),
    }
