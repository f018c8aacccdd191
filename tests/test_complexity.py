"""Tests of the complexity engine (feature_complexity.complexity).

References: scikit-learn ``Ridge`` fitted per feature, per layer, per fold and per penalty
(brute force, same folds and grid, selection rule re-implemented here); a copy of the engine's
previous algorithm (one ``p x p`` by ``p x k`` product per penalty and fold, no partial
fractions, no cells, first-batch shift of X and Z) which the fast engine must reproduce to 1e-10;
closed forms for planted targets (known signal-to-noise ratio, pure noise, exact linear
functions); coverage of the jackknife intervals by simulation in planted cases with a known
population R^2.
"""

from __future__ import annotations

import threading
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

import feature_complexity as fc
import feature_complexity.complexity as engine
from feature_complexity.complexity import (
    DEFAULT_ALPHAS,
    ComplexityResult,
    RidgeProbeStats,
    cell_assignment,
    complexity,
    fold_assignment,
)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny matrices on a shared 2-core machine: two spinning threads only slow them down."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ---------------------------------------------------------------------- reference
def brute_force_sse(X: np.ndarray, z: np.ndarray, folds: np.ndarray, alphas) -> tuple[np.ndarray, float]:
    """Held-out SSE of sklearn Ridge for ONE layer and ONE feature: (n_alphas,), null SSE."""
    from sklearn.linear_model import Ridge

    p = X.shape[1]
    sse = np.zeros(len(alphas))
    null = 0.0
    for f in np.unique(folds):
        tr, te = folds != f, folds == f
        # trace of the centred training scatter, computed independently of the engine
        trace = np.sum((X[tr] - X[tr].mean(0)) ** 2)
        null += np.sum((z[te] - z[tr].mean()) ** 2)
        for i, a in enumerate(alphas):
            model = Ridge(alpha=a * trace / p, fit_intercept=True, solver="svd").fit(X[tr], z[tr])
            sse[i] += np.sum((z[te] - model.predict(X[te])) ** 2)
    return sse, null


def brute_force_iv(layers, Z, folds, alphas):
    """(n_layers, k) I_V and chosen alphas by the brute-force loop and argmin rule."""
    iv = np.zeros((len(layers), Z.shape[1]))
    chosen = np.zeros_like(iv)
    for li, X in enumerate(layers):
        for j in range(Z.shape[1]):
            sse, null = brute_force_sse(X, Z[:, j], folds, alphas)
            best = int(np.argmin(sse))
            iv[li, j] = np.clip(1.0 - sse[best] / null, 0.0, 1.0)
            chosen[li, j] = alphas[best]
    return iv, chosen


def random_problem(seed: int, n: int = 300):
    """Two layers (p = 7 and 20) and 4 features of mixed difficulty."""
    rng = np.random.default_rng(seed)
    X0 = rng.normal(size=(n, 7)) * rng.uniform(0.1, 3, size=7) + rng.normal(size=7)
    X1 = np.maximum(rng.normal(size=(n, 20)) @ rng.normal(size=(20, 20)), 0)  # ReLU-like, correlated
    Z = np.column_stack([
        X0[:, :3] @ np.array([1.0, 2.0, -1.0]) + rng.normal(size=n),
        np.tanh(X1[:, 0]) * 3 + 0.5 * rng.normal(size=n),
        rng.normal(size=n),
        X1 @ rng.normal(size=20) + 0.1 * rng.normal(size=n),
    ])
    return [X0, X1], Z


# ---------------------------------------------------------------------- the previous algorithm
def reference_sse(X: np.ndarray, Z: np.ndarray, folds: np.ndarray, alphas, batch_size: int = 4096):
    """The engine as it was before partial fractions (commit 472a647), kept as the reference.

    Per fold sums in float64 after shifting X and Z by the first batch's means; per fold one
    eigendecomposition; per penalty the quadratic term ``((M @ DQ) * DQ).sum(0)`` as it stands.
    Returns ``(n_alphas, k)`` SSE and ``(k,)`` null SSE, both clamped at 0.
    """
    X, Z = np.asarray(X, dtype=np.float64), np.asarray(Z, dtype=np.float64)
    if Z.ndim == 1:
        Z = Z[:, None]
    n, p = X.shape
    k, F = Z.shape[1], int(folds.max()) + 1
    sx, sz = X[:batch_size].mean(0), Z[:batch_size].mean(0)
    Xs, Zs = torch.from_numpy(X - sx), torch.from_numpy(Z - sz)
    fo = torch.from_numpy(folds)
    cnt = torch.stack([(fo == f).sum().double() for f in range(F)])
    Sx = torch.stack([Xs[fo == f].sum(0) for f in range(F)])
    Sz = torch.stack([Zs[fo == f].sum(0) for f in range(F)])
    XX = torch.stack([Xs[fo == f].T @ Xs[fo == f] for f in range(F)])
    XZ = torch.stack([Xs[fo == f].T @ Zs[fo == f] for f in range(F)])
    ZZ = torch.stack([(Zs[fo == f] ** 2).sum(0) for f in range(F)])
    a = torch.as_tensor(np.asarray(alphas, dtype=np.float64))
    N = cnt.sum()
    sse, null = torch.zeros(len(a), k, dtype=torch.float64), torch.zeros(k, dtype=torch.float64)
    for f in range(F):
        n_f, n_tr = cnt[f], N - cnt[f]
        mu_x, mu_z = (Sx.sum(0) - Sx[f]) / n_tr, (Sz.sum(0) - Sz[f]) / n_tr
        Sxx = (XX.sum(0) - XX[f]) - n_tr * torch.outer(mu_x, mu_x)
        Sxz = (XZ.sum(0) - XZ[f]) - n_tr * torch.outer(mu_x, mu_z)
        e, V = torch.linalg.eigh(0.5 * (Sxx + Sxx.T))
        e = e.clamp(min=0.0)
        denom = e[None, :] + (a * (e.sum() / p))[:, None]
        D = torch.where(denom > 0, 1.0 / torch.where(denom > 0, denom, 1.0), 0.0)
        Cxz = XZ[f] - torch.outer(mu_x, Sz[f]) - torch.outer(Sx[f], mu_z) + n_f * torch.outer(mu_x, mu_z)
        Cxx = XX[f] - torch.outer(mu_x, Sx[f]) - torch.outer(Sx[f], mu_x) + n_f * torch.outer(mu_x, mu_x)
        czz = ZZ[f] - 2.0 * mu_z * Sz[f] + n_f * mu_z * mu_z
        Q, C, M = V.T @ Sxz, V.T @ Cxz, V.T @ Cxx @ V
        cross = D @ (Q * C)
        for i in range(len(a)):
            DQ = D[i][:, None] * Q
            sse[i] += czz - 2.0 * cross[i] + ((M @ DQ) * DQ).sum(0)
        null += czz
    return sse.clamp(min=0.0).numpy(), null.clamp(min=0.0).numpy()


