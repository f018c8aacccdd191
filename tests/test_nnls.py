"""NNLS codes (features/nnls.py) against SciPy, planted codes, per-class blocks, bad input.

References: ``scipy.optimize.nnls`` image by image (and block by block for per-class codes),
the KKT residual recomputed from the returned codes in numpy, and planted cases whose answer
is known (``A = Z_true D`` exactly).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from scipy.optimize import nnls as scipy_nnls

import feature_complexity
import feature_complexity.features.nnls as nnls_module
from feature_complexity.data.synthetic import class_structured, per_class_atoms
from feature_complexity.features import encode, fit_dictionary, nnls_objective
from feature_complexity.features.nnls import _relative_kkt

# --------------------------------------------------------------------------------------------
# helpers


def _scipy_codes(A: np.ndarray, D: np.ndarray) -> np.ndarray:
    """Reference codes: one ``scipy.optimize.nnls`` per image, ``(n_images, k)``."""
    A64, D64 = np.asarray(A, dtype=np.float64), np.asarray(D, dtype=np.float64)
    return np.stack([scipy_nnls(D64.T, a, maxiter=50 * D.shape[0])[0] for a in A64])


def _scipy_block_codes(A: np.ndarray, D: np.ndarray, blocks: np.ndarray) -> np.ndarray:
    """Brute-force per-class reference: SciPy on every (image, block) pair."""
    Z = np.zeros((A.shape[0], D.shape[0]))
    for c in np.unique(blocks):
        atoms = np.flatnonzero(blocks == c)
        Z[:, atoms] = _scipy_codes(A, D[atoms])
    return Z


def _kkt(A: np.ndarray, Z: np.ndarray, D: np.ndarray) -> np.ndarray:
    """Relative KKT residual of every row, recomputed from the codes in float64."""
    D64 = np.asarray(D, dtype=np.float64)
    return _relative_kkt(np.asarray(A, dtype=np.float64), np.asarray(Z, dtype=np.float64), D64.T, D64 @ D64.T)


def _assert_optimal(
    A: np.ndarray, Z: np.ndarray, D: np.ndarray, Z_ref: np.ndarray, *, rtol: float = 1e-6, kkt: float = 1e-10
) -> None:
    """``Z`` is feasible, meets the KKT conditions (relative residual <= ``kkt``) and is never
    worse than SciPy's codes.

    The objective gap is measured relative to ``||a||²`` so that it stays meaningful when the
    optimum is an exact fit (objective ~1e-28, e.g. a signed overcomplete dictionary)."""
    assert (Z >= 0).all()
    assert _kkt(A, Z, D).max() <= kkt
    obj, obj_ref = nnls_objective(A, Z, D), nnls_objective(A, Z_ref, D)
    scale = np.maximum(np.einsum("nd,nd->n", A, A).astype(np.float64), 1e-300)
    assert np.max((obj - obj_ref) / np.maximum(obj_ref, 1e-12 * scale)) <= rtol


def _random_problem(
    seed: int, n: int, k: int, d: int, *, noise_images: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    D = rng.random((k, d))
    # Dense A with some negative-leaning rows so that many codes hit the bound z = 0.
    A = rng.random((n, d)) * 2 - (0.3 if noise_images else 0.0)
    return A, D


def _signed_problem(seed: int, n: int, k: int, d: int) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian atoms and activations, as a Semi-NMF or SAE dictionary sees them."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d)), rng.standard_normal((k, d))


def _nmf_like_problem(
    n_classes: int, d: int, r: int, n_per_class: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The benchmark's data at a small size: class-structured activations and per-class atoms
    (all non-negative, sharing directions: ill-conditioned, overcomplete when ``n_classes * r > d``)."""
    D, feature_class = per_class_atoms(n_classes, d, r, seed=seed, n_shared=8)
    A = class_structured(n_per_class, n_classes, d, seed=seed, n_shared=8).A
    return A.astype(np.float64), D.astype(np.float64), feature_class


