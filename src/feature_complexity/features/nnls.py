"""Codes ``Z`` for fixed atoms: batched non-negative least squares in torch.

Notation (docs/ARCHITECTURE.md): ``A`` activations ``(n_images, d)``, ``D`` dictionary
``(k, d)`` with atoms as rows, ``Z`` codes ``(n_images, k)``. For every image ``a`` (a row of
``A``) we solve, independently,

    z(a) = argmin_{z >= 0} ||a - z D||²,

which is what the paper calls the feature values of an image (paper-method.md §2). SciPy's
``nnls`` solves one image at a time in a Python loop; at 50,000 images and 10,000 atoms that is
hours. Here all images of a batch are solved at once, on CPU or CUDA, by one of two solvers:

- Lawson–Hanson (SciPy's own algorithm), batched (default): exact; each step is one batched
  Cholesky solve on every image's current support, gathered from the Gram matrix ``D Dᵀ``.
- FISTA (accelerated projected gradient, Beck & Teboulle 2009) with per-image adaptive restart
  (O'Donoghue & Candès 2015), step ``1/L`` with ``L`` the largest eigenvalue of ``D Dᵀ``, then
  conjugate-gradient steps on each image's support. Only products with ``D``; accurate when
  ``D Dᵀ`` is well conditioned, which NMF dictionaries are not: it is the fallback.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from .._validation import as_array

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


def _solve_on_support(
    G: torch.Tensor, B: torch.Tensor, F: torch.Tensor, *, max_elements: int
) -> torch.Tensor:
    """Solve ``G_FF x_F = b_F`` for every row, with ``x = 0`` off the passive set ``F``.

    Each row's passive set is gathered into a compact ``(s_max, s_max)`` system (padded with
    identity rows), so the cost follows the support size, not ``k``: with 10,000 atoms and a
    support of a few hundred, the Cholesky factorisations stay cheap. Rows are processed in
    chunks of at most ``max_elements`` matrix entries to bound memory.

    Args:
        G: Gram matrix ``D Dᵀ`` ``(k, k)``.
        B: ``A Dᵀ`` ``(batch, k)``.
        F: passive sets ``(batch, k)`` bool.
        max_elements: memory bound for one chunk of gathered systems.

    Returns:
        ``X (batch, k)``.
    """
    import torch

    n, k = B.shape
    X = torch.zeros_like(B)
    size = F.sum(dim=1)
    s_max = int(size.max().item()) if n else 0
    if s_max == 0:
        return X
    # Passive indices first (stable sort keeps them in increasing order), then the rest.
    idx = torch.argsort((~F).to(torch.int8), dim=1, stable=True)[:, :s_max]
    valid = torch.arange(s_max, device=B.device)[None, :] < size[:, None]
    eye = torch.eye(s_max, dtype=B.dtype, device=B.device)
    # A tiny ridge keeps the factorisation defined if rounding makes G_FF numerically singular
    # (Lawson–Hanson keeps D_F of full rank in exact arithmetic); it grows only while some row
    # of the chunk still fails to factorise.
    eps = torch.finfo(B.dtype).eps
    diag_scale = float(torch.diagonal(G).mean().item())
    rows = max(1, max_elements // (s_max * s_max))
    for s in range(0, n, rows):
        ix, vl = idx[s : s + rows], valid[s : s + rows]
        pair = vl[:, :, None] & vl[:, None, :]
        Gs = torch.where(pair, G[ix[:, :, None], ix[:, None, :]], eye)
        bs = torch.where(vl, B[s : s + rows].gather(1, ix), torch.zeros((), dtype=B.dtype))
        jitter = 10 * eps * diag_scale
        for _ in range(4):
            chol, info = torch.linalg.cholesky_ex(Gs + jitter * eye)
            if not bool((info > 0).any()):
                break
            jitter *= 1e3
        xs = torch.cholesky_solve(bs[:, :, None], chol)[:, :, 0]
        xs = torch.where(vl, xs, torch.zeros((), dtype=B.dtype))
        X[s : s + rows].scatter_(1, ix, xs)
    return X


def _lawson_hanson(
    G: torch.Tensor, B: torch.Tensor, *, max_steps: int, max_elements: int
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
        G: Gram matrix ``(k, k)``.
        B: ``A Dᵀ`` ``(batch, k)``.
        max_steps: budget of steps (at least the largest support size is needed).
        max_elements: memory bound for the support solves.

    Returns:
        ``X (batch, k)`` (≥ 0) and a ``(batch,)`` bool mask of converged rows.
    """
    import torch

    n, k = B.shape
    dev = B.device
    eps = torch.finfo(B.dtype).eps
    zero = torch.zeros((), dtype=B.dtype, device=dev)
    minus_one = -torch.ones((), dtype=B.dtype, device=dev)
    X_out = torch.zeros_like(B)
    ok_out = torch.zeros(n, dtype=torch.bool, device=dev)
    active = torch.arange(n, device=dev)
    Bk = B
    P = torch.zeros(n, k, dtype=torch.bool, device=dev)
    X = torch.zeros_like(B)
    # A row may admit a coordinate only when X solves its problem on P exactly (Lawson–Hanson's
    # outer loop); after a step back it first re-solves on the smaller P (the inner loop). The
    # two loops are merged so that every step costs exactly one support solve for all rows.
    may_add = torch.ones(n, dtype=torch.bool, device=dev)
    for step in range(max_steps + 1):
        # Negative gradient w = b - G x; its rounding noise is bounded by G x + |b| (G, x ≥ 0).
        XG = X @ G
        W = Bk - XG
        w_tol = 16 * eps * (XG + Bk.abs())
        cand = torch.where(~P & (W > w_tol), W, minus_one)
        best, j = cand.max(dim=1)
        done = may_add & (best <= 0)
        if done.any():
            X_out[active[done]] = X[done]
            ok_out[active[done]] = True
            keep = ~done
            active, Bk, P, X = active[keep], Bk[keep], P[keep], X[keep]
            j, may_add = j[keep], may_add[keep]
            if active.numel() == 0:
                break
        if step == max_steps:
            break
        rows = torch.nonzero(may_add).flatten()
        P[rows, j[rows]] = True
        S = _solve_on_support(G, Bk, P, max_elements=max_elements)
        bad = P & (S <= 0)
        infeasible = bad.any(dim=1)
        # Largest step from x towards s keeping every coordinate of P non-negative.
        ratio = torch.where(bad, X / (X - S).clamp(min=torch.finfo(B.dtype).tiny), 2 + zero)
        alpha = ratio.amin(dim=1, keepdim=True).clamp(0, 1)
        X = torch.where(infeasible[:, None], X + alpha * (S - X), S)
        # Coordinates that reached zero (up to rounding) leave the support.
        tiny = 16 * eps * X.abs().amax(dim=1, keepdim=True)
        P = P & ~(infeasible[:, None] & (X <= tiny))
        X = torch.where(P, X, zero)
        may_add = ~infeasible
    if active.numel():
        X_out[active] = X.clamp(min=0)
    return X_out, ok_out