def reference_iv(layers, Z, folds, alphas=DEFAULT_ALPHAS):
    """``(n_layers, k)`` I_V and chosen alphas of the previous algorithm (constant -> 0, nan)."""
    Z = np.asarray(Z, dtype=np.float64).reshape(len(Z), -1)
    constant = np.all(Z == Z[0], axis=0)
    iv, chosen = np.zeros((len(layers), Z.shape[1])), np.zeros((len(layers), Z.shape[1]))
    for li, X in enumerate(layers):
        sse, null = reference_sse(X, Z, folds, alphas)
        best = sse.argmin(0)
        bad = constant | (null <= 0)
        iv[li] = np.where(bad, 0.0, np.clip(1 - sse[best, np.arange(Z.shape[1])] / np.where(bad, 1, null), 0, 1))
        chosen[li] = np.where(bad, np.nan, np.asarray(alphas)[best])
    return iv, chosen


# ---------------------------------------------------------------------- vs scikit-learn
@pytest.mark.parametrize("seed", [0, 1])
def test_matches_sklearn_ridge_brute_force(seed):
    layers, Z = random_problem(seed)
    folds = fold_assignment(len(Z), 5, seed)
    res = complexity(layers, Z, n_folds=5, seed=seed)
    ref_iv, ref_alpha = brute_force_iv(layers, Z, folds, DEFAULT_ALPHAS)
    np.testing.assert_allclose(res.per_layer, ref_iv, atol=1e-6, rtol=0)
    np.testing.assert_allclose(res.score, 1 - ref_iv.mean(0), atol=1e-6, rtol=0)
    np.testing.assert_array_equal(res.alpha, ref_alpha)
    assert res.per_layer.max() > 0.5 and res.per_layer.min() < 0.05  # the problem is not trivial


def test_held_out_sse_every_alpha_matches_sklearn():
    layers, Z = random_problem(3)
    X = layers[1]
    folds = fold_assignment(len(Z), 4, 3)
    alphas = [1e-4, 1e-1, 3.0]
    stats = RidgeProbeStats(X.shape[1], Z.shape[1], 4)
    stats.update(X, Z, folds)
    sse, null = stats.held_out_sse(alphas)
    for j in range(Z.shape[1]):
        ref_sse, ref_null = brute_force_sse(X, Z[:, j], folds, alphas)
        np.testing.assert_allclose(sse[:, j], ref_sse, rtol=1e-9)
        np.testing.assert_allclose(null[j], ref_null, rtol=1e-12)


def test_decoder_matches_sklearn_ridge_on_all_images():
    from sklearn.linear_model import Ridge

    layers, Z = random_problem(4)
    X = layers[0] + 100.0  # an offset the intercept must absorb
    stats = RidgeProbeStats(X.shape[1], Z.shape[1], 5)
    folds = fold_assignment(len(Z), 5, 0)
    for start in range(0, len(Z), 64):
        stats.update(X[start:start + 64], Z[start:start + 64], folds[start:start + 64])
    trace = np.sum((X - X.mean(0)) ** 2)
    alpha = np.array([1e-3, 1e-1, 1.0, 10.0])  # one per target
    W, b = stats.decoder(alpha)
    assert W.shape == (7, 4) and b.shape == (4,)
    for j in range(4):
        ref = Ridge(alpha=alpha[j] * trace / 7, solver="svd").fit(X, Z[:, j])
        np.testing.assert_allclose(W[:, j], ref.coef_, rtol=1e-8, atol=1e-10)
        np.testing.assert_allclose(b[j], ref.intercept_, rtol=1e-8)
    w2, b2 = stats.decoder(alpha[2], target_index=2)
    assert w2.shape == (7,) and isinstance(b2, float)
    np.testing.assert_allclose(w2, W[:, 2], rtol=1e-12)
    # nan penalty (constant feature) means no probe: w = 0, b = mean
    W_nan, b_nan = stats.decoder(np.array([np.nan, 1.0, 1.0, 1.0]))
    assert np.all(W_nan[:, 0] == 0) and b_nan[0] == pytest.approx(Z[:, 0].mean(), rel=1e-12)


def test_decoder_recovers_planted_weights():
    rng = np.random.default_rng(5)
    X = rng.normal(size=(500, 6))
    beta, b0 = rng.normal(size=6), 2.5
    stats = RidgeProbeStats(6, 1, 2)
    stats.update(X, (X @ beta + b0)[:, None], fold_assignment(500, 2, 0))
    w, b = stats.decoder(1e-10, target_index=0)
    np.testing.assert_allclose(w, beta, atol=1e-7)
    assert b == pytest.approx(b0, abs=1e-7)


