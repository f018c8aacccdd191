"""Redundancy of each feature across the neurons of the penultimate layer (paper Fig. 10).

Notation (docs/ARCHITECTURE.md): ``A`` penultimate activations ``(n_images, d)``, ``Z`` codes
``(n_images, k)``, ``z`` one feature (a column of ``Z``), ``K`` complexity ``(k,)``.

After Nanda et al. (NeurIPS 2023, "Diffused redundancy in pre-trained representations"), whose
measure the paper cites as [76], a feature is redundant when a random subset of the neurons still
aligns with it as well as the whole layer does::

    Redundancy_f(z) = E_m [ CKA(A ⊙ m, z) / CKA(A, z) ],   m ∈ {0, 1}^d random, ||m||₀ = round(f d)

with linear CKA (``analyses.cka``). Zeroing neurons is the same as dropping them (a zero column adds
nothing to ``XᵀX`` or ``Xᵀz``), so each mask is a random subset of ``round(f d)`` neurons, drawn
without replacement. The paper states neither the keep fraction ``f`` nor the number of masks;
the defaults sweep ``f ∈ {0.1, 0.25, 0.5, 0.75, 0.9}`` with 20 masks each, and the summary score is
the mean over fractions.

Reading the ratio: a feature copied into many neurons keeps ``≈ 1`` even at small ``f``; a feature
carried by one neuron (among ``d`` roughly independent ones) gives ``√(d/p)`` on the masks that
keep that neuron and ``≈ 0`` on the others, an expectation of ``≈ √f``. CKA normalises by the
whole layer's ``||XᵀX||_F``, so one mask can exceed 1; the mean over masks is the measure.

Cost: ``len(fractions) × n_masks`` calls of :func:`~feature_complexity.analyses.cka.cka_with_features`,
each ``O(n p (p + k))`` for ``p`` kept neurons; pass ``device="cuda"`` at ImageNet scale.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .._validation import as_array
from .cka import cka_with_features

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["Redundancy", "redundancy", "columns", "redundancy_figure", "DEFAULT_FRACTIONS"]

DEFAULT_FRACTIONS = (0.1, 0.25, 0.5, 0.75, 0.9)


@dataclass
class Redundancy:
    """Result of :func:`redundancy`.

    Attributes:
        fractions: ``(n_fractions,)`` keep fractions of neurons.
        ratio: ``(n_fractions, n_masks, k)`` ``CKA(A ⊙ m, z) / CKA(A, z)`` of every mask.
        per_fraction: ``(n_fractions, k)`` mean of ``ratio`` over masks (the redundancy at ``f``).
        score: ``(k,)`` mean of ``per_fraction`` over fractions (the summary).
        full_cka: ``(k,)`` ``CKA(A, z)`` with every neuron; ``nan`` for a constant feature.
        kept: ``(n_fractions, n_masks, d)`` bool, the masks (``True`` = neuron kept).
        seed: the seed the masks were drawn with.
    """

    fractions: np.ndarray
    ratio: np.ndarray
    per_fraction: np.ndarray
    score: np.ndarray
    full_cka: np.ndarray
    kept: np.ndarray
    seed: int


def redundancy(
    A: np.ndarray,
    Z: np.ndarray,
    *,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    n_masks: int = 20,
    seed: int = 0,
    debiased: bool = False,
    device: str | None = None,
) -> Redundancy:
    """Redundancy of every feature under random neuron masks.

    Args:
        A: ``(n_images, d)`` penultimate activations (pooled).
        Z: ``(n_images, k)`` codes of the same images.
        fractions: keep fractions in ``(0, 1]``; each mask keeps ``max(1, round(f d))`` neurons.
        n_masks: masks per fraction.
        seed: seed of the masks (same seed → same masks → same output).
        debiased: unbiased HSIC in the CKA (needs ``n_images >= 4``).
        device: ``None`` for numpy, or a torch device for the CKA sums.

    Returns:
        a :class:`Redundancy`; features with ``CKA(A, z) = 0`` or ``nan`` (constant ``z``) get ``nan``.
    """
    A = as_array(A, "A", 2, expected="(n_images, d)", fix="; pool spatial maps first")
    Z = as_array(Z, "Z", 2, expected="(n_images, k)", fix="; pass one column per feature")
    if A.shape[0] != Z.shape[0]:
        raise ValueError(f"A has {A.shape[0]} images but Z has {Z.shape[0]}; they must describe the same images")
    f = np.asarray(fractions, dtype=np.float64).reshape(-1)
    if f.size == 0 or not np.all((f > 0) & (f <= 1)):
        raise ValueError(f"fractions must be keep fractions in (0, 1], got {list(f)}")
    if n_masks < 1:
        raise ValueError(f"n_masks must be >= 1, got {n_masks}")
    d, k = A.shape[1], Z.shape[1]
    full = cka_with_features(A, Z, debiased=debiased, device=device)
    rng = np.random.default_rng(seed)
    kept = np.zeros((f.size, n_masks, d), dtype=bool)
    ratio = np.empty((f.size, n_masks, k))
    with np.errstate(divide="ignore", invalid="ignore"):
        for i, frac in enumerate(f):
            p = max(1, int(round(frac * d)))
            for j in range(n_masks):
                # sorted so the kept columns stay in the layer's order (same sums, same rounding)
                cols = np.sort(rng.choice(d, size=p, replace=False))
                kept[i, j, cols] = True
                masked = cka_with_features(A[:, cols], Z, debiased=debiased, device=device)
                ratio[i, j] = np.where(full > 0, masked / full, np.nan)
    per_fraction = ratio.mean(axis=1)
    return Redundancy(
        fractions=f, ratio=ratio, per_fraction=per_fraction, score=per_fraction.mean(axis=0),
        full_cka=full, kept=kept, seed=seed,
    )


def columns(result: Redundancy) -> dict[str, np.ndarray]:
    """Per-feature columns ``(k,)``: the summary score and the redundancy at each keep fraction."""
    out = {"redundancy": result.score}
    for frac, row in zip(result.fractions, result.per_fraction):
        out[f"redundancy_keep_{frac:g}"] = row
    return out


def redundancy_figure(result: Redundancy, complexity: np.ndarray) -> "Figure":
    """Left: mean redundancy against keep fraction for the simplest, middle and most complex thirds.
    Right: each feature's summary redundancy against ``K`` with the Spearman correlation (Fig. 10)."""
    from scipy.stats import spearmanr

    from ..figures import complexity_thirds, new_figure

    K = np.asarray(complexity, dtype=float)
    if K.shape != result.score.shape:
        raise ValueError(f"complexity has shape {K.shape}, the result has {result.score.shape[0]} features")
    fig = new_figure(9.0, 3.6)
    ax, ax2 = fig.subplots(1, 2)
    pct = 100 * result.fractions
    labels = ("simplest third", "middle third", "most complex third")
    for part, label, color in zip(complexity_thirds(K), labels, ("#55A868", "#8172B2", "#C44E52")):
        if part.size:
            ax.plot(pct, np.nanmean(result.per_fraction[:, part], axis=1), marker="o", color=color, label=label)
    ax.axhline(1.0, color="grey", linewidth=0.8, linestyle="--")
    ax.set_xlabel("neurons kept by the mask (%)")
    ax.set_ylabel("CKA(A ⊙ m, z) / CKA(A, z)  (mean)")
    ax.set_title("Redundancy by keep fraction")
    ax.legend(fontsize=8)
    ok = np.isfinite(K) & np.isfinite(result.score)
    sc = ax2.scatter(K[ok], result.score[ok], c=K[ok], cmap="viridis", s=10, linewidths=0, alpha=0.8)
    fig.colorbar(sc, ax=ax2, label="complexity K")
    rho = spearmanr(K[ok], result.score[ok]).statistic if _varies(K[ok], result.score[ok]) else float("nan")
    ax2.set_xlabel("complexity K")
    ax2.set_ylabel("redundancy (mean over keep fractions)")
    ax2.set_title(f"Redundancy vs complexity (Spearman ρ = {rho:.2f})")
    return fig


