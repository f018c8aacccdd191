"""Meta-features: the dictionary atoms grouped and embedded in 2-D (paper section 7, Fig. 2).

Notation (docs/ARCHITECTURE.md): ``D`` is the dictionary ``(k, d)`` with atoms as rows, ``K`` the
complexity ``(k,)``, ``Γ`` the importance ``(k,)``.

The paper runs K-means (150 clusters for 10,000 features) and UMAP on the rows of ``D``. The rows
are L2-normalised first so that the geometry is the cosine one: two atoms that point the same way
but differ in scale describe the same direction of the penultimate space, hence the same feature.

Figures are functions returning matplotlib ``Figure`` objects; saving them is the caller's job.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

if TYPE_CHECKING:  # heavy imports stay lazy
    from pathlib import Path

    import pandas as pd
    from matplotlib.figure import Figure

__all__ = [
    "MetaFeatures",
    "metafeatures",
    "default_n_clusters",
    "embedding_figure",
    "cluster_complexity_figure",
    "cluster_gallery_figure",
]

# below this many atoms UMAP's neighbour graph is too small to mean anything: use PCA
_MIN_ATOMS_FOR_UMAP = 15


@dataclass
class MetaFeatures:
    """Result of :func:`metafeatures`.

    Attributes:
        embedding: ``(k, 2)`` 2-D coordinates of every atom (UMAP or PCA of the normalised rows).
        cluster: ``(k,)`` int cluster id of every atom, ``0 .. n_clusters - 1``.
        cluster_table: one row per cluster with ``cluster``, ``size``, ``mean_complexity``,
            ``mean_importance``, ``members`` (list of feature ids), sorted by increasing mean
            complexity (the order of the paper's Fig. 2, right).
        embed_method: ``"umap"`` or ``"pca"`` (what was actually used).
    """

    embedding: np.ndarray
    cluster: np.ndarray
    cluster_table: "pd.DataFrame"
    embed_method: str


def default_n_clusters(k: int) -> int:
    """The paper's ratio, 150 clusters for 10,000 features (``round(k / 67)``), but at least
    ``min(10, k // 5)``: with the 80-100 features of a 10-class model the ratio would give 1-2
    clusters, too few to show anything (their atoms form about one group per class)."""
    return max(2, min(10, k // 5), int(round(k / 67)))


def metafeatures(
    D: np.ndarray,
    complexity: np.ndarray,
    importance: np.ndarray,
    *,
    n_clusters: int | None = None,
    seed: int = 0,
    embed: Literal["umap", "pca"] = "umap",
    n_init: int = 4,
) -> MetaFeatures:
    """Cluster and embed the dictionary atoms.

    Args:
        D: ``(k, d)`` dictionary, atoms as rows.
        complexity: ``(k,)`` complexity ``K`` of every feature.
        importance: ``(k,)`` importance ``Γ`` of every feature (signed).
        n_clusters: number of K-means clusters; ``None`` uses :func:`default_n_clusters`.
        seed: random state of K-means and UMAP.
        embed: ``"umap"`` (needs ``umap-learn``; falls back to PCA with a warning when it is not
            installed or when ``k < 15``) or ``"pca"``.
        n_init: K-means restarts.

    Returns:
        a :class:`MetaFeatures`.
    """
    D = np.asarray(D, dtype=np.float64)
    if D.ndim != 2:
        raise ValueError(f"D must be a 2-D (k, d) array of atoms as rows, got shape {D.shape}")
    k = D.shape[0]
    complexity = np.asarray(complexity, dtype=np.float64).reshape(-1)
    importance = np.asarray(importance, dtype=np.float64).reshape(-1)
    if complexity.shape[0] != k or importance.shape[0] != k:
        raise ValueError(
            f"D has {k} atoms but complexity has {complexity.shape[0]} and importance "
            f"{importance.shape[0]} values; pass one value per atom (row of D)"
        )
    if not np.all(np.isfinite(D)):
        raise ValueError("D contains NaN or inf; check the dictionary file (dictionary.npz)")
    if n_clusters is None:
        n_clusters = default_n_clusters(k)
    if not 1 <= n_clusters <= k:
        raise ValueError(f"n_clusters must be between 1 and the number of atoms ({k}), got {n_clusters}")
    if embed not in ("umap", "pca"):
        raise ValueError(f"embed must be 'umap' or 'pca', got {embed!r}")

    norms = np.linalg.norm(D, axis=1, keepdims=True)
    # an all-zero atom has no direction; keep it at the origin rather than dividing by zero
    X = D / np.maximum(norms, 1e-12)

    from sklearn.cluster import KMeans

    cluster = KMeans(n_clusters=n_clusters, n_init=n_init, random_state=seed).fit_predict(X)
    cluster = _relabel_by_complexity(cluster, complexity)

    embedding, method = _embed(X, embed, seed)

    import pandas as pd

    rows = []
    for c in range(n_clusters):
        members = np.flatnonzero(cluster == c)
        rows.append(
            {
                "cluster": c,
                "size": int(members.size),
                "mean_complexity": float(complexity[members].mean()) if members.size else np.nan,
                "mean_importance": float(importance[members].mean()) if members.size else np.nan,
                "members": members.tolist(),
            }
        )
    table = pd.DataFrame(rows).sort_values("mean_complexity", kind="stable").reset_index(drop=True)
    return MetaFeatures(embedding=embedding, cluster=cluster, cluster_table=table, embed_method=method)


def _relabel_by_complexity(cluster: np.ndarray, complexity: np.ndarray) -> np.ndarray:
    """Renumber clusters so that cluster 0 has the lowest mean complexity: ids then read as a
    complexity rank, and stay the same between runs that find the same partition."""
    ids = np.unique(cluster)
    means = np.array([complexity[cluster == c].mean() for c in ids])
    order = ids[np.argsort(means, kind="stable")]
    mapping = np.empty(cluster.max() + 1, dtype=np.int64)
    mapping[order] = np.arange(order.size)
    return mapping[cluster]


def _embed(X: np.ndarray, embed: str, seed: int) -> tuple[np.ndarray, str]:
    """2-D coordinates of the rows of ``X`` ``(k, d)``; returns ``(embedding (k, 2), method)``."""
    k = X.shape[0]
    if embed == "umap":
        if k < _MIN_ATOMS_FOR_UMAP:
            warnings.warn(f"only {k} atoms: UMAP needs at least {_MIN_ATOMS_FOR_UMAP}; using PCA", stacklevel=3)
        else:
            try:
                import umap  # noqa: F401  (umap-learn, optional)
            except ImportError:
                warnings.warn("umap-learn is not installed (pip install umap-learn); using PCA", stacklevel=3)
            else:
                reducer = umap.UMAP(
                    n_components=2,
                    n_neighbors=min(15, k - 1),
                    metric="cosine",
                    random_state=seed,
                )
                return np.asarray(reducer.fit_transform(X), dtype=np.float64), "umap"
    return _pca_2d(X), "pca"


def _pca_2d(X: np.ndarray) -> np.ndarray:
    """First two principal components of ``X`` ``(k, d)``, sign fixed so results are deterministic."""
    Xc = X - X.mean(axis=0, keepdims=True)
    U, S, _ = np.linalg.svd(Xc, full_matrices=False)
    out = np.zeros((X.shape[0], 2))
    m = min(2, S.size)
    out[:, :m] = U[:, :m] * S[:m]
    # SVD signs are arbitrary: make the largest-magnitude coordinate of each axis positive
    for j in range(m):
        if out[np.argmax(np.abs(out[:, j])), j] < 0:
            out[:, j] *= -1
    return out


# ---------------------------------------------------------------------------------- figures
def embedding_figure(mf: MetaFeatures, complexity: np.ndarray, importance: np.ndarray) -> "Figure":
    """The 2-D embedding of the atoms, coloured by complexity (left) and by importance (right)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4.4), constrained_layout=True)
    e = mf.embedding
    s = max(2.0, 40.0 / np.sqrt(max(len(e), 1)) * 3)
    sc = axes[0].scatter(e[:, 0], e[:, 1], c=complexity, cmap="viridis", s=s, linewidths=0)
    fig.colorbar(sc, ax=axes[0], label="complexity K")
    lim = float(np.max(np.abs(importance))) or 1.0
    # a diverging map puts Γ ≈ 0 at white: grey edges keep those points visible on white
    sc = axes[1].scatter(e[:, 0], e[:, 1], c=importance, cmap="RdBu_r", vmin=-lim, vmax=lim, s=s,
                         edgecolors="0.45", linewidths=0.4)
    fig.colorbar(sc, ax=axes[1], label="importance Γ")
    for ax, title in zip(axes, ("coloured by complexity", "coloured by importance")):
        ax.set_title(f"{mf.embed_method.upper()} of the dictionary atoms, {title}", fontsize=11)
        ax.set_xticks([])
        ax.set_yticks([])
    return fig