@pytest.fixture
def no_full_gram(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the working-set method build its Gram sub-blocks from ``D`` (the route taken when
    few images share a large dictionary) instead of from the full ``(k, k)`` Gram matrix."""
    monkeypatch.setattr(nnls_module, "_GRAM_WIDTH", 0)


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
@pytest.mark.parametrize("method", ["working_set", "active_set", "fista", "auto"])
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


@pytest.mark.parametrize("gram", ["full", "blocks"])
@pytest.mark.parametrize(
    "seed, n, k, d",
    [
        (20, 30, 15, 40),  # undercomplete: unique codes
        (21, 30, 90, 30),  # overcomplete: several rounds of violators
        (22, 20, 400, 60),  # overcomplete, working sets grow well past the first 32 atoms
    ],
)
def test_working_set_matches_scipy_on_both_gram_routes(
    seed: int, n: int, k: int, d: int, gram: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if gram == "blocks":
        monkeypatch.setattr(nnls_module, "_GRAM_WIDTH", 0)
    A, D = _random_problem(seed, n, k, d)
    Z_ref = _scipy_codes(A, D)
    Z, info = encode(A, D, dtype=torch.float64, method="working_set", return_info=True)
    _assert_optimal(A, Z, D, Z_ref)
    assert info["n_fallback"] == 0
    # the reported residual is the one recomputed independently from the codes
    np.testing.assert_allclose(info["max_relative_kkt"], _kkt(A, Z, D).max(), rtol=1e-3, atol=1e-13)
    if k <= d:
        np.testing.assert_allclose(Z, Z_ref, atol=1e-9)


@pytest.mark.parametrize("method", ["working_set", "active_set", "fista", "scipy"])
@pytest.mark.parametrize("k, d", [(15, 30), (60, 20), (300, 40)])
def test_signed_dictionary_matches_scipy(method: str, k: int, d: int) -> None:
    # Semi-NMF / SAE atoms have both signs: G = D Dᵀ has negative entries, x G cancels
    A, D = _signed_problem(30 + k, 25, k, d)
    Z_ref = _scipy_codes(A, D)
    Z, info = encode(A, D, dtype=torch.float64, method=method, max_iter=20000, return_info=True)
    if method == "fista":  # first order: meets its stopping rule, not the active-set precision
        assert info["max_relative_kkt"] <= 1e-6
        obj, obj_ref = nnls_objective(A, Z, D), nnls_objective(A, Z_ref, D)
        assert np.all(obj <= obj_ref + 1e-9 * np.einsum("nd,nd->n", A, A))
        return
    _assert_optimal(A, Z, D, Z_ref)
    assert info["n_fallback"] == 0
    if k < d:
        np.testing.assert_allclose(Z, Z_ref, atol=1e-9)


def test_signed_dictionary_on_the_blocks_route(no_full_gram: None) -> None:
    A, D = _signed_problem(33, 20, 150, 24)
    _assert_optimal(A, encode(A, D, dtype=torch.float64), D, _scipy_codes(A, D))


@pytest.mark.parametrize("gram", ["full", "blocks"])
def test_working_set_on_ill_conditioned_nmf_like_atoms(gram: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # The benchmark's data at a small size: 40 classes x 5 atoms in 48 dimensions (k = 200 > d),
    # atoms of one class nearly parallel, classes sharing directions
    if gram == "blocks":
        monkeypatch.setattr(nnls_module, "_GRAM_WIDTH", 0)
    A, D, _ = _nmf_like_problem(40, 48, 5, 1)
    ev = np.linalg.eigvalsh(D[:48] @ D[:48].T)
    assert ev[-1] / ev[0] > 1e4  # the problem is really ill-conditioned
    Z_ref = _scipy_codes(A, D)
    Z, info = encode(A, D, return_info=True)  # the default: auto, float32 output
    assert Z.dtype == np.float32
    assert info["max_relative_kkt"] <= 1e-6 and info["n_fallback"] == 0
    Z64 = encode(A, D, dtype=torch.float64)
    _assert_optimal(A, Z64, D, Z_ref)


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


@pytest.mark.parametrize("method", ["auto", "active_set"])
def test_encode_float32_default_close_to_scipy(method: str) -> None:
    A, D = _random_problem(4, 50, 20, 40)
    Z_ref = _scipy_codes(A, D)
    Z = encode(A, D, method=method)
    assert Z.dtype == np.float32
    np.testing.assert_allclose(nnls_objective(A, Z, D), nnls_objective(A, Z_ref, D), rtol=1e-4)
    np.testing.assert_allclose(Z, Z_ref, atol=1e-3)


@pytest.mark.parametrize("method, atol", [("working_set", 1e-9), ("active_set", 1e-9), ("fista", 1e-6)])
def test_encode_planted_sparse_codes_are_recovered(method: str, atol: float) -> None:
    rng = np.random.default_rng(5)
    k, d, n = 20, 40, 20
    D = rng.random((k, d))
    Z_true = rng.random((n, k)) * (rng.random((n, k)) < 0.25)  # sparse, non-negative
    A = Z_true @ D
    Z = encode(A, D, dtype=torch.float64, max_iter=5000, method=method)
    np.testing.assert_allclose(Z, Z_true, atol=atol)
    assert nnls_objective(A, Z, D).max() < 1e-10


@pytest.mark.parametrize("gram", ["full", "blocks"])
def test_planted_codes_on_atoms_with_disjoint_supports(gram: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # 300 atoms, each living on its own 2 of 600 coordinates: A = Z_true D has exactly one
    # code. Each image uses ~60 atoms, more than a first working set holds, so the violator
    # rounds must find the rest; the largest correlations alone would not.
    if gram == "blocks":
        monkeypatch.setattr(nnls_module, "_GRAM_WIDTH", 0)
    rng = np.random.default_rng(40)
    k, n = 300, 12
    D = np.zeros((k, 2 * k))
    D[np.arange(k), 2 * np.arange(k)] = rng.uniform(0.5, 2, k)
    D[np.arange(k), 2 * np.arange(k) + 1] = rng.uniform(0.5, 2, k)
    Z_true = rng.uniform(0.1, 1, (n, k)) * (rng.random((n, k)) < 0.2)
    Z, info = encode(Z_true @ D, D, dtype=torch.float64, return_info=True)
    np.testing.assert_allclose(Z, Z_true, atol=1e-12)
    assert info["max_relative_kkt"] < 1e-12


@pytest.mark.parametrize("gram", ["full", "blocks"])
def test_planted_tiny_codes_below_float32_noise_are_recovered(gram: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # Atoms with disjoint supports, each image = 40 atoms of weight ~1 plus 5 of weight 1e-9:
    # those 5 lower the residual by ~1e-18 relative, below what the float32 screen of the
    # blocks route can see (~1e-6) but far above float64 noise; only the float64 check (or the
    # float64 gradient from the full Gram matrix) can bring them in.
    if gram == "blocks":
        monkeypatch.setattr(nnls_module, "_GRAM_WIDTH", 0)
    rng = np.random.default_rng(41)
    k, n = 120, 10
    D = np.zeros((k, 2 * k))
    D[np.arange(k), 2 * np.arange(k)] = rng.uniform(0.5, 2, k)
    D[np.arange(k), 2 * np.arange(k) + 1] = rng.uniform(0.5, 2, k)
    Z_true = np.zeros((n, k))
    for row in Z_true:
        atoms = rng.permutation(k)[:45]
        row[atoms[:40]] = rng.uniform(0.5, 1, 40)
        row[atoms[40:]] = 1e-9 * rng.uniform(0.5, 1, 5)
    Z, info = encode(Z_true @ D, D, dtype=torch.float64, return_info=True)
    np.testing.assert_allclose(Z, Z_true, rtol=1e-6, atol=1e-17)
    assert info["max_relative_kkt"] < 1e-12


def test_encode_exact_on_an_ill_conditioned_nmf_dictionary() -> None:
    # Real NMF atoms are all non-negative and share a mean direction: cond(D Dᵀ) ~ 1e6 or
    # worse. Projected gradient stalls there; the exact methods must not.
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
    for method in ("working_set", "active_set"):
        Z, info = encode(A, D, method=method, return_info=True)  # float64 inside
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


def test_working_set_rows_that_outgrow_their_width_are_finished(monkeypatch: pytest.MonkeyPatch) -> None:
    # A batch may not let a working set grow past a width set by max_memory; such rows are
    # redone one at a time, and what still does not fit goes to FISTA from the best codes.
    A, D = _random_problem(15, 20, 200, 40)
    Z_ref = _scipy_codes(A, D)
    monkeypatch.setattr(nnls_module, "_ws_max_width", lambda rows, s: 40)
    Z, info = encode(A, D, dtype=torch.float64, max_iter=20000, return_info=True)
    assert info["n_fallback"] > 0
    np.testing.assert_allclose(nnls_objective(A, Z, D), nnls_objective(A, Z_ref, D), rtol=1e-6)
    monkeypatch.setattr(nnls_module, "_ws_max_width", lambda rows, s: 40 if rows > 1 else 10_000)
    Z, info = encode(A, D, dtype=torch.float64, return_info=True)
    assert info["n_fallback"] == 0  # the one-row retry had room
    _assert_optimal(A, Z, D, Z_ref)


def test_encode_scipy_rows_out_of_steps_are_finished_by_the_active_set() -> None:
    # scipy.optimize.nnls raises RuntimeError when maxiter runs out, keeping nothing of the row
    A, D = _random_problem(14, 30, 15, 30)
    Z_ref = _scipy_codes(A, D)
    Z, info = encode(
        A, D, dtype=torch.float64, method="scipy", max_steps=2, max_iter=5000, return_info=True,
    )
    assert info["n_fallback"] > 0 and info["max_relative_kkt"] < 1e-6
    np.testing.assert_allclose(nnls_objective(A, Z, D), nnls_objective(A, Z_ref, D), rtol=1e-6)


@pytest.mark.parametrize("method", ["working_set", "active_set"])
def test_encode_planted_recovered_overcomplete_dictionary_with_duplicate_atoms(method: str) -> None:
    # k > d, atoms are indicators and their scaled copies: linearly dependent atoms (singular
    # Gram sub-blocks), every image an exact fit. The code may split mass, the fit stays exact.
    d = 12
    D = np.zeros((24, d))
    for i in range(12):
        D[i, i] = 1.0
        D[12 + i, i] = 2.0
    rng = np.random.default_rng(6)
    A = rng.random((10, d))
    Z = encode(A, D, dtype=torch.float64, method=method)
    assert nnls_objective(A, Z, D).max() < 1e-12
    np.testing.assert_allclose(Z[:, :12] + 2 * Z[:, 12:], A, atol=1e-8)


def test_small_solver_is_exact_with_linearly_dependent_atoms() -> None:
    # Block pivoting needs independent atoms; duplicated ones must reach Lawson–Hanson.
    from feature_complexity.features.nnls import _solve_small

    rng = np.random.default_rng(7)
    base = rng.random((6, 10))
    Dw = np.concatenate([base, base[:3], 3 * base[3:4]])  # (10, 10): rank 6
    A = rng.random((8, 10))
    G = torch.as_tensor(Dw @ Dw.T).expand(8, 10, 10).contiguous()
    B = torch.as_tensor(A @ Dw.T)
    valid = torch.ones(8, 10, dtype=torch.bool)
    X, _, ok = _solve_small(
        G, B, valid, torch.zeros_like(valid), max_steps=100, max_elements=2**20, max_support=10
    )
    assert bool(ok.all())
    np.testing.assert_allclose(
        nnls_objective(A, X.numpy(), Dw), nnls_objective(A, _scipy_codes(A, Dw), Dw), rtol=1e-9
    )



def test_unrolled_cholesky_matches_numpy_and_flags_indefinite_matrices() -> None:
    from feature_complexity.features.nnls import _cholesky_solve_unrolled

    rng = np.random.default_rng(60)
    M = rng.standard_normal((50, 7, 9))
    M = M @ M.transpose(0, 2, 1) + 1e-3 * np.eye(7)  # SPD, some ill-conditioned
    M[3] = -M[3]  # negative definite
    b = rng.standard_normal((50, 7))
    x, failed = _cholesky_solve_unrolled(torch.as_tensor(M), torch.as_tensor(b))
    assert failed.numpy().tolist() == [i == 3 for i in range(50)]
    ok = np.arange(50) != 3
    np.testing.assert_allclose(x.numpy()[ok], np.linalg.solve(M[ok], b[ok][..., None])[..., 0], rtol=1e-8, atol=1e-10)

@pytest.mark.parametrize("method", ["working_set", "active_set"])
def test_encode_batches_and_torch_input_give_the_same_codes(method: str) -> None:
    A, D = _random_problem(7, 37, 10, 16)
    Z_one = encode(A, D, dtype=torch.float64, method=method)
    Z_many = encode(
        torch.as_tensor(A), torch.as_tensor(D), dtype=torch.float64, batch_size=5, method=method,
    )
    assert isinstance(Z_many, np.ndarray)
    np.testing.assert_allclose(Z_many, Z_one, atol=1e-10)


@pytest.mark.parametrize("method", ["working_set", "active_set", "scipy"])
def test_encode_zero_and_negative_images_get_zero_codes(method: str) -> None:
    rng = np.random.default_rng(8)
    D = rng.random((6, 10))
    A = np.vstack([np.zeros(10), -rng.random(10), rng.random(10)])
    Z, info = encode(A, D, dtype=torch.float64, method=method, return_info=True)
    # b = A Dᵀ <= 0 for the first two rows: z = 0 satisfies the KKT conditions exactly
    np.testing.assert_array_equal(Z[:2], 0.0)
    assert Z[2].sum() > 0 and info["max_relative_kkt"] < 1e-9


def test_zero_atoms_and_an_all_zero_dictionary() -> None:
    A, D = _random_problem(9, 10, 12, 8)
    D[[2, 7]] = 0.0  # atoms that explain nothing keep a zero code
    Z = encode(A, D, dtype=torch.float64)
    np.testing.assert_array_equal(Z[:, [2, 7]], 0.0)
    _assert_optimal(A, Z, D, _scipy_codes(A, D))
    np.testing.assert_array_equal(encode(A, np.zeros((5, 8))), 0.0)
    assert encode(A[:0], D).shape == (0, 12)


@pytest.mark.parametrize("method", ["working_set", "active_set", "fista"])
def test_every_solver_gives_zero_codes_on_an_all_zero_dictionary_and_handles_no_images(method: str) -> None:
    A, D = _random_problem(9, 10, 12, 8)
    Z = encode(A, np.zeros((5, 8)), method=method)
    assert Z.shape == (10, 5) and np.isfinite(Z).all()
    np.testing.assert_array_equal(Z, 0.0)
    assert encode(A[:0], D, method=method).shape == (0, 12)


def test_encode_is_exported_at_the_package_top_level() -> None:
    A, D = _random_problem(10, 6, 8, 12)
    Z = feature_complexity.encode(A, D, device="cpu")
    assert Z.shape == (6, 8) and Z.dtype == np.float32


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("method", ["working_set", "active_set", "fista"])
def test_encode_on_cuda_matches_cpu(method: str) -> None:
    A, D = _random_problem(9, 64, 200, 40)
    Z_cpu = encode(A, D, dtype=torch.float64, method=method, max_iter=5000)
    Z_gpu = encode(A, D, dtype=torch.float64, device="cuda", method=method, max_iter=5000)
    np.testing.assert_allclose(nnls_objective(A, Z_gpu, D), nnls_objective(A, Z_cpu, D), rtol=1e-6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_per_class_codes_on_cuda_match_cpu() -> None:
    A, D, feature_class = _nmf_like_problem(10, 24, 4, 2)
    Z_cpu = encode(A, D, dtype=torch.float64, blocks=feature_class)
    Z_gpu = encode(A, D, dtype=torch.float64, blocks=feature_class, device="cuda")
    np.testing.assert_allclose(Z_gpu, Z_cpu, atol=1e-9)


# --------------------------------------------------------------------------------------------
# per-class codes (blocks)


@pytest.mark.parametrize("method", ["auto", "scipy", "active_set"])
def test_per_class_codes_match_a_brute_force_scipy_loop(method: str) -> None:
    A, D, feature_class = _nmf_like_problem(12, 32, 5, 3)
    Z_ref = _scipy_block_codes(A, D, feature_class)
    Z, info = encode(A, D, dtype=torch.float64, blocks=feature_class, method=method, return_info=True)
    np.testing.assert_allclose(Z, Z_ref, atol=1e-8)  # a block of 5 atoms in 32-d: unique codes
    assert info["max_relative_kkt"] < 1e-9 and info["n_fallback"] == 0


@pytest.mark.parametrize("block_size", ["small", "large"])
def test_per_class_codes_with_uneven_interleaved_signed_blocks(block_size: str) -> None:
    # labels not sorted, not contiguous, of unequal sizes; > 64 atoms takes the block-by-block path
    rng = np.random.default_rng(50)
    sizes = [3, 9, 1, 20] if block_size == "small" else [70, 5]
    labels = np.repeat([7, -1, 3, 12][: len(sizes)], sizes)
    rng.shuffle(labels)
    k, d = labels.size, 24
    A, D = _signed_problem(51, 10, k, d)
    Z_ref = _scipy_block_codes(A, D, labels)
    Z, info = encode(A, D, dtype=torch.float64, blocks=labels, return_info=True)
    for c in np.unique(labels):  # each block's code is optimal for that block alone
        atoms = labels == c
        _assert_optimal(A, Z[:, atoms], D[atoms], Z_ref[:, atoms])
    assert info["max_relative_kkt"] < 1e-6


def test_per_class_codes_planted_and_one_block_is_the_whole_dictionary() -> None:
    A, D = _random_problem(52, 20, 10, 25)
    # one block holding every atom: the whole-dictionary code
    np.testing.assert_allclose(
        encode(A, D, dtype=torch.float64, blocks=np.zeros(10, dtype=int)),
        encode(A, D, dtype=torch.float64), atol=1e-10,
    )
    # an image made of block 0's atoms only is reproduced exactly by block 0
    blocks = np.repeat([0, 1], 5)
    z0 = np.random.default_rng(53).random(5)
    Z = encode((z0 @ D[:5])[None], D, dtype=torch.float64, blocks=blocks)
    np.testing.assert_allclose(Z[0, :5], z0, atol=1e-10)


# --------------------------------------------------------------------------------------------
# bad input


@pytest.mark.parametrize(
    "A, D, match",
    [
        (np.ones((3, 4)), np.ones((2, 5)), "pass D, not D.T"),
        (np.full((3, 4), np.nan), np.ones((2, 4)), "A contains 12 non-finite"),
        (np.ones((3, 4)), np.array([[1.0, np.inf, 1, 1], [1, 1, 1, 1]]), "D contains 1 non-finite"),
        (np.ones(4), np.ones((2, 4)), "A must be a 2-D array"),
        (np.ones((3, 4)), np.ones((0, 4)), "no atoms"),
        (np.ones((3, 4)), np.ones((2, 4)) * 1j, "real numbers"),
    ],
)
def test_encode_bad_input(A: np.ndarray, D: np.ndarray, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        encode(A, D)


def test_encode_accepts_a_signed_dictionary() -> None:
    # the non-negativity check now lives in NMF: Semi-NMF and SAE dictionaries are signed
    Z = encode(np.ones((3, 4)), -np.ones((2, 4)))
    np.testing.assert_array_equal(Z, 0.0)  # every atom points away from every image


@pytest.mark.parametrize(
    "blocks, match",
    [
        (np.zeros(3, dtype=int), "blocks has 3 labels but D has 2 atoms"),
        (np.zeros((2, 1), dtype=int), "blocks must be a 1-D array of 2 labels"),
        (np.array([0.5, 1.0]), "integer class indices"),
    ],
)
def test_encode_bad_blocks(blocks: np.ndarray, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        encode(np.ones((3, 4)), np.ones((2, 4)), blocks=blocks)


def test_encode_bad_options() -> None:
    A, D = np.ones((2, 3)), np.ones((2, 3))
    with pytest.raises(ValueError, match="dtype"):
        encode(A, D, dtype=torch.float16)
    with pytest.raises(ValueError, match="batch_size"):
        encode(A, D, batch_size=0)
    with pytest.raises(ValueError, match="tol"):
        encode(A, D, tol=0.0)
    with pytest.raises(ValueError, match="method must be one of"):
        encode(A, D, method="lbfgs")
    with pytest.raises(ValueError, match="max_memory is in bytes"):
        encode(A, D, max_memory=1000)


# --------------------------------------------------------------------------------------------
# the paper's scale


@pytest.mark.slow
def test_working_set_exact_at_the_papers_scale() -> None:
    # k = 10,000 atoms in 2,048 dimensions (1,000 classes x 10): SciPy takes seconds per row
    D, _ = per_class_atoms(1000, 2048, 10)
    A = class_structured(1, 1000, 2048).A[::250]  # 4 images of different classes
    Z, info = encode(A, D, return_info=True, dtype=torch.float64)
    assert info["max_relative_kkt"] <= 1e-6 and info["n_fallback"] == 0
    _assert_optimal(A.astype(np.float64), Z, D.astype(np.float64), _scipy_codes(A, D))