# ---------------------------------------------------------------------- closed forms
def test_known_snr_gives_snr_over_one_plus_snr():
    rng = np.random.default_rng(6)
    n, p = 6000, 10
    X = rng.normal(size=(n, p))
    snrs = np.array([0.25, 1.0, 4.0])
    Z = np.empty((n, 3))
    for j, snr in enumerate(snrs):
        beta = rng.normal(size=p)
        beta *= np.sqrt(snr) / np.linalg.norm(beta)  # Var(X beta) = snr, noise variance 1
        Z[:, j] = X @ beta + rng.normal(size=n)
    res = complexity({"x": X}, Z)
    np.testing.assert_allclose(res.per_layer[0], snrs / (1 + snrs), atol=0.03)


def test_pure_noise_scores_zero_information_and_complexity_one():
    rng = np.random.default_rng(7)
    res = complexity([rng.normal(size=(2000, 20)), rng.normal(size=(2000, 5))],
                     rng.normal(size=(2000, 30)))
    assert res.per_layer.max() < 0.02
    assert res.per_layer.mean() < 0.003  # held out: noise is not fitted
    assert res.score.min() > 0.98


def test_exact_linear_target_scores_one():
    rng = np.random.default_rng(8)
    X = rng.normal(size=(400, 12))
    Z = X @ rng.normal(size=(12, 3)) + np.array([1.0, -4.0, 10.0])
    res = complexity([X, X], Z)
    assert res.per_layer.min() > 1 - 1e-6
    assert res.score.max() < 1e-6


def test_planted_depth_profile():
    """A feature linear in the second layer only: decodability curve (0, 1), K = 1/2."""
    rng = np.random.default_rng(9)
    A, B = rng.normal(size=(1000, 8)), rng.normal(size=(1000, 8))
    z = B @ rng.normal(size=8)
    res = complexity({"early": A, "late": B}, z)
    assert res.layer_names == ["early", "late"]
    assert res.per_layer[0, 0] < 0.02 and res.per_layer[1, 0] > 1 - 1e-6
    assert res.score[0] == pytest.approx(0.5, abs=0.01)


def test_large_offsets_do_not_cancel():
    """Shifted accumulation: a 1e6 offset on X and 1e4 on Z change nothing (to 1e-8)."""
    layers, Z = random_problem(10, n=400)
    ref = complexity(layers, Z)
    res = complexity([X + 1e6 for X in layers], Z + 1e4)
    np.testing.assert_allclose(res.per_layer, ref.per_layer, atol=1e-8)
    # a target whose mean dwarfs its spread is shifted (its zeros are not worth the digits):
    # unshifted, sum z^2 - n mean^2 at 1e6 would keep about 4 of float64's 16 digits
    far = complexity(layers, Z + 1e6)
    np.testing.assert_allclose(far.per_layer, ref.per_layer, atol=1e-7)


# ---------------------------------------------------------------------- streaming, determinism
def test_streaming_equals_one_shot():
    layers, Z = random_problem(11)
    one = complexity(layers, Z, batch_size=10_000)
    for bs in (1, 7, 64):
        res = complexity(layers, Z, batch_size=bs)
        np.testing.assert_allclose(res.per_layer, one.per_layer, atol=1e-10, rtol=0)
        np.testing.assert_array_equal(res.alpha, one.alpha)


def test_stats_ignore_row_order():
    """Accumulation in any row order (shuffled batches) gives the same statistics."""
    layers, Z = random_problem(12)
    X = layers[1]
    folds = fold_assignment(len(Z), 5, 0)
    a = RidgeProbeStats(20, 4, 5)
    a.update(X, Z, folds)
    b = RidgeProbeStats(20, 4, 5)
    order = np.random.default_rng(0).permutation(len(Z))
    for chunk in np.array_split(order, 9):
        b.update(X[chunk], Z[chunk], folds[chunk])
    np.testing.assert_allclose(b.v_information(DEFAULT_ALPHAS)[0], a.v_information()[0], atol=1e-10)
    assert a.n_images == b.n_images == len(Z)


def test_stats_v_information_is_a_row_of_complexity():
    layers, Z = random_problem(13)
    res = complexity(layers, Z, seed=4, confidence=None)  # one cell per fold, as the class
    stats = RidgeProbeStats(7, 4, 5)
    stats.update(layers[0], Z, fold_assignment(len(Z), 5, 4))
    iv, alpha = stats.v_information()
    # same numbers up to rounding (the class takes its shift from torch, complexity from numpy)
    np.testing.assert_allclose(iv, res.per_layer[0], atol=1e-13, rtol=0)
    np.testing.assert_array_equal(alpha, res.alpha[0])


def test_deterministic_for_a_seed_and_seed_matters():
    layers, Z = random_problem(14)
    a, b = complexity(layers, Z, seed=3), complexity(layers, Z, seed=3)
    np.testing.assert_array_equal(a.per_layer, b.per_layer)
    c = complexity(layers, Z, seed=4)
    assert not np.array_equal(a.per_layer, c.per_layer)
    d = complexity(layers, Z, fold_ids=fold_assignment(len(Z), 5, 4), seed=4)  # seed: the cells
    np.testing.assert_array_equal(c.per_layer, d.per_layer)


def test_fold_assignment_balanced_and_deterministic():
    folds = fold_assignment(103, 5, 0)
    assert folds.shape == (103,) and folds.dtype == np.int64
    counts = np.bincount(folds)
    assert counts.max() - counts.min() <= 1 and counts.sum() == 103
    np.testing.assert_array_equal(folds, fold_assignment(103, 5, 0))
    np.testing.assert_array_equal(folds, np.random.default_rng(0).permutation(103) % 5)