def cluster_complexity_figure(mf: MetaFeatures) -> "Figure":
    """Mean complexity of every meta-feature cluster, sorted (the paper's Fig. 2, right)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    t = mf.cluster_table
    fig, ax = plt.subplots(figsize=(max(5.0, min(14.0, 0.08 * len(t) + 4)), 3.2), constrained_layout=True)
    colors = plt.get_cmap("viridis")(np.linspace(0, 1, len(t)))
    ax.bar(np.arange(len(t)), t["mean_complexity"], color=colors, width=0.9)
    ax.set_xlabel("meta-feature cluster (sorted by mean complexity)")
    ax.set_ylabel("mean complexity K")
    if len(t) <= 40:
        ax.set_xticks(np.arange(len(t)), [str(c) for c in t["cluster"]], fontsize=9)
    else:
        ax.set_xticks([])
    return fig


def cluster_gallery_figure(
    mf: MetaFeatures,
    images: np.ndarray | Callable[[int], np.ndarray],
    top_images: Callable[[int], Sequence[int]] | np.ndarray,
    *,
    n_clusters_shown: int = 10,
    n_per_cluster: int = 6,
) -> "Figure":
    """Clusters sorted by complexity, each shown by its members' top images (Fig. 3 / 7 style).

    Args:
        mf: the meta-features.
        images: ``(n_images, H, W, 3)`` uint8 array, or a function ``i -> (H, W, 3) uint8``
            (e.g. ``ImageSource.raw_image``).
        top_images: ``(k, n_top)`` int array of each feature's top image indices, or a function
            ``feature -> indices``.
        n_clusters_shown: how many clusters, spread evenly from the simplest to the most complex.
        n_per_cluster: images per cluster row; taken round-robin over the cluster's members so
            that one feature does not fill the row.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    get_image = images if callable(images) else (lambda i: np.asarray(images)[i])
    get_top = top_images if callable(top_images) else (lambda f: np.asarray(top_images)[f])
    t = mf.cluster_table
    n_show = min(n_clusters_shown, len(t))
    rows = np.unique(np.linspace(0, len(t) - 1, n_show).round().astype(int))
    fig, axes = plt.subplots(
        len(rows), n_per_cluster, figsize=(1.3 * n_per_cluster + 1.2, 1.3 * len(rows)), squeeze=False
    )
    for r, row_idx in enumerate(rows):
        row = t.iloc[row_idx]
        picks: list[int] = []
        tops = [list(get_top(f)) for f in row["members"]]
        depth = 0
        while len(picks) < n_per_cluster and any(depth < len(tp) for tp in tops):
            for tp in tops:
                if depth < len(tp) and tp[depth] not in picks and len(picks) < n_per_cluster:
                    picks.append(int(tp[depth]))
            depth += 1
        for c in range(n_per_cluster):
            ax = axes[r, c]
            ax.axis("off")
            if c < len(picks):
                ax.imshow(get_image(picks[c]))
        axes[r, 0].text(
            -0.08, 0.5, f"#{int(row['cluster'])}\nK={row['mean_complexity']:.2f}",
            transform=axes[r, 0].transAxes, ha="right", va="center", fontsize=8,
        )
    fig.suptitle("meta-features from simplest (top) to most complex (bottom)", fontsize=9)
    fig.subplots_adjust(left=0.12, wspace=0.05, hspace=0.08)
    return fig