def encode(
    A: np.ndarray | torch.Tensor,
    D: np.ndarray | torch.Tensor,
    *,
    device: str | torch.device = "cpu",
    batch_size: int = 4096,
    max_iter: int = 500,
    tol: float = 1e-6,
    dtype: torch.dtype | None = None,
    method: str = "auto",
    max_steps: int | None = None,
    refine: bool = True,
    check_every: int = 10,
    progress: bool = False,
    return_info: bool = False,
) -> np.ndarray | tuple[np.ndarray, dict[str, float]]:
    """Non-negative codes of every image on a fixed dictionary: ``Z = argmin_{Z≥0} ||A − Z D||²``.

    Each row is solved independently (the problem separates over images). The torch solvers
    treat all rows of a batch at once on ``device``, with no per-image Python loop.

    Solvers (``method``):

    - ``"auto"`` (default): ``"active_set"`` on a GPU, ``"scipy"`` on the CPU.
    - ``"scipy"``: ``scipy.optimize.nnls`` image by image. Compiled Lawson–Hanson; on the CPU
      with a few hundred atoms it is about as fast as the batched torch code, and much less
      sensitive to a loaded machine (benchmarks/README.md, "NNLS codes"), so it is the CPU
      default despite the Python loop over images. Too slow for 10,000 atoms: use a GPU.
    - ``"active_set"``: Lawson–Hanson, the algorithm of ``scipy.optimize.nnls``,
      batched; support solves are gathered per image so their cost follows the support size,
      not ``k``. Exact (matches SciPy to ~1e-12 whatever ``tol``), also on overcomplete and
      ill-conditioned dictionaries, which NMF atoms (all non-negative, sharing a mean direction)
      are. Steps ≈ the largest support size. Rows not settled within ``max_steps`` continue
      with FISTA (stopping rule ``tol``) from where they stopped.
    - ``"fista"``: accelerated projected gradient with per-image adaptive restart, step ``1/L``
      (``L`` = largest eigenvalue of ``D Dᵀ``), stopping when the projected-gradient (KKT) norm
      falls below ``tol`` times its value at ``z = 0``, then (``refine``) conjugate-gradient
      steps on each image's support. Only products with ``D``: use it when the ``(k, k)`` Gram
      matrix does not fit in memory. Accurate on well-conditioned dictionaries only.

    Args:
        A: activations ``(n_images, d)``, numpy array or torch tensor. Need not be non-negative.
        D: dictionary ``(k, d)``, atoms as rows, non-negative (as NMF returns it).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"`` … where the batches are solved.
        batch_size: images per batch. Memory: the Gram matrix ``k²`` plus a few
            ``batch_size * k`` arrays (the support systems are chunked to a fixed budget).
        max_iter: FISTA iteration budget per batch.
        tol: relative KKT tolerance. It is floored at ``10 * eps`` of ``dtype`` (``~1.2e-6`` in
            float32) because below that the gradient itself is rounding noise.
        dtype: ``torch.float32`` (default) or ``torch.float64``: the precision of the output,
            and of the computation for ``"fista"`` (``"active_set"`` always computes in
            float64, see the comment in the code).
        method: ``"auto"``, ``"scipy"``, ``"active_set"`` or ``"fista"``.
        max_steps: step budget of the active-set method (and SciPy's ``maxiter``); default
            ``3 * min(k, d) + 10`` (a support never needs more than ``min(k, d)`` atoms).
        refine: FISTA only: finish with conjugate-gradient steps on each image's support.
        check_every: FISTA only: iterations between two evaluations of the stopping rule.
        progress: show a tqdm bar over batches.
        return_info: also return a dict with ``max_relative_kkt`` and ``median_relative_kkt``
            (final projected-gradient norm over its value at ``z = 0``, over all images) and
            ``n_fallback`` (images the active-set method handed over to FISTA; with ``"scipy"``,
            images that ran out of ``max_steps`` there and were finished by ``"active_set"``).

    Returns:
        ``Z`` as a numpy array ``(n_images, k)`` of dtype matching ``dtype`` (also when torch
        tensors are passed in), and the info dict when ``return_info``.

    Raises:
        ValueError: on wrong shapes, non-finite values, a negative dictionary or bad options.
    """
    import torch

    if dtype is None:
        dtype = torch.float32
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
    if method not in ("auto", "scipy", "active_set", "fista"):
        raise ValueError(
            f"method must be 'auto', 'scipy', 'active_set' or 'fista', got {method!r}"
        )
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
    if (D_np < 0).any():
        raise ValueError(
            f"D has {int((D_np < 0).sum())} negative entries (min {float(D_np.min()):.3g}); the "
            f"dictionary must be non-negative, as NMF returns it. Clip tiny negatives with "
            f"np.clip(D, 0, None) or refit the dictionary"
        )
    if max_steps is None:
        max_steps = 3 * min(D_np.shape) + 10
    if min(batch_size, max_iter, check_every, max_steps) < 1:
        raise ValueError(
            f"batch_size, max_iter, check_every and max_steps must be >= 1, got {batch_size}, "
            f"{max_iter}, {check_every}, {max_steps}"
        )
    if not tol > 0:
        raise ValueError(f"tol must be > 0, got {tol}")

    dev = torch.device(device)
    if method == "auto":
        method = "scipy" if dev.type == "cpu" else "active_set"
    n, d = A_np.shape
    k = D_np.shape[0]
    # The active-set solves work on the Gram matrix, which squares the conditioning of D, and
    # NMF atoms (all non-negative, sharing a mean direction) are poorly conditioned: in float32
    # cond(D Dᵀ)·eps is often of order 1. So that method always computes in float64; ``dtype``
    # then only sets the output precision.
    work = torch.float64 if method == "active_set" else dtype
    eff_tol = max(float(tol), 10.0 * torch.finfo(work).eps)
    Dt = torch.as_tensor(D_np, dtype=work, device=dev)
    L = _largest_eigenvalue(Dt)
    np_dtype = np.float32 if dtype == torch.float32 else np.float64
    Z_all = np.zeros((n, k), dtype=np_dtype)
    rel_all = np.zeros(n)
    n_fallback = 0
    if method == "scipy" and L > 0 and n > 0:
        from scipy.optimize import nnls

        Dt64 = np.ascontiguousarray(D_np.T, dtype=np.float64)  # (d, k): nnls solves Dᵀ z ≈ a
        G64 = D_np.astype(np.float64) @ Dt64
        rows = range(n)
        if progress:
            from tqdm.auto import tqdm

            rows = tqdm(rows, desc="NNLS codes", unit="img", mininterval=1.0)
        unsettled: list[int] = []
        for r in rows:
            a = A_np[r].astype(np.float64)
            try:
                z = nnls(Dt64, a, maxiter=max_steps)[0]
            except RuntimeError:  # "Maximum number of iterations reached": no partial result
                unsettled.append(r)
                continue
            Z_all[r] = z
            rel_all[r] = _relative_kkt(a[None], z[None], Dt64, G64)[0]
        if unsettled:
            # SciPy keeps nothing of a row it gives up on: those rows go to the batched active
            # set, which hands its own unsettled rows to FISTA
            Z_u = encode(
                A_np[unsettled], D_np, device=dev, batch_size=batch_size, max_iter=max_iter,
                tol=tol, dtype=dtype, method="active_set", max_steps=max_steps,
                check_every=check_every,
            )
            Z_all[unsettled] = Z_u
            rel_all[unsettled] = _relative_kkt(A_np[unsettled].astype(np.float64), Z_u.astype(np.float64), Dt64, G64)
            n_fallback += len(unsettled)
    elif L > 0 and n > 0:  # else an all-zero dictionary explains nothing: every code is zero
        # FISTA's gradient costs k² per image with the Gram matrix, 2kd through D.
        use_gram = method == "active_set" or k <= 2 * d
        G = Dt @ Dt.T if use_gram else None
        prob = _Problem(Dt, G)
        # ~128 MB of float32 per chunk of gathered support systems on CPU, 1 GB on a GPU
        max_elements = 2**28 if dev.type == "cuda" else 2**25
        starts = range(0, n, batch_size)
        if progress:
            from tqdm.auto import tqdm

            starts = tqdm(
                starts, total=math.ceil(n / batch_size), desc="NNLS codes", unit="batch"
            )
        with torch.no_grad():
            for s in starts:
                Ab = torch.as_tensor(A_np[s : s + batch_size], dtype=work, device=dev)
                Bb = Ab @ Dt.T
                if method == "active_set":
                    Zb, ok = _lawson_hanson(
                        G, Bb, max_steps=max_steps, max_elements=max_elements
                    )
                    if not bool(ok.all()):
                        bad = torch.nonzero(~ok).flatten()
                        n_fallback += int(bad.numel())
                        Zf, _, _ = _fista(
                            prob, Bb[bad], L, max_iter=max_iter, tol=eff_tol,
                            check_every=check_every, Z0=Zb[bad],
                        )
                        Zb[bad] = _refine_on_support(prob, Bb[bad], Zf, n_steps=min(k, 50))
                else:
                    Zb, _, _ = _fista(
                        prob, Bb, L, max_iter=max_iter, tol=eff_tol, check_every=check_every
                    )
                    if refine:
                        Zb = _refine_on_support(prob, Bb, Zb, n_steps=min(k, 50))
                g0 = torch.linalg.vector_norm(Bb.clamp(min=0), dim=1)
                pg = _projected_gradient_norm(Zb, prob.matvec(Zb) - Bb)
                rel = torch.where(g0 > 0, pg / g0.clamp(min=torch.finfo(work).tiny), 0 * pg)
                Z_all[s : s + batch_size] = Zb.cpu().numpy()
                rel_all[s : s + batch_size] = rel.cpu().numpy()
    if return_info:
        info = {
            "max_relative_kkt": float(rel_all.max()) if n else 0.0,
            "median_relative_kkt": float(np.median(rel_all)) if n else 0.0,
            "n_fallback": float(n_fallback),
        }
        return Z_all, info
    return Z_all
