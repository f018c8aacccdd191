"""Hierarchical meta-features (paper Fig. 14/15) and super-class purity (Fig. 13).

Notation (docs/ARCHITECTURE.md): ``D`` dictionary ``(k, d)`` with atoms as rows, ``K`` complexity
``(k,)``, ``Γ`` importance ``(k,)``.

**Hierarchy.** The paper shows "a four-level dendrogram where each level further segments clusters
and calculates the average complexity for each sub-cluster. A clear split by complexity appears at
the first level and intensifies with depth". Here: recursive K-means on the L2-normalised atoms
(the cosine geometry of ``analyses.metafeatures``), ``branching`` children per node per level.
How clearly a level separates ``K`` is its correlation ratio ``η² = Σ_nodes n_j (K̄_j − K̄)² /
Σ_i (K_i − K̄)²`` (the share of the variance of ``K`` between the level's clusters). Nested
partitions can only raise ``η²``, so "intensifies with depth" is automatic; what tests the paper's
claim is ``η²`` against its expectation under a random partition into the same number of groups,
``(m − 1)/(k − 1)``.

**Purity.** For each meta-feature cluster (K-means on the normalised atoms, ``mf.cluster`` of
:func:`~feature_complexity.analyses.metafeatures.metafeatures`), the fraction of its members whose
source class (``Dictionary.feature_class``) falls in the cluster's majority super-class, against
the cluster's mean ``K``. The class → super-class table comes from
:func:`feature_complexity.data.superclasses.load_superclasses` or the user. A chance level is the
mean purity after shuffling the super-classes over features (seeded).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .._validation import as_array, as_class_indices

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "Hierarchy", "hierarchy", "hierarchy_figure", "columns",
    "Purity", "superclass_purity", "purity_figure", "purity_columns",
]


@dataclass
class Hierarchy:
    """Result of :func:`hierarchy`: a tree whose node 0 is the root (all features, level 0).

    Attributes:
        parent: ``(n_nodes,)`` int parent node id, ``-1`` for the root.
        level: ``(n_nodes,)`` int depth, ``0 .. n_levels``.
        members: ``n_nodes`` int arrays of feature ids.
        size, mean_complexity, mean_importance: ``(n_nodes,)`` per node.
        assignment: ``(n_levels + 1, k)`` int node id of every feature at every level.
        complexity_separation, importance_separation: ``(n_levels + 1,)`` ``η²`` of ``K`` and of
            ``Γ`` per level (0 at the root).
        chance_separation: ``(n_levels + 1,)`` ``(m − 1)/(k − 1)``, ``m`` nodes at that level.
    """

    parent: np.ndarray
    level: np.ndarray
    members: list[np.ndarray]
    size: np.ndarray
    mean_complexity: np.ndarray
    mean_importance: np.ndarray
    assignment: np.ndarray
    complexity_separation: np.ndarray
    importance_separation: np.ndarray
    chance_separation: np.ndarray


def _eta_squared(values: np.ndarray, groups: np.ndarray) -> float:
    """Correlation ratio: share of the variance of ``values`` ``(k,)`` between ``groups`` ``(k,)``."""
    total = float(np.sum((values - values.mean()) ** 2))
    if total <= 0:
        return float("nan")
    between = sum(np.sum(groups == g) * (values[groups == g].mean() - values.mean()) ** 2 for g in np.unique(groups))
    return float(between / total)


def hierarchy(
    D: np.ndarray,
    complexity: np.ndarray,
    importance: np.ndarray,
    *,
    branching: int | Sequence[int] = 2,
    n_levels: int = 4,
    seed: int = 0,
    n_init: int = 4,
) -> Hierarchy:
    """Recursive K-means tree of the normalised atoms, with mean ``K`` and ``Γ`` per node.

    Args:
        D: ``(k, d)`` dictionary, atoms as rows.
        complexity, importance: ``(k,)`` ``K`` and signed ``Γ``.
        branching: children per node, one value or one per level (paper: a binary-looking tree).
        n_levels: levels below the root (paper: 4).
        seed: K-means seed (each node's split uses ``seed`` and the node id).
        n_init: K-means restarts per split.

    Returns:
        a :class:`Hierarchy`; children are numbered in increasing mean ``K``. A node with fewer
        distinct atoms than ``branching`` is carried down unsplit.
    """
    from sklearn.cluster import KMeans

    D = as_array(D, "D", 2, expected="a 2-D (k, d) array of atoms as rows").astype(np.float64)
    k = D.shape[0]
    K = np.asarray(complexity, dtype=np.float64).reshape(-1)
    G = np.asarray(importance, dtype=np.float64).reshape(-1)
    if K.size != k or G.size != k:
        raise ValueError(f"D has {k} atoms but complexity has {K.size} and importance {G.size} values")
    if not np.all(np.isfinite(D)) or not np.all(np.isfinite(K)):
        raise ValueError("D and complexity must be finite; check dictionary.npz and the complexity scores")
    # np.isscalar's TypeIs (numpy stubs) neither narrows int | Sequence[int] to int nor excludes int
    b = [int(branching)] * n_levels if np.isscalar(branching) else [int(x) for x in branching]  # type: ignore[arg-type, union-attr]
    if n_levels < 1 or len(b) != n_levels or min(b) < 2:
        raise ValueError(f"need n_levels >= 1 and one branching factor >= 2 per level; got {n_levels}, {branching}")
    X = D / np.maximum(np.linalg.norm(D, axis=1, keepdims=True), 1e-12)
    parent, level, members = [-1], [0], [np.arange(k)]
    assignment = np.zeros((n_levels + 1, k), dtype=np.int64)
    frontier = [0]
    for depth in range(1, n_levels + 1):
        nxt = []
        for node in frontier:
            idx = members[node]
            m = min(b[depth - 1], len(np.unique(X[idx].round(12), axis=0)))
            if m < 2:
                parts = [idx]
            else:
                km = KMeans(n_clusters=m, n_init=n_init, random_state=seed * 100_003 + node)
                lab = km.fit_predict(X[idx])
                parts = [idx[lab == c] for c in range(m) if np.any(lab == c)]
                parts.sort(key=lambda p: (K[p].mean(), p[0]))  # children in increasing mean K
            for part in parts:
                parent.append(node)
                level.append(depth)
                members.append(part)
                assignment[depth, part] = len(members) - 1
                nxt.append(len(members) - 1)
        frontier = nxt
    counts = np.array([np.unique(a).size for a in assignment])
    return Hierarchy(
        parent=np.array(parent), level=np.array(level), members=members,
        size=np.array([m.size for m in members]),
        mean_complexity=np.array([K[m].mean() for m in members]),
        mean_importance=np.array([G[m].mean() for m in members]),
        assignment=assignment,
        complexity_separation=np.array([_eta_squared(K, a) for a in assignment]),
        importance_separation=np.array([_eta_squared(G, a) for a in assignment]),
        chance_separation=(counts - 1) / max(k - 1, 1),
    )


def columns(result: Hierarchy) -> dict[str, np.ndarray]:
    """Per-feature columns ``(k,)``: the node of every feature at every level below the root."""
    levels = range(1, len(result.assignment))
    return {f"hierarchy_level_{lv}": result.assignment[lv].astype(np.float64) for lv in levels}


def hierarchy_figure(result: Hierarchy, *, color_by: str = "complexity") -> "Figure":
    """Dendrogram of the tree, root on top; nodes coloured by mean ``K`` (or mean ``Γ``), sized by
    their number of features; ``η²`` of each level against chance on the right."""
    from matplotlib import colormaps
    from matplotlib.colors import Normalize, TwoSlopeNorm

    from ..figures import new_figure

    if color_by not in ("complexity", "importance"):
        raise ValueError(f"color_by must be 'complexity' or 'importance', got {color_by!r}")
    values = result.mean_complexity if color_by == "complexity" else result.mean_importance
    n_levels = int(result.level.max())
    leaves = np.flatnonzero(result.level == n_levels)
    x = np.zeros(result.parent.size)
    x[leaves] = np.arange(leaves.size)  # leaves are created in depth-first order of their parents
    for node in np.flatnonzero(result.level < n_levels)[::-1]:
        x[node] = x[result.parent == node].mean()
    if color_by == "complexity":
        norm, cmap, label = Normalize(np.min(values), np.max(values)), colormaps["viridis"], "mean complexity K"
    else:
        lim = float(np.max(np.abs(values))) or 1.0
        norm, cmap, label = TwoSlopeNorm(0.0, -lim, lim), colormaps["coolwarm"], "mean importance Γ"
    fig = new_figure(max(6.0, min(14.0, 0.35 * leaves.size + 3.0)), 4.2)
    ax = fig.add_subplot()
    for node in range(1, result.parent.size):
        p = result.parent[node]
        ax.plot([x[p], x[node]], [result.level[p], result.level[node]], color="#BBBBBB", linewidth=1, zorder=1)
    s = 30 + 400 * np.sqrt(result.size / result.size[0])
    sc = ax.scatter(x, result.level, s=s, c=values, cmap=cmap, norm=norm, edgecolors="black", linewidths=0.5, zorder=2)
    fig.colorbar(sc, ax=ax, label=label)
    sep = result.complexity_separation if color_by == "complexity" else result.importance_separation
    ax.set_yticks(range(n_levels + 1))
    ax.set_yticklabels([f"level {lv}\nη² {sep[lv]:.2f} (chance {result.chance_separation[lv]:.2f})" if lv else "all"
                        for lv in range(n_levels + 1)], fontsize=8)
    ax.invert_yaxis()
    ax.set_ylabel("depth of the split")
    ax.set_xticks([])
    ax.set_xlabel("sub-clusters (recursive K-means on the normalised atoms; marker area ∝ features)")
    ax.set_title(f"Hierarchy of meta-features coloured by {label} (η²: share of variance between clusters)", fontsize=9)
    return fig


@dataclass
class Purity:
    """Result of :func:`superclass_purity`, one row per cluster (sorted by cluster id).

    Attributes:
        cluster: ``(n_clusters,)`` cluster ids.
        size: ``(n_clusters,)`` members; ``n_assigned``: members whose class has a super-class.
        majority: ``n_clusters`` names of the majority super-class (``""`` if none assigned).
        purity: ``(n_clusters,)`` share of assigned members in the majority (``nan`` if none).
        mean_complexity: ``(n_clusters,)`` mean ``K`` of all members.
        feature_superclass: ``k`` names, the super-class of every feature (``""`` unassigned).
        weighted_purity: purity averaged over clusters weighted by ``n_assigned``.
        chance_purity: mean ``weighted_purity`` over shuffles of the assigned super-classes.
        n_unassigned: features whose class has no super-class (left out of the purities).
    """

    cluster: np.ndarray
    size: np.ndarray
    n_assigned: np.ndarray
    majority: list[str]
    purity: np.ndarray
    mean_complexity: np.ndarray
    feature_superclass: list[str]
    weighted_purity: float
    chance_purity: float
    n_unassigned: int


def _purities(cluster: np.ndarray, labels: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, list[str], np.ndarray]:
    """``(purity, majority, n_assigned)`` per cluster id; ``labels`` ``""`` = unassigned."""
    purity, majority, n_assigned = np.full(ids.size, np.nan), [], np.zeros(ids.size, dtype=np.int64)
    for i, c in enumerate(ids):
        names = [s for s in labels[cluster == c] if s]
        n_assigned[i] = len(names)
        if names:
            top, count = min(Counter(names).items(), key=lambda kv: (-kv[1], kv[0]))  # ties: alphabetical
            purity[i] = count / len(names)
            majority.append(top)
        else:
            majority.append("")
    return purity, majority, n_assigned


def superclass_purity(
    cluster: np.ndarray,
    feature_class: np.ndarray,
    superclasses: Mapping[int, str],
    complexity: np.ndarray,
    *,
    n_shuffles: int = 100,
    seed: int = 0,
) -> Purity:
    """Super-class purity of every meta-feature cluster.

    Args:
        cluster: ``(k,)`` int cluster id of every feature (``MetaFeatures.cluster``).
        feature_class: ``(k,)`` int class each atom was extracted for (``Dictionary.feature_class``).
        superclasses: ``{class index: super-class name}`` (``load_superclasses``).
        complexity: ``(k,)`` ``K``.
        n_shuffles: shuffles of the super-classes over features for ``chance_purity`` (0: skip).
        seed: seed of the shuffles.
    """
    cluster = as_class_indices(as_array(cluster, "cluster", 1), "cluster")
    fc = as_class_indices(as_array(feature_class, "feature_class", 1), "feature_class")
    K = np.asarray(complexity, dtype=np.float64).reshape(-1)
    if fc.shape != cluster.shape or K.shape != cluster.shape:
        raise ValueError(f"cluster, feature_class and complexity need one value per feature; got "
                         f"{cluster.shape}, {fc.shape}, {K.shape}")
    if np.all(fc < 0):
        raise ValueError("every feature_class is -1 (a global dictionary): purity needs the class each atom "
                         "was extracted for; use a per-class dictionary (--dictionary per_class)")
    labels = np.array([superclasses.get(int(c), "") if c >= 0 else "" for c in fc], dtype=object)
    assigned = labels != ""
    if not assigned.any():
        raise ValueError(f"no feature's class is in the super-class table (classes {sorted(set(fc))[:5]} …, "
                         f"table classes {sorted(superclasses)[:5]} …); check that the table fits this model")
    ids = np.unique(cluster)
    purity, majority, n_assigned = _purities(cluster, labels, ids)

    def weighted(p: np.ndarray, w: np.ndarray) -> float:
        ok = w > 0
        return float(np.sum(p[ok] * w[ok]) / np.sum(w[ok]))

    rng = np.random.default_rng(seed)
    chance = []
    for _ in range(n_shuffles):
        shuffled = labels.copy()
        shuffled[assigned] = rng.permutation(labels[assigned])
        p, _, w = _purities(cluster, shuffled, ids)
        chance.append(weighted(p, w))
    return Purity(
        cluster=ids, size=np.array([np.sum(cluster == c) for c in ids]), n_assigned=n_assigned, majority=majority,
        purity=purity, mean_complexity=np.array([K[cluster == c].mean() for c in ids]),
        feature_superclass=[str(s) for s in labels], weighted_purity=weighted(purity, n_assigned),
        chance_purity=float(np.mean(chance)) if chance else float("nan"), n_unassigned=int((~assigned).sum()),
    )


def purity_columns(result: Purity, cluster: np.ndarray) -> dict[str, np.ndarray]:
    """Per-feature column ``(k,)``: the purity of the feature's cluster."""
    lookup = dict(zip(result.cluster.tolist(), result.purity.tolist()))
    return {"cluster_purity": np.array([lookup[int(c)] for c in np.asarray(cluster)], dtype=np.float64)}


def purity_figure(result: Purity) -> "Figure":
    """Purity of every meta-feature cluster against its mean ``K``; marker area ∝ cluster size,
    colour = majority super-class (the ten most frequent named, the rest grey)."""
    from scipy.stats import spearmanr

    from ..figures import new_figure

    ok = np.isfinite(result.purity)
    frequent = [s for s, _ in Counter(m for m, o in zip(result.majority, ok) if o).most_common(10)]
    palette = dict(zip(frequent, ["#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B2",
                                  "#937860", "#DA8BC3", "#8C8C8C", "#CCB974", "#64B5CD"]))
    fig = new_figure(7.0, 4.0)
    ax = fig.add_subplot()
    s = 15 + 200 * np.sqrt(result.size / max(result.size.max(), 1))
    for name in frequent + ["other"]:
        sel = ok & np.array([(m == name) if name != "other" else (m not in palette) for m in result.majority])
        if sel.any():
            ax.scatter(result.mean_complexity[sel], result.purity[sel], s=s[sel], label=name, alpha=0.85,
                       color=palette.get(name, "#D0D0D0"), edgecolors="black", linewidths=0.4)
    ax.axhline(result.chance_purity, color="grey", linestyle="--", linewidth=0.8, label="chance (shuffled)")
    varies = _varies(result.mean_complexity[ok], result.purity[ok])
    rho = spearmanr(result.mean_complexity[ok], result.purity[ok]).statistic if varies else float("nan")
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("mean complexity K of the meta-feature cluster")
    ax.set_ylabel("purity (share in majority super-class)")
    ax.set_title(f"Super-class purity of {ok.sum()} clusters (Spearman ρ with K = {rho:.2f}; "
                 f"{result.n_unassigned} features unassigned)", fontsize=9)
    ax.legend(fontsize=9, loc="center left", bbox_to_anchor=(1.0, 0.5), title="majority super-class", title_fontsize=9)
    return fig


def _varies(x: np.ndarray, y: np.ndarray) -> bool:
    """Whether a rank correlation of ``x`` and ``y`` is defined (3+ points, neither constant)."""
    return x.size > 2 and bool(np.ptp(x) > 0) and bool(np.ptp(y) > 0)


# ---------------------------------------------------------------------------------- the stages
def _hierarchy(ctx: Any) -> Hierarchy:
    K = ctx["complexity"].score
    gamma = ctx.get("importance")
    return hierarchy(ctx["dictionary"].D, K, np.zeros_like(K) if gamma is None else np.asarray(gamma),
                     seed=ctx.config.seed)


def _hierarchy_figures(result: Hierarchy, ctx: Any) -> dict[str, Any]:
    from ..stages import FigureSpec

    out = {"hierarchy_complexity": FigureSpec(
        hierarchy_figure(result, color_by="complexity"), "A hierarchy of meta-features by complexity (paper Fig. 14)",
        "Recursive K-means on the L2-normalised atoms, four levels; each sub-cluster coloured by its members' mean "
        "K. η² is the share of K's variance between the clusters of a level, beside its chance value: the paper "
        "finds a clear split by complexity at the first level that intensifies with depth.")}
    if ctx.has("importance"):
        out["hierarchy_importance"] = FigureSpec(
            hierarchy_figure(result, color_by="importance"), "The same hierarchy by importance (paper Fig. 15)",
            "The sub-clusters coloured by mean signed importance Γ; the paper finds the important features "
            "clustering at the top.")
    return out


def _purity(ctx: Any) -> Purity:
    from ..data.superclasses import load_superclasses

    table = load_superclasses(ctx.config.superclasses, class_names=ctx.inputs.get("class_names"))
    return superclass_purity(ctx["metafeatures"].cluster, ctx["dictionary"].feature_class, table,
                             ctx["complexity"].score, seed=ctx.config.seed)


def _purity_figures(result: Purity, ctx: Any) -> dict[str, Any]:
    from ..stages import FigureSpec

    return {"purity": FigureSpec(
        purity_figure(result), "Super-class purity of meta-features (paper Fig. 13)",
        f"Share of each meta-feature's atoms whose class is in its majority super-class (table: "
        f"{ctx.config.superclasses}), against its mean K; chance purity {result.chance_purity:.2f}. The paper finds "
        "simple meta-features (grass, waves, low-pixel-quality detectors) less pure than complex ones.")}


def _stages() -> tuple[Any, Any]:
    from ._stage import result_stage

    tree = result_stage("hierarchy", _hierarchy, Hierarchy, needs=("dictionary", "complexity"),
                        optional=("importance",),
                        settings=("seed",), section="what", figures=_hierarchy_figures, columns=columns)
    purity = result_stage("purity", _purity, Purity, needs=("dictionary", "complexity", "metafeatures"),
                          settings=("seed", "superclasses"), inputs=("classes",), section="what",
                          figures=_purity_figures,
                          columns=lambda r: {"superclass": np.asarray(r.feature_superclass, dtype=object)},
                          applies=lambda ctx: ctx.config.superclasses is not None)
    return tree, purity


STAGES = _stages()
