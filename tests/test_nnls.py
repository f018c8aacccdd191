"""NNLS codes (features/nnls.py) against SciPy, planted codes, bad input.

Moved from test_features.py. Tests for ``feature_complexity.features``: NMF dictionary, NNLS codes, fidelity.

References: ``scipy.optimize.nnls`` image by image, ``sklearn.decomposition.NMF`` fitted by hand,
and planted cases whose answer is known (``A = Z_true D`` exactly).
"""

from __future__ import annotations

import json
import os
import warnings

import numpy as np
import pytest
import torch
from scipy.optimize import nnls as scipy_nnls

from feature_complexity.features import (
    Dictionary,
    encode,
    fidelity,
    fit_dictionary,
    nnls_objective,
)


# --------------------------------------------------------------------------------------------
# helpers


def _scipy_codes(A: np.ndarray, D: np.ndarray) -> np.ndarray:
    """Reference codes: one ``scipy.optimize.nnls`` per image, ``(n_images, k)``."""
    return np.stack([scipy_nnls(D.T, a, maxiter=50 * D.shape[0])[0] for a in A])


def _random_problem(
    seed: int, n: int, k: int, d: int, *, noise_images: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    D = rng.random((k, d))
    # Dense A with some negative-leaning rows so that many codes hit the bound z = 0.
    A = rng.random((n, d)) * 2 - (0.3 if noise_images else 0.0)
    return A, D


def _class_data(seed: int, n_per_class: int, n_classes: int, d: int) -> tuple[np.ndarray, np.ndarray]:
    """Non-negative activations with a class-specific mean, and their classes."""
    rng = np.random.default_rng(seed)
    means = rng.random((n_classes, d)) * 2
    classes = np.repeat(np.arange(n_classes), n_per_class)
    A = rng.random((classes.size, d)) * means[classes]
    perm = rng.permutation(classes.size)  # interleave classes: the split must not rely on order
    return A[perm], classes[perm]


# --------------------------------------------------------------------------------------------
# encode (NNLS) against SciPy


@pytest.mark.parametrize(
    "seed, n, k, d",
    [
        (0, 40, 12, 30),  # undercomplete, Gram route
        (1, 40, 30, 30),  # square
        (2, 30, 70, 20),  # overcomplete with k > 2d: factored (Z D) Dᵀ route
    ],
)
@pytest.mark.parametrize("method", ["active_set", "fista", "auto"])
def test_encode_matches_scipy_float64(seed: int, n: int, k: int, d: int, method: str) -> None:
    A, D = _random_problem(seed, n, k, d)
    Z_ref = _scipy_codes(A, D)
    Z = encode(A, D, dtype=torch.float64, max_iter=5000, method=method)
    assert Z.shape == (n, k) and Z.dtype == np.float64
    assert (Z >= 0).all()
    obj, obj_ref = nnls_objective(A, Z, D), nnls_objective(A, Z_ref, D)
    # never meaningfully worse than SciPy's exact active-set solution
    assert np.all(obj <= obj_ref * (1 + 1e-6) + 1e-12)
    if k <= d:  # full column rank: the minimiser is unique, so the codes themselves must agree
        np.testing.assert_allclose(Z, Z_ref, atol=1e-4)


def test_encode_fista_without_refinement_still_meets_tolerance() -> None:
    A, D = _random_problem(3, 40, 15, 30)
    Z_ref = _scipy_codes(A, D)
    Z, info = encode(
        A, D, dtype=torch.float64, method="fista", refine=False, max_iter=5000, return_info=True
    )
    assert info["max_relative_kkt"] <= 1e-6
    obj, obj_ref = nnls_objective(A, Z, D), nnls_objective(A, Z_ref, D)
    np.testing.assert_allclose(obj, obj_ref, rtol=1e-6)
    np.testing.assert_allclose(Z, Z_ref, atol=1e-3)


def test_encode_float32_default_close_to_scipy() -> None:
    A, D = _random_problem(4, 50, 20, 40)
    Z_ref = _scipy_codes(A, D)
    Z = encode(A, D, method="active_set")
    assert Z.dtype == np.float32
    np.testing.assert_allclose(nnls_objective(A, Z, D), nnls_objective(A, Z_ref, D), rtol=1e-4)
    np.testing.assert_allclose(Z, Z_ref, atol=1e-3)


@pytest.mark.parametrize("method, atol", [("active_set", 1e-9), ("fista", 1e-6)])
def test_encode_planted_sparse_codes_are_recovered(method: str, atol: float) -> None:
    rng = np.random.default_rng(5)
    k, d, n = 20, 40, 20
    D = rng.random((k, d))
    Z_true = rng.random((n, k)) * (rng.random((n, k)) < 0.25)  # sparse, non-negative
    A = Z_true @ D
    Z = encode(A, D, dtype=torch.float64, max_iter=5000, method=method)
    np.testing.assert_allclose(Z, Z_true, atol=atol)
    assert nnls_objective(A, Z, D).max() < 1e-10


def test_encode_exact_on_an_ill_conditioned_nmf_dictionary() -> None:
    # Real NMF atoms are all non-negative and share a mean direction: cond(D Dᵀ) ~ 1e6 or
    # worse. Projected gradient stalls there; the default active-set method must not.
    rng = np.random.default_rng(13)
    n_cls, d, n = 4, 16, 200
    cls = np.repeat(np.arange(n_cls), n // n_cls)
    proto = np.maximum(rng.normal(size=(n_cls, 4, d)), 0) + 0.5
    A = np.einsum("nr,nrd->nd", rng.random((n, 4)), proto[cls]) + 0.2 * rng.random((n, d))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        D = fit_dictionary(A, cls, n_atoms_per_class=5, progress=False).D  # k = 20 > d = 16
    ev = np.linalg.eigvalsh(D @ D.T)
    assert ev[-1] / ev[ev > 1e-9 * ev[-1]].min() > 1e3  # the problem is really ill-conditioned
    Z_ref = _scipy_codes(A, D)
    Z, info = encode(A, D, method="active_set", return_info=True)  # float64 inside
    obj, obj_ref = nnls_objective(A, Z, D), nnls_objective(A, Z_ref, D)
    assert np.all(obj <= obj_ref * (1 + 1e-6) + 1e-12)
    assert info["n_fallback"] == 0 and info["max_relative_kkt"] < 1e-6


def test_encode_fallback_to_fista_when_steps_run_out() -> None:
    A, D = _random_problem(14, 30, 15, 30)
    Z_ref = _scipy_codes(A, D)
    Z, info = encode(
        A, D, dtype=torch.float64, method="active_set", max_steps=2, max_iter=5000,
        return_info=True,
    )
    assert info["n_fallback"] > 0
    np.testing.assert_allclose(nnls_objective(A, Z, D), nnls_objective(A, Z_ref, D), rtol=1e-6)


def test_encode_scipy_rows_out_of_steps_are_finished_by_the_active_set() -> None:
    # scipy.optimize.nnls raises RuntimeError when maxiter runs out, keeping nothing of the row
    A, D = _random_problem(14, 30, 15, 30)
    Z_ref = _scipy_codes(A, D)
    Z, info = encode(
        A, D, dtype=torch.float64, method="scipy", max_steps=2, max_iter=5000, return_info=True,
    )
    assert info["n_fallback"] > 0 and info["max_relative_kkt"] < 1e-6
    np.testing.assert_allclose(nnls_objective(A, Z, D), nnls_objective(A, Z_ref, D), rtol=1e-6)


def test_encode_planted_recovered_overcomplete_dictionary_with_disjoint_supports() -> None:
    # k > d but atoms are indicator blocks: every image is a unique sum of atoms with disjoint
    # supports plus duplicated atoms, so the residual is exactly zero at the answer.
    d = 12
    D = np.zeros((24, d))
    for i in range(12):
        D[i, i] = 1.0
        D[12 + i, i] = 2.0  # a scaled copy: the code may split mass, the fit stays exact
    rng = np.random.default_rng(6)
    A = rng.random((10, d))
    Z = encode(A, D, dtype=torch.float64, method="active_set")
    assert nnls_objective(A, Z, D).max() < 1e-12
    np.testing.assert_allclose(Z[:, :12] + 2 * Z[:, 12:], A, atol=1e-8)


def test_encode_batches_and_torch_input_give_the_same_codes() -> None:
    A, D = _random_problem(7, 37, 10, 16)
    Z_one = encode(A, D, dtype=torch.float64, method="active_set")
    Z_many = encode(
        torch.as_tensor(A), torch.as_tensor(D), dtype=torch.float64, batch_size=5,
        method="active_set",
    )
    assert isinstance(Z_many, np.ndarray)
    np.testing.assert_allclose(Z_many, Z_one, atol=1e-10)


def test_encode_zero_and_negative_images_get_zero_codes() -> None:
    rng = np.random.default_rng(8)
    D = rng.random((6, 10))
    A = np.vstack([np.zeros(10), -rng.random(10), rng.random(10)])
    Z = encode(A, D, dtype=torch.float64, method="active_set")
    # b = A Dᵀ <= 0 for the first two rows: z = 0 satisfies the KKT conditions exactly
    np.testing.assert_array_equal(Z[:2], 0.0)
    assert Z[2].sum() > 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("method", ["active_set", "fista"])
def test_encode_on_cuda_matches_cpu(method: str) -> None:
    A, D = _random_problem(9, 64, 20, 40)
    Z_cpu = encode(A, D, dtype=torch.float64, method=method)
    Z_gpu = encode(A, D, dtype=torch.float64, device="cuda", method=method)
    np.testing.assert_allclose(Z_gpu, Z_cpu, atol=1e-6)


@pytest.mark.parametrize(
    "A, D, match",
    [
        (np.ones((3, 4)), -np.ones((2, 4)), "negative entries"),
        (np.ones((3, 4)), np.ones((2, 5)), "pass D, not D.T"),
        (np.full((3, 4), np.nan), np.ones((2, 4)), "A contains 12 non-finite"),
        (np.ones((3, 4)), np.array([[1.0, np.inf, 1, 1], [1, 1, 1, 1]]), "D contains 1 non-finite"),
        (np.ones(4), np.ones((2, 4)), "A must be a 2-D array"),
        (np.ones((3, 4)), np.ones((0, 4)), "no atoms"),
    ],
)
def test_encode_bad_input(A: np.ndarray, D: np.ndarray, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        encode(A, D)


def test_encode_bad_options() -> None:
    A, D = np.ones((2, 3)), np.ones((2, 3))
    with pytest.raises(ValueError, match="dtype"):
        encode(A, D, dtype=torch.float16)
    with pytest.raises(ValueError, match="batch_size"):
        encode(A, D, batch_size=0)
    with pytest.raises(ValueError, match="tol"):
        encode(A, D, tol=0.0)
    with pytest.raises(ValueError, match="method must be"):
        encode(A, D, method="lbfgs")


# --------------------------------------------------------------------------------------------
# fit_dictionary
