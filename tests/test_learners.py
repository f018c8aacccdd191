"""Tests for the dictionary learners: batched torch NMF (HALS), Semi-NMF, TopK SAE.

References: scikit-learn's own NMF pieces (``_initialize_nmf``, ``_randomized_svd``,
``_fit_coordinate_descent``, ``NMF``), a brute-force alternating least squares with SciPy's exact
NNLS for Semi-NMF, closed forms (least squares, the SAE's forward pass in numpy), and planted
cases whose answer is known.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment
from scipy.optimize import nnls as scipy_nnls

from feature_complexity.features import Dictionary, fit_dictionary, get_learner, seminmf
from feature_complexity.features import nmf as nmf_mod
from feature_complexity.features.nmf import NMFLearner, class_batches, nndsvda_init, padded_rows
from feature_complexity.features.sae import SAELearner, SAEOptions, train_topk_sae

CPU = torch.device("cpu")

# the references run scikit-learn with small budgets on purpose; its convergence warning is noise here
pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


def _nonneg(seed: int, n: int, d: int, dtype=np.float64) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.random((n, d)) * (rng.random((n, d)) < 0.6)).astype(dtype)


def _one_batch(X: np.ndarray) -> nmf_mod.ClassBatch:
    """``X`` as a padded batch of one class (as the per-class solver builds it)."""
    return next(class_batches(X, np.zeros(len(X), dtype=int), lambda n: 0, max_batch_bytes=2**40, device=CPU))


def _uneven_classes(seed: int, n_classes: int, n_per: int, d: int, dtype=np.float32
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Non-negative class-structured rows; every third class is 20 % smaller (other padded sizes)."""
    rng = np.random.default_rng(seed)
    classes = np.repeat(np.arange(n_classes), n_per)
    classes = classes[~((classes % 3 == 0) & (np.arange(classes.size) % n_per < n_per // 5))]
    A = rng.random((classes.size, d)) * rng.random((n_classes, d))[classes]
    perm = rng.permutation(classes.size)  # interleaved: the grouping must not rely on row order
    return A[perm].astype(dtype), classes[perm]


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """These problems are tiny: intra-op threads only add barrier waits, which cost 30x on a
    machine shared with other jobs. One thread, restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ============================================================================ NMF: scikit-learn parity


@pytest.mark.parametrize("n, d, r", [(50, 300, 5), (200, 40, 4), (12, 30, 4), (37, 301, 3), (64, 64, 1)])
def test_nndsvda_init_matches_sklearn(n: int, d: int, r: int) -> None:
    # both transpose branches of the randomized SVD, fewer rows than r + 10 random vectors,
    # sizes that need row and column padding
    from sklearn.decomposition._nmf import _initialize_nmf

    X = _nonneg(n + d, n, d)
    W0, H0 = _initialize_nmf(X, r, init="nndsvda", random_state=3)
    b = _one_batch(X)
    Ut, H = nndsvda_init(b.X, b.n_rows, r, seed=3, d=d)
    np.testing.assert_allclose(Ut[0, :, :n].numpy().T, W0, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(H[0, :, :d].numpy(), H0, rtol=1e-9, atol=1e-12)
    assert not Ut[0, :, n:].any() and not H[0, :, d:].any()  # padding stays out of the factors


def test_randomized_svd_matches_sklearn() -> None:
    from sklearn.utils.extmath import _randomized_svd

    X = _nonneg(1, 40, 90)
    U0, S0, V0 = _randomized_svd(X, 6, random_state=5)
    b = _one_batch(X)
    U, S, V = nmf_mod.randomized_svd(b.X, b.n_rows, 6, seed=5, d=90)
    np.testing.assert_allclose(S[0].numpy(), S0, rtol=1e-10)
    np.testing.assert_allclose(U[0, :40].numpy(), U0, atol=1e-10)
    np.testing.assert_allclose(V[0, :, :90].numpy(), V0, atol=1e-10)


@pytest.mark.parametrize("max_iter, tol", [(1, 0.0), (25, 0.0), (1000, 1e-4)])
def test_hals_follows_sklearn_coordinate_descent_iterate_by_iterate(max_iter: int, tol: float) -> None:
    # HALS is scikit-learn's CD in the same order: same factors after k iterations, and the same
    # stopping iteration under its violation rule.
    from sklearn.decomposition._nmf import _fit_coordinate_descent, _initialize_nmf

    X = _nonneg(2, 30, 20)
    W0, H0 = _initialize_nmf(X, 3, init="nndsvda", random_state=0)
    W_ref, H_ref, it_ref = _fit_coordinate_descent(X, W0.copy(), H0.copy(), max_iter=max_iter, tol=tol)
    Ut, H, n_iter, _ = nmf_mod.hals_nmf(torch.from_numpy(X)[None], torch.from_numpy(W0.T.copy())[None],
                                        torch.from_numpy(H0)[None], max_iter=max_iter, tol=tol)
    np.testing.assert_allclose(H[0].numpy(), H_ref, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(Ut[0].numpy().T, W_ref, rtol=1e-9, atol=1e-12)
    assert n_iter[0] == it_ref


def test_per_class_objective_within_one_percent_of_sklearn_in_float32() -> None:
    # the requirement: per class, ||A_c - U D_c||² <= 1.01 x scikit-learn's from the same start
    from sklearn.decomposition import NMF

    A, classes = _uneven_classes(3, 4, 30, 24)
    fit = nmf_mod.nmf_per_class(A, classes, 4, seed=0, max_iter=300)
    for c in range(4):
        ref = NMF(4, init="nndsvda", random_state=0, max_iter=300).fit(A[classes == c])
        assert fit.sq_err[c] <= 1.01 * ref.reconstruction_err_**2
        assert fit.n_iter[c] == pytest.approx(ref.n_iter_, abs=3)  # float32 rounding only


def test_classes_stop_on_their_own_criterion() -> None:
    # classes that need different iteration counts each stop where scikit-learn stops them
    from sklearn.decomposition import NMF

    A, classes = _uneven_classes(4, 4, 20, 12, dtype=np.float64)
    fit = nmf_mod.nmf_per_class(A, classes, 3, seed=0, max_iter=500)
    ref = [NMF(3, init="nndsvda", random_state=0, max_iter=500).fit(A[classes == c]).n_iter_ for c in range(4)]
    np.testing.assert_array_equal(fit.n_iter, ref)
    assert len(set(ref)) > 1 and fit.converged[np.array(ref) < 500].all()


@pytest.mark.parametrize("dtype, d", [(np.float32, 300), (np.float32, 37), (np.float64, 10)])
def test_a_class_gets_the_same_atoms_alone_or_with_any_other_classes(dtype, d: int) -> None:
    # the distributed run splits classes across processes: the atoms must not change
    A, classes = _uneven_classes(5, 9, 40, d, dtype=dtype)
    together = nmf_mod.nmf_per_class(A, classes, 4, seed=0, max_iter=300)
    for c in (0, 1, 8):
        alone = nmf_mod.nmf_per_class(A[classes == c], classes[classes == c], 4, seed=0, max_iter=300)
        np.testing.assert_array_equal(alone.D, together.D[4 * c:4 * c + 4])
        assert alone.n_iter[0] == together.n_iter[c]
    pick = np.isin(classes, [1, 3, 8])  # another company, and a chunk per class
    other = nmf_mod.nmf_per_class(A[pick], classes[pick], 4, seed=0, max_iter=300, max_batch_bytes=1)
    np.testing.assert_array_equal(other.D, together.D[np.repeat(np.isin(np.arange(9), [1, 3, 8]), 4)])


# ------------------------------------------------------------------ accelerated HALS (Gillis & Glineur)


def _cd_sweep(V: np.ndarray, C: np.ndarray, G: np.ndarray) -> None:
    """Reference coordinate descent on ``min_{V >= 0} ½ <V, G V> - <C, V>``, row by row, in place."""
    for t in range(V.shape[0]):
        if G[t, t] > 0:
            V[t] = np.maximum(0.0, V[t] - (G[t] @ V - C[t]) / G[t, t])


def _accelerated_reference(X: np.ndarray, Ut: np.ndarray, H: np.ndarray, *, max_iter: int, tol: float,
                           sweeps: int = 3, window: int = 5) -> tuple[np.ndarray, np.ndarray, int]:
    """The accelerated solver as a plain numpy loop: ``sweeps`` coordinate-descent sweeps of ``U``
    then of ``D`` per iteration; stop when ``(f[t-window] - f[t]) / (window f[t]) <= tol`` with
    ``f`` the objective computed directly as ``||X - U D||²``."""
    Ut, H, f = Ut.copy(), H.copy(), []
    for it in range(1, max_iter + 1):
        for _ in range(sweeps):
            _cd_sweep(Ut, H @ X.T, H @ H.T)
        for _ in range(sweeps):
            _cd_sweep(H, Ut @ X, Ut @ Ut.T)
        f.append(float(np.sum((X - Ut.T @ H) ** 2)))
        if it > window and (f[-1 - window] - f[-1]) / (window * f[-1]) <= tol:
            return Ut, H, it
    return Ut, H, max_iter


@pytest.mark.parametrize("seed, tol", [(3, 1e-5), (4, 1e-3)])
def test_accelerated_hals_follows_a_plain_numpy_loop_iterate_by_iterate(seed: int, tol: float) -> None:
    # an independent implementation of the same algorithm and stopping rule: same factors, same
    # stopping iteration (the tracked objective equals the direct one). With seed 4 and tol 1e-3 a
    # window of 4, 5 or 6 iterations stops at 9, 10 or 11.
    from sklearn.decomposition._nmf import _initialize_nmf

    X = _nonneg(seed, 200, 25)
    W0, H0 = _initialize_nmf(X, 4, init="nndsvda", random_state=0)
    Ut_ref, H_ref, it_ref = _accelerated_reference(X, W0.T, H0, max_iter=400, tol=tol)
    Ut, H, n_iter, converged = nmf_mod.hals_nmf(torch.from_numpy(X)[None], torch.from_numpy(W0.T.copy())[None],
                                                torch.from_numpy(H0)[None], max_iter=400, tol=tol, accelerated=True)
    assert 5 < it_ref < 400 and n_iter[0] == it_ref and converged[0]
    np.testing.assert_allclose(H[0].numpy(), H_ref, rtol=1e-8, atol=1e-11)
    np.testing.assert_allclose(Ut[0].numpy(), Ut_ref, rtol=1e-8, atol=1e-11)


def test_accelerated_tracked_objective_is_the_squared_error() -> None:
    A, classes = _uneven_classes(6, 3, 90, 20, dtype=np.float64)
    batch = next(class_batches(A, classes, lambda n: 0, max_batch_bytes=2**40, device=CPU))
    Ut, H = nndsvda_init(batch.X, batch.n_rows, 3, seed=0, d=batch.d)
    state = {"Ut": Ut.clone(), "H": H.clone(), "f": torch.full((Ut.shape[0], nmf_mod.OBJECTIVE_WINDOW + 1),
                                                                 torch.inf, dtype=torch.float64)}
    const = {"X": batch.X, "xx": batch.X.square().sum((1, 2))}
    for _ in range(3):
        nmf_mod._accelerated_iteration(const, state)
    direct = nmf_mod.squared_errors(batch.X, state["Ut"], state["H"])
    np.testing.assert_allclose(state["f"][:, -1].numpy(), direct, rtol=1e-10)
    assert np.isinf(state["f"][:, 0].numpy()).all()  # three of the six slots filled


def test_accelerated_per_class_within_one_percent_of_sklearn_in_fewer_passes() -> None:
    # classes of many rows (spatial fit samples): the objective requirement holds, and the extra
    # sweeps pay for themselves in passes over the activations
    from sklearn.decomposition import NMF

    A, classes = _uneven_classes(7, 3, 400, 30)
    fast = nmf_mod.nmf_per_class(A, classes, 4, seed=0, max_iter=1000, tol=nmf_mod.ACCELERATED_TOL,
                                 accelerated=True)
    plain = nmf_mod.nmf_per_class(A, classes, 4, seed=0, max_iter=1000)
    for c in range(3):
        ref = NMF(4, init="nndsvda", random_state=0, max_iter=1000).fit(A[classes == c])
        assert fast.sq_err[c] <= 1.01 * ref.reconstruction_err_**2
    assert fast.converged.all() and fast.n_iter.sum() < plain.n_iter.sum()


def test_accelerated_recovers_a_planted_nmf() -> None:
    rng = np.random.default_rng(8)
    D_true = rng.random((4, 30)) * (rng.random((4, 30)) < 0.4)
    U_true = rng.random((500, 4)) * (rng.random((500, 4)) < 0.5)
    A = U_true @ D_true
    fit = nmf_mod.nmf_per_class(A, np.zeros(500, dtype=int), 4, seed=0, max_iter=2000, tol=1e-9, accelerated=True)
    assert fit.sq_err[0] <= 1e-6 * np.sum(A**2)
    unit = lambda M: M / np.linalg.norm(M, axis=1, keepdims=True)  # noqa: E731
    cos = unit(fit.D) @ unit(D_true).T
    rows, cols = linear_sum_assignment(-cos)
    assert cos[rows, cols].min() > 0.99


def test_accelerated_class_gets_the_same_atoms_alone_or_with_others() -> None:
    A, classes = _uneven_classes(9, 5, 120, 33)
    together = nmf_mod.nmf_per_class(A, classes, 3, seed=0, max_iter=300, tol=1e-5, accelerated=True)
    for c in (0, 4):
        alone = nmf_mod.nmf_per_class(A[classes == c], classes[classes == c], 3, seed=0, max_iter=300, tol=1e-5,
                                      accelerated=True)
        np.testing.assert_array_equal(alone.D, together.D[3 * c:3 * c + 3])
        assert alone.n_iter[0] == together.n_iter[c]


def test_nmf_solver_option_reaches_the_learner() -> None:
    A, classes = _uneven_classes(10, 3, 200, 16)
    hals = fit_dictionary(A, classes, 3, max_iter=300)
    fast = fit_dictionary(A, classes, 3, max_iter=300, nmf_solver="accelerated")
    same = fit_dictionary(A, classes, 3, max_iter=300, learner=NMFLearner(solver="accelerated"))
    assert not np.array_equal(hals.D, fast.D)
    np.testing.assert_array_equal(fast.D, same.D)
    assert fast.reconstruction_error <= 1.005 * hals.reconstruction_error
    with pytest.raises(ValueError, match="NMF solver must be one of"):
        fit_dictionary(A, classes, 3, nmf_solver="mu")


def test_auto_nmf_solver_follows_the_fit_samples() -> None:
    from feature_complexity.config import RunConfig

    assert RunConfig().resolved_nmf_solver() == "hals"
    assert RunConfig(fit_samples="spatial").resolved_nmf_solver() == "accelerated"
    assert RunConfig(fit_samples="crops").resolved_nmf_solver() == "accelerated"
    assert RunConfig(fit_samples="spatial", nmf_solver="hals").resolved_nmf_solver() == "hals"
    with pytest.raises(ValueError, match="--nmf-solver must be one of"):
        RunConfig(nmf_solver="fast").validate()


def test_padded_rows_depends_on_the_count_only_and_wastes_little() -> None:
    sizes = np.arange(1, 5000)
    padded = np.array([padded_rows(int(n)) for n in sizes])
    assert (padded >= sizes).all() and (padded % 16 == 0).all()
    assert (padded[sizes >= 128] <= 1.125 * sizes[sizes >= 128]).all()


def test_chunks_respect_the_memory_bound() -> None:
    A, classes = _uneven_classes(6, 6, 40, 64)
    batches = list(class_batches(A, classes, lambda n: 0, max_batch_bytes=3 * 48 * 64 * 4, device=CPU))
    assert all(b.X.numel() * 4 <= 3 * 48 * 64 * 4 for b in batches)
    assert sorted(np.concatenate([b.labels for b in batches]).tolist()) == list(range(6))
    for b in batches:  # each class's rows, in their original order, then zeros
        for j, c in enumerate(b.labels):
            np.testing.assert_array_equal(b.X[j, :b.n_rows[j], :64].numpy(), A[classes == c])
            assert not b.X[j, b.n_rows[j]:].any()


def test_global_hals_matches_sklearn_and_overcomplete_uses_sklearn_random_start() -> None:
    from sklearn.decomposition import NMF

    X = _nonneg(7, 40, 12)
    D, sq, n_iter, _ = nmf_mod.nmf_global(X, 5, seed=1, max_iter=500)
    ref = NMF(5, init="nndsvda", random_state=1, max_iter=500).fit(X)
    np.testing.assert_allclose(D, ref.components_, rtol=1e-8, atol=1e-12)
    assert sq == pytest.approx(ref.reconstruction_err_**2, rel=1e-9) and n_iter == ref.n_iter_
    D, sq, _, _ = nmf_mod.nmf_global(X, 20, seed=2, max_iter=60, tol=0.0)  # k = 20 > min(n, d)
    ref = NMF(20, init="random", random_state=2, max_iter=60, tol=0.0).fit(X)
    np.testing.assert_allclose(D, ref.components_, rtol=1e-8, atol=1e-12)


def test_learner_solvers_agree_and_summarise_warnings_once() -> None:
    A, classes = _uneven_classes(8, 4, 30, 16, dtype=np.float64)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch_fit = fit_dictionary(A, classes, 3, max_iter=5)
        sk_fit = fit_dictionary(A, classes, 3, max_iter=5, learner=NMFLearner(solver="sklearn"))
    np.testing.assert_allclose(torch_fit.D, sk_fit.D, rtol=1e-9, atol=1e-12)
    expected = "NMF of 4 classes (e.g. [0, 1, 2, "
    assert [str(w.message)[:33] for w in caught] == [expected, expected]
    assert all(w.filename == __file__ for w in caught)  # no library file and line in the log


def test_nmf_learner_options_are_checked() -> None:
    with pytest.raises(ValueError, match="solver must be one of hals, accelerated, sklearn"):
        NMFLearner(solver="mu")
    with pytest.raises(ValueError, match="device 'cuda:7'|no CUDA GPU"):
        fit_dictionary(_nonneg(0, 20, 8), np.zeros(20, dtype=int), 2, device="cuda:7")


# ============================================================================ learner choice


def test_signed_activations_pick_semi_nmf_with_a_message_and_nmf_refuses_them() -> None:
    A, classes = _uneven_classes(9, 3, 30, 12, dtype=np.float64)
    A = A - 0.5
    with pytest.warns(UserWarning, match="signed.*Semi-NMF"):
        dic = fit_dictionary(A, classes, 3)
    assert dic.method == "semi_nmf" and (dic.D < 0).any()
    with pytest.raises(ValueError, match="--learner semi_nmf"):
        fit_dictionary(A, classes, 3, learner="nmf")
    with pytest.raises(ValueError, match="supports global dictionaries, not 'per_class'"):
        fit_dictionary(A, classes, 3, learner="sae")
    with pytest.raises(ValueError, match="unknown dictionary learner 'pca'; known: nmf, sae, semi_nmf"):
        fit_dictionary(A, classes, 3, learner="pca")


# ============================================================================ Semi-NMF


def _planted_signed(seed: int, n: int, d: int, k: int, noise: float) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    D = rng.standard_normal((k, d))
    U = rng.random((n, k)) * (rng.random((n, k)) < 0.5)
    return U @ D + noise * rng.standard_normal((n, d)), D


def _objective(A: np.ndarray, U: np.ndarray, D: np.ndarray) -> float:
    return float(np.sum((A - U @ D) ** 2))


def test_least_squares_atoms_is_the_normal_equations_solution() -> None:
    rng = np.random.default_rng(0)
    U, X = rng.random((3, 30, 5)), rng.standard_normal((3, 30, 7))
    D = seminmf.least_squares_atoms(torch.from_numpy(U).mT.contiguous(), torch.from_numpy(X))
    for b in range(3):
        np.testing.assert_allclose(D[b].numpy(), np.linalg.lstsq(U[b], X[b], rcond=None)[0], rtol=1e-7, atol=1e-9)


def test_semi_nmf_reaches_brute_force_als_objective_from_the_same_start() -> None:
    A, _ = _planted_signed(1, 60, 20, 4, noise=0.1)
    X = torch.from_numpy(A)[None]
    Ut0 = seminmf.semi_nmf_init(X, np.array([60]), 4, seed=0)
    U = Ut0[0].numpy().T
    for _ in range(60):  # reference: exact least-squares D, exact NNLS U (SciPy), row by row
        D = np.linalg.lstsq(U, A, rcond=None)[0]
        U = np.stack([scipy_nnls(D.T, a)[0] for a in A])
    Ut, D_ours, _, _ = seminmf.semi_nmf(X, Ut0, max_iter=300, tol=0.0)
    assert _objective(A, Ut[0].numpy().T, D_ours[0].numpy()) <= _objective(A, U, D) * (1 + 1e-6)


def test_semi_nmf_objective_decreases_monotonically() -> None:
    A, _ = _planted_signed(2, 50, 15, 5, noise=0.3)
    X = torch.from_numpy(A)[None]
    state = {"Ut": seminmf.semi_nmf_init(X, np.array([50]), 5, seed=0)}
    values = []
    for _ in range(40):
        seminmf._semi_iteration({"X": X}, state, sweeps=1)
        values.append(_objective(A, state["Ut"][0].numpy().T, state["D"][0].numpy()))  # D step, then U step
    assert np.all(np.diff(values) <= 1e-12 * values[0])
    assert values[-1] < values[0]


def test_semi_nmf_planted_exact_factorisation_recovers_the_row_space() -> None:
    # A = U D exactly (U >= 0 sparse, D signed): Semi-NMF must reconstruct it and its atoms must
    # span D's rows (atoms themselves are only defined up to a mixing that keeps U >= 0)
    A, D_true = _planted_signed(3, 120, 25, 4, noise=0.0)
    D, sq, _, _ = seminmf.semi_nmf_global(A, 4, seed=0, max_iter=800, tol=0.0)
    assert np.sqrt(sq) / np.linalg.norm(A) < 1e-6
    Q_true, Q = np.linalg.qr(D_true.T)[0], np.linalg.qr(D.T)[0]
    np.testing.assert_allclose(np.linalg.svd(Q_true.T @ Q, compute_uv=False), 1.0, atol=1e-6)


@pytest.mark.filterwarnings("ignore:Semi-NMF of")  # short budgets on purpose
def test_semi_nmf_per_class_is_batch_independent_and_signed() -> None:
    A, classes = _uneven_classes(10, 5, 30, 24, dtype=np.float64)
    A = A - 0.3
    together = seminmf.semi_nmf_per_class(A, classes, 3, seed=0, max_iter=100)
    alone = seminmf.semi_nmf_per_class(A[classes == 3], classes[classes == 3], 3, seed=0, max_iter=100)
    np.testing.assert_array_equal(alone.D, together.D[9:12])
    assert (together.D < 0).any()
    dic = fit_dictionary(A, classes, 3, learner="semi_nmf", max_iter=100)
    np.testing.assert_array_equal(dic.D, together.D)
    assert dic.scope == "per_class" and 0 < dic.reconstruction_error < 1


@pytest.mark.filterwarnings("ignore:Semi-NMF of")
def test_semi_nmf_codes_are_nnls_against_signed_atoms() -> None:
    A, classes = _uneven_classes(11, 3, 20, 10, dtype=np.float64)
    dic = fit_dictionary(A - 0.4, classes, 2, learner="semi_nmf", max_iter=50)
    try:
        Z = dic.encode(A - 0.4)
    except ValueError as exc:
        if "non-negative" in str(exc):
            pytest.skip("features.nnls.encode still refuses signed dictionaries (being changed in nnls.py)")
        raise
    ref = np.stack([scipy_nnls(dic.D.T, a)[0] for a in A - 0.4])
    np.testing.assert_allclose(Z, ref, atol=1e-6)


# ============================================================================ TopK SAE


def _planted_sparse(seed: int, n: int = 4000, d: int = 32, k: int = 16, active: int = 3
                    ) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    D = rng.standard_normal((k, d))
    D /= np.linalg.norm(D, axis=1, keepdims=True)
    Z = np.zeros((n, k))
    for i in range(n):
        Z[i, rng.choice(k, active, replace=False)] = rng.uniform(0.5, 2.0, active)
    return (Z @ D + 0.01 * rng.standard_normal((n, d))).astype(np.float32), D


def test_sae_recovers_a_planted_sparse_dictionary() -> None:
    A, D_true = _planted_sparse(0)
    w = train_topk_sae(A, 32, seed=0, options=SAEOptions(top_k=3, epochs=25, batch_size=256))
    cos = D_true @ w["D"].T  # each true atom matched to its own learned atom (Hungarian)
    rows, cols = linear_sum_assignment(-cos)
    assert cos[rows, cols].mean() >= 0.9
    np.testing.assert_allclose(np.linalg.norm(w["D"], axis=1), 1.0, rtol=1e-5)


def test_sae_dictionary_encodes_and_decodes_like_its_formula() -> None:
    A, _ = _planted_sparse(1, n=600)
    A = A * 7.0 + 3.0  # the stored weights are in A's units, not the training scale
    dic = fit_dictionary(A, None, method="global", n_atoms=12, learner=SAELearner(SAEOptions(top_k=4, epochs=3)))
    ex = dic.extra
    pre = np.maximum((A - ex["decoder_bias"]) @ ex["encoder_weight"].T + ex["encoder_bias"], 0)
    ref = np.where(pre >= np.sort(pre, axis=1)[:, [-4]], pre, 0)  # keep the 4 largest per row
    Z = dic.encode(A, batch_size=100)
    np.testing.assert_allclose(Z, ref, rtol=1e-4, atol=1e-4)
    assert ((Z > 0).sum(1) <= 4).all()
    np.testing.assert_allclose(dic.decode(Z), Z @ dic.D + ex["decoder_bias"], rtol=1e-6)
    Zt = torch.as_tensor(Z, dtype=torch.float64).requires_grad_(True)
    out = dic.decode(Zt)
    out.sum().backward()  # differentiable for importance
    np.testing.assert_allclose(Zt.grad.numpy(), np.tile(dic.D.sum(1), (len(Z), 1)), rtol=1e-5)
    rel = np.linalg.norm(A - dic.decode(Z)) / np.linalg.norm(A)
    assert dic.reconstruction_error == pytest.approx(rel, rel=1e-4)


def test_sae_is_deterministic_for_a_seed_and_survives_save_load(tmp_path) -> None:
    A, _ = _planted_sparse(2, n=500)
    learner = SAELearner(SAEOptions(top_k=3, epochs=2, batch_size=100))
    d1 = fit_dictionary(A, None, method="global", n_atoms=10, learner=learner, seed=4)
    d2 = fit_dictionary(A, None, method="global", n_atoms=10, learner=learner, seed=4)
    d3 = fit_dictionary(A, None, method="global", n_atoms=10, learner=learner, seed=5)
    np.testing.assert_array_equal(d1.D, d2.D)
    np.testing.assert_array_equal(d1.extra["encoder_weight"], d2.extra["encoder_weight"])
    assert not np.allclose(d1.D, d3.D)
    d1.save(tmp_path / "sae.npz")
    back = Dictionary.load(tmp_path / "sae.npz")
    assert (back.method, back.scope) == ("sae", "global")
    np.testing.assert_array_equal(back.encode(A), d1.encode(A))
    assert get_learner("sae").scopes == ("global",)


def test_sae_options_are_checked() -> None:
    with pytest.raises(ValueError, match="epochs must be >= 1"):
        SAEOptions(epochs=0).validate()
    with pytest.raises(ValueError, match="top_k=20 is larger than the number of atoms k=8"):
        train_topk_sae(np.ones((10, 4), dtype=np.float32), 8, options=SAEOptions(top_k=20))