# ---------------------------------------------------------------------- inputs
def test_sequence_and_mapping_inputs_agree():
    layers, Z = random_problem(15)
    seq = complexity(layers, Z)
    mapping = complexity({"a": layers[0], "b": layers[1]}, Z)
    assert seq.layer_names == ["layer0", "layer1"] and mapping.layer_names == ["a", "b"]
    np.testing.assert_array_equal(seq.per_layer, mapping.per_layer)
    rev = complexity({"b": layers[1], "a": layers[0]}, Z)
    # order as given (equal up to rounding: buffer alignment can change BLAS's last bit)
    np.testing.assert_allclose(rev.per_layer, mapping.per_layer[::-1], atol=1e-13, rtol=0)


def test_memmap_input_equals_in_memory(tmp_path):
    layers, Z = random_problem(16)
    paths = []
    for i, X in enumerate(layers):
        paths.append(tmp_path / f"l{i}.npy")
        np.save(paths[-1], X.astype(np.float32))
    np.save(tmp_path / "z.npy", Z.astype(np.float32))
    mm = [np.load(p, mmap_mode="r") for p in paths]
    assert isinstance(mm[0], np.memmap)
    res = complexity(mm, np.load(tmp_path / "z.npy", mmap_mode="r"), batch_size=50)
    ref = complexity([X.astype(np.float32) for X in layers], Z.astype(np.float32))
    np.testing.assert_allclose(res.per_layer, ref.per_layer, atol=1e-10)


def test_one_dimensional_values_and_package_entry_point():
    layers, Z = random_problem(17)
    import feature_complexity.complexity  # noqa: F401  (binds the module name on the package)

    res = fc.complexity(layers, Z[:, 0])  # still callable, see the end of complexity.py
    assert isinstance(res, ComplexityResult) and res.per_layer.shape == (2, 1)
    np.testing.assert_allclose(res.per_layer[:, 0], complexity(layers, Z).per_layer[:, 0], atol=1e-12)


def test_constant_feature_warns_and_scores_complexity_one():
    layers, Z = random_problem(18)
    Zc = np.column_stack([Z, np.full(len(Z), 3.7)])
    with pytest.warns(RuntimeWarning, match="1 of 5 feature"):
        res = complexity(layers, Zc)
    assert np.all(res.per_layer[:, 4] == 0) and res.score[4] == 1.0
    assert np.all(np.isnan(res.alpha[:, 4]))
    np.testing.assert_allclose(res.per_layer[:, :4], complexity(layers, Z).per_layer, atol=1e-12)


def test_constant_layer_carries_no_information():
    layers, Z = random_problem(19)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a constant layer is legal and silent
        res = complexity([np.zeros((len(Z), 3)), layers[0]], Z)
    assert np.all(res.per_layer[0] == 0)


def test_to_frame():
    layers, Z = random_problem(20)
    res = complexity({"b1": layers[0], "b2": layers[1]}, Z)
    frame = res.to_frame()
    assert list(frame.columns) == ["complexity", "complexity_lo", "complexity_hi", "iv_b1",
                                   "iv_b1_lo", "iv_b1_hi", "iv_b2", "iv_b2_lo", "iv_b2_hi"]
    np.testing.assert_array_equal(frame["iv_b1_hi"].to_numpy(), res.per_layer_hi[0])
    plain = complexity({"b1": layers[0], "b2": layers[1]}, Z, confidence=None).to_frame()
    assert list(plain.columns) == ["complexity", "iv_b1", "iv_b2"]
    assert frame.index.name == "feature" and len(frame) == 4
    np.testing.assert_array_equal(frame["iv_b2"].to_numpy(), res.per_layer[1])
    assert res.n_images == 300 and res.n_folds == 5


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda L, Z: complexity([L[0], L[1][:-1]], Z), "layer 'layer1' has 299 rows"),
        (lambda L, Z: complexity([L[0][:9]], Z[:9]), "too few for 5 folds"),
        (lambda L, Z: complexity([L[0]], Z, n_folds=1), "at least 2"),
        (lambda L, Z: complexity([L[0]], Z, alphas=[0.0, 1.0]), "alphas must be finite and > 0"),
        (lambda L, Z: complexity([L[0]], Z, alphas=[]), "non-empty"),
        (lambda L, Z: complexity([], Z), "layers is empty"),
        (lambda L, Z: complexity(L[0], Z), "not a single array"),
        (lambda L, Z: complexity([L[0][:, :, None]], Z), "must be 2-D"),
        (lambda L, Z: complexity([L[0]], Z[:, :, None]), "values must be"),
        (lambda L, Z: complexity([L[0].astype(str)], Z), "must be numeric"),
        (lambda L, Z: complexity([L[0]], Z, batch_size=0), "batch_size"),
        (lambda L, Z: complexity([L[0]], Z, fold_ids=np.zeros(300, int)), "every fold"),
        (lambda L, Z: complexity([L[0]], Z, fold_ids=np.zeros(3, int)), "shape"),
        (lambda L, Z: complexity([L[0]], Z, device="tpu9"), "device"),
    ],
)
def test_bad_input_raises_clear_value_error(make, match):
    layers, Z = random_problem(21)
    with pytest.raises(ValueError, match=match):
        make(layers, Z)


