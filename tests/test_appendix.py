"""The paper's appendix analyses: redundancy, robustness, locality, support features, hierarchy,
super-class purity and the built-in super-class tables. Each has a planted case whose answer is
known and a check against an independent computation (kernel-form CKA, closed forms, loops)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from feature_complexity.analyses import hierarchy as hier_mod
from feature_complexity.analyses import locality as loc_mod
from feature_complexity.analyses import redundancy as red_mod
from feature_complexity.analyses import robustness as rob_mod
from feature_complexity.analyses import support as sup_mod
from feature_complexity.analyses.hierarchy import hierarchy, superclass_purity
from feature_complexity.analyses.locality import hoyer, locality
from feature_complexity.analyses.redundancy import redundancy
from feature_complexity.analyses.robustness import robustness
from feature_complexity.analyses.support import ablated_logits, support_curves
from feature_complexity.data.superclasses import load_superclasses


def _figure_ok(fig) -> None:
    """A figure has a title (axes or suptitle) and labelled axes on its first panel."""
    ax = fig.axes[0]
    assert ax.get_title() or fig._suptitle is not None
    assert ax.get_xlabel() and ax.get_ylabel()


# ------------------------------------------------------------------------------ redundancy
def _kernel_cka(X: np.ndarray, z: np.ndarray) -> float:
    """Linear CKA in the kernel form, with the n × n centring matrix (independent of analyses.cka)."""
    n = X.shape[0]
    H = np.eye(n) - np.ones((n, n)) / n
    K, L = H @ (X @ X.T) @ H, H @ np.outer(z, z) @ H
    return float(np.sum(K * L) / math.sqrt(np.sum(K * K) * np.sum(L * L)))


def test_redundancy_planted_copies_vs_one_neuron():
    rng = np.random.default_rng(0)
    n, d = 1000, 40
    z = rng.normal(size=n)
    # a feature copied into every neuron (with independent noise): any subset still carries it
    A_copies = z[:, None] + 0.3 * rng.normal(size=(n, d))
    r = redundancy(A_copies, z[:, None], fractions=(0.1, 0.5), n_masks=20, seed=0)
    assert r.per_fraction[0, 0] > 0.9 and r.per_fraction[1, 0] > 0.97
    # a feature in one neuron among d independent ones: the ratio is √(d/p) on the masks that keep
    # that neuron (CKA = 1/||XᵀX||_F ∝ 1/√p) and ≈ 0 on the others (module docstring)
    A_iso = rng.normal(size=(n, d))
    one = redundancy(A_iso, A_iso[:, [7]], fractions=(0.1, 0.25, 0.5), n_masks=150, seed=1)
    kept = one.kept[:, :, 7]
    for i, p in enumerate((4, 10, 20)):
        assert np.allclose(one.ratio[i][kept[i]], math.sqrt(d / p), rtol=0.08)
        assert np.all(np.abs(one.ratio[i][~kept[i]]) < 0.06)
        assert kept[i].mean() == pytest.approx(p / d, abs=0.13)  # uniform subsets (4 binomial SE)
    assert one.score[0] < r.score[0] - 0.3


def test_redundancy_matches_kernel_form_with_multiplied_masks():
    rng = np.random.default_rng(2)
    A = rng.normal(size=(40, 12)) ** 2
    Z = rng.random((40, 3))
    r = redundancy(A, Z, fractions=(0.25, 0.75), n_masks=3, seed=5)
    for i in range(2):
        for j in range(3):
            m = r.kept[i, j]
            assert m.sum() == round(r.fractions[i] * 12)
            for f in range(3):
                ref = _kernel_cka(A * m, Z[:, f]) / _kernel_cka(A, Z[:, f])  # ⊙ m, not a column subset
                assert r.ratio[i, j, f] == pytest.approx(ref, rel=1e-9)
    assert np.allclose(r.score, r.ratio.mean(axis=1).mean(axis=0))
    again = redundancy(A, Z, fractions=(0.25, 0.75), n_masks=3, seed=5)
    assert np.array_equal(again.ratio, r.ratio) and np.array_equal(again.kept, r.kept)
    assert not np.array_equal(redundancy(A, Z, fractions=(0.25, 0.75), n_masks=3, seed=6).kept, r.kept)
    cols = red_mod.columns(r)
    assert set(cols) == {"redundancy", "redundancy_keep_0.25", "redundancy_keep_0.75"}
    assert all(v.shape == (3,) for v in cols.values())
    _figure_ok(red_mod.redundancy_figure(r, rng.random(3)))


def test_redundancy_errors_and_constant_feature():
    A = np.random.default_rng(0).normal(size=(30, 6))
    with pytest.raises(ValueError, match="keep fractions"):
        redundancy(A, A[:, :1], fractions=(0.0,))
    with pytest.raises(ValueError, match="same images"):
        redundancy(A, A[:10, :1])
    r = redundancy(A, np.c_[A[:, 0], np.ones(30)], fractions=(0.5,), n_masks=2)
    assert np.isfinite(r.score[0]) and np.isnan(r.score[1])


# ------------------------------------------------------------------------------ robustness
def _smooth_images(n: int = 20, size: int = 8, seed: int = 0):
    """Images that are a per-image brightness plus a faint texture: (n, 3, size, size) float64."""
    import torch

    g = torch.Generator().manual_seed(seed)
    base = torch.rand(n, 1, 1, 1, generator=g, dtype=torch.float64)
    return base + 0.01 * torch.randn(n, 3, size, size, generator=g, dtype=torch.float64)


def _mean_and_checker(calls: list[int]):
    """codes_of: [mean of the pixels, mean of the checkerboard-signed pixels (high frequency),
    mean of the squared pixels (nonlinear: noise shifts its mean by σ²)]."""
    import torch

    def codes_of(x):
        calls.append(x.shape[0])
        h, w = x.shape[-2:]
        checker = (-1.0) ** (torch.arange(h)[:, None] + torch.arange(w)[None, :])
        feats = [x.mean(dim=(1, 2, 3)), (x * checker.to(x)).mean(dim=(1, 2, 3)), (x**2).mean(dim=(1, 2, 3))]
        return torch.stack(feats, dim=1)

    return codes_of


def test_robustness_mean_pixel_matches_closed_form_and_checker_is_fragile():
    x = _smooth_images()
    calls: list[int] = []
    N = 3 * 8 * 8
    r = robustness(_mean_and_checker(calls), x, std=1.0, sigmas=(0.01, 0.1, 0.5), n_draws=100, seed=0)
    # a mean of N independent N(0, σ²) pixel perturbations has variance σ²/N (both features are
    # linear with ||w||² = 1/N, so both share it); the estimate averages 20 × 99 degrees of freedom
    assert np.allclose(r.variance[:, 0], np.array([0.01, 0.1, 0.5]) ** 2 / N, rtol=0.15)
    assert np.allclose(r.variance[:, 1], np.array([0.01, 0.1, 0.5]) ** 2 / N, rtol=0.15)
    # mean of (x + ε)²: per image Var = (4σ² Σ_p x_p² + 2Nσ⁴) / N², averaged over images
    s2 = np.array([0.01, 0.1, 0.5])[:, None] ** 2
    sq = (x.numpy() ** 2).reshape(len(x), -1).sum(axis=1)[None, :]
    assert np.allclose(r.variance[:, 2], ((4 * s2 * sq + 2 * N * s2**2) / N**2).mean(axis=1), rtol=0.15)
    # normalised by the spread across clean images: brightness varies, the checkerboard hardly does
    assert np.all(r.sensitivity[:, 0] < 1e-3 * np.array([1, 100, 2500]) + 1e-6)
    assert r.sensitivity[1, 1] > 10 * r.sensitivity[1, 0] and r.sensitivity[1, 1] > 1
    # batched: one call per 10 images' draws plus the clean pass, not 100 calls per image
    assert len(calls) == 1 + 3 * 2 and max(calls) == 1000
    again = robustness(_mean_and_checker([]), x, std=1.0, sigmas=(0.01, 0.1, 0.5), n_draws=100, seed=0)
    assert np.array_equal(again.variance, r.variance)
    cols = rob_mod.columns(r)
    assert list(cols) == ["noise_sensitivity_0.01", "noise_sensitivity_0.1", "noise_sensitivity_0.5"]
    _figure_ok(rob_mod.robustness_figure(r, np.array([0.1, 0.9, 0.5])))


def test_robustness_sigma_in_pixels_through_per_channel_std():
    x = _smooth_images(n=10)
    std = (0.2, 0.25, 0.5)
    r = robustness(_mean_and_checker([]), x, std=std, sigmas=(0.1,), n_draws=200, seed=3, batch_size=64)
    # noise σ/std_c on each of the 64 pixels of channel c: Var(mean) = Σ_c 64 (σ/std_c)² / N²
    expected = sum(64 * (0.1 / s) ** 2 for s in std) / (3 * 64) ** 2
    assert r.variance[0, 0] == pytest.approx(expected, rel=0.15)
    with pytest.raises(ValueError, match="std must be positive"):
        robustness(_mean_and_checker([]), x, std=0.0)
    with pytest.raises(ValueError, match=r"codes_of must map"):
        robustness(lambda b: b.mean(dim=(1, 2, 3)), x, std=1.0, n_draws=2)


# ------------------------------------------------------------------------------ locality
def test_hoyer_planted_and_brute_force():
    D = np.zeros((4, 16))
    D[0, 3] = 5.0  # one-hot: local
    D[1] = 2.0  # constant: fully distributed
    D[2, :2] = 1.0  # two equal neurons
    H = hoyer(D)
    assert H[0] == pytest.approx(1.0) and H[1] == pytest.approx(0.0) and np.isnan(H[3])
    assert H[2] == pytest.approx((4 - math.sqrt(2)) / 3)
    rng = np.random.default_rng(0)
    R = rng.normal(size=(7, 9)) * (rng.random((7, 9)) < 0.5) + 1e-3
    for i, row in enumerate(R):
        l1 = sum(abs(v) for v in row)
        l2 = math.sqrt(sum(v * v for v in row))
        assert hoyer(R)[i] == pytest.approx((3.0 - l1 / l2) / 2.0, rel=1e-12)
    assert np.allclose(hoyer(R * 7.3), hoyer(R))  # scale-invariant
    loc = locality(D[:3])
    assert loc.top_neuron[0] == 3 and loc.top_share[0] == 1.0 and loc.top_share[1] == pytest.approx(1 / 16)
    assert set(loc_mod.columns(loc)) == {"hoyer", "top_neuron_share"}
    _figure_ok(loc_mod.locality_figure(locality(R), rng.random(7)))
    with pytest.raises(ValueError, match="at least 2 neurons"):
        hoyer(np.ones((3, 1)))


# ------------------------------------------------------------------------------ support
def _linear_head(W: np.ndarray):
    import torch

    head = torch.nn.Linear(W.shape[1], W.shape[0], bias=False).double()
    with torch.no_grad():
        head.weight.copy_(torch.as_tensor(W))
    return head.eval()


def test_support_unused_feature_changes_no_logit_and_adds_no_tail():
    rng = np.random.default_rng(0)
    n, k, d, c = 60, 8, 5, 3
    D = rng.random((k, d))
    Z = rng.random((n, k))
    Z[:, 4:] = 0.0  # the bottom half are unused atoms (zero codes, zero importance)
    head = _linear_head(rng.normal(size=(c, d)))
    decode = lambda z: z @ D  # noqa: E731
    full = ablated_logits(Z, np.ones(k, bool), decode, head)
    for j in range(4, k):
        keep = np.ones(k, bool)
        keep[j] = False
        assert np.array_equal(ablated_logits(Z, keep, decode, head), full)
    labels = full.argmax(axis=1)
    G = np.r_[rng.random(4) + 1, np.zeros(4)]
    s = support_curves(Z, decode, head, labels, G, rng.random(k), fractions=(0, 0.5, 1))
    assert s.tail_gain == 0.0 and s.relative["abs_importance"][-1] == 1.0
    assert s.relative["abs_importance"][1] == 1.0  # the used half is everything
    cols = sup_mod.columns(s)
    assert np.array_equal(cols["support_tail"], np.r_[np.zeros(4), np.ones(4)])


def test_support_curves_match_brute_force_loop():
    rng = np.random.default_rng(1)
    n, k, d, c = 80, 10, 6, 4
    D = rng.random((k, d))
    Z = rng.random((n, k))
    W = rng.normal(size=(c, d))
    A = Z @ D + 0.05 * rng.normal(size=(n, d))
    labels = (A @ W.T).argmax(axis=1)
    labels[:10] = -1  # unknown labels are left out
    labels[10:20] = (labels[10:20] + 1) % c  # the model gets these wrong
    G, K = rng.normal(size=k), rng.random(k)
    p = np.linspace(0, 1, 6)
    s = support_curves(Z, lambda z: z @ D, _linear_head(W), labels, G, K, A=A, fractions=p, seed=3)
    known = labels >= 0
    ref = np.mean((A @ W.T).argmax(1)[known] == labels[known])
    assert s.reference == "model" and s.reference_accuracy == pytest.approx(ref)
    orders = {"abs_importance": np.argsort(-np.abs(G)), "importance": np.argsort(-G), "complexity": np.argsort(K),
              "random": np.random.default_rng(3).permutation(k)}
    for name, order in orders.items():
        assert np.array_equal(s.orders[name], order)
        for i, frac in enumerate(p):
            Zm = np.zeros_like(Z)
            top = order[: int(round(frac * k))]
            Zm[:, top] = Z[:, top]
            acc = np.mean(((Zm @ D) @ W.T).argmax(1)[known] == labels[known])
            assert s.accuracy[name][i] == pytest.approx(acc) and s.relative[name][i] == pytest.approx(acc / ref)
    half = orders["abs_importance"][:5]
    Zh = np.zeros_like(Z)
    Zh[:, half] = Z[:, half]
    acc_half = np.mean(((Zh @ D) @ W.T).argmax(1)[known] == labels[known])
    assert s.tail_gain == pytest.approx((s.accuracy["abs_importance"][-1] - acc_half) / ref)
    assert s.tail_mean_complexity == pytest.approx(np.delete(K, half).mean())
    _figure_ok(sup_mod.support_figure(s))
    with pytest.raises(ValueError, match="known label"):
        support_curves(Z, lambda z: z @ D, _linear_head(W), -np.ones(n, int), G, K)


# ------------------------------------------------------------------------------ hierarchy
def _nested_atoms(seed: int = 0):
    """80 atoms in 2 coarse × 2 fine groups of 20 (noisy, random scales); K follows the coarse group
    (low for group 0, high for group 1), importance the reverse."""
    rng = np.random.default_rng(seed)
    d = 32
    coarse = np.repeat([0, 1], 40)
    fine = np.repeat(np.arange(4), 20)
    D = np.zeros((80, d))
    for g in (0, 1):  # orthogonal blocks for the coarse groups; the fine split lives inside each block
        D[coarse == g, 16 * g : 16 * g + 16] = 1.0
        D[(coarse == g) & (fine % 2 == 1), 16 * g : 16 * g + 8] += 1.0
    D += 0.05 * rng.random(D.shape)
    K = 0.2 + 0.6 * coarse + 0.02 * rng.random(80)
    G = 1.0 - K
    return D * rng.uniform(0.5, 5.0, size=(80, 1)), coarse, fine, K, G


def test_hierarchy_planted_split_by_complexity_at_level_one():
    from sklearn.metrics import adjusted_rand_score

    D, coarse, fine, K, G = _nested_atoms()
    t = hierarchy(D, K, G, branching=2, n_levels=4, seed=0, n_init=1)
    assert adjusted_rand_score(coarse, t.assignment[1]) == 1.0
    assert adjusted_rand_score(fine, t.assignment[2]) == 1.0
    assert t.complexity_separation[1] > 0.99 and t.chance_separation[1] == pytest.approx(1 / 79)
    assert np.all(np.diff(t.complexity_separation) >= -1e-12)  # nested partitions
    # children are numbered by increasing mean K: the first child of the root is the simple group
    kids = np.flatnonzero(t.parent == 0)
    assert t.mean_complexity[kids[0]] < 0.3 < 0.7 < t.mean_complexity[kids[1]]
    # structure: every level partitions the features; members of children = members of parent
    for lv in range(5):
        nodes = np.flatnonzero(t.level == lv)
        assert sorted(np.concatenate([t.members[i] for i in nodes]).tolist()) == list(range(80))
    for node in range(1, t.parent.size):
        assert set(t.members[node]) <= set(t.members[t.parent[node]])
        assert t.mean_complexity[node] == pytest.approx(K[t.members[node]].mean())
    again = hierarchy(D, K, G, branching=2, n_levels=4, seed=0, n_init=1)
    assert all(np.array_equal(a, b) for a, b in zip(again.members, t.members))
    assert set(hier_mod.columns(t)) == {f"hierarchy_level_{i}" for i in (1, 2, 3, 4)}
    _figure_ok(hier_mod.hierarchy_figure(t))
    _figure_ok(hier_mod.hierarchy_figure(t, color_by="importance"))


def test_hierarchy_separation_against_groupby_and_permutation_chance():
    rng = np.random.default_rng(4)
    D, K, G = rng.random((60, 10)), rng.random(60), rng.normal(size=60)
    t = hierarchy(D, K, G, branching=(3, 2), n_levels=2, seed=1, n_init=1)
    for lv in (1, 2):
        g = t.assignment[lv]
        between = sum((g == u).sum() * (K[g == u].mean() - K.mean()) ** 2 for u in np.unique(g))
        assert t.complexity_separation[lv] == pytest.approx(between / np.sum((K - K.mean()) ** 2))
    # E[η²] under random relabelling is (m − 1)/(k − 1): Monte Carlo over permutations of K
    g = t.assignment[2]
    mc = np.mean([hier_mod._eta_squared(rng.permutation(K), g) for _ in range(3000)])
    assert mc == pytest.approx(t.chance_separation[2], rel=0.1)
    # identical atoms are carried down unsplit
    same = hierarchy(np.ones((5, 4)), np.arange(5.0), np.zeros(5), n_levels=2)
    assert same.parent.tolist() == [-1, 0, 1]


# ------------------------------------------------------------------------------ purity
def _per_superclass_atoms(seed: int = 0):
    """4 super-classes × 3 classes × 4 atoms; atoms of one super-class share a direction."""
    rng = np.random.default_rng(seed)
    centers = np.kron(np.eye(4), np.ones(6)) + 0.02  # (4, 24): 6 dimensions per super-class
    feature_class = np.repeat(np.arange(12), 4)
    superclass_of = {c: f"S{c // 3}" for c in range(12)}
    D = centers[feature_class // 3] + 0.01 * rng.random((48, 24))
    return D, feature_class, superclass_of


def test_purity_planted_single_superclass_clusters():
    from feature_complexity.analyses.metafeatures import metafeatures

    D, fc, table = _per_superclass_atoms()
    K = (fc // 3) / 4 + 0.01
    mf = metafeatures(D, K, np.zeros(48), n_clusters=4, seed=0, embed="pca")
    p = superclass_purity(mf.cluster, fc, table, K, seed=0)
    assert np.all(p.purity == 1.0) and p.weighted_purity == 1.0
    assert sorted(p.majority) == ["S0", "S1", "S2", "S3"] and p.n_unassigned == 0
    assert p.chance_purity < 0.6
    cols = hier_mod.purity_columns(p, mf.cluster)
    assert np.all(cols["cluster_purity"] == 1.0)
    _figure_ok(hier_mod.purity_figure(p))


def test_purity_brute_force_and_unassigned_classes():
    rng = np.random.default_rng(3)
    cluster = rng.integers(0, 5, size=50)
    fc = rng.integers(0, 10, size=50)
    table = {c: "ABC"[c % 3] for c in range(8)}  # classes 8 and 9 have no super-class
    K = rng.random(50)
    p = superclass_purity(cluster, fc, table, K, n_shuffles=20, seed=1)
    assert p.n_unassigned == int(np.sum(fc >= 8))
    for i, c in enumerate(p.cluster):
        names = [table[f] for f in fc[cluster == c] if f in table]
        best = max(names.count(s) for s in set(names))
        assert p.purity[i] == pytest.approx(best / len(names))
        assert p.mean_complexity[i] == pytest.approx(K[cluster == c].mean())
    assert p.weighted_purity == pytest.approx(np.sum(p.purity * p.n_assigned) / p.n_assigned.sum())
    assert superclass_purity(cluster, fc, table, K, n_shuffles=20, seed=1).chance_purity == p.chance_purity
    with pytest.raises(ValueError, match="global dictionary"):
        superclass_purity(cluster, -np.ones(50, int), table, K)
    with pytest.raises(ValueError, match="not in the super-class table|no feature's class"):
        superclass_purity(cluster, fc + 100, table, K)


# ------------------------------------------------------------------------------ super-class tables
#: CIFAR-100 fine index -> coarse index implied by the dataset's own (fine_labels, coarse_labels),
#: as reproduced by e.g. ryanchankh/cifar100coarse; coarse indices in coarse_label_names order
_CIFAR100_COARSE = [
    4, 1, 14, 8, 0, 6, 7, 7, 18, 3, 3, 14, 9, 18, 7, 11, 3, 9, 7, 11, 6, 11, 5, 10, 7, 6, 13, 15, 3, 15,
    0, 11, 1, 10, 12, 14, 16, 9, 11, 5, 5, 19, 8, 8, 15, 13, 14, 17, 18, 10, 16, 4, 17, 4, 2, 0, 17, 4, 18, 17,
    10, 3, 2, 12, 12, 16, 12, 1, 9, 19, 2, 10, 0, 1, 16, 12, 9, 13, 15, 13, 16, 19, 2, 4, 6, 19, 5, 5, 8, 19,
    18, 1, 2, 15, 6, 0, 17, 8, 14, 13,
]
_CIFAR100_COARSE_NAMES = [
    "aquatic_mammals", "fish", "flowers", "food_containers", "fruit_and_vegetables", "household_electrical_devices",
    "household_furniture", "insects", "large_carnivores", "large_man-made_outdoor_things",
    "large_natural_outdoor_scenes", "large_omnivores_and_herbivores", "medium_mammals", "non-insect_invertebrates",
    "people", "reptiles", "small_mammals", "trees", "vehicles_1", "vehicles_2",
]


def test_cifar100_table_matches_the_coarse_labels():
    from collections import Counter

    table = load_superclasses("cifar100")
    assert sorted(table) == list(range(100))
    assert all(table[i] == _CIFAR100_COARSE_NAMES[c] for i, c in enumerate(_CIFAR100_COARSE))
    assert set(Counter(table.values()).values()) == {5}
    # by name, in another order (a model whose classes are the fine names)
    names = ["woman", "apple", "maple_tree", "not-a-cifar-class"]
    assert load_superclasses("cifar100", class_names=names) == {0: "people", 1: "fruit_and_vegetables", 2: "trees"}


def test_imagenet_breeds_table():
    from collections import Counter

    t3 = load_superclasses("imagenet")
    assert len(t3) == 890 and len(set(t3.values())) == 29  # 110 classes are outside BREEDS' tree
    assert t3[0] == "fish" and t3[151] == "mammal" and t3[14] == "bird"  # tench, Chihuahua, indigo bunting
    assert 412 not in t3  # ashcan: left out by BREEDS
    t5 = load_superclasses("imagenet:5")
    assert Counter(t5.values())["dog"] == 118 and t5[151] == "dog"
    by_wnid = load_superclasses("imagenet", class_names=["n02085620", "n01440764"])
    assert by_wnid == {0: "mammal", 1: "fish"}
    with pytest.raises(ValueError, match="imagenet:L"):
        load_superclasses("imagenet:9")


def test_user_tables_csv_and_dict(tmp_path):
    path = tmp_path / "groups.csv"
    path.write_text("# my grouping\nclass,superclass\ncat,animal\ndog,animal\ncar,vehicle\n")
    assert load_superclasses(path, class_names=["car", "cat", "dog"]) == {0: "vehicle", 1: "animal", 2: "animal"}
    with pytest.raises(ValueError, match="pass class_names"):
        load_superclasses(path)
    assert load_superclasses({0: "a", "3": "b"}) == {0: "a", 3: "b"}
    (tmp_path / "bad.csv").write_text("cls,group\n0,a\n")
    with pytest.raises(ValueError, match="columns 'class' and 'superclass'"):
        load_superclasses(tmp_path / "bad.csv")
    with pytest.raises(ValueError, match="not a file"):
        load_superclasses(tmp_path / "missing.csv")
