r"""Complexity ``K`` of features: V-information of linear-Gaussian probes, in closed form.

Notation (docs/ARCHITECTURE.md): ``f_l`` the pooled activations of probe layer ``l``, shape
``(n_images, p)`` with ``p = C_l``; ``Z`` the feature values (targets), shape ``(n_images, k)``;
``z`` one column of ``Z``; ``I_V`` V-information; ``K`` complexity.

What is computed
----------------
For every layer ``l`` and every feature ``z`` (Fel et al. 2024, section 3 of
``paper-method.md``), with the predictive family of Xu et al. (2020)
``V = {x -> N(w^T x + b, sigma^2)} ∪ {∅ -> N(mu, sigma^2)}``, ``sigma^2 = 1/2``::

    H_V(z | ∅) - H_V(z | x) = E[(z - mu*)^2] - E[(z - w*^T x - b*)^2]

(the ``1/2 log pi`` constants cancel). With ``z`` standardised this is ``Var(z) * R^2 = R^2``, so
we report

    I_V(f_l -> z) = clip(1 - SSE_model / SSE_null, 0, 1)            in [0, 1]
    K(z)          = 1 - mean_l I_V(f_l -> z)                          in [0, 1]

Both sums of squared errors are *held out* (Ethayarajh et al. 2022): the images are split into
``n_folds`` folds (:func:`fold_assignment`); for each fold ``f`` the probe is fitted on the other
folds and its squared error summed over fold ``f``; ``SSE`` is the sum over all folds. The null
model (``∅``) predicts the training-fold mean of ``z``; it is scored the same way. Held-out
errors make ``I_V`` an honest estimate (an in-sample ``R^2`` grows like ``p / n`` for pure noise)
and the clip removes the small negative values that noise then produces.

The probe is ridge regression with an intercept. On training fold data, with means ``mu_x``,
``mu_z`` and centred scatter matrices ``Sxx = sum (x - mu_x)(x - mu_x)^T`` (p, p) and
``Sxz = sum (x - mu_x)(z - mu_z)^T`` (p, k)::

    W_alpha = (Sxx + alpha * (tr(Sxx) / p) * I)^-1 Sxz,     b = mu_z - W^T mu_x

The penalty is *relative* to the mean eigenvalue ``tr(Sxx) / p`` of the scatter matrix: the same
grid then means the same amount of shrinkage whatever the scale of the activations, the width
of the layer and the number of images, so one default grid (:data:`DEFAULT_ALPHAS`) serves every
layer. For each (layer, feature) the ``alpha`` with the smallest held-out ``SSE`` (summed over
folds) is chosen; this uses the test folds for selection, a small optimistic bias that is the
usual price of one level of cross-validation and that is negligible against the ``p / n``
bias it removes.

How it is computed (no per-feature loop, no second pass over the images)
------------------------------------------------------------------------
:class:`RidgeProbeStats` accumulates, batch by batch, for each fold ``f``: the count ``n_f``,
``sum x`` (p), ``sum z`` (k), ``X^T X`` (p, p), ``X^T Z`` (p, k) and ``sum z^2`` (k), in float64
on the chosen device. Memory is ``O(n_folds * p * (p + k))``, independent of ``n_images``.
Training statistics of fold ``f`` are the totals minus fold ``f``. The held-out error expands
in fold-``f`` statistics only; with ``x~ = x - mu_x``, ``z~ = z - mu_z`` (training means)::

    SSE_f(w) = sum z~^2 - 2 w^T (sum x~ z~) + w^T (sum x~ x~^T) w

and each of those sums is a fixed combination of ``n_f``, ``sum x``, ``sum z``, ``X^T X``,
``X^T Z``, ``sum z^2`` of fold ``f`` and the training means. One eigendecomposition
``Sxx = V diag(e) V^T`` per fold gives every penalty of the grid at the price of a diagonal
rescaling, ``W_alpha = V diag(1 / (e + lambda)) V^T Sxz``; everything else is a large matmul
shared by all ``k`` features.

Numerical care: ``X^T X - n mu mu^T`` loses digits when the means are large against the
spread (``1e6 + noise`` loses about 12 of float64's 16 digits). Every batch is therefore shifted
by the column means of the *first* batch before accumulation; ridge with an intercept and its
errors are invariant to that shift, and the shifted data have means near zero.

Constant features (``z`` identical on every image) carry no information: their ``SSE_null`` is
0 and ``R^2`` is undefined. They get ``I_V = 0`` on every layer, ``K = 1``, ``alpha = nan``,
and one warning saying how many there are.
"""

