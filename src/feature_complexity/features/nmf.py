"""NMF dictionaries: the paper's features (CRAFT / LENS, paper-method.md §2.2 and §9.4).

Notation (docs/ARCHITECTURE.md): ``A`` penultimate activations ``(n_samples, d)``, non-negative
after a ReLU; ``D`` dictionary ``(k, d)`` with atoms as rows, ``D ≥ 0``; ``U`` the fit's own codes
``(n_samples, k)``, ``A ≈ U D``. scikit-learn calls them ``X``, ``H`` (= ``D``) and ``W`` (= ``U``).

Per class (the default): for every class ``c``, NMF with ``r`` atoms on the rows of class ``c``;
the atoms ``D_c (r, d)`` are stacked in class order into ``D (n_classes * r, d)``. Global: one NMF
with ``k`` atoms on all rows. Codes of new inputs are non-negative least squares against the
whole ``D`` (:func:`..nnls.encode`), or against each class block with ``codes="per_class"``.

The solver (``solver="hals"``, the default) is scikit-learn's coordinate descent written in torch
and run on many classes at once: HALS (Cichocki & Phan 2009) is coordinate descent on ``U`` one
column at a time then on ``D`` one row at a time, which is exactly the update order of
``sklearn.decomposition.NMF(solver="cd")``, from the same ``nndsvda`` start
(:func:`nndsvda_init`, a batched reimplementation of scikit-learn's) and with the same stopping
rule (projected-gradient "violation" relative to the first iteration's, ``tol = 1e-4``). So each
class follows scikit-learn's iterates up to floating-point rounding, on CPU or CUDA.

Batching: classes are grouped by a padded row count that depends only on their own row count
(:func:`padded_rows`); padding rows are zero in ``A`` and stay zero in ``U``, so they change
nothing. Each group is cut into chunks of at most ``max_batch_bytes`` and every chunk is one
batched problem (``bmm``). A class stops on its own criterion; its state is saved then and it
leaves the batch. Nothing a class computes reads another class's numbers, and the batched
products give the same bits whatever the batch holds (:func:`bmm`), so a class's atoms do not
depend on which classes share its chunk (on CPU; cuBLAS may pick other kernels for other batch
sizes, which changes the last bits).

``solver="sklearn"`` runs ``sklearn.decomposition.NMF`` class by class, the reference.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .._validation import as_array
from .base import Dictionary, DictionaryLearner, register_learner

if TYPE_CHECKING:  # torch is heavy; imported inside the functions that need it
    import types

    import torch

__all__ = ["NMFLearner", "NEGATIVE_TOLERANCE", "check_nonnegative", "nndsvda_init", "hals_nmf",
           "padded_rows", "randomized_svd", "ClassBatch", "class_batches", "bmm"]

#: Activations down to this value are treated as rounding noise of a ReLU output and clipped to 0.
NEGATIVE_TOLERANCE = 1e-6

#: Default memory for one chunk of classes (its padded activations), bytes. About twice this is
#: held at peak (the chunk and the copy made when finished classes leave the batch).
DEFAULT_BATCH_BYTES = 256 * 2**20


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


# ============================================================================ batching


def bmm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``torch.bmm`` with a batch of one computed as a batch of two (a broadcast view, no copy).

    On CPU a batch of one goes through the non-batched kernel, whose sums run in another order,
    so a class fitted alone would differ in the last bits from the same class fitted with others.
    (The batched kernel gives the same bits for one element whatever the batch holds when every
    element starts on a 64-byte boundary: see :func:`padded_rows` and :func:`padded_cols`.)
    """
    import torch

    if a.shape[0] == 1:
        return torch.bmm(a.expand(2, -1, -1), b.expand(2, -1, -1))[:1]
    return torch.bmm(a, b)


#: rows and columns are padded to multiples of this many values (64 bytes of float32), so that
#: every class's block starts on a 64-byte boundary: MKL's kernels depend on alignment
ALIGN = 16