def test_non_finite_inputs_name_the_layer():
    layers, Z = random_problem(22)
    bad = layers[1].copy()
    bad[123, 4] = np.nan
    with pytest.raises(ValueError, match=r"layer 'deep' has non-finite values \(first at row 123"):
        complexity({"shallow": layers[0], "deep": bad}, Z, batch_size=100)
    Zbad = Z.copy()
    Zbad[5, 1] = np.inf
    with pytest.raises(ValueError, match="values has non-finite"):
        complexity(layers, Zbad)


def test_cuda_unavailable_is_a_clear_error():
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is available here; the error path cannot be exercised")
    layers, Z = random_problem(23)
    with pytest.raises(ValueError, match="CUDA is not available"):
        complexity(layers, Z, device="cuda")


def test_stats_update_checks_shapes_and_folds():
    stats = RidgeProbeStats(3, 2, 5)
    with pytest.raises(ValueError, match=r"X_batch must be \(b, 3\)"):
        stats.update(np.zeros((4, 2)), np.zeros((4, 2)), np.zeros(4, int))
    with pytest.raises(ValueError, match=r"fold ids must lie in \[0, 5\)"):
        stats.update(np.zeros((4, 3)), np.zeros((4, 2)), np.array([0, 1, 2, 5]))
    stats.update(np.ones((4, 3)), np.ones((4, 2)), np.array([0, 1, 2, 3]))
    with pytest.raises(ValueError, match="every fold needs at least 1 image"):
        stats.v_information()


# ---------------------------------------------------------------------- vs the previous algorithm
def degenerate_problem(seed: int, n: int = 400):
    """Layers whose training scatters have repeated eigenvalues.

    ``rot``: every base row comes with its three 90-degree rotations (in two column pairs at
    once) in the same fold, and two more columns are the same on the four rows; every fold's
    scatter then commutes with the rotation, so its eigenvalues come in exactly equal pairs
    (computed as pairs equal to about 1e-16). ``dead``: three constant channels, a zero one and
    two copies of a column (repeated zero eigenvalues). Returns layers, Z, folds.
    """
    rng = np.random.default_rng(seed)
    m = n // 4
    turn = np.array([[0.0, 1.0], [-1.0, 0.0]])
    b1, b2 = rng.normal(size=(m, 2)), rng.normal(size=(m, 2)) * 1.5
    R1 = np.concatenate([b1 @ np.linalg.matrix_power(turn, i) for i in range(4)])
    R2 = np.concatenate([b2 @ np.linalg.matrix_power(turn, i) for i in range(4)])
    g = np.tile(rng.normal(size=(m, 2)), (4, 1))  # the same on an orbit: no coupling to R1, R2
    folds = np.tile(np.arange(m) % 5, 4)
    rot = np.column_stack([R1, R2, g])
    X = rng.normal(size=(n, 5))
    dead = np.column_stack([X, np.full((n, 3), 2.5), np.zeros(n), X[:, 0], X[:, 0]])
    Z = np.column_stack([
        R1 @ np.array([1.0, -0.5]) + R2[:, 0] + 0.3 * rng.normal(size=n),
        X[:, 0] - X[:, 1] + 0.5 * rng.normal(size=n),
        g[:, 0] + rng.normal(size=n),
        rng.normal(size=n),
    ])
    return [rot, dead], Z, folds


@pytest.mark.parametrize("seed, cells", [(0, 1), (1, 2), (2, 3)])
def test_matches_previous_algorithm_to_1e10(seed, cells):
    layers, Z = random_problem(seed)
    folds = fold_assignment(len(Z), 5, seed)
    res = complexity(layers, Z, seed=seed, cells_per_fold=cells)
    ref_iv, ref_alpha = reference_iv(layers, Z, folds)
    np.testing.assert_allclose(res.per_layer, ref_iv, atol=1e-10, rtol=0)
    np.testing.assert_array_equal(res.alpha, ref_alpha)
    for X in layers:  # every penalty, not only the chosen one
        st = RidgeProbeStats(X.shape[1], 4, 5)
        st.update(X, Z, folds)
        sse, null = st.held_out_sse(DEFAULT_ALPHAS)
        ref_sse, ref_null = reference_sse(X, Z, folds, DEFAULT_ALPHAS)
        np.testing.assert_allclose(sse, ref_sse, rtol=1e-10, atol=1e-10 * ref_null.max())
        np.testing.assert_allclose(null, ref_null, rtol=1e-12)


def test_repeated_and_near_repeated_eigenvalues_match_previous_algorithm():
    layers, Z, folds = degenerate_problem(3)
    st = RidgeProbeStats(layers[0].shape[1], 4, 5)
    st.update(layers[0], Z, folds)
    tot = {"N": st.count.sum(), "sx": st.sum_x.sum(0), "sz": st.sum_z.sum(0),
           "xx": engine._mirror_upper(st.xx.sum(0), st._blocks), "zx": st.zx()}
    fm = engine._fold_model(st, tot, 0, np.asarray(DEFAULT_ALPHAS))
    assert fm.members is not None and len(fm.members) >= 4  # the planted clusters were found
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        res = complexity(layers, Z, fold_ids=folds, cells_per_fold=2)
        ref_iv, ref_alpha = reference_iv(layers, Z, folds)
    np.testing.assert_allclose(res.per_layer, ref_iv, atol=1e-10, rtol=0)
    np.testing.assert_array_equal(res.alpha, ref_alpha)
    for X in layers:
        st = RidgeProbeStats(X.shape[1], 4, 5)
        st.update(X, Z, folds)
        sse, null = st.held_out_sse(DEFAULT_ALPHAS)
        ref_sse, _ = reference_sse(X, Z, folds, DEFAULT_ALPHAS)
        np.testing.assert_allclose(sse, ref_sse, rtol=0, atol=1e-10 * null.max())