from __future__ import annotations

import sys
import types
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Union

import numpy as np
import torch

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "DEFAULT_ALPHAS",
    "ComplexityResult",
    "RidgeProbeStats",
    "complexity",
    "fold_assignment",
]

#: Relative ridge penalties (multiples of the mean eigenvalue ``tr(Sxx) / p`` of the training
#: scatter matrix), a log grid from almost-unregularised least squares to strong shrinkage.
DEFAULT_ALPHAS: tuple[float, ...] = tuple(float(10.0**e) for e in range(-6, 3))  # 1e-6 .. 1e2

ArrayLike = Union[np.ndarray, Sequence[Any]]


@dataclass
class ComplexityResult:
    """Complexity of ``k`` features over ``n_layers`` probe layers.

    Attributes:
        score: ``(k,)`` complexity ``K = 1 - mean_l I_V(f_l -> z)``, in [0, 1].
        per_layer: ``(n_layers, k)`` held-out V-information ``I_V(f_l -> z)`` in [0, 1], layers
            in the order given (the "decodability curve" of each feature).
        layer_names: names of the layers, ``len == n_layers``.
        alpha: ``(n_layers, k)`` selected relative ridge penalty per layer and feature
            (``nan`` for constant features).
        n_images: number of images the probes saw.
        n_folds: number of cross-validation folds.
    """

    score: np.ndarray
    per_layer: np.ndarray
    layer_names: list[str]
    alpha: np.ndarray
    n_images: int
    n_folds: int

    def to_frame(self) -> "pd.DataFrame":
        """One row per feature (index ``feature``): ``complexity`` and ``iv_<layer>`` columns."""
        import pandas as pd

        data: dict[str, np.ndarray] = {"complexity": self.score}
        for name, row in zip(self.layer_names, self.per_layer):
            data[f"iv_{name}"] = row
        frame = pd.DataFrame(data)
        frame.index.name = "feature"
        return frame


def fold_assignment(n_images: int, n_folds: int, seed: int) -> np.ndarray:
    """Deterministic, balanced fold of every image: ``rng.permutation(n_images) % n_folds``.

    Returns:
        ``(n_images,)`` int64 array with values in ``[0, n_folds)``; fold sizes differ by at
        most one.
    """
    if n_folds < 2:
        raise ValueError(f"n_folds must be at least 2 to hold images out, got {n_folds}")
    if n_images < 2 * n_folds:
        raise ValueError(
            f"{n_images} images is too few for {n_folds} folds; need at least 2 * n_folds = "
            f"{2 * n_folds} (use fewer folds or more images)"
        )
    rng = np.random.default_rng(seed)
    return (rng.permutation(n_images) % n_folds).astype(np.int64)