# ---------------------------------------------------------------------------------- the stage
def _compute(ctx: Any) -> MetaFeatures:
    d = ctx["dictionary"]
    K = ctx["complexity"].score
    gamma = ctx.get("importance")
    gamma = np.zeros_like(K) if gamma is None else np.asarray(gamma)
    return metafeatures(d.D, K, gamma, seed=ctx.config.seed)


def _save(mf: MetaFeatures, out: Path) -> None:
    import pandas as pd

    from ..io import write_json, write_parquet

    write_parquet(out / "metafeatures.parquet", pd.DataFrame({
        "feature": np.arange(len(mf.cluster)), "cluster": mf.cluster,
        "embed_x": mf.embedding[:, 0], "embed_y": mf.embedding[:, 1]}))
    write_json(out / "metafeatures.json", {"embed_method": mf.embed_method,
                                           "clusters": mf.cluster_table.to_dict(orient="records")})


def _load(out: Path) -> MetaFeatures:
    import pandas as pd

    from ..io import read_json

    frame = pd.read_parquet(out / "metafeatures.parquet")
    info = read_json(out / "metafeatures.json")
    return MetaFeatures(embedding=frame[["embed_x", "embed_y"]].to_numpy(), cluster=frame["cluster"].to_numpy(),
                        cluster_table=pd.DataFrame(info["clusters"]), embed_method=info["embed_method"])


def _figures(mf: MetaFeatures, ctx: Any) -> dict[str, Any]:
    from ..stages import FigureSpec

    K = ctx["complexity"].score
    gamma = ctx.get("importance")
    gamma = np.zeros_like(K) if gamma is None else np.asarray(gamma)
    method = mf.embed_method.upper()
    return {
        "metafeatures_embedding": FigureSpec(
            embedding_figure(mf, K, gamma), f"Meta-features: the dictionary in 2-D ({method})",
            f"Every point is an atom of D (L2-normalised), placed by {method}; colour: complexity K (left) and "
            "signed importance Γ (right). The paper finds complexity organised in regions of this map."),
        "metafeatures_clusters": FigureSpec(
            cluster_complexity_figure(mf), "Mean complexity of each meta-feature",
            "K-means clusters of the atoms (meta-features), sorted by their mean complexity: from colour and "
            "texture detectors (simple) to object parts (complex) in the paper."),
    }


def _columns(mf: MetaFeatures) -> dict[str, np.ndarray]:
    return {"cluster": mf.cluster, "embed_x": mf.embedding[:, 0], "embed_y": mf.embedding[:, 1]}


def _stage() -> Any:
    from ..stages import Stage

    return Stage("metafeatures", _compute, needs=("dictionary", "complexity"), optional=("importance",),
                 settings=("seed",), save=_save, load=_load, outputs=("metafeatures.parquet",), section="what",
                 figures=_figures, columns=_columns)


STAGE = _stage()