def _varies(x: np.ndarray, y: np.ndarray) -> bool:
    """Whether a rank correlation of ``x`` and ``y`` is defined (3+ points, neither constant)."""
    return x.size > 2 and bool(np.ptp(x) > 0) and bool(np.ptp(y) > 0)


# ---------------------------------------------------------------------------------- the stage
def _compute(ctx: Any) -> Redundancy:
    cfg = ctx.config
    A = ctx["activations"].penultimate
    return redundancy(A, ctx["codes"], fractions=cfg.redundancy_keep, n_masks=cfg.redundancy_masks, seed=cfg.seed,
                      device=None if cfg.device == "cpu" else cfg.device)


def _figures(result: Redundancy, ctx: Any) -> dict[str, Any]:
    from ..stages import FigureSpec

    return {"redundancy": FigureSpec(
        redundancy_figure(result, ctx["complexity"].score), "Redundancy of features (paper Fig. 10)",
        "How much of each feature random subsets of the penultimate neurons still carry (CKA with a masked "
        "layer over CKA with the whole layer; Nanda et al. 2023), against K. The paper finds complex features "
        "less redundant.")}


def _stage() -> Any:
    from ._stage import result_stage

    return result_stage("redundancy", _compute, Redundancy, needs=("activations", "codes", "complexity"),
                        settings=("redundancy_keep", "redundancy_masks", "seed"), section="what",
                        figures=_figures, columns=columns)


STAGE = _stage()