class RidgeProbeStats:
    """Streaming per-fold sufficient statistics of ridge probes from ONE layer to all targets.

    Feed batches with :meth:`update`, then read :meth:`v_information` (held-out ``I_V`` with the
    penalty chosen from a grid), :meth:`held_out_sse` (the raw errors) or :meth:`decoder` (the
    probe refitted on all images). Memory: ``n_folds * p * (p + k)`` floats, whatever the number
    of images.

    Args:
        n_features_in: layer width ``p``.
        n_targets: number of features ``k``.
        n_folds: number of folds; fold ids passed to :meth:`update` lie in ``[0, n_folds)``.
        device: torch device for the statistics and the solves (``"cpu"``, ``"cuda"``, ...).
        dtype: accumulation dtype; float64 by default (float32 loses the digits the held-out
            error expansion needs).
    """

    def __init__(
        self,
        n_features_in: int,
        n_targets: int,
        n_folds: int,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float64,
    ) -> None:
        if n_features_in < 1 or n_targets < 1:
            raise ValueError(
                f"need at least one input feature and one target, got n_features_in="
                f"{n_features_in}, n_targets={n_targets}"
            )
        if n_folds < 2:
            raise ValueError(f"n_folds must be at least 2, got {n_folds}")
        self.device = _check_device(device)
        self.dtype = dtype
        self.n_features_in = int(n_features_in)
        self.n_targets = int(n_targets)
        self.n_folds = int(n_folds)
        p, k, F = self.n_features_in, self.n_targets, self.n_folds
        opts = dict(device=self.device, dtype=dtype)
        self.count = torch.zeros(F, **opts)
        self.sum_x = torch.zeros(F, p, **opts)
        self.sum_z = torch.zeros(F, k, **opts)
        self.xx = torch.zeros(F, p, p, **opts)
        self.xz = torch.zeros(F, p, k, **opts)
        self.zz = torch.zeros(F, k, **opts)
        # exact constancy test for targets, independent of any rounding in the sums
        self.z_min = torch.full((k,), float("inf"), **opts)
        self.z_max = torch.full((k,), float("-inf"), **opts)
        self.shift_x: torch.Tensor | None = None  # (p,) first batch's column means
        self.shift_z: torch.Tensor | None = None  # (k,)

    # ------------------------------------------------------------------ accumulation
    def update(self, X_batch: Any, Z_batch: Any, fold_batch: Any) -> None:
        """Add a batch of images.

        Args:
            X_batch: ``(b, p)`` layer activations (numpy or torch, any float dtype).
            Z_batch: ``(b, k)`` target values.
            fold_batch: ``(b,)`` integer fold of each image, in ``[0, n_folds)``.
        """
        X = self._to_tensor(X_batch)
        Z = self._to_tensor(Z_batch)
        folds = fold_batch if torch.is_tensor(fold_batch) else torch.from_numpy(np.asarray(fold_batch))
        folds = folds.to(self.device)
        if X.ndim != 2 or X.shape[1] != self.n_features_in:
            raise ValueError(f"X_batch must be (b, {self.n_features_in}), got {tuple(X.shape)}")
        if Z.ndim != 2 or Z.shape[1] != self.n_targets:
            raise ValueError(f"Z_batch must be (b, {self.n_targets}), got {tuple(Z.shape)}")
        if folds.ndim != 1 or not (X.shape[0] == Z.shape[0] == folds.shape[0]):
            raise ValueError(
                f"batch row counts differ: X {X.shape[0]}, Z {Z.shape[0]}, folds "
                f"{tuple(folds.shape)}"
            )
        if X.shape[0] == 0:
            return
        if folds.dtype.is_floating_point or folds.dtype == torch.bool:
            raise ValueError(f"fold ids must be integers, got dtype {folds.dtype}")
        if int(folds.min()) < 0 or int(folds.max()) >= self.n_folds:
            raise ValueError(
                f"fold ids must lie in [0, {self.n_folds}), got range "
                f"[{int(folds.min())}, {int(folds.max())}]"
            )
        if self.shift_x is None:
            self.shift_x = X.mean(0)
            self.shift_z = Z.mean(0)
        self.z_min = torch.minimum(self.z_min, Z.min(0).values)
        self.z_max = torch.maximum(self.z_max, Z.max(0).values)
        Xs = X - self.shift_x
        Zs = Z - self.shift_z
        # a loop over the (few) folds, not over images or features: each step is one matmul
        for f in range(self.n_folds):
            rows = folds == f
            n_f = int(rows.sum())
            if n_f == 0:
                continue
            Xf, Zf = Xs[rows], Zs[rows]
            self.count[f] += n_f
            self.sum_x[f] += Xf.sum(0)
            self.sum_z[f] += Zf.sum(0)
            self.xx[f] += Xf.T @ Xf
            self.xz[f] += Xf.T @ Zf
            self.zz[f] += (Zf * Zf).sum(0)

    def _to_tensor(self, a: Any) -> torch.Tensor:
        if torch.is_tensor(a):
            return a.to(device=self.device, dtype=self.dtype)
        try:
            arr = np.asarray(a)
            if arr.dtype not in (np.float32, np.float64):
                arr = arr.astype(np.float64)
            elif not arr.flags.writeable:  # a read-only memmap slice: read it into memory once
                arr = np.array(arr)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"batch must be numeric, could not convert: {exc}") from None
        # move in the stored precision, widen on the device: halves the host->GPU traffic for
        # float32 activations and keeps the float64 conversion off the CPU
        return torch.from_numpy(np.ascontiguousarray(arr)).to(self.device).to(self.dtype)

    @property
    def n_images(self) -> int:
        """Number of images accumulated so far."""
        return int(self.count.sum().item())

    def constant_targets(self) -> np.ndarray:
        """``(k,)`` bool: targets that took a single value on every image seen."""
        return (self.z_max == self.z_min).cpu().numpy()

    # ------------------------------------------------------------------ solving
    def _check_ready(self) -> None:
        n_tr = self.count.sum() - self.count
        if self.shift_x is None or bool((self.count < 1).any()) or bool((n_tr < 2).any()):
            raise ValueError(
                "every fold needs at least 1 image and every training split at least 2; got "
                f"fold counts {self.count.to(torch.int64).tolist()} (feed more images with "
                "update() or use fewer folds)"
            )

    def held_out_sse(self, alphas: Sequence[float] = DEFAULT_ALPHAS) -> tuple[np.ndarray, np.ndarray]:
        """Held-out sums of squared errors, summed over folds, for every penalty and target.

        Args:
            alphas: relative ridge penalties (multiples of ``tr(Sxx) / p``), each > 0.

        Returns:
            ``sse_model`` ``(n_alphas, k)`` of the ridge probes and ``sse_null`` ``(k,)`` of the
            null model that predicts the training mean.
        """
        sse, null = self._held_out_sse(_check_alphas(alphas))
        return sse.cpu().numpy(), null.cpu().numpy()

    def _held_out_sse(self, alphas: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        self._check_ready()
        opts = dict(device=self.device, dtype=self.dtype)
        a = torch.as_tensor(alphas, **opts)
        p, k = self.n_features_in, self.n_targets
        N = self.count.sum()
        tot_sx, tot_sz = self.sum_x.sum(0), self.sum_z.sum(0)
        tot_xx, tot_xz = self.xx.sum(0), self.xz.sum(0)
        sse = torch.zeros(len(alphas), k, **opts)
        sse_null = torch.zeros(k, **opts)
        for f in range(self.n_folds):
            n_f = self.count[f]
            n_tr = N - n_f
            sx_f, sz_f = self.sum_x[f], self.sum_z[f]
            mu_x = (tot_sx - sx_f) / n_tr  # (p,) training means (shifted coordinates)
            mu_z = (tot_sz - sz_f) / n_tr  # (k,)
            Sxx = (tot_xx - self.xx[f]) - n_tr * torch.outer(mu_x, mu_x)
            Sxz = (tot_xz - self.xz[f]) - n_tr * torch.outer(mu_x, mu_z)
            e, V = torch.linalg.eigh(0.5 * (Sxx + Sxx.T))
            e = e.clamp(min=0.0)  # rounding can leave tiny negative eigenvalues on a PSD matrix
            lam = a * (e.sum() / p)  # (n_alphas,) absolute penalties; e.sum() = tr(Sxx)
            denom = e[None, :] + lam[:, None]  # (n_alphas, p)
            # a constant layer (tr = 0) gives 0 / 0: its probe is w = 0, the null model
            D = torch.where(denom > 0, 1.0 / torch.where(denom > 0, denom, 1.0), 0.0)
            # held-out fold statistics centred at the TRAINING means
            Cxz = (self.xz[f] - torch.outer(mu_x, sz_f) - torch.outer(sx_f, mu_z)
                   + n_f * torch.outer(mu_x, mu_z))  # (p, k)
            Cxx = (self.xx[f] - torch.outer(mu_x, sx_f) - torch.outer(sx_f, mu_x)
                   + n_f * torch.outer(mu_x, mu_x))  # (p, p)
            czz = self.zz[f] - 2.0 * mu_z * sz_f + n_f * mu_z * mu_z  # (k,)
            Q = V.T @ Sxz  # (p, k): W_alpha = V diag(D_alpha) Q
            C = V.T @ Cxz  # (p, k)
            M = V.T @ Cxx @ V  # (p, p)
            cross = D @ (Q * C)  # (n_alphas, k): w^T sum x~ z~
            for i in range(len(alphas)):
                DQ = D[i][:, None] * Q  # (p, k) the probe in the eigenbasis
                quad = ((M @ DQ) * DQ).sum(0)  # (k,): w^T (sum x~ x~^T) w
                sse[i] += czz - 2.0 * cross[i] + quad
            sse_null += czz
        return sse.clamp(min=0.0), sse_null.clamp(min=0.0)

    def _select(self, alphas: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        sse, sse_null = self._held_out_sse(alphas)
        best = sse.argmin(0)  # (k,)
        sse_best = sse.gather(0, best[None, :])[0]
        constant = torch.from_numpy(self.constant_targets()).to(self.device) | (sse_null <= 0)
        safe_null = torch.where(constant, torch.ones_like(sse_null), sse_null)
        iv = (1.0 - sse_best / safe_null).clamp(0.0, 1.0)
        iv = torch.where(constant, torch.zeros_like(iv), iv)
        chosen = np.asarray(alphas, dtype=np.float64)[best.cpu().numpy()]
        constant_np = constant.cpu().numpy()
        chosen[constant_np] = np.nan
        return iv.cpu().numpy(), chosen, constant_np

    def v_information(self, alphas: Sequence[float] = DEFAULT_ALPHAS) -> tuple[np.ndarray, np.ndarray]:
        """Held-out ``I_V(f_l -> z)`` for every target, penalty chosen per target.

        Args:
            alphas: relative ridge penalties to choose from, each > 0.

        Returns:
            ``I_V`` ``(k,)`` in [0, 1] and the chosen relative penalty ``(k,)`` (``nan`` for
            constant targets, whose ``I_V`` is 0; a warning says how many).
        """
        iv, chosen, constant = self._select(_check_alphas(alphas))
        _warn_constant(int(constant.sum()), self.n_targets)
        return iv, chosen

    def decoder(
        self, alpha: float | np.ndarray, target_index: int | None = None
    ) -> tuple[np.ndarray, np.ndarray | float]:
        """The ridge probe refitted on ALL images accumulated, in the original coordinates.

        Args:
            alpha: relative penalty, a scalar or a ``(k,)`` array (one per target, e.g. a row
                of :attr:`ComplexityResult.alpha`; ``nan`` gives ``w = 0``, the null model).
            target_index: one target to return, or ``None`` for all.

        Returns:
            ``W`` ``(p, k)`` and ``b`` ``(k,)`` with ``z ≈ x @ W + b``; with ``target_index``,
            ``w`` ``(p,)`` and ``b`` a float.
        """
        if self.shift_x is None or self.n_images < 2:
            raise ValueError("decoder() needs at least 2 images; feed them with update() first")
        k, p = self.n_targets, self.n_features_in
        alpha_arr = np.asarray(alpha, dtype=np.float64)
        if alpha_arr.ndim == 0:
            alpha_arr = np.full(k, float(alpha_arr))
        if alpha_arr.shape != (k,):
            raise ValueError(f"alpha must be a scalar or have shape ({k},), got {alpha_arr.shape}")
        if np.any(alpha_arr[np.isfinite(alpha_arr)] <= 0) or np.any(np.isinf(alpha_arr)):
            raise ValueError("alpha must be > 0 and finite (nan means: no probe, w = 0)")
        if target_index is not None and not (0 <= target_index < k):
            raise ValueError(f"target_index must lie in [0, {k}), got {target_index}")
        targets = np.arange(k) if target_index is None else np.array([target_index])
        N = self.count.sum()
        mu_x = self.sum_x.sum(0) / N
        mu_z = self.sum_z.sum(0) / N
        Sxx = self.xx.sum(0) - N * torch.outer(mu_x, mu_x)
        Sxz = self.xz.sum(0) - N * torch.outer(mu_x, mu_z)
        e, V = torch.linalg.eigh(0.5 * (Sxx + Sxx.T))
        e = e.clamp(min=0.0)
        Q = V.T @ Sxz[:, targets]  # (p, t)
        W = torch.zeros(p, len(targets), device=self.device, dtype=self.dtype)
        sub = alpha_arr[targets]
        # one solve per distinct penalty (at most the size of the grid), not per target
        for value in np.unique(sub[np.isfinite(sub)]):
            cols = torch.from_numpy(np.flatnonzero(sub == value)).to(self.device)
            denom = e + value * e.sum() / p
            D = torch.where(denom > 0, 1.0 / torch.where(denom > 0, denom, 1.0), 0.0)
            W[:, cols] = V @ (D[:, None] * Q[:, cols])
        mean_x = mu_x + self.shift_x  # back to the original (unshifted) coordinates
        mean_z = (mu_z + self.shift_z)[torch.from_numpy(targets).to(self.device)]
        b = mean_z - W.T @ mean_x
        W_np, b_np = W.cpu().numpy(), b.cpu().numpy()
        if target_index is not None:
            return W_np[:, 0], float(b_np[0])
        return W_np, b_np


# ---------------------------------------------------------------------- the public function
def complexity(
    layers: Mapping[str, ArrayLike] | Sequence[ArrayLike],
    values: ArrayLike,
    *,
    n_folds: int = 5,
    alphas: Sequence[float] = DEFAULT_ALPHAS,
    seed: int = 0,
    device: str = "cpu",
    batch_size: int = 4096,
    fold_ids: np.ndarray | None = None,
    progress: bool = False,
) -> ComplexityResult:
    """Complexity ``K`` and per-layer V-information ``I_V`` of every feature (see module doc).

    Args:
        layers: ``{name: (n_images, C_l)}`` in forward order, or a sequence of such arrays
            (named ``"layer0"``, ``"layer1"``, ...). Arrays may be ``np.memmap``: they are read
            in row chunks of ``batch_size`` and never loaded whole.
        values: ``(n_images, k)`` feature values ``Z`` (or ``(n_images,)`` for one feature).
        n_folds: cross-validation folds for the held-out errors.
        alphas: relative ridge penalties (multiples of ``tr(Sxx) / p``) to choose from.
        seed: seed of :func:`fold_assignment` (ignored when ``fold_ids`` is given).
        device: torch device for the statistics and solves (``"cpu"`` or ``"cuda"``).
        batch_size: rows read and accumulated at a time.
        fold_ids: optional ``(n_images,)`` integer folds in ``[0, n_folds)``, overriding ``seed``.
        progress: show a progress bar per layer.

    Returns:
        :class:`ComplexityResult` with ``score`` ``(k,)``, ``per_layer`` ``(n_layers, k)``,
        ``alpha`` ``(n_layers, k)``.
    """
    names, arrays = _named_layers(layers)
    Z = _as_values(values)
    n, k = Z.shape
    for name, X in zip(names, arrays):
        if X.shape[0] != n:
            raise ValueError(
                f"layer '{name}' has {X.shape[0]} rows but values has {n}; every layer and the "
                "values must hold one row per image, in the same order"
            )
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    grid = _check_alphas(alphas)
    dev = _check_device(device)
    folds = _check_folds(fold_ids, n, n_folds) if fold_ids is not None else fold_assignment(
        n, n_folds, seed
    )

    per_layer = np.zeros((len(names), k))
    chosen = np.zeros((len(names), k))
    constant = np.zeros(k, dtype=bool)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n * len(names), unit="img", desc="complexity")
    for li, (name, X) in enumerate(zip(names, arrays)):
        stats = RidgeProbeStats(X.shape[1], k, n_folds, device=dev)
        for start in range(0, n, batch_size):
            stop = min(start + batch_size, n)
            xb = _finite_chunk(X, start, stop, f"layer '{name}'")
            # values are checked on the first pass only: they are the same for every layer
            zb = _finite_chunk(Z, start, stop, "values") if li == 0 else np.asarray(Z[start:stop])
            stats.update(xb, zb, folds[start:stop])
            del xb, zb  # else the previous chunk is still alive while the next one is read
            if bar is not None:
                bar.update(stop - start)
                bar.set_postfix(layer=name)
        per_layer[li], chosen[li], constant = stats._select(grid)
        del stats  # free the (p, p) and (p, k) statistics before the next layer
        if dev.type == "cuda":
            torch.cuda.empty_cache()
    if bar is not None:
        bar.close()
    _warn_constant(int(constant.sum()), k)
    return ComplexityResult(
        score=1.0 - per_layer.mean(0),
        per_layer=per_layer,
        layer_names=list(names),
        alpha=chosen,
        n_images=n,
        n_folds=n_folds,
    )


# ---------------------------------------------------------------------- validation helpers
def _named_layers(layers: Any) -> tuple[list[str], list[Any]]:
    if isinstance(layers, np.ndarray) or torch.is_tensor(layers):
        raise ValueError(
            "layers must be a dict {name: (n_images, C_l) array} or a list of such arrays, not a "
            "single array; wrap it: complexity([X], values)"
        )
    if isinstance(layers, Mapping):
        names, arrays = [str(n) for n in layers.keys()], list(layers.values())
    elif isinstance(layers, Sequence) and not isinstance(layers, (str, bytes)):
        arrays = list(layers)
        names = [f"layer{i}" for i in range(len(arrays))]
    else:
        raise ValueError(
            f"layers must be a dict {{name: array}} or a list of arrays, got {type(layers).__name__}"
        )
    if not arrays:
        raise ValueError("layers is empty; pass at least one (n_images, C_l) array")
    out = []
    for name, X in zip(names, arrays):
        if torch.is_tensor(X):
            X = X.detach().cpu().numpy()
        if not hasattr(X, "shape") or not hasattr(X, "__getitem__"):
            X = np.asarray(X)
        if len(X.shape) != 2:
            raise ValueError(
                f"layer '{name}' must be 2-D (n_images, C_l), got shape {tuple(X.shape)}; pool "
                "spatial maps first (global average pooling)"
            )
        if X.shape[1] < 1:
            raise ValueError(f"layer '{name}' has no columns (shape {tuple(X.shape)})")
        if not np.issubdtype(np.dtype(getattr(X, "dtype", np.float64)), np.number):
            raise ValueError(f"layer '{name}' must be numeric, got dtype {X.dtype}")
        out.append(X)
    return names, out


def _as_values(values: Any) -> Any:
    if torch.is_tensor(values):
        values = values.detach().cpu().numpy()
    if not isinstance(values, np.ndarray):
        values = np.asarray(values)
    if values.ndim == 1:
        values = values[:, None]  # a view: keeps memmaps lazy
    if values.ndim != 2 or values.shape[1] < 1:
        raise ValueError(f"values must be (n_images, k) or (n_images,), got shape {values.shape}")
    if not np.issubdtype(values.dtype, np.number):
        raise ValueError(f"values must be numeric, got dtype {values.dtype}")
    return values


def _finite_chunk(X: Any, start: int, stop: int, what: str) -> np.ndarray:
    chunk = np.asarray(X[start:stop])
    if chunk.dtype not in (np.float32, np.float64):
        chunk = chunk.astype(np.float64)
    elif isinstance(chunk, np.memmap) or not chunk.flags.writeable:
        chunk = np.array(chunk)  # read the rows from disk once, into ordinary memory
    finite = np.isfinite(chunk)
    if not finite.all():
        row, col = np.argwhere(~finite)[0]
        raise ValueError(
            f"{what} has non-finite values (first at row {start + row}, column {col}: "
            f"{chunk[row, col]}); remove or impute those images/values before computing complexity"
        )
    return chunk


def _check_alphas(alphas: Sequence[float]) -> np.ndarray:
    grid = np.asarray(list(alphas), dtype=np.float64)
    if grid.ndim != 1 or grid.size == 0:
        raise ValueError("alphas must be a non-empty 1-D sequence of relative ridge penalties")
    if not np.all(np.isfinite(grid)) or np.any(grid <= 0):
        raise ValueError(
            f"alphas must be finite and > 0, got {grid.tolist()}; for (almost) plain least squares "
            "use a tiny value such as 1e-8"
        )
    return grid


def _check_device(device: str | torch.device) -> torch.device:
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"unknown device {device!r} ({exc}); use 'cpu' or 'cuda'") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available; use device='cpu'")
    return dev