def test_partial_fractions_equal_the_direct_quadratic_form():
    """The penalty sweep against ``q^T D M D q`` evaluated as it stands, on a spectrum with an
    exactly repeated eigenvalue, a chain of near-equal ones, zeros and well separated ones."""
    rng = np.random.default_rng(4)
    e = torch.tensor([0.0, 0.0, 1e-14, 0.3, 1.0, 1.0, 1.0 + 1e-9, 1.0 + 2e-9, 2.0, 7.5, 40.0, 41.0],
                     dtype=torch.float64)
    p, kc = len(e), 6
    alphas = np.array([1e-6, 1e-3, 1.0, 30.0])
    lam = torch.as_tensor(alphas) * e.sum() / p
    D = 1.0 / (e[None] + lam[:, None])
    labels = engine._eigen_clusters(e, float(lam.min()))
    assert labels.tolist() == [0, 0, 0, 1, 2, 2, 2, 2, 3, 4, 5, 6]
    A = torch.from_numpy(rng.normal(size=(p, 3 * p)))
    M = A @ A.T
    Q, Cq = torch.from_numpy(rng.normal(size=(kc, p))), torch.from_numpy(rng.normal(size=(kc, p)))
    same = labels[:, None] == labels[None, :]
    kernel = torch.where(same, 0.0, 1.0 / torch.where(same, 1.0, e[None, :] - e[:, None]))
    members = torch.nonzero(torch.bincount(labels)[labels] > 1).flatten()
    fm = engine._FoldModel([0], torch.tensor(1.0), None, None, torch.eye(p, dtype=torch.float64), D,
                           kernel, members, same[members][:, members], trivial=False)
    diag = torch.diagonal(M).clone()
    diag[members] = 0.0
    side = engine._TestSide([0], None, None, None, None, M * kernel, diag,
                            torch.where(fm.same, M[members][:, members], 0.0))
    czz = torch.from_numpy(rng.uniform(50, 60, size=kc))
    got = engine._penalty_sweep(czz, Q, Cq, Q @ side.G.T, side, fm)
    for t in range(len(alphas)):
        DQ = Q * D[t]
        direct = czz - 2.0 * (DQ * Cq).sum(1) + ((DQ @ M) * DQ).sum(1)
        np.testing.assert_allclose(got[t].numpy(), direct.numpy(), rtol=1e-11)


