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

How it is computed: one streaming pass of sums
----------------------------------------------
Every image belongs to one *cell*: its fold, split further into ``cells_per_fold`` groups
(:func:`cell_assignment`; one group when intervals are off). :class:`RidgeProbeStats` accumulates,
per cell ``c``, the count ``n_c``, ``sum x`` (p), ``sum z`` (k), ``X^T X`` (p, p), ``Z^T X``
(k, p) and ``sum z^2`` (k), in float64. These are sums over images: batches, row orders and
processes only change the order of additions (:func:`complexity`'s ``rows``/``reduce``). A fold's
statistics are the sum of its cells, the training statistics the totals minus the fold.

Numerical care. ``X^T X - n mu mu^T`` loses digits when the means are large against the spread
(``1e6 + noise`` loses about 12 of float64's 16 digits), so every activation is shifted by the
column means of the first rows before accumulation (ridge with an intercept and its errors are
invariant to a shift). A target column is shifted only where its mean exceeds its standard
deviation on those rows: that is where digits are lost, and a column that is sparse
(non-negative codes, mostly 0: mean below the spread) keeps its zeros. On the CPU, a chunk of
targets that is mostly zeros is multiplied as a sparse matrix (cost ``2 p nnz`` instead of
``2 p n k``); on a GPU the dense float64 product is faster. ``X^T X`` is accumulated on the
blocks of its upper triangle only (blocks of about 512 columns) and mirrored once when solving.

How it is computed: all penalties of a fold from three products
---------------------------------------------------------------
For fold ``f``, with the training scatter ``Sxx = V diag(e) V^T`` (one eigendecomposition),
``q = V^T Sxz`` and, for the held-out images centred at the training means, ``c = V^T Cxz``,
``M = V^T Cxx V`` and ``czz``, the held-out error of penalty ``lambda`` (``D_i = 1/(e_i+lambda)``)
is::

    SSE(lambda) = czz - 2 sum_i D_i q_i c_i + sum_ij M_ij q_i q_j D_i D_j

The last (quadratic) term costs one ``p x p`` by ``p x k`` product per penalty if evaluated as it
stands. Partial fractions, ``D_i D_j = (D_i - D_j) / (e_j - e_i)`` for ``e_i != e_j``, turn it into
``sum_i M_ii q_i^2 D_i^2 + 2 sum_i D_i q_i r_i`` with ``r = G q``, ``G_ij = M_ij / (e_j - e_i)``:
ONE product per fold (``r``) and ``O(p k)`` per penalty. The two partial fractions of a pair
cancel to a relative precision ``eps * (e + lambda) / |e_j - e_i|``, so eigenvalues closer than a
relative gap of ``1e-4`` (:data:`_CLUSTER_RTOL`; repeated eigenvalues of dead or collinear
channels, chains of near-equal ones) are gathered into clusters whose pairs are summed exactly,
per penalty, as small dense blocks; only pairs from different clusters go through ``G``, where
rounding is amplified at most ``1e4``-fold (about ``1e-12`` relative). The block work is
negligible unless a layer has hundreds of (near-)equal eigenvalues, where it degrades gracefully
to the per-penalty cost. Per fold: ``q``, ``c`` and ``r`` (three products ``2 p^2 k`` each), ``M`` (two
``p^3``), one eigendecomposition.

Cost and the arithmetic floor (``n`` images, ``k`` features, ``F`` folds, layer width ``p``):
accumulation ``n p (p + 1)`` (half of ``X^T X``) plus ``2 p nnz(Z)``; solving
``F (6 p^2 k + 4 p^3 + eigh(p))``. What any exact method must do: the same accumulation and, per
fold, a factorisation (``p^3 / 3``), the solve for the ``k`` probes (``2 p^2 k``) and the test
scatter applied to them to score one penalty (``2 p^2 k``); see ``benchmarks/bench_complexity.py
--scale``, which prints both counts and the measured ratio. Memory: the statistics of ``C`` cells,
``8 C p (p + k)`` bytes per layer, held for a group of layers at a time (``max_memory_gb``);
targets are split into chunks when one layer alone would not fit.

Confidence intervals (``confidence``)
-------------------------------------
``I_V = 1 - A / B`` with ``A = sum SSE`` and ``B = sum SSE_null`` over all held-out images. Given
the fitted fold models and the chosen penalty, each image adds an independent term to ``A`` and
``B``; the sampling variance of the ratio is that of the *test side*, which dominates when
``n >> p`` (refitting the models on other images moves their errors by ``O(p / n)`` relative,
the test images by ``O(1 / sqrt(n))``). We estimate it with a delete-one-cell jackknife: each
cell keeps its own held-out sums ``A_c``, ``B_c`` (accumulated in the same pass, so no second pass
over the images and no per-image residuals), and with ``C`` cells::

    I_(-c) = 1 - (A - A_c) / (B - B_c),   var = (C - 1) / C * sum_c (I_(-c) - mean I_(-)) ^ 2
    interval: I_hat -/+ t_{C-1, (1+confidence)/2} sqrt(var), clipped to [0, 1]

``K`` uses the same cells in every layer, ``K_(-c) = 1 - mean_l clip(I_l,(-c))``, which carries
the correlation between layers (they are scored on the same images). The jackknife of a ratio of
sums is the standard non-parametric choice: it needs no Gaussian assumption (sparse codes have
heavy tails), and ``t`` with ``C - 1`` degrees of freedom accounts for estimating the variance
from ``C`` cells. A bootstrap (or Poisson-weighted replicates in the streaming pass) would need
one set of fold statistics per replicate: ``B`` times the memory and the solve. The cells cost
``2`` more products (and one ``M``) per extra cell and fold, about ``+2/3`` of the solve with the
default ``cells_per_fold=2`` (``C = 10``), nothing in the pass.
What the interval covers: the held-out ``R^2`` of the fitted probes on new images from the same
distribution (the expectation of the estimate). It is below the population ``R^2`` by about
``(1 - R^2) p / n_train``, the price of fitting, small against the interval when ``n >> p``;
the tests check the coverage of the population value in planted cases. Not included: the
variability of the fitted models and of the penalty choice (``O(p / n)``).

Distributed accumulation
------------------------
``complexity(..., rows=my_rows, reduce=all_reduce)``: each process accumulates the images in
``rows``, ``reduce`` sums the statistic tensors over processes in place (one call per group of
layers, every process in the same order), and every process solves. Folds, cells and shifts
depend only on ``n``, the seed and the global first rows, which every process reads, so one
process and many give the same numbers (up to the order of additions).

Constant features (``z`` identical on every image) carry no information: their ``SSE_null`` is
0 and ``R^2`` is undefined. They get ``I_V = 0`` on every layer, ``K = 1``, ``alpha = nan``,
intervals ``[0, 0]`` and ``[1, 1]``, and one warning saying how many there are.
"""

from __future__ import annotations

import math
import sys
import types
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "DEFAULT_ALPHAS",
    "ComplexityResult",
    "RidgeProbeStats",
    "cell_assignment",
    "complexity",
    "fold_assignment",
]

#: Relative ridge penalties (multiples of the mean eigenvalue ``tr(Sxx) / p`` of the training
#: scatter matrix), a log grid from almost-unregularised least squares to strong shrinkage.
DEFAULT_ALPHAS: tuple[float, ...] = tuple(float(10.0**e) for e in range(-6, 3))  # 1e-6 .. 1e2

#: Eigenvalues closer than this relative gap (to ``e + lambda_min``) are solved as one block: the
#: partial fractions of such a pair would cancel away ``log10(1 / gap)`` digits.
_CLUSTER_RTOL = 1e-4
#: On the CPU a target chunk with at most this fraction of non-zeros (after the shift) is multiplied
#: as a sparse matrix: torch's sparse x dense product runs at about 1/7 of dense GEMM's flop rate.
_SPARSE_MAX_DENSITY = 0.1
#: Targets solved at a time (bounds the ``(k, p)`` work arrays of the solve).
_SOLVE_CHUNK = 2048
#: ``X^T X`` is accumulated on blocks of its upper triangle of about this many columns.
_SYM_BLOCK = 512

ArrayLike = np.ndarray | Sequence[Any]
Reduce = Callable[[list[torch.Tensor]], None]


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
        confidence: level of the intervals (e.g. 0.95), ``None`` when they were not computed.
        score_lo, score_hi: ``(k,)`` interval of ``K`` (``None`` without intervals).
        per_layer_lo, per_layer_hi: ``(n_layers, k)`` intervals of ``I_V``.
        n_cells: cells of the jackknife (``n_folds * cells_per_fold``), ``None`` without intervals.
    """

    score: np.ndarray
    per_layer: np.ndarray
    layer_names: list[str]
    alpha: np.ndarray
    n_images: int
    n_folds: int
    confidence: float | None = None
    score_lo: np.ndarray | None = None
    score_hi: np.ndarray | None = None
    per_layer_lo: np.ndarray | None = None
    per_layer_hi: np.ndarray | None = None
    n_cells: int | None = None

    def to_frame(self) -> "pd.DataFrame":
        """One row per feature (index ``feature``): ``complexity`` and ``iv_<layer>`` columns, each
        followed by ``_lo`` / ``_hi`` columns when intervals were computed."""
        import pandas as pd

        with_ci = self.score_lo is not None
        data: dict[str, np.ndarray] = {"complexity": self.score}
        if with_ci:
            assert self.score_lo is not None and self.score_hi is not None  # the intervals are set together
            data["complexity_lo"], data["complexity_hi"] = self.score_lo, self.score_hi
        for li, (name, row) in enumerate(zip(self.layer_names, self.per_layer)):
            data[f"iv_{name}"] = row
            if with_ci:
                assert self.per_layer_lo is not None and self.per_layer_hi is not None  # set with score_lo
                data[f"iv_{name}_lo"] = self.per_layer_lo[li]
                data[f"iv_{name}_hi"] = self.per_layer_hi[li]
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


def cell_assignment(folds: np.ndarray, n_folds: int, cells_per_fold: int, seed: int) -> np.ndarray:
    """Cell of every image for the jackknife: ``fold * cells_per_fold + group``.

    The groups split each fold at random (seeded, independently of the fold permutation) into
    ``cells_per_fold`` parts whose sizes differ by at most one.

    Args:
        folds: ``(n,)`` fold of every image, in ``[0, n_folds)``.
        n_folds: number of folds.
        cells_per_fold: groups per fold (1: the cells are the folds).
        seed: seed of the split.

    Returns:
        ``(n,)`` int64 cell ids in ``[0, n_folds * cells_per_fold)``.
    """
    folds = np.asarray(folds, dtype=np.int64)
    if cells_per_fold < 1:
        raise ValueError(f"cells_per_fold must be >= 1, got {cells_per_fold}")
    if cells_per_fold == 1:
        return folds.copy()
    n = folds.shape[0]
    order = np.random.default_rng([seed, 1]).permutation(n)  # [seed, 1]: not the fold stream
    by_fold = order[np.argsort(folds[order], kind="stable")]  # random order within each fold
    counts = np.bincount(folds, minlength=n_folds)
    rank = np.empty(n, dtype=np.int64)
    rank[by_fold] = np.arange(n) - np.repeat(np.cumsum(counts) - counts, counts)
    return folds * cells_per_fold + rank % cells_per_fold


# ---------------------------------------------------------------------- one chunk of targets
@dataclass
class _TargetChunk:
    """A chunk of target rows prepared once and shared by every layer accumulated with it.

    ``order`` sorts the rows by cell; ``bounds[c]:bounds[c + 1]`` are cell ``c``'s rows in that
    order. ``dense`` (b, k) holds the shifted targets in cell order, or ``sparse`` holds them as a
    coalesced COO ``(C * k, b)`` matrix whose row ``c * k + j`` is target ``j`` on cell ``c``.
    """

    order: torch.Tensor
    bounds: list[int]
    counts: torch.Tensor  # (C,)
    sum_z: torch.Tensor  # (C, k)
    zz: torch.Tensor  # (C, k)
    n_varying: torch.Tensor  # (k,) rows whose raw value differs from the reference row
    dense: torch.Tensor | None
    sparse: torch.Tensor | None


def _prepare_targets(Z: torch.Tensor, cells: np.ndarray, n_cells: int, shift_z: torch.Tensor,
                     z_reference: torch.Tensor, sparse_max_density: float) -> _TargetChunk:
    """Sort a ``(b, k)`` chunk (raw values, float32 or float64) by cell, shift it, and take its
    per-cell sums; a mostly-zero chunk becomes a sparse matrix without a dense float64 copy."""
    order_np = np.argsort(cells, kind="stable")
    counts_np = np.bincount(cells, minlength=n_cells)
    bounds = [0] + np.cumsum(counts_np).tolist()
    order = torch.from_numpy(order_np).to(Z.device)
    counts = torch.from_numpy(counts_np).to(device=Z.device, dtype=torch.float64)
    b, k = Z.shape
    shifted = torch.nonzero(shift_z != 0).flatten()
    # the shifted columns are dense after the shift, the others keep their zeros
    nnz = int(torch.count_nonzero(Z)) + b * len(shifted)
    if len(shifted):
        nnz -= int(torch.count_nonzero(Z[:, shifted]))
    if sparse_max_density > 0 and Z.numel() > 0 and nnz <= sparse_max_density * Z.numel():
        cell_of_row = torch.from_numpy(cells).to(Z.device)
        sparse, sum_z, zz, nz_per_col = _cell_major_coo(Z, order, cell_of_row, n_cells, shift_z, shifted)
        n_varying = _count_varying(Z, z_reference, nz_per_col)
        return _TargetChunk(order, bounds, counts, sum_z, zz, n_varying, dense=None, sparse=sparse)
    n_varying = _count_varying(Z, z_reference, (Z != 0).sum(0))
    Zs = Z.index_select(0, order).to(torch.float64)
    Zs -= shift_z  # zero shift on unshifted columns: exact
    sum_z = torch.zeros(n_cells, k, device=Z.device, dtype=torch.float64)
    zz = torch.zeros_like(sum_z)
    for c in range(n_cells):
        if bounds[c + 1] > bounds[c]:
            part = Zs[bounds[c]:bounds[c + 1]]
            sum_z[c] = part.sum(0)
            zz[c] = (part * part).sum(0)
    return _TargetChunk(order, bounds, counts, sum_z, zz, n_varying, dense=Zs, sparse=None)


def _count_varying(Z: torch.Tensor, z_reference: torch.Tensor, nonzeros: torch.Tensor) -> torch.Tensor:
    """``(k,)`` float64: rows of each column that differ from the reference row (exact: the
    reference comes from the same stored values). Only columns with a non-zero reference need a
    dense comparison; for the others it is ``nonzeros``, the column's count of non-zeros."""
    ref = z_reference.to(Z.dtype)
    out = nonzeros.to(torch.float64)
    nonzero_ref = torch.nonzero(ref != 0).flatten()
    if len(nonzero_ref):
        out[nonzero_ref] = (Z[:, nonzero_ref] != ref[nonzero_ref]).sum(0).to(torch.float64)
    return out


def _cell_major_coo(Z: torch.Tensor, order: torch.Tensor, cell_of_row: torch.Tensor, n_cells: int,
                    shift_z: torch.Tensor, shifted: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The shifted targets as a coalesced COO ``(C * k, b)`` matrix with entry
    ``(c * k + j, position of row r in cell order) = z_rj - shift_j`` for rows ``r`` of cell
    ``c``: one sparse product then gives every cell's ``Z_c^T X_c``. Also the per-cell sums
    ``(C, k)`` of the shifted values and of their squares, from the non-zeros alone, and the
    ``(k,)`` count of raw non-zeros per column."""
    b, k = Z.shape
    nz = Z.nonzero()  # (nnz, 2): raw row, column
    r, j = nz[:, 0], nz[:, 1]
    nz_per_col = torch.bincount(j, minlength=k)
    if len(shifted):
        keep = shift_z[j] == 0
        r, j = r[keep], j[keep]
        dense = Z[:, shifted].to(torch.float64) - shift_z[shifted]
        nz2 = dense.nonzero()
        vals = torch.cat([Z[r, j].to(torch.float64), dense[nz2[:, 0], nz2[:, 1]]])
        r, j = torch.cat([r, nz2[:, 0]]), torch.cat([j, shifted[nz2[:, 1]]])
    else:
        vals = Z[r, j].to(torch.float64)
    position = torch.empty_like(order)
    position[order] = torch.arange(b, device=Z.device)
    bag = cell_of_row[r] * k + j
    pos = position[r]
    perm = torch.argsort(bag * b + pos)  # (row, column) order of the COO: coalesced
    bag, pos, vals = bag[perm], pos[perm], vals[perm]
    sums = torch.zeros(n_cells * k, device=Z.device, dtype=torch.float64)
    squares = torch.zeros_like(sums)
    sums.index_add_(0, bag, vals)
    squares.index_add_(0, bag, vals * vals)
    coo = torch.sparse_coo_tensor(torch.stack([bag, pos]), vals, (n_cells * k, b), is_coalesced=True,
                                  check_invariants=False)  # built sorted and in range above
    return coo, sums.view(n_cells, k), squares.view(n_cells, k), nz_per_col


def _sym_blocks(p: int) -> list[tuple[int, int]]:
    """Column blocks of ``X^T X`` (about ``_SYM_BLOCK`` wide): only blocks ``I <= J`` are summed."""
    nb = max(1, round(p / _SYM_BLOCK))
    edges = np.linspace(0, p, nb + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]


def _add_upper_gram_(out: torch.Tensor, X: torch.Tensor, blocks: list[tuple[int, int]]) -> None:
    """``out += X^T X`` on the upper block triangle: 5/8 of the flops at 4 blocks (``syrk``)."""
    for bi, (a0, a1) in enumerate(blocks):
        for b0, b1 in blocks[bi:]:
            out[a0:a1, b0:b1].addmm_(X[:, a0:a1].T, X[:, b0:b1])


def _mirror_upper(U: torch.Tensor, blocks: list[tuple[int, int]]) -> torch.Tensor:
    """The full symmetric matrix from its upper block triangle ``U`` (lower blocks are zero)."""
    full = U.clone()
    for bi, (a0, a1) in enumerate(blocks):
        for b0, b1 in blocks[bi + 1:]:
            full[b0:b1, a0:a1] = U[a0:a1, b0:b1].T
    return full


class RidgeProbeStats:
    """Streaming per-cell sufficient statistics of ridge probes from ONE layer to all targets.

    Feed batches with :meth:`update`, then read :meth:`v_information` (held-out ``I_V`` with the
    penalty chosen from a grid), :meth:`held_out_sse` (the raw errors) or :meth:`decoder` (the
    probe refitted on all images). Memory: ``C * p * (p + k)`` floats for ``C = n_folds *
    cells_per_fold`` cells, whatever the number of images.

    Args:
        n_features_in: layer width ``p``.
        n_targets: number of features ``k``.
        n_folds: number of folds; fold ids passed to :meth:`update` lie in ``[0, n_folds)``.
        device: torch device for the statistics and the solves (``"cpu"``, ``"cuda"``, ...).
        dtype: accumulation dtype; float64 by default (float32 loses the digits the held-out
            error expansion needs).
        cells_per_fold: groups per fold with their own held-out sums (for the jackknife of
            :func:`complexity`); :meth:`update` then needs ``group_batch``.
        shift_x, shift_z: ``(p,)``, ``(k,)`` shifts subtracted before accumulation (every process
            of a distributed run must use the same); by default taken from the first batch.
        z_reference: ``(k,)`` raw target row the constancy test compares against (default: the
            first row of the first batch).
        sparse_max_density: largest fraction of non-zero shifted targets in a batch for which
            ``Z^T X`` is computed as a sparse product (default: 0.1 on the CPU, 0 = never, on
            other devices).

    Attributes (``C`` cells): ``count`` (C,), ``sum_x`` (C, p), ``sum_z`` (C, k), ``xx`` (C, p, p)
    (upper block triangle only, see :func:`_mirror_upper`), ``zx_blocks`` (one ``(C, k, w)``
    tensor per column block of ``X``; :meth:`zx` joins them into ``(C, k, p)``), ``zz`` (C, k),
    ``n_varying`` (k,): sums over the images of each cell, in shifted coordinates.
    """

    def __init__(
        self,
        n_features_in: int,
        n_targets: int,
        n_folds: int,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float64,
        *,
        cells_per_fold: int = 1,
        shift_x: Any = None,
        shift_z: Any = None,
        z_reference: Any = None,
        sparse_max_density: float | None = None,
    ) -> None:
        if n_features_in < 1 or n_targets < 1:
            raise ValueError(
                f"need at least one input feature and one target, got n_features_in="
                f"{n_features_in}, n_targets={n_targets}"
            )
        if n_folds < 2:
            raise ValueError(f"n_folds must be at least 2, got {n_folds}")
        if cells_per_fold < 1:
            raise ValueError(f"cells_per_fold must be >= 1, got {cells_per_fold}")
        self.device = _check_device(device)
        self.dtype = dtype
        self.n_features_in, self.n_targets = int(n_features_in), int(n_targets)
        self.n_folds, self.cells_per_fold = int(n_folds), int(cells_per_fold)
        self.n_cells = self.n_folds * self.cells_per_fold
        if sparse_max_density is None:
            sparse_max_density = _SPARSE_MAX_DENSITY if self.device.type == "cpu" else 0.0
        self.sparse_max_density = float(sparse_max_density)
        p, k, C = self.n_features_in, self.n_targets, self.n_cells
        opts: dict[str, Any] = dict(device=self.device, dtype=dtype)
        self.count = torch.zeros(C, **opts)
        self.sum_x = torch.zeros(C, p, **opts)
        self.sum_z = torch.zeros(C, k, **opts)
        self.xx = torch.zeros(C, p, p, **opts)
        self._blocks = _sym_blocks(p)
        # Z^T X in column blocks of X: the sparse product runs ~1.6x faster into a 512-wide block
        # (its rows stay in cache) than into the whole (C k, p) matrix
        self.zx_blocks = [torch.zeros(C, k, b1 - b0, **opts) for b0, b1 in self._blocks]
        self.zz = torch.zeros(C, k, **opts)
        self.n_varying = torch.zeros(k, **opts)
        self.shift_x = None if shift_x is None else self._vector(shift_x, p, "shift_x")
        self.shift_z = None if shift_z is None else self._vector(shift_z, k, "shift_z")
        self.z_reference = None if z_reference is None else self._vector(z_reference, k, "z_reference")

    def _vector(self, v: Any, size: int, what: str) -> torch.Tensor:
        if torch.is_tensor(v):
            t = v.detach().to(device=self.device, dtype=self.dtype)
        else:
            t = torch.as_tensor(np.asarray(v, dtype=np.float64)).to(device=self.device, dtype=self.dtype)
        if t.shape != (size,):
            raise ValueError(f"{what} must have shape ({size},), got {tuple(t.shape)}")
        return t

    def statistics(self) -> list[torch.Tensor]:
        """The statistic tensors, in a fixed order: what a distributed run sums over processes."""
        return [self.count, self.sum_x, self.sum_z, self.xx, *self.zx_blocks, self.zz, self.n_varying]

    def zx(self, cells: Sequence[int] | None = None, targets: slice = slice(None)) -> torch.Tensor:
        """``Z^T X`` summed over ``cells`` (default: all): ``(k_targets, p)``, shifted coordinates."""
        cells = list(range(self.n_cells)) if cells is None else list(cells)
        return torch.cat([blk[cells, targets].sum(0) for blk in self.zx_blocks], dim=1)

    # ------------------------------------------------------------------ accumulation
    def update(self, X_batch: Any, Z_batch: Any, fold_batch: Any, group_batch: Any = None) -> None:
        """Add a batch of images.

        Args:
            X_batch: ``(b, p)`` layer activations (numpy or torch, any float dtype).
            Z_batch: ``(b, k)`` target values.
            fold_batch: ``(b,)`` integer fold of each image, in ``[0, n_folds)``.
            group_batch: ``(b,)`` group of each image within its fold, in ``[0, cells_per_fold)``
                (needed only when ``cells_per_fold > 1``).
        """
        X, Z = self._to_tensor(X_batch), self._to_tensor(Z_batch)
        if X.ndim != 2 or X.shape[1] != self.n_features_in:
            raise ValueError(f"X_batch must be (b, {self.n_features_in}), got {tuple(X.shape)}")
        if Z.ndim != 2 or Z.shape[1] != self.n_targets:
            raise ValueError(f"Z_batch must be (b, {self.n_targets}), got {tuple(Z.shape)}")
        folds = _int_ids(fold_batch, self.n_folds, "fold ids")
        if group_batch is None and self.cells_per_fold > 1:
            raise ValueError(f"group_batch is needed with cells_per_fold={self.cells_per_fold}")
        groups = np.zeros_like(folds) if group_batch is None else _int_ids(
            group_batch, self.cells_per_fold, "group ids")
        if folds.ndim != 1 or not (X.shape[0] == Z.shape[0] == folds.shape[0] == groups.shape[0]):
            raise ValueError(
                f"batch row counts differ: X {X.shape[0]}, Z {Z.shape[0]}, folds "
                f"{tuple(folds.shape)}, groups {tuple(groups.shape)}"
            )
        if X.shape[0] == 0:
            return
        if self.shift_x is None:
            self.shift_x = X.mean(0)
        if self.shift_z is None:
            self.shift_z = _target_shift(Z)
        if self.z_reference is None:
            self.z_reference = Z[0].clone()
        chunk = _prepare_targets(Z, folds * self.cells_per_fold + groups, self.n_cells, self.shift_z,
                                 self.z_reference, self.sparse_max_density)
        self._add(X.index_select(0, chunk.order) - self.shift_x, chunk)

    def _add(self, Xs: torch.Tensor, chunk: _TargetChunk) -> None:
        """Accumulate ``(b, p)`` shifted activations in the cell order of a prepared target chunk."""
        for c in range(self.n_cells):
            r0, r1 = chunk.bounds[c], chunk.bounds[c + 1]
            if r1 == r0:
                continue
            Xc = Xs[r0:r1]
            self.sum_x[c] += Xc.sum(0)
            _add_upper_gram_(self.xx[c], Xc, self._blocks)
            if chunk.dense is not None:
                for (b0, b1), blk in zip(self._blocks, self.zx_blocks):
                    blk[c].addmm_(chunk.dense[r0:r1].T, Xc[:, b0:b1])
        if chunk.sparse is not None:
            for (b0, b1), blk in zip(self._blocks, self.zx_blocks):
                flat = blk.view(self.n_cells * self.n_targets, b1 - b0)
                xs_b = Xs[:, b0:b1] if len(self._blocks) == 1 else Xs[:, b0:b1].contiguous()
                torch.addmm(flat, chunk.sparse, xs_b, out=flat)  # in place: no temporary
        self.count += chunk.counts
        self.sum_z += chunk.sum_z
        self.zz += chunk.zz
        self.n_varying += chunk.n_varying

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
        return (self.n_varying == 0).cpu().numpy()

    # ------------------------------------------------------------------ solving
    def _check_ready(self) -> None:
        fold_count = self.count.view(self.n_folds, self.cells_per_fold).sum(1)
        n_tr = fold_count.sum() - fold_count
        if self.shift_x is None or bool((fold_count < 1).any()) or bool((n_tr < 2).any()):
            raise ValueError(
                "every fold needs at least 1 image and every training split at least 2; got "
                f"fold counts {fold_count.to(torch.int64).tolist()} (feed more images with "
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
        sse, null = _held_out_tables(self, _check_alphas(alphas))
        return (_sum_cells(sse).clamp(min=0.0).cpu().numpy(),
                _sum_cells(null).clamp(min=0.0).cpu().numpy())

    def held_out_cells(self, alphas: Sequence[float] = DEFAULT_ALPHAS) -> tuple[np.ndarray, np.ndarray]:
        """Held-out SSE per cell: ``(C, n_alphas, k)`` of the probes and ``(C, k)`` of the null
        model (cell ``c`` belongs to fold ``c // cells_per_fold``); they sum to
        :meth:`held_out_sse` before its clamp at 0."""
        sse, null = _held_out_tables(self, _check_alphas(alphas))
        return sse.cpu().numpy(), null.cpu().numpy()

    def v_information(self, alphas: Sequence[float] = DEFAULT_ALPHAS) -> tuple[np.ndarray, np.ndarray]:
        """Held-out ``I_V(f_l -> z)`` for every target, penalty chosen per target.

        Args:
            alphas: relative ridge penalties to choose from, each > 0.

        Returns:
            ``I_V`` ``(k,)`` in [0, 1] and the chosen relative penalty ``(k,)`` (``nan`` for
            constant targets, whose ``I_V`` is 0; a warning says how many).
        """
        grid = _check_alphas(alphas)
        sel = _select(*_held_out_tables(self, grid), grid, self.constant_targets(), replicates=False)
        _warn_constant(int(sel.constant.sum()), self.n_targets)
        return sel.iv, sel.alpha

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
        assert self.shift_z is not None  # set with shift_x, at the latest by the first update() with rows
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
        idx = torch.from_numpy(targets).to(self.device)
        N = self.count.sum()
        mu_x, mu_z = self.sum_x.sum(0) / N, self.sum_z.sum(0) / N
        Sxx = _mirror_upper(self.xx.sum(0), self._blocks) - N * torch.outer(mu_x, mu_x)
        Sxz = self.zx()[idx].T - N * torch.outer(mu_x, mu_z[idx])  # (p, t)
        e, V = torch.linalg.eigh(0.5 * (Sxx + Sxx.T))
        e = e.clamp(min=0.0)
        Q = V.T @ Sxz
        W = torch.zeros(p, len(targets), device=self.device, dtype=self.dtype)
        sub = alpha_arr[targets]
        # one solve per distinct penalty (at most the size of the grid), not per target
        for value in np.unique(sub[np.isfinite(sub)]):
            cols = torch.from_numpy(np.flatnonzero(sub == value)).to(self.device)
            denom = e + value * e.sum() / p
            D = torch.where(denom > 0, 1.0 / torch.where(denom > 0, denom, 1.0), 0.0)
            W[:, cols] = V @ (D[:, None] * Q[:, cols])
        mean_x = mu_x + self.shift_x  # back to the original (unshifted) coordinates
        mean_z = (mu_z + self.shift_z)[idx]
        b = mean_z - W.T @ mean_x
        W_np, b_np = W.cpu().numpy(), b.cpu().numpy()
        if target_index is not None:
            return W_np[:, 0], float(b_np[0])
        return W_np, b_np


def _target_shift(Z: torch.Tensor) -> torch.Tensor:
    """``(k,)`` shift of each target column: its mean where the mean exceeds the standard
    deviation (there the centred sums lose digits), else 0 (keeps zeros of sparse codes)."""
    m = Z.mean(0)
    sd = Z.std(0, correction=0) if Z.shape[0] > 1 else torch.zeros_like(m)
    return torch.where(m.abs() > sd, m, torch.zeros_like(m))


def _int_ids(ids: Any, n_max: int, what: str) -> np.ndarray:
    arr = ids.detach().cpu().numpy() if torch.is_tensor(ids) else np.asarray(ids)
    if arr.size and (arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer)):
        raise ValueError(f"{what} must be integers, got dtype {arr.dtype}")
    arr = arr.astype(np.int64)
    if arr.size and (arr.min() < 0 or arr.max() >= n_max):
        raise ValueError(f"{what} must lie in [0, {n_max}), got range [{arr.min()}, {arr.max()}]")
    return arr


# ---------------------------------------------------------------------- the solve
@dataclass
class _FoldModel:
    """Training side of one fold: means, eigenbasis of the training scatter, penalty factors."""

    cells: list[int]
    n_tr: torch.Tensor
    mu_x: torch.Tensor  # (p,)
    mu_z: torch.Tensor  # (k,)
    V: torch.Tensor  # (p, p) eigenvectors, columns
    D: torch.Tensor  # (n_alphas, p): 1 / (e_i + lambda); all 0 for a constant layer (tr = 0)
    kernel: torch.Tensor  # (p, p): 1 / (e_j - e_i) across clusters, 0 within
    members: torch.Tensor | None  # eigen-directions in clusters of size >= 2
    same: torch.Tensor | None  # (u, u) bool: members in the same cluster
    trivial: bool  # constant layer: every probe is w = 0


def _eigh(S: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Ascending eigenvalues and eigenvectors of a symmetric matrix. On the CPU through SciPy's
    LAPACK (divide and conquer): at p = 2048 it took 3.0 s of CPU against 5.0-5.7 s for torch's
    MKL build on this project's AMD machine (equal at p = 1024), with as many BLAS threads as
    torch is allowed. Small matrices stay with torch (the thread-limit context costs ~ms)."""
    if S.device.type != "cpu" or S.dtype != torch.float64 or S.shape[0] < 512:
        return torch.linalg.eigh(S)
    import scipy.linalg
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=torch.get_num_threads(), user_api="blas"):
        e, V = scipy.linalg.eigh(S.numpy(), driver="evd", check_finite=False)
    return torch.from_numpy(e), torch.from_numpy(V)


def _eigen_clusters(e: torch.Tensor, lam_min: float) -> torch.Tensor:
    """``(p,)`` cluster label of each (ascending) eigenvalue: consecutive eigenvalues closer
    than ``_CLUSTER_RTOL * (e + lam_min)`` share a label (chains merge)."""
    join = (e[1:] - e[:-1]) < _CLUSTER_RTOL * (e[1:] + lam_min)
    return torch.cat([torch.zeros(1, dtype=torch.int64, device=e.device), torch.cumsum(~join, 0)])


def _fold_model(st: RidgeProbeStats, tot: dict[str, torch.Tensor], f: int, alphas: np.ndarray) -> _FoldModel:
    """Fit the training side of fold ``f``: one eigendecomposition gives every penalty."""
    p = st.n_features_in
    cells = list(range(f * st.cells_per_fold, (f + 1) * st.cells_per_fold))
    n_tr = tot["N"] - st.count[cells].sum()
    mu_x = (tot["sx"] - st.sum_x[cells].sum(0)) / n_tr  # (p,) training means (shifted coords)
    mu_z = (tot["sz"] - st.sum_z[cells].sum(0)) / n_tr  # (k,)
    xx_f = _mirror_upper(st.xx[cells].sum(0), st._blocks)
    Sxx = (tot["xx"] - xx_f) - n_tr * torch.outer(mu_x, mu_x)
    e, V = _eigh(0.5 * (Sxx + Sxx.T))
    e = e.clamp(min=0.0)  # rounding can leave tiny negative eigenvalues on a PSD matrix
    trace = float(e.sum())
    a = torch.as_tensor(alphas, device=st.device, dtype=st.dtype)
    lam = a * (trace / p)  # (n_alphas,) absolute penalties
    denom = e[None, :] + lam[:, None]
    # a constant layer (tr = 0) gives 0 / 0: its probe is w = 0, the null model
    D = torch.where(denom > 0, 1.0 / torch.where(denom > 0, denom, 1.0), 0.0)
    labels = _eigen_clusters(e, float(lam.min()))
    same_all = labels[:, None] == labels[None, :]
    diff = e[None, :] - e[:, None]  # diff[i, j] = e_j - e_i
    kernel = torch.where(same_all, 0.0, 1.0 / torch.where(same_all, 1.0, diff))
    sizes = torch.bincount(labels)
    members = torch.nonzero(sizes[labels] > 1).flatten()
    if members.numel() == 0:
        members_opt, same = None, None
    else:
        members_opt, same = members, same_all[members][:, members]
    return _FoldModel(cells, n_tr, mu_x, mu_z, V, D, kernel, members_opt, same, trivial=trace <= 0)


@dataclass
class _TestSide:
    """Held-out images of a subset of cells, centred at the fold's training means."""

    cells: list[int]
    n: torch.Tensor
    sx: torch.Tensor  # (p,)
    sz: torch.Tensor  # (k,)
    czz: torch.Tensor  # (k,) held-out null error
    G: torch.Tensor | None  # (p, p) M_ij / (e_j - e_i) across clusters
    diag: torch.Tensor | None  # (p,) M_ii of unclustered directions (0 for cluster members)
    block: torch.Tensor | None  # (u, u) M restricted to same-cluster pairs of members


def _test_side(st: RidgeProbeStats, fm: _FoldModel, cells: list[int]) -> _TestSide:
    """``k``-independent part of the held-out error of ``cells``: ``M = V^T Cxx V`` and ``G``."""
    n = st.count[cells].sum()
    sx, sz = st.sum_x[cells].sum(0), st.sum_z[cells].sum(0)
    czz = st.zz[cells].sum(0) - 2.0 * fm.mu_z * sz + n * fm.mu_z * fm.mu_z
    if fm.trivial:
        return _TestSide(cells, n, sx, sz, czz, None, None, None)
    mu = fm.mu_x
    xx = _mirror_upper(st.xx[cells].sum(0), st._blocks)
    Cxx = xx - torch.outer(mu, sx) - torch.outer(sx, mu) + n * torch.outer(mu, mu)
    M = fm.V.T @ Cxx @ fm.V
    M = 0.5 * (M + M.T)  # the quadratic form sees only the symmetric part; G needs M_ij = M_ji
    diag = torch.diagonal(M).clone()
    block = None
    if fm.members is not None:
        assert fm.same is not None  # set together with members
        diag[fm.members] = 0.0
        block = torch.where(fm.same, M[fm.members][:, fm.members], 0.0)
    return _TestSide(cells, n, sx, sz, czz, M * fm.kernel, diag, block)


def _penalty_sweep(czz: torch.Tensor, Q: torch.Tensor, Cq: torch.Tensor, R: torch.Tensor,
                   side: _TestSide, fm: _FoldModel) -> torch.Tensor:
    """``(n_alphas, kc)`` held-out SSE for every penalty, ``O(p kc)`` each.

    ``Q`` (kc, p) the training cross-scatter in the eigenbasis, ``Cq`` the held-out one, ``R =
    Q G^T`` (overwritten); ``SSE = czz + 2 sum_i D_i q_i (r_i - c_i) + sum_i D_i^2 M_ii q_i^2 +
    cluster blocks``.
    """
    D = fm.D
    assert side.diag is not None  # only non-trivial folds are swept (_solve_chunk)
    lin = R.sub_(Cq).mul_(Q)  # in place: R is not needed afterwards
    out = czz[None, :] + 2.0 * (D @ lin.T) + (D * D) @ ((Q * Q) * side.diag).T
    if fm.members is not None:
        Qm, Dm = Q[:, fm.members], D[:, fm.members]
        assert side.block is not None  # _test_side sets it whenever fm.members is set
        for t in range(D.shape[0]):  # exact pairs within clusters, a small block per penalty
            Y = Qm * Dm[t]
            out[t] += ((Y @ side.block) * Y).sum(1)
    return out


def _held_out_tables(st: RidgeProbeStats, alphas: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Held-out SSE of every cell: ``(C, n_alphas, k)`` for the probes, ``(C, k)`` for the null.

    Per fold: the training model (:func:`_fold_model`), the test side of the whole fold and of
    its first ``cells_per_fold - 1`` cells (:func:`_test_side`); the last cell is the fold minus
    the others. Targets are solved in chunks of ``_SOLVE_CHUNK``.
    """
    st._check_ready()
    G, C, k = st.cells_per_fold, st.n_cells, st.n_targets
    tot = {"N": st.count.sum(), "sx": st.sum_x.sum(0), "sz": st.sum_z.sum(0),
           "xx": _mirror_upper(st.xx.sum(0), st._blocks), "zx": st.zx()}
    sse = torch.zeros(C, len(alphas), k, device=st.device, dtype=st.dtype)
    null = torch.zeros(C, k, device=st.device, dtype=st.dtype)
    for f in range(st.n_folds):
        fm = _fold_model(st, tot, f, alphas)
        sides = [_test_side(st, fm, fm.cells)] + [_test_side(st, fm, [c]) for c in fm.cells[:-1]]
        slots = [None] + fm.cells[:-1]  # where each side's result goes (None: the fold total)
        fold_sse = torch.zeros(len(alphas), k, device=st.device, dtype=st.dtype)
        for j0 in range(0, k, _SOLVE_CHUNK):
            J = slice(j0, min(k, j0 + _SOLVE_CHUNK))
            _solve_chunk(st, tot, fm, sides, slots, J, sse, fold_sse)
        if G == 1:
            sse[f], null[f] = fold_sse, sides[0].czz
        else:
            last = fm.cells[-1]
            sse[last] = fold_sse - sse[fm.cells[:-1]].sum(0)
            for side, slot in zip(sides[1:], slots[1:]):
                null[slot] = side.czz
            null[last] = sides[0].czz - null[fm.cells[:-1]].sum(0)
    return sse, null


def _solve_chunk(st: RidgeProbeStats, tot: dict[str, torch.Tensor], fm: _FoldModel,
                 sides: list[_TestSide], slots: list[int | None], J: slice, sse: torch.Tensor,
                 fold_sse: torch.Tensor) -> None:
    """Fill ``fold_sse[:, J]`` and ``sse[slot, :, J]`` for one chunk of targets ``J``."""
    if fm.trivial:  # w = 0 for every penalty: the probe is the null model
        for side, slot in zip(sides, slots):
            (fold_sse if slot is None else sse[slot])[:, J] = side.czz[J]
        return
    mu_z = fm.mu_z[J]
    mu_x_v = fm.mu_x @ fm.V  # (p,) the rank-one centring terms, rotated once
    zx_f = st.zx(fm.cells, J)  # (kc, p)
    # training Sxz^T = (total - fold) - n_tr mu_z mu_x^T, rotated: W_alpha^T = Q diag(D_alpha) V^T
    Q = (tot["zx"][J] - zx_f) @ fm.V
    Q.addr_(mu_z, mu_x_v, alpha=-float(fm.n_tr))
    for side, slot in zip(sides, slots):
        zx_s = zx_f if slot is None else st.zx([slot], J)
        # held-out Cxz^T at the training means: zx - (sz - n mu_z) mu_x^T - mu_z sx^T, rotated
        Cq = zx_s @ fm.V
        Cq.addr_(side.sz[J] - side.n * mu_z, mu_x_v, alpha=-1.0)
        Cq.addr_(mu_z, side.sx @ fm.V, alpha=-1.0)
        assert side.G is not None  # a non-trivial fold
        R = Q @ side.G.T
        out = _penalty_sweep(side.czz[J], Q, Cq, R, side, fm)
        (fold_sse if slot is None else sse[slot])[:, J] = out
        del Cq, R


# ---------------------------------------------------------------------- selection, intervals
@dataclass
class _Selection:
    """Chosen penalty and ``I_V`` of every target of one layer."""

    iv: np.ndarray  # (k,) clip(1 - SSE/SSE0, 0, 1)
    alpha: np.ndarray  # (k,) chosen relative penalty, nan for constant targets
    constant: np.ndarray  # (k,) bool
    raw: np.ndarray | None = None  # (k,) 1 - SSE/SSE0 before the clip
    replicates: np.ndarray | None = None  # (C, k) delete-one-cell 1 - (SSE - SSE_c)/(SSE0 - SSE0_c)


def _select(sse_cells: torch.Tensor, null_cells: torch.Tensor, alphas: np.ndarray,
            constant_targets: np.ndarray, *, replicates: bool) -> _Selection:
    """Smallest pooled held-out SSE per target; optionally the delete-one-cell replicates."""
    sse = _sum_cells(sse_cells).clamp(min=0.0)
    sse_null = _sum_cells(null_cells).clamp(min=0.0)
    best = sse.argmin(0)  # (k,)
    sse_best = sse.gather(0, best[None, :])[0]
    constant = torch.from_numpy(constant_targets).to(sse.device) | (sse_null <= 0)
    safe_null = torch.where(constant, torch.ones_like(sse_null), sse_null)
    raw = torch.where(constant, torch.zeros_like(sse_null), 1.0 - sse_best / safe_null)
    chosen = np.asarray(alphas, dtype=np.float64)[best.cpu().numpy()]
    constant_np = constant.cpu().numpy()
    chosen[constant_np] = np.nan
    sel = _Selection(raw.clamp(0.0, 1.0).cpu().numpy(), chosen, constant_np)
    if replicates:
        C = sse_cells.shape[0]
        a = sse_cells.gather(1, best[None, None, :].expand(C, 1, -1))[:, 0]  # (C, k) at the choice
        rest_null = sse_null[None, :] - null_cells
        ok = (rest_null > 0) & ~constant[None, :]
        rep = 1.0 - (sse_best[None, :] - a) / torch.where(ok, rest_null, 1.0)
        rep = torch.where(ok, rep, raw[None, :].expand_as(rep))  # an empty/degenerate cell: no change
        sel.raw, sel.replicates = raw.cpu().numpy(), rep.cpu().numpy()
    return sel


def _sum_cells(t: torch.Tensor) -> torch.Tensor:
    """Sum over the leading (cell) axis, one cell at a time: the same order of additions for the
    probe and the null tables, so that a probe equal to the null model gives exactly I_V = 0."""
    total = t[0].clone()
    for c in range(1, t.shape[0]):
        total += t[c]
    return total


def _jackknife_halfwidth(replicates: np.ndarray, confidence: float) -> np.ndarray:
    """``(k,)`` half-width ``t_{C-1} * se`` of the delete-one-cell jackknife, ``(C, k)`` input."""
    from scipy.stats import t as student_t

    C = replicates.shape[0]
    dev = replicates - replicates.mean(0, keepdims=True)
    se = np.sqrt((C - 1) / C * np.sum(dev * dev, axis=0))
    return float(student_t.ppf(0.5 + confidence / 2.0, C - 1)) * se


# ---------------------------------------------------------------------- passes and memory
def _layer_bytes(p: int, k: int, n_cells: int, cells_per_fold: int, n_alphas: int) -> tuple[int, int]:
    """Bytes of one layer's statistics and of its solve workspace (float64)."""
    stats = 8 * (n_cells * (p * p + p * k + p + 2 * k + 1) + k)
    kc = min(k, _SOLVE_CHUNK)
    solve = 8 * (p * k + (10 + 3 * cells_per_fold) * p * p + 10 * p * kc
                 + 2 * n_cells * n_alphas * k)
    return stats, solve


def _plan_passes(widths: Sequence[int], k: int, n_cells: int, cells_per_fold: int, n_alphas: int,
                 batch_size: int, budget_bytes: float) -> list[tuple[list[int], slice]]:
    """Groups of layers (and target slices) whose statistics fit the memory budget together.

    Every group is one pass over the images; a pass holds its layers' statistics plus the
    workspace of its largest solve and the chunk buffers. Targets are split into equal slices
    only if the widest layer does not fit alone.
    """
    def buffers(kj: int) -> int:  # a target chunk (dense, shifted, sorted) and a layer chunk
        return 8 * batch_size * (3 * kj + 3 * max(widths))

    def fits(group: list[int], kj: int) -> bool:
        parts = [_layer_bytes(widths[i], kj, n_cells, cells_per_fold, n_alphas) for i in group]
        return sum(s for s, _ in parts) + max(w for _, w in parts) + buffers(kj) <= budget_bytes

    widest = int(np.argmax(widths))
    n_slices = 1
    while not fits([widest], math.ceil(k / n_slices)):
        if n_slices >= k:
            need = _layer_bytes(widths[widest], 1, n_cells, cells_per_fold, n_alphas)
            raise ValueError(
                f"max_memory_gb={budget_bytes / 2**30:.3g} is too small for a layer of width "
                f"{widths[widest]}: one target alone needs about {sum(need) / 2**30:.3g} GiB; raise "
                "max_memory_gb, use fewer folds/cells or a smaller batch_size"
            )
        n_slices = min(k, n_slices * 2)
    edges = np.linspace(0, k, n_slices + 1).round().astype(int)
    plan: list[tuple[list[int], slice]] = []
    for j0, j1 in zip(edges[:-1], edges[1:]):
        group: list[int] = []
        for li in range(len(widths)):
            if group and not fits(group + [li], int(j1 - j0)):
                plan.append((group, slice(int(j0), int(j1))))
                group = []
            group.append(li)
        plan.append((group, slice(int(j0), int(j1))))
    return plan


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
    confidence: float | None = 0.95,
    cells_per_fold: int = 2,
    rows: np.ndarray | None = None,
    reduce: Reduce | None = None,
    max_memory_gb: float = 4.0,
) -> ComplexityResult:
    """Complexity ``K`` and per-layer V-information ``I_V`` of every feature (see module doc).

    Args:
        layers: ``{name: (n_images, C_l)}`` in forward order, or a sequence of such arrays
            (named ``"layer0"``, ``"layer1"``, ...). Arrays may be ``np.memmap``: they are read
            in row chunks of ``batch_size`` and never loaded whole.
        values: ``(n_images, k)`` feature values ``Z`` (or ``(n_images,)`` for one feature).
        n_folds: cross-validation folds for the held-out errors.
        alphas: relative ridge penalties (multiples of ``tr(Sxx) / p``) to choose from.
        seed: seed of :func:`fold_assignment` and :func:`cell_assignment` (the folds are
            ignored when ``fold_ids`` is given).
        device: torch device for the statistics and solves (``"cpu"`` or ``"cuda"``).
        batch_size: rows read and accumulated at a time.
        fold_ids: optional ``(n_images,)`` integer folds in ``[0, n_folds)``, overriding ``seed``.
        progress: show a progress bar.
        confidence: level of the jackknife intervals of ``I_V`` and ``K`` (e.g. 0.95); ``None``
            turns them off (and their cost: about +2/3 of the solve).
        cells_per_fold: jackknife cells per fold (``n_folds * cells_per_fold`` cells in all).
        rows: ``(m,)`` indices of the images THIS process accumulates (default: all); the
            results are only complete after ``reduce`` has summed every process's statistics.
        reduce: ``reduce(tensors)`` sums a list of statistic tensors over processes in place
            (e.g. ``distributed.current().all_reduce_``); called once per group of layers, in
            the same order on every process.
        max_memory_gb: budget for the statistics and solve workspace held at a time; layers
            are accumulated in groups (one pass over the images each) that fit it.

    Returns:
        :class:`ComplexityResult` with ``score`` ``(k,)``, ``per_layer`` ``(n_layers, k)``,
        ``alpha`` ``(n_layers, k)`` and, with ``confidence``, their intervals.
    """
    run = _setup(layers, values, n_folds=n_folds, alphas=alphas, seed=seed, device=device,
                 batch_size=batch_size, fold_ids=fold_ids, confidence=confidence,
                 cells_per_fold=cells_per_fold, rows=rows, reduce=reduce, max_memory_gb=max_memory_gb)
    n_layers, k = len(run.names), run.k
    out = _Outputs(np.zeros((n_layers, k)), np.zeros((n_layers, k)), np.zeros(k, dtype=bool),
                   None if run.confidence is None else np.zeros((2, n_layers, k)),
                   None if run.confidence is None else np.zeros((run.n_cells, k)))
    bar = None
    if progress:
        from tqdm.auto import tqdm

        n_rows = n_layers * (run.n if run.rows is None else len(run.rows))
        bar = tqdm(total=n_rows * len({p[1].start for p in run.plan}), unit="img", desc="complexity")
    checked: set[tuple[str, int]] = set()
    for group, J in run.plan:
        stats = _accumulate_pass(run, group, J, checked, bar)
        if run.reduce is not None:
            run.reduce([t for li in group for t in stats[li].statistics()])
        for li in group:
            _score_layer(run, stats.pop(li), li, J, out)
            if run.device.type == "cuda":
                torch.cuda.empty_cache()
    if bar is not None:
        bar.close()
    _warn_constant(int(out.constant.sum()), k)
    return _result(run, out)


@dataclass
class _Run:
    """Validated inputs and the fixed, process-independent choices of one run."""

    names: list[str]
    arrays: list[Any]
    Z: Any
    n: int
    k: int
    n_folds: int
    cells_per_fold: int
    n_cells: int
    cells: np.ndarray  # (n,) cell of every image
    grid: np.ndarray
    device: torch.device
    batch_size: int
    confidence: float | None
    rows: np.ndarray | None  # sorted image indices of this process, None = all
    reduce: Reduce | None
    plan: list[tuple[list[int], slice]]
    shift_x: list[np.ndarray]  # per layer (p,), from the global first rows
    shift_z: np.ndarray  # (k,)
    z_reference: np.ndarray  # (k,) raw first row of the values


@dataclass
class _Outputs:
    per_layer: np.ndarray  # (n_layers, k)
    alpha: np.ndarray  # (n_layers, k)
    constant: np.ndarray  # (k,)
    bounds: np.ndarray | None  # (2, n_layers, k) lo, hi
    k_reps: np.ndarray | None  # (C, k) sum over layers of the clipped replicates


def _setup(layers: Any, values: Any, *, n_folds: int, alphas: Sequence[float], seed: int,
           device: str, batch_size: int, fold_ids: Any, confidence: float | None,
           cells_per_fold: int, rows: Any, reduce: Reduce | None, max_memory_gb: float) -> _Run:
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
    if confidence is not None and not (0.0 < float(confidence) < 1.0):
        raise ValueError(f"confidence must lie in (0, 1) (e.g. 0.95) or be None, got {confidence}")
    if int(cells_per_fold) != cells_per_fold or cells_per_fold < 1:
        raise ValueError(f"cells_per_fold must be an integer >= 1, got {cells_per_fold}")
    if reduce is not None and not callable(reduce):
        raise ValueError("reduce must be a function reduce(list_of_tensors) that sums in place")
    if not (max_memory_gb > 0):
        raise ValueError(f"max_memory_gb must be > 0, got {max_memory_gb}")
    grid = _check_alphas(alphas)
    dev = _check_device(device)
    folds = _check_folds(fold_ids, n, n_folds) if fold_ids is not None else fold_assignment(
        n, n_folds, seed
    )
    G = int(cells_per_fold) if confidence is not None else 1
    cells = cell_assignment(folds, n_folds, G, seed)
    head = min(n, batch_size)  # the shift rows: the same on every process
    shift_x = [_read_chunk(X, slice(0, head), f"layer '{name}'").astype(np.float64).mean(0)
               for name, X in zip(names, arrays)]
    zh = torch.from_numpy(_read_chunk(Z, slice(0, head), "values").astype(np.float64))
    plan = _plan_passes([X.shape[1] for X in arrays], k, n_folds * G, G, len(grid), batch_size,
                        max_memory_gb * 2**30)
    return _Run(names, arrays, Z, n, k, n_folds, G, n_folds * G, cells, grid, dev, batch_size,
                None if confidence is None else float(confidence), _check_rows(rows, n), reduce,
                plan, shift_x, _target_shift(zh).numpy(), zh[0].numpy().copy())


def _row_chunks(run: _Run) -> Iterator[tuple[slice | np.ndarray, np.ndarray]]:
    """``(rows to read, their cells)`` chunks of this process's images, in index order."""
    spec: slice | np.ndarray
    if run.rows is None:
        for start in range(0, run.n, run.batch_size):
            spec = slice(start, min(start + run.batch_size, run.n))
            yield spec, run.cells[spec]
    else:
        for start in range(0, len(run.rows), run.batch_size):
            spec = run.rows[start:start + run.batch_size]
            yield spec, run.cells[spec]


def _accumulate_pass(run: _Run, group: list[int], J: slice, checked: set[tuple[str, int]],
                     bar: Any) -> dict[int, RidgeProbeStats]:
    """One pass over this process's images: the statistics of the layers in ``group``, targets
    ``J``. The target chunk is prepared (sorted, shifted, made sparse) once for all layers."""
    kj = J.stop - J.start
    stats = {li: RidgeProbeStats(run.arrays[li].shape[1], kj, run.n_folds, run.device,
                                 cells_per_fold=run.cells_per_fold, shift_x=run.shift_x[li],
                                 shift_z=run.shift_z[J], z_reference=run.z_reference[J])
             for li in group}
    first = stats[group[0]]
    check_z = ("values", J.start) not in checked
    for spec, cells in _row_chunks(run):
        zb = _read_chunk(run.Z, spec, "values", check=False)[:, J]
        if check_z:  # the values are the same in every pass: check them in the first only
            _check_finite(zb, spec, "values", col_offset=J.start)
        zt = torch.from_numpy(np.ascontiguousarray(zb)).to(run.device)  # widened where needed
        assert first.shift_z is not None and first.z_reference is not None  # given to the constructor
        chunk = _prepare_targets(zt, cells, run.n_cells, first.shift_z, first.z_reference,
                                 first.sparse_max_density)
        del zb, zt
        for li in group:
            name = run.names[li]
            xb = _read_chunk(run.arrays[li], spec, f"layer '{name}'",
                             check=(name, li) not in checked)
            xs = torch.from_numpy(xb).to(run.device).index_select(0, chunk.order).to(torch.float64)
            shift_x = stats[li].shift_x
            assert shift_x is not None  # given to the constructor
            stats[li]._add(xs - shift_x, chunk)
            del xb, xs  # else the previous chunk is still alive while the next one is read
            if bar is not None:
                bar.update(len(cells))
                bar.set_postfix(layer=name)
        del chunk
    checked.update({(run.names[li], li) for li in group} | {("values", J.start)})
    return stats


def _score_layer(run: _Run, st: RidgeProbeStats, li: int, J: slice, out: _Outputs) -> None:
    """Solve one layer's probes and write its ``I_V``, penalties and interval replicates."""
    with_ci = run.confidence is not None
    sel = _select(*_held_out_tables(st, run.grid), run.grid, st.constant_targets(),
                  replicates=with_ci)
    out.per_layer[li, J], out.alpha[li, J] = sel.iv, sel.alpha
    out.constant[J] |= sel.constant
    if with_ci:
        assert sel.replicates is not None and run.confidence is not None  # replicates=with_ci
        assert out.bounds is not None and out.k_reps is not None  # allocated when confidence is set
        half = _jackknife_halfwidth(sel.replicates, run.confidence)
        out.bounds[0, li, J] = np.clip(sel.raw - half, 0.0, 1.0)
        out.bounds[1, li, J] = np.clip(sel.raw + half, 0.0, 1.0)
        out.k_reps[:, J] += np.clip(sel.replicates, 0.0, 1.0)


def _result(run: _Run, out: _Outputs) -> ComplexityResult:
    score = 1.0 - out.per_layer.mean(0)
    res = ComplexityResult(score=score, per_layer=out.per_layer, layer_names=list(run.names),
                           alpha=out.alpha, n_images=run.n, n_folds=run.n_folds)
    if run.confidence is not None:
        # K replicates with the same cells in every layer: the layers share their images
        assert out.k_reps is not None and out.bounds is not None  # allocated when confidence is set
        k_reps = 1.0 - out.k_reps / len(run.names)
        half = _jackknife_halfwidth(k_reps, run.confidence)
        res.confidence, res.n_cells = run.confidence, run.n_cells
        res.score_lo = np.clip(score - half, 0.0, 1.0)
        res.score_hi = np.clip(score + half, 0.0, 1.0)
        res.per_layer_lo, res.per_layer_hi = out.bounds[0], out.bounds[1]
    return res


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


def _read_chunk(X: Any, spec: slice | np.ndarray, what: str, *, check: bool = True) -> np.ndarray:
    """Rows ``spec`` of ``X`` as an in-memory float32/float64 array (finite when ``check``)."""
    chunk = np.asarray(X[spec])
    if chunk.dtype not in (np.float32, np.float64):
        chunk = chunk.astype(np.float64)
    elif isinstance(chunk, np.memmap) or not chunk.flags.writeable:
        chunk = np.array(chunk)  # read the rows from disk once, into ordinary memory
    if check:
        _check_finite(chunk, spec, what)
    return chunk


def _check_finite(chunk: np.ndarray, spec: slice | np.ndarray, what: str, col_offset: int = 0) -> None:
    finite = np.isfinite(chunk)
    if not finite.all():
        row, col = np.argwhere(~finite)[0]
        image = spec.start + row if isinstance(spec, slice) else int(spec[row])
        raise ValueError(
            f"{what} has non-finite values (first at row {image}, column {col + col_offset}: "
            f"{chunk[row, col]}); remove or impute those images/values before computing complexity"
        )


def _check_rows(rows: Any, n: int) -> np.ndarray | None:
    if rows is None:
        return None
    arr = rows.detach().cpu().numpy() if torch.is_tensor(rows) else np.asarray(rows)
    if arr.ndim != 1 or (arr.size and not np.issubdtype(arr.dtype, np.integer)):
        raise ValueError(f"rows must be a 1-D array of image indices, got shape {arr.shape}, dtype {arr.dtype}")
    arr = np.sort(arr.astype(np.int64))
    if arr.size and (arr[0] < 0 or arr[-1] >= n):
        raise ValueError(f"rows must lie in [0, {n}), got range [{arr[0]}, {arr[-1]}]")
    if np.any(np.diff(arr) == 0):
        raise ValueError("rows has repeated indices; each image must be accumulated once")
    return arr


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