def _check_folds(fold_ids: Any, n: int, n_folds: int) -> np.ndarray:
    folds = np.asarray(fold_ids)
    if folds.shape != (n,):
        raise ValueError(f"fold_ids must have shape ({n},), one fold per image; got {folds.shape}")
    if not np.issubdtype(folds.dtype, np.integer):
        raise ValueError(f"fold_ids must be integers, got dtype {folds.dtype}")
    if n_folds < 2:
        raise ValueError(f"n_folds must be at least 2, got {n_folds}")
    if n < 2 * n_folds:
        raise ValueError(f"{n} images is too few for {n_folds} folds; need at least {2 * n_folds}")
    counts = np.bincount(folds.clip(0), minlength=n_folds)
    if folds.min() < 0 or folds.max() >= n_folds or np.any(counts[:n_folds] == 0):
        raise ValueError(
            f"fold_ids must use every fold 0..{n_folds - 1} and nothing else; got values in "
            f"[{folds.min()}, {folds.max()}] with counts {counts.tolist()}"
        )
    return folds.astype(np.int64)


def _warn_constant(n_constant: int, k: int) -> None:
    if n_constant:
        warnings.warn(
            f"{n_constant} of {k} feature(s) are constant over the images; they carry no "
            "information: I_V = 0 on every layer and K = 1 (alpha = nan)",
            RuntimeWarning,
            stacklevel=3,
        )


# ---------------------------------------------------------------------- `fc.complexity(...)`
# The package exposes the function `complexity` lazily under the same name as this module.
# Once anything imports `feature_complexity.complexity` (the pipeline does), Python's import
# system binds the *module* to the package attribute `complexity`, shadowing the function, and
# `fc.complexity(layers, values)` would fail with "'module' object is not callable". Making the
# module callable (forwarding to the function) keeps the documented call working either way.
class _CallableModule(types.ModuleType):
    def __call__(self, *args: Any, **kwargs: Any) -> ComplexityResult:
        return complexity(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