def test_upper_block_gram_and_sparse_products_match(monkeypatch):
    """Blocks of the symmetric X^T X (forced small here) and sparse Z^T X change nothing."""
    layers, Z = random_problem(5)
    S = np.maximum(Z - np.array([3.0, 2.5, 1.5, 4.0]), 0)  # mostly zeros: the sparse path
    assert (S != 0).mean() < 0.2
    S[:, 2] = Z[:, 2] + 50.0  # a dense column with a large mean: shifted
    folds = fold_assignment(len(Z), 5, 0)
    calls = []
    real = engine._cell_major_coo
    monkeypatch.setattr(engine, "_cell_major_coo", lambda *a: calls.append(1) or real(*a))
    monkeypatch.setattr(engine, "_SPARSE_MAX_DENSITY", 0.5)
    monkeypatch.setattr(engine, "_SYM_BLOCK", 4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a few all-zero targets are constant
        res = complexity(layers, S, batch_size=64)
        ref_iv, ref_alpha = reference_iv(layers, S, folds)
    assert calls and len(engine._sym_blocks(20)) == 5
    np.testing.assert_allclose(res.per_layer, ref_iv, atol=1e-10, rtol=0)
    np.testing.assert_array_equal(res.alpha, ref_alpha)
    st = RidgeProbeStats(20, 4, 5)
    st.update(layers[1], S, folds)
    assert st.shift_z[2] != 0 and torch.all(st.shift_z[[0, 1, 3]] == 0)  # zeros kept exact


# ---------------------------------------------------------------------- passes, memory, processes
def test_memory_budget_splits_layers_and_targets_without_changing_numbers():
    layers, Z = random_problem(6)
    one = complexity(layers, Z)
    k = Z.shape[1]
    stats, solve = engine._layer_bytes(20, 2, 10, 2, len(DEFAULT_ALPHAS))
    budget = (stats + solve + 8 * 4096 * (3 * 2 + 3 * 20)) / 2**30  # one wide layer, 2 targets
    plan = engine._plan_passes([7, 20], k, 10, 2, len(DEFAULT_ALPHAS), 4096, budget * 2**30)
    assert len(plan) >= 3 and len({J.start for _, J in plan}) == 2
    split = complexity(layers, Z, max_memory_gb=budget)
    for name in ("per_layer", "per_layer_lo", "per_layer_hi", "score_lo", "score_hi"):
        np.testing.assert_allclose(getattr(split, name), getattr(one, name), atol=1e-12, rtol=0)
    np.testing.assert_array_equal(split.alpha, one.alpha)
    with pytest.raises(ValueError, match="max_memory_gb=.* is too small for a layer of width 20"):
        complexity(layers, Z, max_memory_gb=1e-6)


class ThreadAllReduce:
    """All-reduce between threads of one process: what torch.distributed does between processes."""

    def __init__(self, world: int) -> None:
        self.barrier = threading.Barrier(world, timeout=60)
        self.slots: list = [None] * world
        self.calls = [0] * world

    def for_rank(self, rank: int):
        def reduce(tensors):
            self.calls[rank] += 1
            self.slots[rank] = [t.clone() for t in tensors]
            self.barrier.wait()
            totals = [sum(parts) for parts in zip(*self.slots)]
            self.barrier.wait()  # everybody has read every slot before anybody writes again
            for t, total in zip(tensors, totals):
                t.copy_(total)
        return reduce


def test_rows_and_reduce_equal_one_shot():
    layers, Z = random_problem(7)
    one = complexity(layers, Z, batch_size=50)
    order = np.random.default_rng(0).permutation(len(Z))
    halves = [order[:130], order[130:]]
    comm = ThreadAllReduce(2)
    stats, solve = engine._layer_bytes(20, 4, 10, 2, len(DEFAULT_ALPHAS))
    small = (stats + solve + 8 * 50 * (3 * 4 + 3 * 20)) / 2**30  # one layer per pass: 2 reduces
    with ThreadPoolExecutor(2) as pool:
        jobs = [pool.submit(complexity, layers, Z, batch_size=50, rows=h, reduce=comm.for_rank(r),
                            max_memory_gb=small) for r, h in enumerate(halves)]
        results = [job.result(timeout=120) for job in jobs]
    assert comm.calls[0] == comm.calls[1] >= 2
    for res in results:
        for name in ("per_layer", "score", "per_layer_lo", "per_layer_hi", "score_lo", "score_hi"):
            np.testing.assert_allclose(getattr(res, name), getattr(one, name), atol=1e-9, rtol=0)
        np.testing.assert_array_equal(res.alpha, one.alpha)
    # without the reduce a shard alone is a different (smaller) sample
    alone = complexity(layers, Z, batch_size=50, rows=halves[0])
    assert not np.allclose(alone.per_layer, one.per_layer, atol=1e-6)


# ---------------------------------------------------------------------- intervals
def test_cell_assignment_is_balanced_within_folds():
    folds = fold_assignment(103, 5, 0)
    cells = cell_assignment(folds, 5, 3, 0)
    np.testing.assert_array_equal(cells // 3, folds)
    for f in range(5):
        counts = np.bincount(cells[folds == f] % 3, minlength=3)
        assert counts.max() - counts.min() <= 1
    np.testing.assert_array_equal(cells, cell_assignment(folds, 5, 3, 0))
    assert not np.array_equal(cells, cell_assignment(folds, 5, 3, 1))
    np.testing.assert_array_equal(cell_assignment(folds, 5, 1, 0), folds)


def test_intervals_bracket_the_estimates_and_can_be_turned_off():
    layers, Z = random_problem(8)
    Zc = np.column_stack([Z, np.full(len(Z), 1.5)])
    with pytest.warns(RuntimeWarning, match="constant"):
        res = complexity(layers, Zc)
        wide = complexity(layers, Zc, confidence=0.99)
        narrow = complexity(layers, Zc, confidence=0.5)
    assert res.confidence == 0.95 and res.n_cells == 10
    assert np.all(res.per_layer_lo <= res.per_layer) and np.all(res.per_layer <= res.per_layer_hi)
    assert np.all(res.score_lo <= res.score) and np.all(res.score <= res.score_hi)
    assert np.all((res.per_layer_lo >= 0) & (res.per_layer_hi <= 1))
    assert np.all(wide.score_hi - wide.score_lo >= res.score_hi - res.score_lo)
    assert np.all(narrow.score_hi - narrow.score_lo <= res.score_hi - res.score_lo)
    assert np.all(res.per_layer_hi[:, 4] == 0) and res.score_lo[4] == res.score_hi[4] == 1.0
    assert np.all(res.per_layer_hi[:, :4] - res.per_layer_lo[:, :4] < 0.3)
    off = complexity(layers, Z, confidence=None)
    assert off.confidence is None and off.score_lo is None and off.per_layer_hi is None


def test_jackknife_matches_a_brute_force_recomputation():
    """Per-cell held-out errors from sklearn fits and residuals, jackknifed by hand."""
    from scipy.stats import t as student_t
    from sklearn.linear_model import Ridge

    layers, Z = random_problem(9)
    X, z = layers[0], Z[:, 0]
    res = complexity([X], z[:, None], seed=2, confidence=0.9)
    folds = fold_assignment(len(z), 5, 2)
    cells = cell_assignment(folds, 5, 2, 2)
    a = float(res.alpha[0, 0])
    sse_c, null_c = np.zeros(10), np.zeros(10)
    for f in range(5):
        tr = folds != f
        trace = np.sum((X[tr] - X[tr].mean(0)) ** 2)
        model = Ridge(alpha=a * trace / X.shape[1], solver="svd").fit(X[tr], z[tr])
        for c in (2 * f, 2 * f + 1):
            te = cells == c
            sse_c[c] = np.sum((z[te] - model.predict(X[te])) ** 2)
            null_c[c] = np.sum((z[te] - z[tr].mean()) ** 2)
    est = 1 - sse_c.sum() / null_c.sum()
    reps = 1 - (sse_c.sum() - sse_c) / (null_c.sum() - null_c)
    half = student_t.ppf(0.95, 9) * np.sqrt(9 / 10 * np.sum((reps - reps.mean()) ** 2))
    assert res.per_layer[0, 0] == pytest.approx(est, abs=1e-10)
    assert res.per_layer_lo[0, 0] == pytest.approx(max(0, est - half), abs=1e-9)
    assert res.per_layer_hi[0, 0] == pytest.approx(min(1, est + half), abs=1e-9)
    # one layer: K's interval is the mirror image of I_V's
    assert res.score_lo[0] == pytest.approx(1 - res.per_layer_hi[0, 0], abs=1e-9)


def _coverage(make, truth_iv, truth_k, n_rep: int, seed: int):
    """Fraction of replicates whose intervals contain the planted values."""
    hit_iv = np.zeros_like(truth_iv)
    hit_k = np.zeros_like(truth_k)
    for r in range(n_rep):
        layers, Z = make(np.random.default_rng([seed, r]))
        res = complexity(layers, Z, seed=r, confidence=0.95, alphas=(1e-6, 1e-3, 1e-1))
        hit_iv += (res.per_layer_lo <= truth_iv) & (truth_iv <= res.per_layer_hi)
        hit_k += (res.score_lo <= truth_k) & (truth_k <= res.score_hi)
    return hit_iv / n_rep, hit_k / n_rep


def test_interval_coverage_planted_gaussian():
    """z = beta^T x + noise, x ~ N(0, I_4); layer 0 sees x_1, x_2, layer 1 all of x. Population
    R^2: feature 0: 0.25 and 0.5, feature 1: 0.4 and 0.8 (p / n = 0.004: the held-out estimate's
    shortfall (1 - R^2) p / n_train is a tenth of its standard error)."""
    n = 1000
    betas = np.array([[0.5, 0.5, 0.5, 0.5], [1.0, 1.0, 1.0, 1.0]])

    def make(rng):
        x = rng.normal(size=(n, 4))
        Z = x @ betas.T + rng.normal(size=(n, 2))
        return [x[:, :2], x], Z

    signal = (betas ** 2).sum(1)
    truth_iv = np.stack([0.5 * signal / (signal + 1), signal / (signal + 1)])
    np.testing.assert_allclose(truth_iv, [[0.25, 0.4], [0.5, 0.8]])
    cov_iv, cov_k = _coverage(make, truth_iv, 1 - truth_iv.mean(0), 200, 10)
    assert np.all((cov_iv >= 0.9) & (cov_iv <= 0.99)), cov_iv
    assert np.all((cov_k >= 0.9) & (cov_k <= 0.99)), cov_k


@pytest.mark.slow
def test_interval_coverage_planted_sparse_heavy_tailed():
    """A sparse non-negative code (relu of a linear signal, 80 % zeros): skewed, heavy-tailed
    errors, no Gaussian shortcut. Population R^2 of the best linear predictor from 2e6 draws."""
    n, beta = 2000, np.array([1.0, -0.7, 0.5])

    def draw(rng, m):
        x = rng.normal(size=(m, 3))
        z = np.maximum(x @ beta + 0.5 * rng.normal(size=m) - 1.4, 0) * rng.gamma(2.0, 1.0, size=m)
        return x, z

    xb, zb = draw(np.random.default_rng(99), 2_000_000)
    truth = []
    for cols in ([0], [0, 1, 2]):
        A = np.column_stack([np.ones(len(zb)), xb[:, cols]])
        resid = zb - A @ np.linalg.lstsq(A, zb, rcond=None)[0]
        truth.append(1 - resid.var() / zb.var())
    truth_iv = np.array(truth)[:, None]
    assert 0.1 < truth_iv[0, 0] < truth_iv[1, 0] < 0.7

    def make(rng):
        x, z = draw(rng, n)
        return [x[:, :1], x], z[:, None]

    cov_iv, cov_k = _coverage(make, truth_iv, 1 - truth_iv.mean(0), 300, 11)
    assert np.all((cov_iv >= 0.9) & (cov_iv <= 0.99)), cov_iv
    assert np.all((cov_k >= 0.9) & (cov_k <= 0.99)), cov_k


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(confidence=1.0), "confidence must lie in"),
        (dict(cells_per_fold=0), "cells_per_fold must be"),
        (dict(rows=np.array([0, 1, 1])), "repeated"),
        (dict(rows=np.array([0, 300])), r"rows must lie in \[0, 300\)"),
        (dict(rows=np.zeros((2, 2), int)), "1-D array"),
        (dict(reduce="sum"), "reduce must be a function"),
        (dict(max_memory_gb=0), "max_memory_gb must be > 0"),
    ],
)
def test_new_arguments_raise_clear_value_errors(kwargs, match):
    layers, Z = random_problem(21)
    with pytest.raises(ValueError, match=match):
        complexity(layers, Z, **kwargs)


