"""Linear centered kernel alignment (CKA) between a layer and features.

Linear CKA (Kornblith et al., ICML 2019) compares two representations of the same ``n`` images,
``X`` of shape ``(n, p)`` and ``Y`` of shape ``(n, q)``. In kernel form, with ``K = X Xᵀ``,
``L = Y Yᵀ`` and ``H = I - 11ᵀ/n``::

    HSIC(K, L) = tr(K H L H) / (n - 1)²
    CKA(X, Y)  = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L))

For linear kernels this equals the feature-space form computed here (``X``, ``Y`` column-centred)::

    CKA(X, Y) = ||Yᵀ X||²_F / (||Xᵀ X||_F ||Yᵀ Y||_F)

which costs ``O(n p q)`` instead of ``O(n²)`` memory. The debiased variant replaces the biased
HSIC by the unbiased estimator of Song et al. (2012), as proposed for CKA by Kornblith et al.
(their released code) and Nguyen et al. (2021); it needs ``n >= 4`` images.

In the residual-flow analysis (``analyses/flow.py``) the second representation is one feature
``z`` of shape ``(n,)`` (a column of the codes ``Z``, shape ``(n, k)``); :func:`cka_with_features`
scores all ``k`` features against one layer at once.

CKA is invariant to orthogonal transforms and isotropic scaling of either side, not to general
invertible linear maps. A side with zero variance (a constant feature) has no defined CKA: the
functions return ``nan`` for it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

__all__ = ["linear_cka", "cka_with_features"]


def _as_2d(name: str, M: np.ndarray) -> np.ndarray:
    """Validate one representation and return it as a centred float64 ``(n, p)`` array."""
    M = np.asarray(M, dtype=np.float64)
    if M.ndim == 1:
        M = M[:, None]
    if M.ndim != 2:
        raise ValueError(f"{name} must have shape (n_images, n_dims); got an array of shape {M.shape}")
    if M.shape[0] < 2:
        raise ValueError(f"{name} has {M.shape[0]} image(s); CKA needs at least 2 images (rows)")
    if not np.all(np.isfinite(M)):
        raise ValueError(f"{name} contains NaN or infinite values; clean the activations first")
    # centring in feature space is the H K H of the kernel form
    return M - M.mean(axis=0, keepdims=True)


def _constant_columns(M: np.ndarray, Mc: np.ndarray) -> np.ndarray:
    """``(n_cols,)`` bool: columns whose centred values are rounding noise around a constant.

    Centring a constant float column leaves residuals of order 1e-17 rather than exact zeros;
    without this check they would be scored as if they were a signal.
    """
    M = np.asarray(M, dtype=np.float64).reshape(Mc.shape)
    return np.sum(Mc**2, axis=0) <= 1e-20 * np.maximum(np.sum(M**2, axis=0), 1e-300)


def _check_debiased_n(n: int) -> None:
    if n < 4:
        raise ValueError(
            f"debiased CKA needs at least 4 images (the unbiased HSIC divides by n(n-3)); got n={n}. "
            "Use more images or debiased=False."
        )


def _debiased_hsic(xty: np.ndarray | float, rx: np.ndarray, ry: np.ndarray, n: int) -> np.ndarray | float:
    """Unbiased HSIC (Song et al. 2012) times ``n (n-3)``, in feature space, for centred inputs.

    With ``K̃``, ``L̃`` the Gram matrices with zeroed diagonals, the estimator is
    ``[tr(K̃L̃) + 1ᵀK̃1 1ᵀL̃1 / ((n-1)(n-2)) - 2/(n-2) 1ᵀK̃L̃1] / (n(n-3))``. For centred data
    ``K1 = 0`` so ``K̃1 = -diag(K)``, which turns every term into a function of
    ``xty = ||YᵀX||²_F`` and the squared row norms ``rx = diag(K)``, ``ry = diag(L)``.

    Args:
        xty: ``||YᵀX||²_F``, scalar or ``(k,)``.
        rx: ``(n,)`` squared row norms of ``X``.
        ry: ``(n,)`` or ``(n, k)`` squared row norms of ``Y`` (one column per feature).
        n: number of images.
    """
    return xty - n / (n - 2.0) * (rx @ ry) + rx.sum() * ry.sum(axis=0) / ((n - 1.0) * (n - 2.0))


def _safe_ratio(num: ArrayLike, den: ArrayLike) -> np.ndarray:
    """``num / den``, ``nan`` where the denominator is not positive (a constant side, or a
    negative unbiased self-HSIC estimate, for which CKA is undefined)."""
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    out = np.full(np.broadcast(num, den).shape, np.nan)
    ok = den > 0
    np.divide(num, den, out=out, where=ok)
    return out


def linear_cka(X: np.ndarray, Y: np.ndarray, *, debiased: bool = False) -> float:
    """Linear CKA between two representations of the same images.

    Args:
        X: ``(n_images, p)`` activations (a 1-D array counts as one column).
        Y: ``(n_images, q)`` activations or feature values.
        debiased: use the unbiased HSIC estimator (needs ``n_images >= 4``).

    Returns:
        CKA in ``[0, 1]`` (the debiased value can fall slightly outside), ``nan`` when either side
        is constant.
    """
    Xc, Yc = _as_2d("X", X), _as_2d("Y", Y)
    n = Xc.shape[0]
    if Yc.shape[0] != n:
        raise ValueError(f"X has {n} images but Y has {Yc.shape[0]}; they must describe the same images")
    if debiased:
        _check_debiased_n(n)
    if _constant_columns(X, Xc).all() or _constant_columns(Y, Yc).all():
        return float("nan")
    xty = float(np.sum((Yc.T @ Xc) ** 2))
    xtx = float(np.sum(_gram_like(Xc) ** 2))
    yty = float(np.sum(_gram_like(Yc) ** 2))
    if not debiased:
        return float(_safe_ratio(xty, np.sqrt(xtx * yty)))
    rx, ry = np.sum(Xc**2, axis=1), np.sum(Yc**2, axis=1)
    hxy = _debiased_hsic(xty, rx, ry, n)
    hxx = _debiased_hsic(xtx, rx, rx, n)
    hyy = _debiased_hsic(yty, ry, ry, n)
    return float(_safe_ratio(hxy, np.sqrt(max(hxx, 0.0) * max(hyy, 0.0))))


def _gram_like(M: np.ndarray) -> np.ndarray:
    """The smaller of ``MᵀM`` (p×p) and ``MMᵀ`` (n×n): both have the same Frobenius norm."""
    return M.T @ M if M.shape[1] <= M.shape[0] else M @ M.T


def cka_with_features(
    X: np.ndarray,
    Z: np.ndarray,
    *,
    debiased: bool = False,
    device: str | None = None,
    batch_size: int = 8192,
) -> np.ndarray:
    """Linear CKA between one layer and every feature column, vectorised over features.

    For one centred feature ``z`` (a single column, so ``||zᵀz||_F = ||z||²``)::

        CKA(X, z) = ||Xᵀ z||² / (||XᵀX||_F ||z||²)

    The sums are accumulated over row chunks of ``batch_size`` images (two passes: means, then
    centred products), so memory is ``O(p (p + k))`` whatever ``n_images``, and ``X``/``Z`` may
    be ``np.memmap``. When ``n < p`` the ``n × n`` Gram matrix ``G = X Xᵀ`` is used instead
    (``||Xᵀz||² = zᵀ G z``), which is cheaper for wide layers on few images.

    Args:
        X: ``(n_images, p)`` pooled activations of one layer or branch.
        Z: ``(n_images, k)`` feature values (codes); a 1-D array is one feature.
        debiased: use the unbiased HSIC estimator (needs ``n_images >= 4``).
        device: ``None``: numpy on the CPU. A torch device (``"cuda"``, ``"cpu"``): the same
            float64 arithmetic in torch on that device (for large ``n p k``).
        batch_size: rows per chunk.

    Returns:
        ``(k,)`` float64, one CKA per feature; ``nan`` for a constant feature (or a constant layer).
    """
    X = X if hasattr(X, "shape") and getattr(X, "ndim", 0) == 2 else _shape_2d("X", X)
    Z = Z if hasattr(Z, "shape") and getattr(Z, "ndim", 0) == 2 else _shape_2d("Z", Z)
    n, p = X.shape
    k = Z.shape[1]
    if Z.shape[0] != n:
        raise ValueError(f"X has {n} images but Z has {Z.shape[0]}; they must describe the same images")
    if n < 2:
        raise ValueError(f"X has {n} image(s); CKA needs at least 2 images (rows)")
    if debiased:
        _check_debiased_n(n)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if n < p:  # few images, wide layer: the n × n path, in memory (n is small by definition)
        return _cka_with_features_gram(_as_2d("X", X), _as_2d("Z", Z), np.asarray(X), np.asarray(Z), debiased)

    to = _backend(device)
    chunks = [(a, min(a + batch_size, n)) for a in range(0, n, batch_size)]
    # pass 1: column means and raw sums of squares (for the constant-column test)
    sx, sz, qx, qz = to(np.zeros(p)), to(np.zeros(k)), to(np.zeros(p)), to(np.zeros(k))
    for a, b in chunks:
        Xb, Zb = _chunk(X, "X", a, b, to), _chunk(Z, "Z", a, b, to)
        sx, sz = sx + Xb.sum(axis=0), sz + Zb.sum(axis=0)
        qx, qz = qx + (Xb**2).sum(axis=0), qz + (Zb**2).sum(axis=0)
    sums = _centred_sums(X, Z, sx / n, sz / n, chunks, to, debiased)
    # centring a constant column leaves rounding noise, not zeros: treat it as exactly constant
    if float(np.trace(sums["xtx"])) <= 1e-20 * max(float(_numpy(qx).sum()), 1e-300):
        return np.full(k, np.nan)
    out = _cka_from_sums(sums, n, debiased)
    out[sums["z2"] <= 1e-20 * np.maximum(_numpy(qz), 1e-300)] = np.nan  # constant features
    return out


def _chunk(M: np.ndarray, name: str, a: int, b: int, to: Callable[[np.ndarray], Any]) -> Any:
    """Rows ``a:b`` of ``M`` as float64 on the accumulation backend ``to``; a ``ValueError`` if not finite."""
    block = np.asarray(M[a:b], dtype=np.float64)
    if not np.all(np.isfinite(block)):
        raise ValueError(f"{name} contains NaN or infinite values; clean the activations first")
    return to(block)


def _centred_sums(X: np.ndarray, Z: np.ndarray, mx: Any, mz: Any, chunks: list[tuple[int, int]],
                  to: Callable[[np.ndarray], Any], debiased: bool) -> dict[str, Any]:
    """Pass 2 of :func:`cka_with_features`: the centred cross products, each a sum over images (numpy)."""
    p, k = X.shape[1], Z.shape[1]
    xtx, xtz = to(np.zeros((p, p))), to(np.zeros((p, k)))
    z2, z4, rxz2 = to(np.zeros(k)), to(np.zeros(k)), to(np.zeros(k))
    rx_sum = rx_sq = 0.0
    for a, b in chunks:
        Xb, Zb = _chunk(X, "X", a, b, to) - mx, _chunk(Z, "Z", a, b, to) - mz
        xtx = xtx + Xb.T @ Xb
        xtz = xtz + Xb.T @ Zb
        Zb2 = Zb**2
        z2 = z2 + Zb2.sum(axis=0)
        if debiased:
            rx = (Xb**2).sum(axis=1)  # (b,) squared row norms of centred X
            rxz2 = rxz2 + rx @ Zb2
            z4 = z4 + (Zb2**2).sum(axis=0)
            rx_sum += float(rx.sum())
            rx_sq += float((rx**2).sum())
    sums = {name: _numpy(t) for name, t in (("xtx", xtx), ("xtz", xtz), ("z2", z2), ("z4", z4), ("rxz2", rxz2))}
    return sums | {"rx_sum": rx_sum, "rx_sq": rx_sq}


def _cka_from_sums(sums: dict[str, Any], n: int, debiased: bool) -> np.ndarray:
    """``(k,)`` CKA per feature from the centred sums of :func:`_centred_sums`."""
    xtx, xtz, z2, z4, rxz2 = sums["xtx"], sums["xtz"], sums["z2"], sums["z4"], sums["rxz2"]
    rx_sum, rx_sq = sums["rx_sum"], sums["rx_sq"]
    num = np.sum(xtz**2, axis=0)  # ||Xᵀz||² per feature, (k,)
    xx = float(np.sum(xtx**2))  # ||XᵀX||²_F
    ztz = z2**2  # ||zᵀz||²_F = ||z||⁴ for one column, (k,)
    if not debiased:
        return _safe_ratio(num, np.sqrt(xx * ztz))
    c1, c2 = n / (n - 2.0), 1.0 / ((n - 1.0) * (n - 2.0))
    hxz = num - c1 * rxz2 + c2 * rx_sum * z2  # see _debiased_hsic, one column per feature
    hxx = xx - c1 * rx_sq + c2 * rx_sum**2
    hzz = ztz - c1 * z4 + c2 * ztz
    return _safe_ratio(hxz, np.sqrt(max(hxx, 0.0) * np.maximum(hzz, 0.0)))


def _shape_2d(name: str, M: object) -> np.ndarray:
    """A 1-D array becomes one column; anything else that is not 2-D is an error."""
    M = np.asarray(M)
    if M.ndim == 1:
        return M[:, None]
    if M.ndim == 2:
        return M
    raise ValueError(f"{name} must have shape (n_images, n_dims); got an array of shape {M.shape}")


def _backend(device: str | None):
    """A converter from float64 numpy chunks to the arrays the accumulation runs on."""
    if device is None:
        return lambda a: a
    import torch

    dev = torch.device(device)
    from .._validation import writable

    return lambda a: torch.as_tensor(writable(a), dtype=torch.float64, device=dev)


def _numpy(t: object) -> np.ndarray:
    if isinstance(t, np.ndarray):
        return t
    return t.detach().cpu().numpy()  # type: ignore[attr-defined]


def _cka_with_features_gram(
    Xc: np.ndarray, Zc: np.ndarray, X: np.ndarray, Z: np.ndarray, debiased: bool
) -> np.ndarray:
    """The ``n < p`` path of :func:`cka_with_features` on centred in-memory arrays."""
    n = Xc.shape[0]
    if _constant_columns(X, Xc).all():
        return np.full(Zc.shape[1], np.nan)
    Zc = Zc.copy()
    Zc[:, _constant_columns(Z, Zc)] = 0.0  # exact zeros: their CKA becomes 0/0 -> nan below
    G = Xc @ Xc.T  # (n, n)
    xtz = np.einsum("ik,ik->k", Zc, G @ Zc)  # ||Xᵀz||² per feature, (k,)
    xtx = float(np.sum(G**2))
    z2 = Zc**2  # (n, k): squared row norms of each one-column feature
    ztz = np.sum(z2, axis=0) ** 2  # ||zᵀz||²_F = ||z||⁴ for one column: (k,)
    if not debiased:
        return _safe_ratio(xtz, np.sqrt(xtx * ztz))
    rx = np.sum(Xc**2, axis=1)  # (n,)
    hxz = _debiased_hsic(xtz, rx, z2, n)  # (k,)
    hxx = _debiased_hsic(xtx, rx, rx, n)  # scalar
    hzz = ztz - n / (n - 2.0) * np.sum(z2**2, axis=0) + ztz / ((n - 1.0) * (n - 2.0))  # (k,)
    return _safe_ratio(hxz, np.sqrt(max(hxx, 0.0) * np.maximum(hzz, 0.0)))
