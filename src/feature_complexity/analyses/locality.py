"""Local vs distributed encoding of each feature: the Hoyer sparsity of its atom (paper Fig. 16/17).

Notation (docs/ARCHITECTURE.md): ``D`` is the dictionary ``(k, d)`` with atoms as rows over the
``d = N`` neurons of the penultimate layer, ``K`` the complexity ``(k,)``.

The Hoyer (2004) measure of an atom ``d ∈ R^N``::

    H(d) = (√N − ||d||₁ / ||d||₂) / (√N − 1)

is 1 for a one-hot atom (the feature is one neuron: "local") and 0 for a constant atom (every
neuron carries it equally: "distributed"); it is scale-invariant, so the atom's norm (which NMF
trades freely against the codes) does not matter. The paper finds a wide spread, some atoms near
1, and no clear relation with ``K``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .._validation import as_array

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["Locality", "hoyer", "locality", "columns", "locality_figure"]


@dataclass
class Locality:
    """Result of :func:`locality`.

    Attributes:
        hoyer: ``(k,)`` Hoyer sparsity of every atom in ``[0, 1]``; ``nan`` for an all-zero atom.
        top_neuron: ``(k,)`` int, the neuron with the largest ``|d_j|`` of every atom.
        top_share: ``(k,)`` share of the atom's energy ``||d||²`` on that neuron, in ``[1/N, 1]``.
    """

    hoyer: np.ndarray
    top_neuron: np.ndarray
    top_share: np.ndarray


def hoyer(D: np.ndarray) -> np.ndarray:
    """Hoyer sparsity of every row of ``D`` ``(k, N)``; returns ``(k,)`` float64, ``nan`` for a zero row."""
    D = as_array(D, "D", 2, expected="a 2-D (k, d) array of atoms as rows").astype(np.float64)
    n = D.shape[1]
    if n < 2:
        raise ValueError(f"the Hoyer measure needs atoms of at least 2 neurons; D has shape {D.shape}")
    if not np.all(np.isfinite(D)):
        raise ValueError("D contains NaN or inf; check the dictionary file (dictionary.npz)")
    l1 = np.abs(D).sum(axis=1)
    l2 = np.sqrt((D**2).sum(axis=1))
    out = np.full(D.shape[0], np.nan)
    ok = l2 > 0
    root = np.sqrt(n)
    out[ok] = (root - l1[ok] / l2[ok]) / (root - 1.0)
    # ||d||₁/||d||₂ lies in [1, √N]; rounding can step just outside it
    return np.clip(out, 0.0, 1.0)


def locality(D: np.ndarray) -> Locality:
    """Hoyer sparsity, top neuron and its energy share for every atom of ``D`` ``(k, d)``."""
    H = hoyer(D)
    D = np.asarray(D, dtype=np.float64)
    energy = D**2
    total = energy.sum(axis=1)
    top = np.argmax(np.abs(D), axis=1)
    share = np.full(D.shape[0], np.nan)
    ok = total > 0
    share[ok] = energy[ok, top[ok]] / total[ok]
    return Locality(hoyer=H, top_neuron=top.astype(np.int64), top_share=share)


def columns(result: Locality) -> dict[str, np.ndarray]:
    """Per-feature columns ``(k,)`` for the feature table."""
    return {"hoyer": result.hoyer, "top_neuron_share": result.top_share}


def locality_figure(result: Locality, complexity: np.ndarray) -> "Figure":
    """Left: histogram of the Hoyer sparsity (Fig. 16). Right: Hoyer against complexity ``K``
    with the least-squares line and the Spearman correlation (Fig. 17)."""
    from scipy.stats import spearmanr

    from ..figures import new_figure

    H = np.asarray(result.hoyer, dtype=float)
    K = np.asarray(complexity, dtype=float)
    if K.shape != H.shape:
        raise ValueError(f"complexity has shape {K.shape} but there are {H.shape[0]} atoms; pass one K per atom")
    ok = np.isfinite(H) & np.isfinite(K)
    fig = new_figure(9.0, 3.6)
    ax, ax2 = fig.subplots(1, 2)
    ax.hist(H[ok], bins=30, range=(0, 1), color="#4C72B0", edgecolor="white")
    ax.set_xlabel("Hoyer sparsity of the atom (0 = distributed, 1 = one neuron)")
    ax.set_ylabel("features")
    ax.set_title(f"Locality of {int(ok.sum())} features")
    sc = ax2.scatter(K[ok], H[ok], c=K[ok], cmap="viridis", s=10, linewidths=0, alpha=0.8)
    fig.colorbar(sc, ax=ax2, label="complexity K")
    if ok.sum() > 2 and np.ptp(K[ok]) > 0:
        slope, intercept = np.polyfit(K[ok], H[ok], 1)
        xs = np.linspace(K[ok].min(), K[ok].max(), 2)
        ax2.plot(xs, slope * xs + intercept, color="#C44E52", label=f"least squares, slope {slope:.2f}")
        ax2.legend(fontsize=8)
    rho = spearmanr(K[ok], H[ok]).statistic if _varies(K[ok], H[ok]) else float("nan")
    ax2.set_xlabel("complexity K")
    ax2.set_ylabel("Hoyer sparsity")
    ax2.set_title(f"Locality vs complexity (Spearman ρ = {rho:.2f})")
    return fig


def _varies(x: np.ndarray, y: np.ndarray) -> bool:
    """Whether a rank correlation of ``x`` and ``y`` is defined (3+ points, neither constant)."""
    return x.size > 2 and bool(np.ptp(x) > 0) and bool(np.ptp(y) > 0)


# ---------------------------------------------------------------------------------- the stage
def _figures(result: Locality, ctx: Any) -> dict[str, Any]:
    from ..stages import FigureSpec

    return {"locality": FigureSpec(
        locality_figure(result, ctx["complexity"].score), "Local or distributed? (paper Fig. 16-17)",
        "Hoyer sparsity of each atom (1: the feature lives in one neuron; 0: spread evenly over all) and its "
        "relation to K. The paper finds a wide spread of locality and no clear relation with complexity.")}


def _stage() -> Any:
    from ._stage import result_stage

    return result_stage("locality", lambda ctx: locality(ctx["dictionary"].D), Locality,
                        needs=("dictionary", "complexity"), section="what", figures=_figures, columns=columns)


STAGE = _stage()