def test_wide_layer_default_blocks_and_lapack_path_match_previous_algorithm():
    """p = 800: two 400-wide blocks of X^T X and Z^T X at the default block size, SciPy's eigh,
    an ill-conditioned scatter (1,600 training images for 800 correlated ReLU channels)."""
    rng = np.random.default_rng(12)
    n, p = 2000, 800
    X = np.maximum(rng.normal(size=(n, 40)) @ rng.normal(size=(40, p)) + rng.normal(size=(n, p)), 0)
    Z = np.column_stack([X[:, :5].sum(1) + rng.normal(size=n), rng.normal(size=n)])
    assert len(engine._sym_blocks(p)) == 2
    res = complexity([X], Z, confidence=None)
    ref_iv, ref_alpha = reference_iv([X], Z, fold_assignment(n, 5, 0))
    np.testing.assert_allclose(res.per_layer, ref_iv, atol=1e-10, rtol=0)
    np.testing.assert_array_equal(res.alpha, ref_alpha)


def test_constant_target_is_found_exactly_even_without_a_shift():
    """With the shift forced to 0, a constant 3.7 leaves a rounding-level null error; the exact
    comparison with the reference row still calls it constant (I_V = 0, alpha = nan)."""
    layers, Z = random_problem(24)
    Zc = np.column_stack([Z[:, :2], np.full(len(Z), 3.7), np.zeros(len(Z))])
    st = RidgeProbeStats(7, 4, 5, shift_z=np.zeros(4))
    st.update(layers[0], Zc, fold_assignment(len(Z), 5, 0))
    np.testing.assert_array_equal(st.constant_targets(), [False, False, True, True])
    with pytest.warns(RuntimeWarning, match="2 of 4 feature"):
        iv, alpha = st.v_information()
    assert iv[2] == iv[3] == 0 and np.isnan(alpha[2:]).all() and iv[0] > 0.5
