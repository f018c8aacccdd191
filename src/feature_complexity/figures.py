"""Figures of the core run: functions that take results and return a matplotlib ``Figure``.

Saving is the caller's business (``feature_complexity.io.save_figure``), so the same function
serves the run folder, the HTML report and a notebook where the user restyles it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["new_figure", "complexity_histogram", "decodability_curves", "complexity_vs_importance", "complexity_thirds"]


def new_figure(width: float = 5.0, height: float = 3.6) -> "Figure":
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def complexity_thirds(complexity: np.ndarray) -> list[np.ndarray]:
    """Indices of the simplest, middle and most complex thirds of the features, by ``K``."""
    order = np.argsort(np.asarray(complexity), kind="stable")
    return list(np.array_split(order, 3))


def complexity_histogram(complexity: np.ndarray, *, bins: int = 30) -> "Figure":
    """Histogram of the complexity ``K`` of every feature, shape ``(k,)``."""
    fig = new_figure()
    ax = fig.add_subplot()
    ax.hist(np.asarray(complexity), bins=bins, range=(0, 1), color="#4C72B0", edgecolor="white")
    ax.set_xlabel("complexity K = 1 − mean_l I_V(f_l → z)")
    ax.set_ylabel("features")
    ax.set_title(f"Complexity of {len(complexity)} features")
    return fig


def decodability_curves(
    per_layer: np.ndarray, complexity: np.ndarray, layer_names: Sequence[str]
) -> "Figure":
    """Mean per-layer ``I_V`` (the decodability curve) for the simplest, middle and most complex
    thirds of the features.

    Args:
        per_layer: ``(n_layers, k)`` V-information of every feature from every probe layer.
        complexity: ``(k,)`` complexity ``K``.
        layer_names: the ``n_layers`` probe-layer names, in forward order.
    """
    per_layer = np.asarray(per_layer)
    fig = new_figure(6.0, 3.8)
    ax = fig.add_subplot()
    depth = np.arange(1, per_layer.shape[0] + 1)
    labels = ("simplest third", "middle third", "most complex third")
    colors = ("#55A868", "#8172B2", "#C44E52")
    for part, label, color in zip(complexity_thirds(complexity), labels, colors):
        if part.size == 0:
            continue
        curve = per_layer[:, part]
        mean = curve.mean(axis=1)
        ax.plot(depth, mean, marker="o", color=color, label=f"{label} (n={part.size})")
        lo, hi = np.percentile(curve, [25, 75], axis=1)
        ax.fill_between(depth, lo, hi, color=color, alpha=0.15, linewidth=0)
    ax.set_xticks(depth)
    ax.set_xticklabels(layer_names, rotation=45, ha="right", fontsize=9)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("probe layer (residual block, forward order)")
    ax.set_ylabel("I_V(f_l → z)  (mean, IQR band)")
    ax.set_title("Where features become linearly decodable")
    ax.legend(fontsize=9, loc="upper left")
    return fig


def complexity_vs_importance(
    complexity: np.ndarray, importance: np.ndarray, *, signed: bool = True, title: str | None = None
) -> "Figure":
    """Scatter of complexity ``K`` against importance ``Γ`` (signed, or ``|Γ|``), with the
    Spearman correlation in the title."""
    from scipy.stats import spearmanr

    complexity = np.asarray(complexity, dtype=float)
    importance = np.asarray(importance, dtype=float)
    y = importance if signed else np.abs(importance)
    ok = np.isfinite(complexity) & np.isfinite(y)
    fig = new_figure()
    ax = fig.add_subplot()
    neg = importance < 0
    for mask, color, label in ((ok & ~neg, "#DD8452", "supports its class (Γ ≥ 0)"),
                               (ok & neg, "#6A3D9A", "inhibits its class (Γ < 0)")):
        if mask.any():
            ax.scatter(complexity[mask], y[mask], s=14, c=color, alpha=0.8, linewidths=0, label=label)
    if signed:
        ax.axhline(0, color="grey", linewidth=0.8)
    rho = spearmanr(complexity[ok], y[ok]).statistic if ok.sum() > 2 else float("nan")
    ax.set_xlabel("complexity K (0 = simple, 1 = complex)")
    ax.set_ylabel("importance Γ (logit units)" if signed else "|Γ| (logit units)")
    ax.set_title(title or f"Complexity against importance (Spearman ρ = {rho:.2f})", fontsize=11)
    ax.legend(fontsize=9, loc="best")
    return fig


def factor_complexity_figure(factors: dict[str, dict]) -> "Figure":
    """Complexity of the generating factors of a generated dataset (planted ground truth):
    left, ``K`` per factor; right, each factor's mean decodability curve across layers.

    Args:
        factors: ``{factor: {"complexity": float, "per_layer": [n_layers], "layer_names": [...],
            "kept": float (optional)}}``.
    """
    fig = new_figure(10.0, 4.2)
    ax, ax2 = fig.subplots(1, 2)
    names = list(factors)
    x = np.arange(len(names))
    ax.bar(x - 0.2, [factors[n]["complexity"] for n in names], width=0.4, color="#4C72B0",
           label="complexity K")
    if all("kept" in factors[n] for n in names):
        ax.bar(x + 0.2, [factors[n]["kept"] for n in names], width=0.4, color="#DD8452",
               label="kept: I_V at the penultimate layer")
    ax.set_xticks(x)
    ax.set_xticklabels(names, rotation=30, ha="right", fontsize=11)
    ax.set_ylim(0, 1)
    ax.set_ylabel("K, or I_V at the penultimate layer (0 – 1)", fontsize=11)
    ax.set_xlabel("generating factor", fontsize=11)
    ax.legend(fontsize=10)
    ax.set_title("Generating factors (ground truth)", fontsize=12)
    for name in names:
        curve = factors[name]["per_layer"]
        ax2.plot(range(1, len(curve) + 1), curve, marker="o", label=name)
    if names:
        layer_names = factors[names[0]]["layer_names"]
        ax2.set_xticks(range(1, len(layer_names) + 1))
        ax2.set_xticklabels(layer_names, rotation=45, ha="right", fontsize=10)
    ax2.set_ylim(0, 1.02)
    ax2.set_ylabel("I_V(block → factor) (0 – 1)", fontsize=11)
    ax2.set_xlabel("block (forward order)", fontsize=11)
    ax2.set_title("Decodability of each factor across blocks", fontsize=12)
    ax2.legend(fontsize=10)
    return fig
