"""Codes ``Z`` for fixed atoms: batched non-negative least squares in torch.

Notation (docs/ARCHITECTURE.md): ``A`` activations ``(n_images, d)``, ``D`` dictionary
``(k, d)`` with atoms as rows, ``Z`` codes ``(n_images, k)``. For every image ``a`` (a row of
``A``) we solve, independently,

    z(a) = argmin_{z >= 0} ||a - z D||²,

which is what the paper calls the feature values of an image (paper-method.md §2). SciPy's
``nnls`` solves one image at a time in a Python loop; at 50,000 images and 10,000 atoms that is
hours. Here all images of a batch are solved at once with FISTA (accelerated projected gradient,
Beck & Teboulle 2009) with per-image adaptive restart (O'Donoghue & Candès 2015), step ``1/L``
with ``L`` the largest eigenvalue of ``D Dᵀ``. Every step is a matrix product, so the same code
runs on CPU or CUDA. An optional finishing stage solves the least-squares problem restricted to
each image's support with batched conjugate gradient, which brings the codes to SciPy's answer
to ~1e-8 when the problem is well conditioned.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # torch is heavy; imported inside the functions that need it
    import torch

__all__ = ["encode", "nnls_objective"]


def _as_numpy_2d(x: Any, name: str) -> np.ndarray:
    """Return ``x`` (numpy array or torch tensor) as a 2-D numpy array, or raise ``ValueError``."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # a torch tensor, without importing torch
        x = x.detach().cpu().numpy()
    arr = np.asarray(x)
    if arr.ndim != 2:
        raise ValueError(
            f"{name} must be a 2-D array, got shape {arr.shape}; "
            f"pass {name} with one row per {'image' if name == 'A' else 'atom'}"
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
) -> tuple[torch.Tensor, torch.Tensor]:
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

    Returns:
        ``Z (batch, k)`` and the per-row relative KKT residual reached ``(batch,)``.
    """
    import torch

    n, k = B.shape
    Z_out = torch.zeros_like(B)
    rel_out = torch.zeros(n, dtype=B.dtype, device=B.device)
    # At Z = 0 the gradient is -B; its projected norm is the scale the tolerance is relative to.
    g0 = torch.linalg.vector_norm(B.clamp(min=0), dim=1)
    active = torch.nonzero(g0 > 0).flatten()  # an all-zero (or all-negative) b has z = 0
    if active.numel() == 0:
        return Z_out, rel_out
    scale = g0[active]
    Bk = B[active]
    # Warm start: the best non-negative multiple of each coordinate taken alone would need the
    # diagonal of G; the zero start is simple, always feasible and what the tolerance refers to.
    Z = torch.zeros_like(Bk)
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
    return Z_out, rel_out


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


def encode(
    A: np.ndarray | torch.Tensor,
    D: np.ndarray | torch.Tensor,
    *,
    device: str | torch.device = "cpu",
    batch_size: int = 4096,
    max_iter: int = 500,
    tol: float = 1e-6,
    dtype: torch.dtype | None = None,
    refine: bool = True,
    check_every: int = 10,
    progress: bool = False,
    return_info: bool = False,
) -> np.ndarray | tuple[np.ndarray, dict[str, float]]:
    """Non-negative codes of every image on a fixed dictionary: ``Z = argmin_{Z≥0} ||A − Z D||²``.

    Each row is solved independently (the problem separates over images), all rows of a batch
    at once, on ``device``. The stopping rule is per image: the norm of the projected gradient
    (the KKT residual) divided by its value at ``z = 0``, below ``tol``.

    Args:
        A: activations ``(n_images, d)``, numpy array or torch tensor. Need not be non-negative.
        D: dictionary ``(k, d)``, atoms as rows, non-negative (as NMF returns it).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"`` … where the batches are solved.
        batch_size: images per batch; memory is about ``batch_size * (4k + d)`` numbers plus
            ``k²`` for the Gram matrix when ``k <= 2d``.
        max_iter: FISTA iteration budget per batch.
        tol: relative KKT tolerance. It is floored at ``10 * eps`` of ``dtype`` (``~1.2e-6`` in
            float32) because below that the gradient itself is rounding noise.
        dtype: ``torch.float32`` (default) or ``torch.float64`` (to match SciPy tightly).
        refine: finish with conjugate-gradient steps on each image's support (cheap; brings
            the codes to the exact solution once the support is right).
        check_every: iterations between two evaluations of the stopping rule.
        progress: show a tqdm bar over batches.
        return_info: also return ``{"max_relative_kkt": ..., "median_relative_kkt": ...}`` over
            all images (measured after FISTA, before refinement).

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
    if batch_size < 1 or max_iter < 1 or check_every < 1:
        raise ValueError(
            f"batch_size, max_iter and check_every must be >= 1, got {batch_size}, {max_iter}, "
            f"{check_every}"
        )
    if not tol > 0:
        raise ValueError(f"tol must be > 0, got {tol}")

    dev = torch.device(device)
    n, d = A_np.shape
    k = D_np.shape[0]
    eff_tol = max(float(tol), 10.0 * torch.finfo(dtype).eps)
    Dt = torch.as_tensor(D_np, dtype=dtype, device=dev)
    L = _largest_eigenvalue(Dt)
    np_dtype = np.float32 if dtype == torch.float32 else np.float64
    Z_all = np.zeros((n, k), dtype=np_dtype)
    if L <= 0 or n == 0:  # an all-zero dictionary explains nothing: every code is zero
        info = {"max_relative_kkt": 0.0, "median_relative_kkt": 0.0}
        return (Z_all, info) if return_info else Z_all
    # The Gram route costs k² per image and iteration, the factored route 2kd.
    G = Dt @ Dt.T if k <= 2 * d else None
    prob = _Problem(Dt, G)
    rels: list[np.ndarray] = []

    starts = range(0, n, batch_size)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, total=math.ceil(n / batch_size), desc="NNLS codes", unit="batch")
    with torch.no_grad():
        for s in starts:
            Ab = torch.as_tensor(A_np[s : s + batch_size], dtype=dtype, device=dev)
            Bb = Ab @ Dt.T
            Zb, rel = _fista(prob, Bb, L, max_iter=max_iter, tol=eff_tol, check_every=check_every)
            if refine:
                Zb = _refine_on_support(prob, Bb, Zb, n_steps=min(k, 50))
            Z_all[s : s + batch_size] = Zb.cpu().numpy()
            rels.append(rel.cpu().numpy())
    if return_info:
        r = np.concatenate(rels)
        info = {"max_relative_kkt": float(r.max()), "median_relative_kkt": float(np.median(r))}
        return Z_all, info
    return Z_all