def padded_rows(n: int) -> int:
    """The row count a class of ``n`` rows is padded to: ``n`` rounded up to a multiple of
    ``max(16, 2^(floor(log2 n) - 3))`` (at most 12.5 % padding beyond 128 rows, few distinct
    sizes). It depends on ``n`` alone, so a class lands in the same shape of problem whatever
    else is fitted with it."""
    step = max(ALIGN, 2 ** (int(math.log2(max(n, 1))) - 3))
    return int(-(-max(n, 1) // step) * step)


def padded_cols(d: int) -> int:
    """``d`` rounded up to a multiple of 16 (zero columns change no factor; see :func:`bmm`)."""
    return int(-(-d // ALIGN) * ALIGN)


@dataclass
class ClassBatch:
    """Classes solved together.

    Attributes:
        labels: ``(B,)`` class of each problem.
        n_rows: ``(B,)`` real rows of each problem (``<= n_pad``).
        d: real columns (``<= d_pad``).
        X: ``(B, n_pad, d_pad)`` torch tensor, zero outside each class's ``n_rows x d`` block.
    """

    labels: np.ndarray
    n_rows: np.ndarray
    d: int
    X: torch.Tensor


def class_batches(A: np.ndarray, classes: np.ndarray, key: Callable[[int], Any], *,
                  max_batch_bytes: int, device: torch.device) -> Iterator[ClassBatch]:
    """Chunks of classes with the same ``(padded_rows(n_c), key(n_c))``, each at most
    ``max_batch_bytes`` of padded activations (at least one class), in class order within a group.

    Args:
        A: ``(n_samples, d)``.
        classes: ``(n_samples,)`` class of each row.
        key: anything else about a class's size that must be equal inside a batch (e.g. the
            randomized SVD's transpose and power-iteration choices).
        max_batch_bytes: memory bound of one chunk.
        device: where the chunk is built (a torch allocation: aligned, see :func:`bmm`).
    """
    import torch

    labels, inverse, counts = np.unique(classes, return_inverse=True, return_counts=True)
    order = np.argsort(inverse, kind="stable")  # rows grouped by class, original order inside
    starts = np.concatenate([[0], np.cumsum(counts)])
    groups: dict[Any, list[int]] = {}
    for j, n in enumerate(counts):
        groups.setdefault((padded_rows(int(n)), key(int(n))), []).append(j)
    d, d_pad = A.shape[1], padded_cols(A.shape[1])
    dtype = torch.from_numpy(np.zeros(0, dtype=A.dtype)).dtype
    for (n_pad, _), members in groups.items():
        per_chunk = max(1, int(max_batch_bytes // (n_pad * d_pad * A.dtype.itemsize)))
        for s in range(0, len(members), per_chunk):
            chunk = members[s:s + per_chunk]
            X = torch.zeros((len(chunk), n_pad, d_pad), dtype=dtype, device=device)
            for b, j in enumerate(chunk):
                X[b, :counts[j], :d] = torch.from_numpy(A[order[starts[j]:starts[j + 1]]]).to(device)
            yield ClassBatch(labels=labels[chunk], n_rows=counts[chunk].astype(np.int64), d=d, X=X)


def _row_mask(n_rows: np.ndarray, n_pad: int, like: torch.Tensor) -> torch.Tensor:
    """``(B, n_pad, 1)`` 1 on real rows, 0 on padding, in ``like``'s dtype and device."""
    import torch

    rows = torch.arange(n_pad, device=like.device)
    n = torch.as_tensor(n_rows, device=like.device)
    return (rows[None, :] < n[:, None]).to(like.dtype)[:, :, None]


def torch_device(device: str | Any) -> torch.device:
    """``device`` as a ``torch.device``, or a ``ValueError`` that names what is available."""
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"device {device!r} is not a torch device ({exc}); use 'cpu' or 'cuda'") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for, but torch sees no CUDA GPU here; use device='cpu'")
    return dev


# ============================================================================ initialisation


def svd_choices(n: int, d: int, k: int) -> tuple[bool, int]:
    """scikit-learn's randomized-SVD choices for an ``(n, d)`` matrix and ``k`` components:
    ``(transpose, n_power_iterations)`` (``_randomized_svd`` with ``transpose="auto"`` and
    ``n_iter="auto"``)."""
    return n < d, (7 if k < 0.1 * min(n, d) else 4)


def randomized_svd(X: torch.Tensor, n_rows: np.ndarray, k: int, *, seed: int, d: int | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """scikit-learn's ``_randomized_svd(X_c, k, random_state=seed)`` of every class of a batch.

    Halko et al. with ``k + 10`` random vectors drawn by ``np.random.RandomState(seed)`` exactly
    as scikit-learn draws them, its power-iteration count and transpose rule, its normalisation
    (``P L`` of an LU factorisation between power iterations, QR at the end) and its sign
    convention (``svd_flip``). The same normaliser matters for rank-deficient classes: the
    directions of zero singular value are arbitrary, and only the same steps pick the same ones.

    Args:
        X: ``(B, n_pad, d_pad)``, zero outside each class's ``n_rows x d`` block; all classes must
            share :func:`svd_choices` (:func:`class_batches` groups them so).
        n_rows: ``(B,)`` real rows per class.
        k: components.
        seed: the ``random_state``.
        d: real columns (default ``d_pad``).

    Returns:
        ``U (B, n_pad, k)``, ``S (B, k)``, ``Vt (B, k, d_pad)``, zero on padding rows / columns.
    """
    import torch

    B, n_pad, d_pad = X.shape
    d = d_pad if d is None else d
    choices = {svd_choices(int(n), d, k) for n in n_rows}
    if len(choices) != 1:
        raise ValueError(f"classes of one batch need the same SVD choices, got {sorted(choices)}; "
                         "build batches with class_batches(key=svd_choices)")
    transpose, n_iter = choices.pop()
    M = X.mT if transpose else X  # (B, m, p)
    omega = np.zeros((M.shape[2], k + 10))
    # Ω has one row per column of M. RandomState fills row by row, so a class of n_c rows
    # (transposed) draws exactly the first n_c rows of this Ω; padding rows multiply zeros.
    omega[:M.shape[2] if transpose else d] = np.random.RandomState(seed).normal(
        size=(M.shape[2] if transpose else d, k + 10))
    Q = torch.as_tensor(omega, dtype=X.dtype, device=X.device).expand(B, -1, -1)
    if transpose:
        Q = Q * _row_mask(n_rows, M.shape[2], X)
    for _ in range(n_iter):
        Q = _lu_basis(bmm(M, Q))
        Q = _lu_basis(bmm(M.mT, Q))
    Q = _orthonormal(bmm(M, Q))
    Uhat, S, Vt = _each(lambda b: torch.linalg.svd(b, full_matrices=False), bmm(Q.mT, M))
    U = bmm(Q, Uhat)
    # svd_flip: the largest |entry| of each left (or, transposed, right) vector is positive
    ref = Vt if transpose else U.mT
    signs = torch.sign(ref.gather(-1, ref.abs().argmax(-1, keepdim=True)))  # (B, c, 1)
    U, Vt = U * signs.mT, Vt * signs
    if transpose:
        return Vt[:, :k].mT, S[:, :k], U[:, :, :k].mT
    return U[:, :, :k], S[:, :k], Vt[:, :k]


def _each(fn: Callable[..., Any], *xs: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """``fn`` (a LAPACK routine returning a tuple of tensors) applied to the matrices of the
    batches ``xs`` (each ``(B, ...)``) one problem at a time, results stacked. Batched LAPACK
    calls on CPU give bits that depend on the batch (not all their outputs are 64-byte aligned),
    one call per problem does not; on CUDA the batched call is kept (one launch)."""
    import torch

    if xs[0].device.type != "cpu":
        return tuple(fn(*xs))
    parts = [fn(*(x[b] for x in xs)) for b in range(xs[0].shape[0])]
    return tuple(torch.stack([p[i] for p in parts]) for i in range(len(parts[0])))


def _orthonormal(x: torch.Tensor) -> torch.Tensor:
    """An orthonormal basis ``Q`` of each matrix's columns (reduced QR), ``(B, m, min(m, p))``."""
    import torch

    return _each(lambda b: torch.linalg.qr(b), x)[0]


def _lu_basis(x: torch.Tensor) -> torch.Tensor:
    """``P L`` of the LU factorisation with partial pivoting ``x = P L U`` of each matrix,
    ``(B, m, min(m, p))`` (``scipy.linalg.lu(x, permute_l=True)[0]``, what scikit-learn uses)."""
    import torch

    LU, pivots = _each(lambda b: torch.linalg.lu_factor_ex(b)[:2], x)  # singular is fine here
    B, m, p = x.shape
    c = min(m, p)
    L = torch.tril(LU[:, :, :c], diagonal=-1) + torch.eye(m, c, dtype=x.dtype, device=x.device)
    # LAPACK's pivots are row swaps applied in order; they give the row order perm of L U = x[perm]
    perm = torch.arange(m, device=x.device).repeat(B, 1)
    for i in range(pivots.shape[1]):
        j = (pivots[:, i:i + 1] - 1).long()
        row_i, row_j = perm[:, i:i + 1].clone(), perm.gather(1, j)
        perm[:, i:i + 1] = row_j
        perm.scatter_(1, j, row_i)
    return torch.zeros_like(L).scatter_(1, perm[:, :, None].expand(-1, -1, c), L)


def nndsvda_init(X: torch.Tensor, n_rows: np.ndarray, r: int, *, seed: int, d: int | None = None,
                 eps: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's ``init="nndsvda"`` (Boutsidis & Gallopoulos 2008) for every class of a batch.

    Args:
        X: ``(B, n_pad, d_pad)`` non-negative, zero outside each class's ``n_rows x d`` block.
        n_rows: ``(B,)`` real rows per class (``>= r``).
        r: atoms per class.
        seed: the randomized SVD's ``random_state``.
        d: real columns (default ``d_pad``).
        eps: entries below it are set to the mean of ``X_c`` (as scikit-learn does).

    Returns:
        ``U0ᵀ (B, r, n_pad)`` and ``D0 (B, r, d_pad)``, zero on padding rows / columns.
    """
    import torch

    d = X.shape[2] if d is None else d
    Uf, S, Vt = randomized_svd(X, n_rows, r, seed=seed, d=d)
    Ut, H = torch.zeros_like(Uf.mT), torch.zeros_like(Vt)
    root = S.sqrt()
    Ut[:, 0] = root[:, :1] * Uf[:, :, 0].abs()
    H[:, 0] = root[:, :1] * Vt[:, 0].abs()
    norm = torch.linalg.vector_norm
    for j in range(1, r):
        x, y = Uf[:, :, j], Vt[:, j]
        xp, yp, xn, yn = x.clamp(min=0), y.clamp(min=0), (-x).clamp(min=0), (-y).clamp(min=0)
        nxp, nyp, nxn, nyn = (norm(v, dim=-1, keepdim=True) for v in (xp, yp, xn, yn))
        m_p, m_n = nxp * nyp, nxn * nyn
        pos = m_p > m_n
        # a zero norm is only reached where scikit-learn divides 0 by 0; 0 there (it gives NaN)
        tiny = torch.finfo(X.dtype).tiny
        u = torch.where(pos, xp / nxp.clamp(min=tiny), xn / nxn.clamp(min=tiny))
        v = torch.where(pos, yp / nyp.clamp(min=tiny), yn / nyn.clamp(min=tiny))
        lbd = (S[:, j:j + 1] * torch.where(pos, m_p, m_n)).sqrt()
        Ut[:, j], H[:, j] = lbd * u, lbd * v
    Ut, H = torch.where(Ut < eps, 0, Ut), torch.where(H < eps, 0, H)
    n_t = torch.as_tensor(n_rows, dtype=torch.float64, device=X.device)
    avg = (X.sum(dim=(1, 2), dtype=torch.float64) / (n_t * d)).to(X.dtype)[:, None, None]
    cols = (torch.arange(X.shape[2], device=X.device) < d).to(X.dtype)
    Ut = torch.where(Ut == 0, avg, Ut) * _row_mask(n_rows, X.shape[1], X).mT
    H = torch.where(H == 0, avg, H) * cols
    return Ut.contiguous(), H.contiguous()


def random_init(A: np.ndarray, k: int, *, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's ``init="random"``: ``|N(0, 1)| * sqrt(mean(A) / k)``, ``D0 (k, d)`` drawn
    before ``U0 (n, k)`` from ``np.random.RandomState(seed)``. Needed when ``k > min(n, d)``."""
    avg = np.sqrt(A.mean() / k)
    rng = np.random.RandomState(seed)
    H = np.abs(avg * rng.standard_normal(size=(k, A.shape[1])).astype(A.dtype, copy=False))
    W = np.abs(avg * rng.standard_normal(size=(A.shape[0], k)).astype(A.dtype, copy=False))
    return W, H


# ============================================================================ HALS


def hals_sweep(V: torch.Tensor, C: torch.Tensor, G: torch.Tensor) -> torch.Tensor:
    """One coordinate-descent sweep on ``min_{V >= 0} ½ <V, G V> - <C, V>`` for every problem of
    a batch, one row of ``V`` at a time, in place (scikit-learn's ``_update_cdnmf_fast``).

    Args:
        V: ``(B, k, m)`` contiguous, the factor being updated, rows in sweep order (``Uᵀ`` or
            ``D``).
        C: ``(B, k, m)`` the linear term (``D Aᵀ`` for ``Uᵀ``, ``Uᵀ A`` for ``D``).
        G: ``(B, k, k)`` the Gram matrix of the other factor.

    Returns:
        ``(B,)`` violation (float64 from ``V``'s precision): sum of |projected gradient| of each
        coordinate just before its update (scikit-learn's stopping statistic).
    """
    import torch

    hess = torch.diagonal(G, dim1=1, dim2=2)[:, :, None]
    # scikit-learn leaves a coordinate whose curvature is 0 as it is: grad / inf = 0 does that
    hess = torch.where(hess == 0, torch.inf, hess)
    violation = torch.zeros(V.shape[0], dtype=V.dtype, device=V.device)
    # work buffers reused by every row: a fresh (B, m) tensor per operation costs more than the
    # operation (large allocations are new pages from the system each time)
    B, _, m = V.shape
    grad3 = V.new_empty((B, 1, m))
    grad, pg, work = grad3[:, 0], V.new_empty((B, m)), V.new_empty((B, m))
    for t in range(V.shape[1]):
        _bmm_into(G[:, t:t + 1, :], V, grad3)
        grad.sub_(C[:, t])
        v = V[:, t]  # a view: the update below writes into V
        # |projected gradient|: |grad| inside, max(0, -grad) at the bound v = 0 (only descent
        # counts there). As max(|grad| sign(v), -grad), exactly, since v >= 0: arithmetic is
        # several times faster than a boolean mask and torch.where here
        torch.mul(torch.abs(grad, out=pg), torch.sign(v, out=work), out=pg)
        torch.maximum(pg, torch.neg(grad, out=work), out=pg)
        violation += pg.sum(-1)
        # divide (not multiply by 1/h): the same rounding as scikit-learn, which matters on
        # degenerate classes where a tiny curvature makes the iterates chaotic
        v.sub_(grad.div_(hess[:, t])).clamp_(min=0)
    return violation.to(torch.float64)


def _bmm_into(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor) -> None:
    """:func:`bmm` written into ``out`` (same bits)."""
    import torch

    if a.shape[0] == 1:
        out.copy_(bmm(a, b))
    else:
        torch.bmm(a, b, out=out)


def _hals_iteration(const: dict[str, torch.Tensor], state: dict[str, torch.Tensor]) -> torch.Tensor:
    """One NMF iteration as scikit-learn orders it: all of ``U`` (columns), then all of ``D``
    (rows). ``U`` is held transposed, ``Ut (B, r, n)``: with both factors as contiguous row
    blocks every product has a layout whose bits do not depend on the batch (see :func:`bmm`).
    Returns the ``(B,)`` violation."""
    X, Ut, H = const["X"], state["Ut"], state["H"]
    violation = hals_sweep(Ut, bmm(H, X.mT), bmm(H, H.mT))
    return violation + hals_sweep(H, bmm(Ut, X), bmm(Ut, Ut.mT))


#: inner sweeps per factor of the accelerated solver (Gillis & Glineur 2012): the products with
#: ``X`` cost ``n d r`` and are shared by every sweep, a sweep costs ``(n + d) r²``
ACCELERATED_SWEEPS = 3
#: the accelerated solver stops when the objective fell by at most ``tol`` (relative) per
#: iteration, on average over this many iterations
OBJECTIVE_WINDOW = 5
#: default ``tol`` of the accelerated solver (relative objective decrease per iteration)
ACCELERATED_TOL = 1e-5


def _accelerated_iteration(const: dict[str, torch.Tensor], state: dict[str, torch.Tensor]) -> torch.Tensor:
    """One iteration of accelerated HALS (Gillis & Glineur 2012, "Accelerated multiplicative
    updates and hierarchical ALS algorithms for NMF"): :data:`ACCELERATED_SWEEPS` sweeps of
    ``U`` against one ``D Xᵀ``, then as many of ``D`` against one ``Uᵀ X``. When ``n`` and ``d``
    are much larger than ``r`` the two products are nearly all of an iteration's cost, and the
    extra sweeps buy most of another iteration's progress for a fraction of it.

    The objective ``||X − U D||²`` is tracked without touching ``X`` again:
    ``||X||² − 2 <Uᵀ X, D> + <Uᵀ U, D Dᵀ>`` (float64 sums of the ``(r, d)`` and ``(r, r)``
    terms). ``state["f"] (B, W + 1)`` holds the last ``W + 1`` values, newest last.

    Returns:
        ``(B,)`` the mean relative decrease per iteration over the last ``W`` iterations
        (``inf`` until ``W`` iterations have run): the statistic the stopping rule compares with
        ``tol``.
    """
    import torch

    X, Ut, H = const["X"], state["Ut"], state["H"]
    C, G = bmm(H, X.mT), bmm(H, H.mT)
    for _ in range(ACCELERATED_SWEEPS):
        hals_sweep(Ut, C, G)
    C, G = bmm(Ut, X), bmm(Ut, Ut.mT)
    for _ in range(ACCELERATED_SWEEPS):
        hals_sweep(H, C, G)
    f64 = torch.float64
    cross = (C.to(f64) * H.to(f64)).sum((1, 2))
    quad = (G.to(f64) * bmm(H, H.mT).to(f64)).sum((1, 2))
    f = (const["xx"] - 2 * cross + quad).clamp(min=0)
    history = torch.cat([state["f"][:, 1:], f[:, None]], dim=1)
    state["f"].copy_(history)
    oldest, newest = history[:, 0], history[:, -1]
    decrease = (oldest - newest) / (OBJECTIVE_WINDOW * newest.clamp(min=torch.finfo(f64).tiny))
    # a problem fitted exactly (f = 0) has nothing left to gain
    return torch.where(newest <= 0, 0.0, torch.where(torch.isinf(oldest), torch.inf, decrease))


def iterate_until_converged(step: Callable[[dict, dict], torch.Tensor], const: dict[str, torch.Tensor],
                            state: dict[str, torch.Tensor], *, max_iter: int, tol: float,
                            on_finish: Callable[[int], None] | None = None, relative: bool = True
                            ) -> tuple[dict[str, torch.Tensor], np.ndarray, np.ndarray]:
    """Run ``step`` on a batch of independent problems until each meets its own criterion.

    ``step(const, state)`` updates ``state`` in place and returns each problem's violation
    ``(B,)``; a problem stops at the first iteration where violation / its first-iteration
    violation ``<= tol`` (scikit-learn's rule), or, with ``relative=False``, where the returned
    statistic itself is ``<= tol``. Its state is saved then; once an eighth of the
    batch has stopped, the stopped problems leave it (every tensor's batch dimension shrinks),
    so the remaining ones cost less. ``on_finish(n)`` is told how many problems just stopped.

    Returns:
        the final ``state`` of every problem (original order), ``n_iter (B,)`` and
        ``converged (B,)`` (False for problems stopped by ``max_iter``).
    """
    import torch

    B = next(iter(state.values())).shape[0]
    result = {k: v.clone() for k, v in state.items()}
    n_iter, converged = np.full(B, max_iter), np.zeros(B, dtype=bool)
    where, live, first = np.arange(B), np.ones(B, dtype=bool), None
    for it in range(1, max_iter + 1):
        violation = step(const, state).cpu().numpy()
        first = violation.copy() if first is None else first
        if relative:
            ratio = np.divide(violation, first, out=np.zeros_like(violation), where=first > 0)
            done = live & ((first == 0) | (ratio <= tol))
        else:
            done = live & (violation <= tol)
        stopping = live if it == max_iter else done
        if stopping.any():
            pos = torch.as_tensor(np.flatnonzero(stopping), device=_batch_device(state))
            dst = torch.as_tensor(where[stopping], device=pos.device)
            for k, v in state.items():
                result[k][dst] = v[pos]
            n_iter[where[done]], converged[where[done]] = it, True
            live &= ~stopping
            if on_finish is not None:
                on_finish(int(stopping.sum()))
        if not live.any():
            break
        if (~live).sum() >= max(1, live.size // 8):
            keep = torch.as_tensor(np.flatnonzero(live), device=_batch_device(state))
            const = {k: v.index_select(0, keep) for k, v in const.items()}
            state = {k: v.index_select(0, keep) for k, v in state.items()}
            where, first, live = where[live], first[live], live[live]
    return result, n_iter, converged


def _batch_device(state: dict[str, torch.Tensor]) -> torch.device:
    """The device the batch lives on."""
    return next(iter(state.values())).device


def hals_nmf(X: torch.Tensor, Ut: torch.Tensor, H: torch.Tensor, *, max_iter: int, tol: float = 1e-4,
             on_finish: Callable[[int], None] | None = None, accelerated: bool = False
             ) -> tuple[torch.Tensor, torch.Tensor, np.ndarray, np.ndarray]:
    """NMF ``X_b ≈ U_b D_b`` of every problem of a batch by HALS (= scikit-learn's CD solver).

    Args:
        X: ``(B, n, d)`` non-negative (padding zero).
        Ut: ``(B, r, n)`` start for ``Uᵀ`` (zero on padding rows), e.g. :func:`nndsvda_init`.
        H: ``(B, r, d)`` start for ``D`` (zero on padding columns).
        max_iter: iteration budget of each problem.
        tol: stop a problem when its violation falls to ``tol`` times its first one; with
            ``accelerated``, when its objective fell by at most ``tol`` (relative) per iteration
            over the last :data:`OBJECTIVE_WINDOW` iterations (see :func:`_accelerated_iteration`).
        accelerated: several sweeps per factor between products with ``X`` (Gillis & Glineur),
            not scikit-learn's iterates but fewer passes over ``X``.

    Returns:
        ``Uᵀ (B, r, n)``, ``D (B, r, d)``, ``n_iter (B,)``, ``converged (B,)``.
    """
    import torch

    state = {"Ut": Ut.contiguous().clone(), "H": H.contiguous().clone()}
    const = {"X": X}
    step = _hals_iteration
    if accelerated:
        # one problem at a time: no float64 copy of the whole batch
        const["xx"] = torch.stack([X[b].to(torch.float64).square().sum() for b in range(X.shape[0])])
        state["f"] = torch.full((X.shape[0], OBJECTIVE_WINDOW + 1), torch.inf, dtype=torch.float64,
                                device=X.device)
        step = _accelerated_iteration
    out, n_iter, converged = iterate_until_converged(step, const, state, max_iter=max_iter, tol=tol,
                                                     on_finish=on_finish, relative=not accelerated)
    return out["Ut"], out["H"], n_iter, converged


# ============================================================================ fitting


@dataclass
class PerClassFit:
    """Per-class factors in class order: ``D (n_classes * r, d)`` numpy, and per class the
    ``labels``, squared error ``sq_err`` of its own rows, ``n_iter`` and ``converged``."""

    labels: np.ndarray
    D: np.ndarray
    sq_err: np.ndarray
    n_iter: np.ndarray
    converged: np.ndarray


#: ``solve(X (B, n_pad, d_pad), n_rows (B,), d, on_finish) -> (Uᵀ (B, r, n_pad), D (B, r, d_pad),
#: n_iter (B,), converged (B,))``
Solve = Callable[[Any, np.ndarray, int, Callable[[int], None] | None], tuple[Any, Any, np.ndarray, np.ndarray]]


def squared_errors(X: torch.Tensor, Ut: torch.Tensor, D: torch.Tensor) -> np.ndarray:
    """``||X_b − U_b D_b||²_F`` per problem, float64 ``(B,)``, one problem at a time (no
    ``(B, n, d)`` temporary); padding is zero in ``X``, ``Uᵀ`` and ``D`` and adds nothing."""
    import torch

    # the residual in X's precision, its squares summed in float64 (no float64 copy of it)
    return np.array([float(torch.sub(X[b], Ut[b].T @ D[b]).square_().sum(dtype=torch.float64))
                     for b in range(X.shape[0])])


def fit_per_class(A: np.ndarray, classes: np.ndarray, solve: Solve, *, key: Callable[[int], Any],
                  device: str, max_batch_bytes: int, progress: bool, desc: str) -> PerClassFit:
    """Run a batched per-class solver over chunks of classes (:func:`class_batches`).

    Args:
        A: ``(n_samples, d)``.
        classes: ``(n_samples,)``; every class present gets atoms.
        solve: the batched solver (see :data:`Solve`).
        key: what must be equal inside a batch besides the padded size (see :func:`class_batches`).
        device: where the chunks are solved.
        max_batch_bytes: memory bound of one chunk.
        progress: a progress bar over classes.
        desc: its label.
    """
    dev = torch_device(device)
    labels = np.unique(classes)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=labels.size, desc=desc, unit="class")
    parts: dict[int, tuple[np.ndarray, float, int, bool]] = {}
    try:
        for batch in class_batches(A, classes, key, max_batch_bytes=max_batch_bytes, device=dev):
            Ut, D, n_iter, converged = solve(batch.X, batch.n_rows, batch.d,
                                             bar.update if bar is not None else None)
            sq = squared_errors(batch.X, Ut, D)
            D_np = D[:, :, :batch.d].cpu().numpy()
            for b, c in enumerate(batch.labels):
                parts[int(c)] = (D_np[b], sq[b], int(n_iter[b]), bool(converged[b]))
            del batch, Ut, D
    finally:
        if bar is not None:
            bar.close()
    rows = [parts[int(c)] for c in labels]
    return PerClassFit(labels=labels, D=np.concatenate([p[0] for p in rows]),
                       sq_err=np.array([p[1] for p in rows]), n_iter=np.array([p[2] for p in rows]),
                       converged=np.array([p[3] for p in rows]))


def nmf_per_class(A: np.ndarray, classes: np.ndarray, r: int, *, seed: int = 0, max_iter: int = 200,
                  tol: float = 1e-4, device: str = "cpu", max_batch_bytes: int = DEFAULT_BATCH_BYTES,
                  progress: bool = False, accelerated: bool = False) -> PerClassFit:
    """NMF with ``r`` atoms on the rows of every class, batched (HALS from ``nndsvda``).

    Args:
        A: ``(n_samples, d)`` non-negative activations.
        classes: ``(n_samples,)`` class of each row; each class needs ``>= r`` rows.
        r: atoms per class.
        seed: the ``nndsvda`` randomized SVD's ``random_state`` (each class uses it whole).
        max_iter, tol: scikit-learn's ``max_iter`` and ``tol`` (with ``accelerated``: the
            relative objective decrease per iteration, see :func:`hals_nmf`).
        device: ``"cpu"`` or ``"cuda"``.
        max_batch_bytes: padded activations held per chunk of classes.
        progress: a progress bar over classes.
        accelerated: the accelerated HALS of :func:`hals_nmf` (for classes of many rows).
    """
    d = A.shape[1]

    def solve(X: Any, n_rows: np.ndarray, d_real: int, on_finish: Callable[[int], None] | None):
        Ut0, H0 = nndsvda_init(X, n_rows, r, seed=seed, d=d_real)
        return hals_nmf(X, Ut0, H0, max_iter=max_iter, tol=tol, on_finish=on_finish, accelerated=accelerated)

    return fit_per_class(A, classes, solve, key=lambda n: svd_choices(n, d, r), device=device,
                         max_batch_bytes=max_batch_bytes, progress=progress, desc="NMF per class")


def nmf_global(A: np.ndarray, k: int, *, seed: int = 0, max_iter: int = 200, tol: float = 1e-4,
               device: str = "cpu", accelerated: bool = False) -> tuple[np.ndarray, float, int, bool]:
    """One NMF with ``k`` atoms on all rows of ``A (n, d)``: ``nndsvda`` start when
    ``k <= min(n, d)``, else scikit-learn's random start (an SVD has only ``min(n, d)``
    directions, and an overcomplete dictionary needs more).

    Returns:
        ``D (k, d)``, squared error, iterations, converged.
    """
    import torch

    dev = torch_device(device)
    X = torch.from_numpy(np.ascontiguousarray(A)).to(dev)[None]
    H: np.ndarray | torch.Tensor
    if k <= min(A.shape):
        Ut0, H0 = nndsvda_init(X, np.array([A.shape[0]]), k, seed=seed)
    else:
        W, H = random_init(A, k, seed=seed)
        Ut0, H0 = torch.from_numpy(W.T.copy()).to(dev)[None], torch.from_numpy(H).to(dev)[None]
    Ut, H, n_iter, converged = hals_nmf(X, Ut0, H0, max_iter=max_iter, tol=tol, accelerated=accelerated)
    return H[0].cpu().numpy(), float(squared_errors(X, Ut, H)[0]), int(n_iter[0]), bool(converged[0])


def sklearn_nmf(X: np.ndarray, n_components: int, *, seed: int, max_iter: int, tol: float = 1e-4,
                init: str = "nndsvda") -> tuple[np.ndarray, float, int, bool]:
    """The reference: one ``sklearn.decomposition.NMF(solver="cd")``.

    Returns:
        ``components_ (r, d)``, squared error ``||X − W H||²``, ``n_iter_``, converged (no
        ``ConvergenceWarning``; its warnings are recorded, not shown).
    """
    from sklearn.decomposition import NMF
    from sklearn.exceptions import ConvergenceWarning

    nmf = NMF(n_components=n_components, init=init, random_state=seed, max_iter=max_iter, tol=tol)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        nmf.fit(X)
    converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
    for w in caught:  # anything else goes to the caller's summary (see WarningSummary)
        if not issubclass(w.category, ConvergenceWarning):
            warnings.warn(str(w.message), w.category, stacklevel=2)
    return nmf.components_, float(nmf.reconstruction_err_) ** 2, int(nmf.n_iter_), converged


class WarningSummary:
    """Context manager: the warnings raised inside are collected and, on exit, each distinct
    message is shown once (with a count), attributed to the first caller outside this package
    (no library file and line in the user's log)."""

    def __enter__(self) -> "WarningSummary":
        self._ctx = warnings.catch_warnings(record=True)
        self._caught = self._ctx.__enter__()
        warnings.simplefilter("always")
        return self

    def __exit__(self, *exc: Any) -> None:
        self._ctx.__exit__(*exc)
        counts: dict[tuple[type[Warning], str], int] = {}
        for w in self._caught:
            counts[(w.category, str(w.message))] = counts.get((w.category, str(w.message)), 0) + 1
        for (category, message), n in counts.items():
            warn_outside(message + (f" (raised {n} times)" if n > 1 else ""), category)


def warn_outside(message: str, category: type[Warning] = UserWarning) -> None:
    """``warnings.warn`` attributed to the first frame outside ``feature_complexity``."""
    import os
    import sys

    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    frame: types.FrameType | None
    level, frame = 2, sys._getframe(1)
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(package):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, category, stacklevel=level)


# ============================================================================ the learner

SOLVERS = ("hals", "accelerated", "sklearn")
#: each solver's default stopping tolerance (its statistic differs: see :func:`hals_nmf`)
DEFAULT_TOL = {"hals": 1e-4, "accelerated": ACCELERATED_TOL, "sklearn": 1e-4}


@register_learner("nmf")
class NMFLearner(DictionaryLearner):
    """Non-negative matrix factorisation ``A ≈ U D`` with ``U, D ≥ 0``; codes by NNLS.

    Args:
        solver: ``"hals"`` (torch, batched over classes, on ``device``: scikit-learn's iterates),
            ``"accelerated"`` (the same, with several sweeps per pass over the activations and
            an objective-based stop: for classes of many rows, e.g. spatial fit samples) or
            ``"sklearn"`` (``sklearn.decomposition.NMF`` class by class on the CPU, the reference).
        tol: the stopping tolerance (default per solver, :data:`DEFAULT_TOL`): violation
            relative to the first iteration's (scikit-learn's rule), or for ``"accelerated"`` the
            relative objective decrease per iteration.
        max_batch_bytes: memory bound of one chunk of classes for ``"hals"`` (padded
            activations; about twice this is held at peak).
    """

    requires_nonnegative = True

    def __init__(self, solver: str = "hals", tol: float | None = None,
                 max_batch_bytes: int = DEFAULT_BATCH_BYTES) -> None:
        if solver not in SOLVERS:
            raise ValueError(f"NMF solver must be one of {', '.join(SOLVERS)}, got {solver!r}")
        tol = DEFAULT_TOL[solver] if tol is None else tol
        if not tol >= 0:
            raise ValueError(f"tol must be >= 0, got {tol}")
        if max_batch_bytes < 1:
            raise ValueError(f"max_batch_bytes must be >= 1, got {max_batch_bytes}")
        self.solver, self.tol, self.max_batch_bytes = solver, float(tol), int(max_batch_bytes)

    def fit(self, A: np.ndarray, classes: np.ndarray | None, *, scope: str, n_atoms_per_class: int,
            n_atoms: int | None, seed: int, max_iter: int, device: str, progress: bool) -> Dictionary:
        A = check_nonnegative(A)
        with WarningSummary():
            if scope == "global":
                if n_atoms is None:
                    raise ValueError("a global NMF needs n_atoms")
                D, sq_err, converged = self._fit_global(A, n_atoms, seed, max_iter, device)
                failed = [] if converged else [-1]
                feature_class, r = np.full(n_atoms, -1), None
            else:
                if classes is None:
                    raise ValueError("a per-class NMF needs the class of every row")
                fit = self._fit_per_class(A, classes, n_atoms_per_class, seed, max_iter, device, progress)
                D, sq_err, r = fit.D, float(fit.sq_err.sum()), n_atoms_per_class
                failed = fit.labels[~fit.converged].tolist()
                feature_class = np.repeat(fit.labels, n_atoms_per_class)
        if failed:
            what = "global NMF" if scope == "global" else f"NMF of {len(failed)} classes (e.g. {failed[:10]})"
            warn_outside(f"{what} did not converge in max_iter={max_iter} iterations (tol={self.tol}); "
                         "raise max_iter for a tighter fit")
        return make_dictionary(D.astype(A.dtype, copy=False), feature_class, scope, r, sq_err, A, self.name)

    def _fit_global(self, A: np.ndarray, k: int, seed: int, max_iter: int, device: str
                    ) -> tuple[np.ndarray, float, bool]:
        if self.solver != "sklearn":
            D, sq_err, _, converged = nmf_global(A, k, seed=seed, max_iter=max_iter, tol=self.tol, device=device,
                                                 accelerated=self.solver == "accelerated")
            return D, sq_err, converged
        init = "nndsvda" if k <= min(A.shape) else "random"
        D, sq_err, _, converged = sklearn_nmf(A, k, seed=seed, max_iter=max_iter, tol=self.tol, init=init)
        return D, sq_err, converged

    def _fit_per_class(self, A: np.ndarray, classes: np.ndarray, r: int, seed: int, max_iter: int,
                       device: str, progress: bool) -> PerClassFit:
        if self.solver != "sklearn":
            return nmf_per_class(A, classes, r, seed=seed, max_iter=max_iter, tol=self.tol, device=device,
                                 max_batch_bytes=self.max_batch_bytes, progress=progress,
                                 accelerated=self.solver == "accelerated")
        labels = np.unique(classes)
        fits = [sklearn_nmf(A[classes == c], r, seed=seed, max_iter=max_iter, tol=self.tol) for c in labels]
        return PerClassFit(labels=labels, D=np.concatenate([f[0] for f in fits]),
                           sq_err=np.array([f[1] for f in fits]), n_iter=np.array([f[2] for f in fits]),
                           converged=np.array([f[3] for f in fits]))

    def encode(self, dictionary: Dictionary, A: Any, **options: Any) -> np.ndarray:
        """NNLS codes (see :func:`feature_complexity.features.encode`); ``codes="per_class"``
        encodes each row against every class block separately."""
        from .nnls import encode

        return np.asarray(encode(as_array(A, "A", 2), dictionary.D, **options))


def make_dictionary(D: np.ndarray, feature_class: np.ndarray, scope: str, r: int | None, sq_err: float,
                    A: np.ndarray, method: str, extra: dict[str, np.ndarray] | None = None) -> Dictionary:
    """A :class:`Dictionary` whose ``reconstruction_error`` is ``sqrt(sq_err) / ||A||_F``."""
    norm2 = sum_squares(A)
    return Dictionary(D=D, feature_class=np.asarray(feature_class, dtype=np.int64), method=method, scope=scope,
                      n_atoms_per_class=r, extra=dict(extra or {}),
                      reconstruction_error=float(np.sqrt(sq_err / norm2)) if norm2 > 0 else 0.0)


def sum_squares(A: np.ndarray, block: int = 8192) -> float:
    """``||A||²_F`` in float64, by row blocks (no float64 copy of a large ``A``)."""
    return float(sum(np.sum(np.square(A[s:s + block], dtype=np.float64)) for s in range(0, A.shape[0], block)))
