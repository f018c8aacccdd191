"""Tests of the complexity engine (feature_complexity.complexity).

References: scikit-learn ``Ridge`` fitted per feature, per layer, per fold and per penalty
(brute force, same folds and grid, selection rule re-implemented here); closed forms for planted
targets (known signal-to-noise ratio, pure noise, exact linear functions).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import feature_complexity as fc
from feature_complexity.complexity import (
    DEFAULT_ALPHAS,
    ComplexityResult,
    RidgeProbeStats,
    complexity,
    fold_assignment,
)


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
    res = complexity(layers, Z, seed=4)
    stats = RidgeProbeStats(7, 4, 5)
    stats.update(layers[0], Z, fold_assignment(len(Z), 5, 4))
    iv, alpha = stats.v_information()
    np.testing.assert_array_equal(iv, res.per_layer[0])
    np.testing.assert_array_equal(alpha, res.alpha[0])


def test_deterministic_for_a_seed_and_seed_matters():
    layers, Z = random_problem(14)
    a, b = complexity(layers, Z, seed=3), complexity(layers, Z, seed=3)
    np.testing.assert_array_equal(a.per_layer, b.per_layer)
    c = complexity(layers, Z, seed=4)
    assert not np.array_equal(a.per_layer, c.per_layer)
    d = complexity(layers, Z, fold_ids=fold_assignment(len(Z), 5, 4))
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
    np.testing.assert_array_equal(rev.per_layer, mapping.per_layer[::-1])  # order as given


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
    assert list(frame.columns) == ["complexity", "iv_b1", "iv_b2"]
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
