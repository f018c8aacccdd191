"""Linear CKA against independent references written from the formulas (kernel form, U-statistic)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from feature_complexity.analyses.cka import cka_with_features, linear_cka


# ---------------------------------------------------------------- independent references
def _kernel_cka(X: np.ndarray, Y: np.ndarray) -> float:
    """CKA in kernel form: HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)), HSIC = tr(KHLH) / (n-1)²."""
    X = np.asarray(X, float).reshape(len(X), -1)
    Y = np.asarray(Y, float).reshape(len(Y), -1)
    n = len(X)
    H = np.eye(n) - np.ones((n, n)) / n
    K, L = X @ X.T, Y @ Y.T

    def hsic(A, B):
        return np.trace(A @ H @ B @ H) / (n - 1) ** 2

    return hsic(K, L) / np.sqrt(hsic(K, K) * hsic(L, L))


def _unbiased_hsic_loop(K: np.ndarray, L: np.ndarray) -> float:
    """Song et al. (2012) unbiased HSIC as the U-statistic it is: the mean over all ordered
    4-tuples of distinct images of k_ij l_ij + k_ij l_qr - 2 k_ij l_iq."""
    n = len(K)
    total, count = 0.0, 0
    for i, j, q, r in itertools.permutations(range(n), 4):
        total += K[i, j] * L[i, j] + K[i, j] * L[q, r] - 2.0 * K[i, j] * L[i, q]
        count += 1
    return total / count


def _debiased_cka_loop(X: np.ndarray, Y: np.ndarray) -> float:
    X = np.asarray(X, float).reshape(len(X), -1)
    Y = np.asarray(Y, float).reshape(len(Y), -1)
    K, L = X @ X.T, Y @ Y.T  # deliberately NOT centred: the U-statistic is shift invariant
    return _unbiased_hsic_loop(K, L) / np.sqrt(_unbiased_hsic_loop(K, K) * _unbiased_hsic_loop(L, L))


# ---------------------------------------------------------------- tests
@pytest.mark.parametrize("n,p,q", [(30, 5, 3), (12, 40, 7), (50, 8, 1), (10, 3, 25)])
def test_feature_form_matches_kernel_form(n: int, p: int, q: int) -> None:
    rng = np.random.default_rng(n + p + q)
    X = rng.normal(size=(n, p)) + 2.0  # an offset, so that centring matters
    Y = X[:, :1] @ rng.normal(size=(1, q)) + rng.normal(size=(n, q))  # partly shared signal
    assert linear_cka(X, Y) == pytest.approx(_kernel_cka(X, Y), abs=1e-12)


def test_planted_value_orthonormal_columns() -> None:
    # X with orthonormal, centred columns and z = X w: CKA = ||w||² / (sqrt(p) ||w||²) = 1/sqrt(p)
    rng = np.random.default_rng(0)
    n, p = 40, 4
    M = rng.normal(size=(n, p))
    M -= M.mean(axis=0)
    X, _ = np.linalg.qr(M)  # columns orthonormal and still centred (span of centred vectors)
    z = X @ rng.normal(size=p)
    assert linear_cka(X, z) == pytest.approx(1.0 / np.sqrt(p), abs=1e-12)
    assert cka_with_features(X, z)[0] == pytest.approx(1.0 / np.sqrt(p), abs=1e-12)


@pytest.mark.parametrize("debiased", [False, True])
def test_self_similarity_is_one(debiased: bool) -> None:
    X = np.random.default_rng(1).normal(size=(20, 6))
    assert linear_cka(X, X, debiased=debiased) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("debiased", [False, True])
def test_invariances(debiased: bool) -> None:
    rng = np.random.default_rng(2)
    X = rng.normal(size=(25, 5))
    Y = X @ rng.normal(size=(5, 4)) + 0.5 * rng.normal(size=(25, 4))
    base = linear_cka(X, Y, debiased=debiased)
    Q, _ = np.linalg.qr(rng.normal(size=(5, 5)))
    assert linear_cka(X @ Q, Y, debiased=debiased) == pytest.approx(base, abs=1e-12)
    assert linear_cka(3.7 * X, 0.01 * Y, debiased=debiased) == pytest.approx(base, abs=1e-12)
    assert linear_cka(X + 5.0, Y - 2.0, debiased=debiased) == pytest.approx(base, abs=1e-12)
    # a generic invertible map is not a similarity: CKA must move
    A = np.diag([10.0, 1.0, 0.1, 1.0, 3.0]) @ rng.normal(size=(5, 5))
    assert abs(np.linalg.det(A)) > 1e-6
    assert abs(linear_cka(X @ A, Y, debiased=debiased) - base) > 1e-2


@pytest.mark.parametrize("n", [4, 5, 7])
def test_debiased_matches_unbiased_hsic_loop(n: int) -> None:
    rng = np.random.default_rng(n)
    X = rng.normal(size=(n, 3)) + 1.0
    Y = X @ rng.normal(size=(3, 2)) + rng.normal(size=(n, 2))
    got = linear_cka(X, Y, debiased=True)
    assert np.isfinite(got)
    assert got == pytest.approx(_debiased_cka_loop(X, Y), abs=1e-10)
    z = Y[:, 0]
    assert cka_with_features(X, z, debiased=True)[0] == pytest.approx(_debiased_cka_loop(X, z), abs=1e-10)


def test_debiased_needs_four_images() -> None:
    X = np.random.default_rng(3).normal(size=(3, 2))
    with pytest.raises(ValueError, match="at least 4 images"):
        linear_cka(X, X, debiased=True)
    with pytest.raises(ValueError, match="at least 4 images"):
        cka_with_features(X, X, debiased=True)
    assert np.isfinite(linear_cka(X, X[:, :1]))  # the biased form is fine with 3


@pytest.mark.parametrize("debiased", [False, True])
@pytest.mark.parametrize("n,p", [(30, 6), (8, 50)])  # both the XᵀZ and the n×n Gram paths
def test_batched_equals_loop(debiased: bool, n: int, p: int) -> None:
    rng = np.random.default_rng(n * p)
    X = rng.normal(size=(n, p))
    Z = np.abs(X[:, :3] @ rng.normal(size=(3, 9)) + rng.normal(size=(n, 9)))
    got = cka_with_features(X, Z, debiased=debiased)
    want = np.array([linear_cka(X, Z[:, j], debiased=debiased) for j in range(Z.shape[1])])
    assert got.shape == (9,)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
    if not debiased:
        np.testing.assert_allclose(got, [_kernel_cka(X, Z[:, j]) for j in range(9)], atol=1e-12)


@pytest.mark.parametrize("debiased", [False, True])
def test_chunked_torch_and_memmap_paths_agree(debiased: bool, tmp_path) -> None:
    pytest.importorskip("torch")
    rng = np.random.default_rng(7)
    X = rng.normal(size=(53, 5)) + 3.0
    Z = np.abs(X[:, :2] @ rng.normal(size=(2, 4)) + rng.normal(size=(53, 4)))
    Z[:, 2] = 1.5  # a constant feature among them
    ref = np.array([linear_cka(X, Z[:, j], debiased=debiased) for j in range(4)])
    assert np.isnan(ref[2])
    np.save(tmp_path / "X.npy", X.astype(np.float32))
    Xm = np.load(tmp_path / "X.npy", mmap_mode="r")  # read-only memmap, float32
    for got in (
        cka_with_features(X, Z, debiased=debiased, batch_size=7),  # 8 chunks, the last one short
        cka_with_features(X, Z, debiased=debiased, device="cpu", batch_size=16),  # torch path
        cka_with_features(Xm, Z, debiased=debiased, batch_size=10),
    ):
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-7, equal_nan=True)


def test_constant_feature_is_nan_and_others_unaffected() -> None:
    rng = np.random.default_rng(4)
    X = rng.normal(size=(20, 4))
    Z = np.column_stack([np.full(20, 0.3), X[:, 0]])
    got = cka_with_features(X, Z)
    assert np.isnan(got[0])
    assert got[1] == pytest.approx(linear_cka(X, X[:, 0]), abs=1e-12)
    assert np.isnan(linear_cka(X, np.full(20, 0.3)))


def test_bad_input() -> None:
    X = np.zeros((5, 2))
    with pytest.raises(ValueError, match="same images"):
        linear_cka(np.ones((5, 2)), np.ones((6, 2)))
    with pytest.raises(ValueError, match="NaN or infinite"):
        X[0, 0] = np.nan
        cka_with_features(X, np.ones((5, 1)))
    with pytest.raises(ValueError, match="shape"):
        linear_cka(np.ones((5, 2, 2)), np.ones((5, 1)))
    with pytest.raises(ValueError, match="shape"):
        cka_with_features(np.ones((5, 2, 2)), np.ones((5, 1)))
    with pytest.raises(ValueError, match="batch_size"):
        cka_with_features(np.ones((5, 2)), np.ones((5, 1)), batch_size=0)
    # nested lists are accepted like arrays
    assert cka_with_features([[0.0, 1.0], [1.0, 0.0], [2.0, 2.0]], [1.0, 2.0, 4.0]).shape == (1,)
