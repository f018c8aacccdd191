"""Where do features flow: the skip branch against the main (residual) branch of every block.

Fel et al. (2024), Fig. 4 (``paper-method.md`` section 5): simple features are "teleported" to
the last layer by the skip connections, while complex ones are built up by the residual
branches. A residual block computes ``a_l = post(S_l(a_{l-1}) + F_l(a_{l-1}))`` with ``S_l`` the
**skip** branch (identity, projection shortcut, CIFAR option-A subsample-and-pad) and ``F_l`` the
**main** branch (the conv stack); ``post`` is usually a ReLU. For every block ``l`` and every
feature ``z`` (a column of the codes ``Z``, shape ``(n_images, k)``) this module measures how much
of ``z`` each of the pooled ``S_l``, ``F_l`` and ``a_l`` (shapes ``(n_images, C_l)``) carries:

- linear CKA (:mod:`feature_complexity.analyses.cka`), as in the paper's figure;
- V-information ``I_V(branch -> z)`` from the complexity engine (the paper's appendix).

Summary per feature, the **teleport depth**: the first block ``b`` such that at every block from
``b`` on the skip branch alone carries at least ``threshold`` (default 0.9) of the ``I_V`` that
the block output has::

    ok[l]  = I_V(S_l -> z) >= threshold * I_V(a_l -> z)      or   I_V(a_l -> z) < eps
    depth  = min { b : ok[l] for every l >= b }               (n_blocks when ok[last] is False)

A block whose output carries (almost) nothing of ``z`` (``I_V < eps``) has nothing to teleport,
so it never breaks the condition. ``depth == n_blocks`` means "never teleported": the last block's
main branch still adds what the skip path lacks. A low depth means the feature is already
present, and handed on by the skip path, early in the network. The paper's finding predicts a
positive correlation between teleport depth and complexity ``K``.

The depth is a hard threshold on the *last* blocks too, and the last block's output is the one
the penultimate vector (hence ``z``) is pooled from, so on small networks most features can end
up "never" at the default 0.9 (ResNet-20 on CIFAR-10 does). A continuous companion is the
**skip share**, the fraction of the block outputs' ``I_V`` that the skip branches carry, summed
over blocks::

    skip_share = sum_l I_V(S_l -> z) / sum_l I_V(a_l -> z)        (nan when the sum is < eps)

(an identity skip carries the previous block's output, so values slightly above 1 are possible).
The paper's finding predicts a negative correlation between skip share and ``K``.

Blocks are 0-indexed in forward order; ``blocks`` holds their names.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

__all__ = [
    "FlowResult",
    "flow_scores",
    "teleport_depth",
    "skip_share",
    "teleport_correlation",
    "flow_table",
    "flow_summary",
    "complexity_groups",
    "plot_flow",
    "STAGE",
]

_MEASURES = ("cka", "iv", "both")
_BRANCHES = ("skip", "main", "out")
#: ``I_V`` below this is "the block output carries nothing of the feature" (see module docstring)
DEFAULT_EPS = 1e-3


@dataclass
class FlowResult:
    """Per-block, per-feature flow measures (see the module docstring).

    Attributes:
        blocks: block names in forward order, ``len == n_blocks``.
        cka_skip, cka_main, cka_out: ``(n_blocks, k)`` linear CKA of the pooled skip branch, main
            branch and block output with each feature (``nan`` when not computed, or for a
            constant feature).
        iv_skip, iv_main, iv_out: ``(n_blocks, k)`` held-out ``I_V`` in [0, 1] (``nan`` when not
            computed).
        teleport_depth: ``(k,)`` int, first block from which the skip branch carries the feature
            (``n_blocks``: never); ``None`` when ``I_V`` was not computed.
        measure: ``"cka"``, ``"iv"`` or ``"both"``.
        threshold: the teleport threshold used.
        debiased: whether CKA used the unbiased HSIC.
        features: ``(k,)`` feature ids (column order of ``Z``).
        config: the remaining settings (``n_folds``, ``seed``, ``eps``), for the record.
        skip_share: ``(k,)`` ``sum_l iv_skip / sum_l iv_out`` (module docstring); ``None`` when
            ``I_V`` was not computed.
    """

    blocks: list[str]
    cka_skip: np.ndarray
    cka_main: np.ndarray
    cka_out: np.ndarray
    iv_skip: np.ndarray
    iv_main: np.ndarray
    iv_out: np.ndarray
    teleport_depth: np.ndarray | None
    measure: str
    threshold: float
    debiased: bool
    features: np.ndarray
    config: dict[str, Any] = field(default_factory=dict)
    skip_share: np.ndarray | None = None

    @property
    def n_blocks(self) -> int:
        return len(self.blocks)

    @property
    def n_features(self) -> int:
        return int(self.cka_skip.shape[1])


# ---------------------------------------------------------------------- measures
def _check_measure(measure: str) -> None:
    if measure not in _MEASURES:
        raise ValueError(f"unknown measure '{measure}'; use one of {', '.join(_MEASURES)}")


def _check_threshold(threshold: float) -> None:
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {threshold} (0.9 = skip carries 90% of I_V)")


def _block_order(layers: Mapping[str, Any], skip: Mapping[str, Any], main: Mapping[str, Any]) -> list[str]:
    """Blocks with both branches, in the forward order of ``layers``; validate the three dicts."""
    if not skip and not main:
        raise ValueError(
            "no skip/main branch activations were given; capture them with "
            "extract_activations(..., capture_branches=True) (the model's ModelSpec.branches "
            "must describe its residual blocks)"
        )
    for what, d in (("skip", skip), ("main", main)):
        extra = [n for n in d if n not in layers]
        if extra:
            raise ValueError(
                f"{what} branches are given for {extra}, which are not among the layers "
                f"({', '.join(layers)}); branches must be keyed by block name"
            )
    one_sided = sorted(set(skip) ^ set(main))
    if one_sided:
        raise ValueError(f"blocks {one_sided} have only one of the skip/main branches; give both")
    return [name for name in layers if name in skip]


def flow_scores(
    layers: Mapping[str, np.ndarray],
    skip: Mapping[str, np.ndarray],
    main: Mapping[str, np.ndarray],
    Z: np.ndarray,
    *,
    measure: str = "both",
    debiased: bool = False,
    n_folds: int = 5,
    seed: int = 0,
    threshold: float = 0.9,
    eps: float = DEFAULT_EPS,
    alphas: Sequence[float] | None = None,
    device: str = "cpu",
    features: np.ndarray | None = None,
    progress: bool = False,
) -> FlowResult:
    """CKA and/or ``I_V`` of each block's skip branch, main branch and output with every feature.

    Args:
        layers: ``{block: (n_images, C_l)}`` pooled block outputs, in forward order (blocks not
            in ``skip``/``main`` are ignored).
        skip: ``{block: (n_images, C_l)}`` pooled skip branch before the addition.
        main: ``{block: (n_images, C_l)}`` pooled main branch before the addition.
        Z: ``(n_images, k)`` feature values (codes).
        measure: ``"cka"``, ``"iv"`` or ``"both"``.
        debiased: debiased CKA (unbiased HSIC; needs ``n_images >= 4``).
        n_folds, seed, alphas: passed to the complexity engine for ``I_V``.
        device: torch device of the ``I_V`` probes and, when not ``"cpu"``, of the CKA sums.
        threshold, eps: teleport depth (see :func:`teleport_depth`).
        features: ``(k,)`` feature ids for the tables (default ``0..k-1``).
        progress: progress bars (CKA per block and branch; the engine's per layer).

    Returns:
        :class:`FlowResult`; arrays of a measure that was not asked for are ``nan``.
    """
    _check_measure(measure)
    _check_threshold(threshold)
    blocks = _block_order(layers, skip, main)
    sources = {"skip": skip, "main": main, "out": layers}
    Z, ids = _check_codes(Z, sources, blocks, features)
    k = Z.shape[1]

    nan = np.full((len(blocks), k), np.nan)
    cka = {b: nan.copy() for b in _BRANCHES}
    iv = {b: nan.copy() for b in _BRANCHES}
    if measure in ("cka", "both"):
        _fill_cka(cka, sources, blocks, Z, debiased=debiased, device=device, progress=progress)
    depth = share = None
    if measure in ("iv", "both"):
        iv = _iv_per_block(sources, blocks, Z, n_folds=n_folds, seed=seed, alphas=alphas, device=device,
                           progress=progress)
        depth = teleport_depth(iv["skip"], iv["out"], threshold, eps=eps)
        share = skip_share(iv["skip"], iv["out"], eps=eps)
    return FlowResult(
        blocks=blocks,
        cka_skip=cka["skip"], cka_main=cka["main"], cka_out=cka["out"],
        iv_skip=iv["skip"], iv_main=iv["main"], iv_out=iv["out"],
        teleport_depth=depth, measure=measure, threshold=float(threshold), debiased=bool(debiased),
        features=ids, config={"n_folds": n_folds, "seed": seed, "eps": eps,
                              "alphas": None if alphas is None else list(alphas)},
        skip_share=share,
    )


def _check_codes(Z: np.ndarray, sources: Mapping[str, Mapping[str, np.ndarray]], blocks: list[str],
                 features: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """``Z`` as ``(n_images, k)`` with as many rows as every branch array, and the ``(k,)`` feature ids."""
    Z = np.asarray(Z)  # no dtype cast: a float32 memmap stays on disk, chunks are read as needed
    if Z.ndim == 1:
        Z = Z[:, None]
    if Z.ndim != 2:
        raise ValueError(f"Z must have shape (n_images, k), got {Z.shape}")
    n, k = Z.shape
    for branch, d in sources.items():
        for name in blocks:
            if d[name].shape[0] != n:
                raise ValueError(
                    f"{branch} activations of block '{name}' have {d[name].shape[0]} rows but Z has "
                    f"{n}; they must hold one row per image, in the same order"
                )
    ids = np.arange(k) if features is None else np.asarray(features)
    if ids.shape != (k,):
        raise ValueError(f"features must hold {k} ids (one per column of Z), got shape {ids.shape}")
    return Z, ids


def _fill_cka(cka: dict[str, np.ndarray], sources: Mapping[str, Mapping[str, np.ndarray]], blocks: list[str],
              Z: np.ndarray, *, debiased: bool, device: str, progress: bool) -> None:
    """Fill ``cka[branch][block index]`` with the linear CKA of every branch and block with each feature."""
    from .cka import cka_with_features

    cka_device = None if str(device) == "cpu" else device  # numpy on the CPU, torch elsewhere

    jobs = [(branch, i, name) for branch in _BRANCHES for i, name in enumerate(blocks)]
    if progress:
        from tqdm.auto import tqdm

        jobs = tqdm(jobs, desc="flow CKA", unit="branch")
    for branch, i, name in jobs:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # constant features -> nan
            cka[branch][i] = cka_with_features(sources[branch][name], Z, debiased=debiased,
                                               device=cka_device)


def _iv_per_block(sources: Mapping[str, Mapping[str, np.ndarray]], blocks: list[str], Z: np.ndarray, *,
                  n_folds: int, seed: int, alphas: Sequence[float] | None, device: str,
                  progress: bool) -> dict[str, np.ndarray]:
    """``{branch: (n_blocks, k)}`` held-out ``I_V`` of every branch and block with each feature."""
    from ..complexity import complexity

    k = Z.shape[1]
    kwargs: dict[str, Any] = {} if alphas is None else {"alphas": tuple(alphas)}
    # one engine call over all 3 * n_blocks arrays: same folds for every branch, and the
    # engine's per-call set-up is paid once
    stacked = {f"{branch}/{name}": sources[branch][name] for branch in _BRANCHES for name in blocks}
    res = complexity(stacked, Z, n_folds=n_folds, seed=seed, device=device, progress=progress,
                     **kwargs)
    per_layer = np.asarray(res.per_layer, dtype=np.float64).reshape(len(_BRANCHES), len(blocks), k)
    return dict(zip(_BRANCHES, per_layer))


def teleport_depth(
    iv_skip: np.ndarray, iv_out: np.ndarray, threshold: float = 0.9, *, eps: float = DEFAULT_EPS
) -> np.ndarray:
    """First block from which the skip branch alone carries the feature (module docstring).

    Args:
        iv_skip: ``(n_blocks, k)`` ``I_V`` of the skip branch.
        iv_out: ``(n_blocks, k)`` ``I_V`` of the block output.
        threshold: fraction of the block output's ``I_V`` the skip branch must carry.
        eps: below this the block output carries nothing, and the block counts as satisfied.

    Returns:
        ``(k,)`` int64 in ``[0, n_blocks]``; ``n_blocks`` means never.
    """
    _check_threshold(threshold)
    iv_skip = np.asarray(iv_skip, dtype=np.float64)
    iv_out = np.asarray(iv_out, dtype=np.float64)
    if iv_skip.ndim != 2 or iv_skip.shape != iv_out.shape:
        raise ValueError(
            f"iv_skip and iv_out must both be (n_blocks, k); got {iv_skip.shape} and {iv_out.shape}"
        )
    if np.isnan(iv_skip).any() or np.isnan(iv_out).any():
        raise ValueError("iv_skip / iv_out contain NaN; compute them with measure='iv' or 'both'")
    ok = (iv_out < eps) | (iv_skip >= threshold * iv_out)  # (n_blocks, k)
    # suffix "all": ok from block b to the end; reversed cumulative product does it for all b
    suffix_ok = np.flip(np.cumprod(np.flip(ok, axis=0), axis=0), axis=0).astype(bool)
    n_blocks = ok.shape[0]
    # the first b with suffix_ok[b]; suffix_ok is monotone (False... then True...), so count Falses
    return (n_blocks - suffix_ok.sum(axis=0)).astype(np.int64)


def skip_share(iv_skip: np.ndarray, iv_out: np.ndarray, *, eps: float = DEFAULT_EPS) -> np.ndarray:
    """Fraction of the block outputs' ``I_V`` carried by the skip branches, summed over blocks.

    Args:
        iv_skip, iv_out: ``(n_blocks, k)``.
        eps: a feature whose summed output ``I_V`` is below this gets ``nan`` (nothing to share).

    Returns:
        ``(k,)`` float64, ``sum_l iv_skip[l] / sum_l iv_out[l]``.
    """
    iv_skip = np.asarray(iv_skip, dtype=np.float64)
    iv_out = np.asarray(iv_out, dtype=np.float64)
    if iv_skip.ndim != 2 or iv_skip.shape != iv_out.shape:
        raise ValueError(
            f"iv_skip and iv_out must both be (n_blocks, k); got {iv_skip.shape} and {iv_out.shape}"
        )
    total = iv_out.sum(axis=0)
    out = np.full(total.shape, np.nan)
    np.divide(iv_skip.sum(axis=0), total, out=out, where=total >= eps)
    return out


def teleport_correlation(depth: np.ndarray, complexity: np.ndarray) -> tuple[float, float]:
    """Spearman rank correlation (rho, two-sided p-value) of teleport depth with complexity ``K``.

    ``(nan, nan)`` when either side is constant (nothing to rank).
    """
    from scipy.stats import spearmanr

    depth = np.asarray(depth, dtype=np.float64)
    K = np.asarray(complexity, dtype=np.float64)
    if depth.shape != K.shape or depth.ndim != 1:
        raise ValueError(f"depth {depth.shape} and complexity {K.shape} must both be (k,)")
    if len(K) < 3 or np.ptp(depth) == 0 or np.ptp(K) == 0:
        return float("nan"), float("nan")
    rho, p = spearmanr(depth, K)
    return float(rho), float(p)


# ---------------------------------------------------------------------- tables and summary
def flow_table(result: FlowResult) -> "pd.DataFrame":
    """Long format, one row per (block, feature): ``feature, block, block_index, cka_skip,
    cka_main, cka_out, iv_skip, iv_main, iv_out`` (``n_blocks * k`` rows, block-major)."""
    import pandas as pd

    nb, k = result.n_blocks, result.n_features
    frame = pd.DataFrame({
        "feature": np.tile(result.features, nb),
        "block": np.repeat(np.asarray(result.blocks, dtype=object), k),
        "block_index": np.repeat(np.arange(nb), k),
    })
    for name in ("cka_skip", "cka_main", "cka_out", "iv_skip", "iv_main", "iv_out"):
        frame[name] = getattr(result, name).reshape(-1)  # (n_blocks, k) row-major = block-major
    return frame


def complexity_groups(complexity: np.ndarray) -> dict[str, np.ndarray]:
    """Indices of the simplest, middle and most complex thirds of the features by ``K``.

    Ties are broken by feature order (stable sort) so the split is deterministic.
    """
    from ..figures import complexity_thirds  # the split the core report's figures use

    K = np.asarray(complexity, dtype=np.float64)
    if K.ndim != 1:
        raise ValueError(f"complexity must be (k,), got {K.shape}")
    simple, middle, complex_ = complexity_thirds(K)
    return {"simple": simple, "middle": middle, "complex": complex_}


def _nanmean_rows(M: np.ndarray, idx: np.ndarray) -> list[float | None]:
    """Per-block mean over the features ``idx`` (``None`` where nothing is finite: JSON null)."""
    if len(idx) == 0:
        return [None] * M.shape[0]
    sub = M[:, idx]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        means = np.nanmean(sub, axis=1)
    return [None if not np.isfinite(v) else float(v) for v in means]


def flow_summary(result: FlowResult, complexity: np.ndarray) -> dict[str, Any]:
    """A JSON-able summary: teleport-depth Spearman with ``K`` and per-third mean curves.

    Returns:
        ``{"blocks", "n_features", "measure", "threshold", "debiased", "teleport_spearman":
        {"rho", "p_value"}, "teleport_depth_counts" (n_blocks + 1,), "skip_share_spearman",
        "groups": {"simple"|"middle"|"complex": {"n", "complexity_min", "complexity_max",
        "mean_teleport_depth", "never_teleported", "mean_skip_share", "cka_skip", "cka_main",
        "cka_out", "iv_skip", "iv_main", "iv_out"}}}`` where the curves are per-block lists.
    """
    K = np.asarray(complexity, dtype=np.float64)
    if K.shape != (result.n_features,):
        raise ValueError(
            f"complexity has shape {K.shape} but the flow result has {result.n_features} features"
        )
    out: dict[str, Any] = {
        "blocks": list(result.blocks),
        "n_features": result.n_features,
        "measure": result.measure,
        "threshold": result.threshold,
        "debiased": result.debiased,
    }
    if result.teleport_depth is not None:
        rho, p = teleport_correlation(result.teleport_depth, K)
        out["teleport_spearman"] = {"rho": rho, "p_value": p}
        out["teleport_depth_counts"] = np.bincount(result.teleport_depth,
                                                   minlength=result.n_blocks + 1).tolist()
    if result.skip_share is not None:
        ok = np.isfinite(result.skip_share)
        rho, p = teleport_correlation(result.skip_share[ok], K[ok])
        out["skip_share_spearman"] = {"rho": rho, "p_value": p}
    groups: dict[str, Any] = {}
    for gname, idx in complexity_groups(K).items():
        g: dict[str, Any] = {
            "n": int(len(idx)),
            "complexity_min": float(K[idx].min()) if len(idx) else None,
            "complexity_max": float(K[idx].max()) if len(idx) else None,
        }
        if result.teleport_depth is not None and len(idx):
            g["mean_teleport_depth"] = float(result.teleport_depth[idx].mean())
            g["never_teleported"] = float((result.teleport_depth[idx] == result.n_blocks).mean())
        if result.skip_share is not None and len(idx):
            g["mean_skip_share"] = _nanmean_rows(result.skip_share[None, :], idx)[0]
        for name in ("cka_skip", "cka_main", "cka_out", "iv_skip", "iv_main", "iv_out"):
            g[name] = _nanmean_rows(getattr(result, name), idx)
        groups[gname] = g
    out["groups"] = groups
    return out


# ---------------------------------------------------------------------- figure
def plot_flow(
    result: FlowResult,
    complexity: np.ndarray,
    *,
    title: str | None = None,
) -> "Figure":
    """Paper Fig. 4: mean CKA (top row) and ``I_V`` (bottom row) of the skip and main branches
    (and, dotted, the block output) against block depth, for the simplest (left) and most
    complex (right) thirds of the features by ``K``. Bands: ± one standard error of the mean.

    Args:
        result: from :func:`flow_scores` / :func:`run_flow`.
        complexity: ``(k,)`` complexity ``K`` of the same features.
        title: optional figure title.

    Returns:
        a 2×2 matplotlib ``Figure`` (not saved; the caller saves it).
    """
    import matplotlib

    matplotlib.use("Agg", force=False)  # headless by default, like figures.py
    from matplotlib.figure import Figure  # no pyplot: no global figure registry to leak into

    K = np.asarray(complexity, dtype=np.float64)
    if K.shape != (result.n_features,):
        raise ValueError(f"complexity has shape {K.shape}, the flow result has {result.n_features} features")
    groups = complexity_groups(K)
    x = np.arange(1, result.n_blocks + 1)
    fig = Figure(figsize=(10, 6.5), layout="constrained")
    axes = fig.subplots(2, 2, sharex=True, sharey="row", squeeze=False)
    styles = {"skip": dict(color="tab:blue", ls="-", label="skip (residual) branch"),
              "main": dict(color="tab:orange", ls="--", label="main (conv) branch"),
              "out": dict(color="0.4", ls=":", label="block output")}
    for r, (measure, label) in enumerate((("cka", "linear CKA with z"), ("iv", "I_V(branch → z)"))):
        for c, gname in enumerate(("simple", "complex")):
            ax = axes[r, c]
            idx = groups[gname]
            for branch, st in styles.items():
                M = getattr(result, f"{measure}_{branch}")[:, idx]  # (n_blocks, n_group)
                if M.size == 0 or np.isnan(M).all():
                    continue
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)
                    mean = np.nanmean(M, axis=1)
                    count = np.maximum(np.sum(np.isfinite(M), axis=1), 1)
                    sem = np.nanstd(M, axis=1) / np.sqrt(count)
                ax.plot(x, mean, marker="o", ms=3, **st)
                ax.fill_between(x, mean - sem, mean + sem, color=st["color"], alpha=0.15, lw=0)
            if np.isnan(getattr(result, f"{measure}_skip")).all():
                ax.text(0.5, 0.5, f"{measure.upper()} not computed", transform=ax.transAxes,
                        ha="center", va="center", color="0.5")
            if r == 0:
                kmin, kmax = (K[idx].min(), K[idx].max()) if len(idx) else (np.nan, np.nan)
                ax.set_title(f"{'simplest' if gname == 'simple' else 'most complex'} third "
                             f"({len(idx)} features, K in [{kmin:.2f}, {kmax:.2f}])", fontsize=10)
            if c == 0:
                ax.set_ylabel(label)
            if r == 1:
                ax.set_xlabel("block (forward order)")
            ax.grid(alpha=0.3)
    if result.n_blocks <= 20:
        for ax in axes[1]:
            ax.set_xticks(x)
            ax.set_xticklabels(result.blocks, rotation=60, ha="right", fontsize=9)
    axes[0, 0].legend(fontsize=10, loc="best")
    fig.suptitle(title or "Where features flow: skip vs main branch per block (Fel et al. 2024, Fig. 4)",
                 fontsize=11)
    return fig


# ---------------------------------------------------------------------- the stage
class _SumRows:
    """``skip + main`` read row chunk by row chunk (the pooled output of a residual addition with
    no activation after it: pooling is linear), never materialised whole."""

    def __init__(self, a: Any, b: Any) -> None:
        self.a, self.b = a, b
        self.shape, self.dtype, self.ndim = a.shape, a.dtype, 2

    def __getitem__(self, rows: Any) -> np.ndarray:
        return np.asarray(self.a[rows]) + np.asarray(self.b[rows])

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self[:]
        return out if dtype is None else out.astype(dtype)


def unit_outputs(acts: Any) -> dict[str, Any]:
    """The output of every residual addition (flow unit), in forward order: the block's output
    for the last unit of a block (ResNets: the only one, with its ReLU), else skip + main (the
    residual stream between a transformer block's attention and MLP additions)."""
    units = list(acts.skip)
    block = [acts.unit_blocks.get(u, u) for u in units]
    out = {}
    for i, u in enumerate(units):
        last = i + 1 == len(units) or block[i + 1] != block[i]
        out[u] = acts.layers[block[i]] if last else _SumRows(acts.skip[u], acts.main[u])
    return out


def _compute(ctx: Any) -> FlowResult:
    cfg, acts = ctx.config, ctx["activations"]
    return flow_scores(unit_outputs(acts), acts.skip, acts.main, ctx["codes"], measure="both", n_folds=cfg.n_folds,
                       seed=cfg.seed, threshold=cfg.teleport_threshold, alphas=cfg.alphas, device=cfg.device,
                       progress=ctx.progress)


def _save(result: FlowResult, out: Path) -> None:
    from ..io import save_dataclass, write_json, write_parquet

    save_dataclass(out / "flow.npz", result)
    write_parquet(out / "flow.parquet", flow_table(result))
    K = np.load(out / "complexity.npz")["score"]
    write_json(out / "flow.json", flow_summary(result, K))


def _load(out: Path) -> FlowResult:
    from ..io import load_dataclass

    return load_dataclass(out / "flow.npz", FlowResult)


def _columns(result: FlowResult) -> dict[str, np.ndarray | None]:
    if result.teleport_depth is None:
        return {}
    return {"teleport_depth": result.teleport_depth, "skip_share": result.skip_share}


def _figures(result: FlowResult, ctx: Any) -> dict[str, Any]:
    from ..stages import FigureSpec

    return {"flow": FigureSpec(
        plot_flow(result, ctx["complexity"].score), "Where features flow",
        "Mean linear CKA (top) and held-out I_V (bottom) of each block's skip branch, main (residual) branch "
        "and output with the simplest and the most complex third of the features. The paper finds that simple "
        "features ride the skips from early blocks on, while complex ones are built by the residual branches.")}


def _applies(ctx: Any) -> bool:
    spec = ctx.inputs.get("spec")
    return bool(ctx.config.capture_branches and (spec is None or spec.branches))


def _stage() -> Any:
    from ..stages import Stage

    return Stage("flow", _compute, needs=("activations", "codes", "complexity"),
                 settings=("n_folds", "seed", "alphas", "teleport_threshold"), applies=_applies, save=_save,
                 load=_load, outputs=("flow.npz",), section="where", figures=_figures, columns=_columns)


STAGE = _stage()
