"""Meta-features: clustering and embedding of the dictionary atoms."""

from __future__ import annotations

import numpy as np
import pytest

from feature_complexity.analyses.metafeatures import (
    cluster_complexity_figure,
    cluster_gallery_figure,
    default_n_clusters,
    embedding_figure,
    metafeatures,
)


def _planted(n_groups: int = 5, per_group: int = 12, d: int = 40, seed: int = 0):
    """Atoms scattered tightly around ``n_groups`` random non-negative directions, with random
    scales (the L2 normalisation must make the scale irrelevant). Returns ``D (k, d)``, labels,
    complexity (group-dependent) and importance."""
    rng = np.random.default_rng(seed)
    centers = rng.random((n_groups, d)) ** 4  # sparse-ish, well separated directions
    labels = np.repeat(np.arange(n_groups), per_group)
    scale = rng.uniform(0.1, 10.0, size=(labels.size, 1))
    D = (centers[labels] + 0.01 * rng.random((labels.size, d))) * scale
    complexity = labels / n_groups + 0.01 * rng.random(labels.size)
    importance = rng.normal(size=labels.size)
    return D, labels, complexity, importance


def test_default_cluster_count_matches_paper_ratio():
    assert default_n_clusters(10_000) == 149  # round(10000 / 67); the paper uses 150
    assert default_n_clusters(100) == 10 and default_n_clusters(80) == 10  # small models: 10
    assert default_n_clusters(12) == 2
    assert default_n_clusters(10) == 2


def test_planted_clusters_recovered_and_scale_ignored():
    from sklearn.metrics import adjusted_rand_score

    D, labels, K, G = _planted()
    mf = metafeatures(D, K, G, n_clusters=5, seed=0, embed="pca")
    assert adjusted_rand_score(labels, mf.cluster) >= 0.9
    assert mf.embedding.shape == (D.shape[0], 2)
    assert len(mf.cluster_table) == 5
    assert mf.cluster_table["size"].sum() == D.shape[0]
    # sorted by complexity, and cluster ids renumbered so 0 is the simplest
    assert np.all(np.diff(mf.cluster_table["mean_complexity"].to_numpy()) >= 0)
    assert mf.cluster_table["cluster"].tolist() == [0, 1, 2, 3, 4]
    # mean complexity of a cluster is the mean over its members (independent recomputation)
    for _, row in mf.cluster_table.iterrows():
        assert row["mean_complexity"] == pytest.approx(K[mf.cluster == row["cluster"]].mean())
        assert row["mean_importance"] == pytest.approx(G[mf.cluster == row["cluster"]].mean())


def test_deterministic_for_a_seed_and_default_count():
    D, _, K, G = _planted(n_groups=3, per_group=50)
    a = metafeatures(D, K, G, seed=3, embed="pca")
    b = metafeatures(D, K, G, seed=3, embed="pca")
    assert a.cluster.max() + 1 == default_n_clusters(150) == 10
    np.testing.assert_array_equal(a.cluster, b.cluster)
    np.testing.assert_array_equal(a.embedding, b.embedding)


def test_umap_falls_back_to_pca_for_few_atoms():
    D, _, K, G = _planted(n_groups=2, per_group=4)
    with pytest.warns(UserWarning, match="PCA"):
        mf = metafeatures(D, K, G, n_clusters=2, embed="umap")
    assert mf.embed_method == "pca"


def test_bad_input_messages():
    D, _, K, G = _planted(n_groups=2, per_group=4)
    with pytest.raises(ValueError, match="one value per atom"):
        metafeatures(D, K[:-1], G)
    with pytest.raises(ValueError, match="n_clusters"):
        metafeatures(D, K, G, n_clusters=100)
    with pytest.raises(ValueError, match="embed"):
        metafeatures(D, K, G, embed="tsne")  # type: ignore[arg-type]


def test_figures_render():
    D, _, K, G = _planted(n_groups=3, per_group=6)
    mf = metafeatures(D, K, G, n_clusters=3, embed="pca")
    images = np.random.default_rng(0).integers(0, 255, size=(20, 8, 8, 3), dtype=np.uint8)
    tops = np.random.default_rng(1).integers(0, 20, size=(D.shape[0], 4))
    for fig in (
        embedding_figure(mf, K, G),
        cluster_complexity_figure(mf),
        cluster_gallery_figure(mf, images, tops, n_clusters_shown=3, n_per_cluster=4),
    ):
        assert fig.axes
        import matplotlib.pyplot as plt

        plt.close(fig)
