"""Tests for ``feature_complexity.features``: ``fit_dictionary`` (NMF by default), fidelity.

References: ``sklearn.decomposition.NMF`` fitted by hand class by class, and planted cases whose
answer is known (``A = Z_true D`` exactly). The learners themselves are tested in
``test_learners.py``, the NNLS codes in ``test_nnls.py``.
"""

from __future__ import annotations

import json
import os
import warnings

import numpy as np
import pytest
import torch

from feature_complexity.features import Dictionary, fidelity, fit_dictionary
from feature_complexity.features.nmf import NMFLearner

# --------------------------------------------------------------------------------------------
# helpers


def _class_data(seed: int, n_per_class: int, n_classes: int, d: int) -> tuple[np.ndarray, np.ndarray]:
    """Non-negative activations with a class-specific mean, and their classes."""
    rng = np.random.default_rng(seed)
    means = rng.random((n_classes, d)) * 2
    classes = np.repeat(np.arange(n_classes), n_per_class)
    A = rng.random((classes.size, d)) * means[classes]
    perm = rng.permutation(classes.size)  # interleave classes: the split must not rely on order
    return A[perm], classes[perm]


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """These problems are tiny: intra-op threads only add barrier waits, which cost 30x on a
    machine shared with other jobs. One thread, restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# --------------------------------------------------------------------------------------------
# fit_dictionary


def test_per_class_dictionary_layout_and_non_negativity() -> None:
    A, classes = _class_data(0, 25, 3, 12)
    dic = fit_dictionary(A, classes, n_atoms_per_class=4, progress=False)
    assert dic.D.shape == (12, 12)
    assert dic.n_atoms == 12
    assert (dic.D >= 0).all()
    np.testing.assert_array_equal(dic.feature_class, np.repeat([0, 1, 2], 4))
    assert (dic.method, dic.scope, dic.n_atoms_per_class) == ("nmf", "per_class", 4)
    assert 0 < dic.reconstruction_error < 1
    assert dic.extra == {}


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.filterwarnings("ignore:NMF of")
@pytest.mark.parametrize("solver", ["hals", "sklearn"])
def test_per_class_dictionary_equals_sklearn_nmf_by_hand(solver: str) -> None:
    # max_iter is kept small on purpose: the same truncated run must give the same atoms (the
    # torch solver follows scikit-learn's coordinate descent; float64 data keeps rounding tiny)
    from sklearn.decomposition import NMF

    A, classes = _class_data(1, 20, 3, 10)
    dic = fit_dictionary(A, classes, n_atoms_per_class=3, seed=7, max_iter=300, progress=False,
                         learner=NMFLearner(solver=solver))
    sq_err = 0.0
    for c in range(3):
        nmf = NMF(n_components=3, init="nndsvda", random_state=7, max_iter=300)
        nmf.fit(A[classes == c])
        np.testing.assert_allclose(dic.D[3 * c : 3 * c + 3], nmf.components_, rtol=1e-6, atol=1e-12)
        sq_err += nmf.reconstruction_err_**2
    assert dic.reconstruction_error == pytest.approx(
        np.sqrt(sq_err) / np.linalg.norm(A), rel=1e-9
    )


def test_dictionary_is_deterministic_for_a_seed() -> None:
    A, classes = _class_data(2, 15, 2, 8)
    d1 = fit_dictionary(A, classes, n_atoms_per_class=3, seed=3, progress=False)
    d2 = fit_dictionary(A, classes, n_atoms_per_class=3, seed=3, progress=False)
    np.testing.assert_array_equal(d1.D, d2.D)


def test_global_dictionary_equals_sklearn_nmf() -> None:
    from sklearn.decomposition import NMF

    A, _ = _class_data(3, 20, 2, 10)
    dic = fit_dictionary(A, None, method="global", n_atoms=5, seed=1, progress=False)
    assert dic.D.shape == (5, 10) and (dic.method, dic.scope) == ("nmf", "global")
    np.testing.assert_array_equal(dic.feature_class, -1)
    assert dic.n_atoms_per_class is None
    nmf = NMF(n_components=5, init="nndsvda", random_state=1, max_iter=500).fit(A)
    np.testing.assert_allclose(dic.D, nmf.components_, rtol=1e-6)
    # without classes the default size is r atoms; with classes, r per class
    assert fit_dictionary(A, None, 3, method="global").n_atoms == 3


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_global_overcomplete_dictionary_uses_random_init_and_is_seeded() -> None:
    A, _ = _class_data(4, 10, 2, 6)  # 20 images, d = 6, k = 8 > min(n, d)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence and zero-atom warnings are not the point
        d1 = fit_dictionary(A, None, method="global", n_atoms=8, seed=0, max_iter=50)
        d2 = fit_dictionary(A, None, method="global", n_atoms=8, seed=0, max_iter=50)
        d3 = fit_dictionary(A, None, method="global", n_atoms=8, seed=1, max_iter=50)
    assert d1.D.shape == (8, 6) and (d1.D >= 0).all()
    np.testing.assert_array_equal(d1.D, d2.D)
    assert not np.allclose(d1.D, d3.D)
    from sklearn.decomposition import NMF  # the same seeded random start as scikit-learn's

    ref = NMF(8, init="random", random_state=0, max_iter=50).fit(A)
    np.testing.assert_allclose(d1.D, ref.components_, rtol=1e-6, atol=1e-9)


def test_planted_nmf_recovers_a_rank_r_class() -> None:
    # Each class is exactly a non-negative mix of r atoms: NMF must reconstruct it (nearly) exactly.
    rng = np.random.default_rng(5)
    W_true = rng.random((2, 3, 9)) * (rng.random((2, 3, 9)) < 0.5)
    classes = np.repeat([0, 1], 40)
    U = rng.random((80, 3))
    A = np.einsum("nr,nrd->nd", U, W_true[classes])
    dic = fit_dictionary(A, classes, n_atoms_per_class=3, max_iter=2000, progress=False)
    assert dic.reconstruction_error < 1e-3


def test_tiny_negative_activations_are_clipped() -> None:
    A, classes = _class_data(6, 10, 2, 5)
    A[0, 0] = -5e-7
    dic = fit_dictionary(A, classes, n_atoms_per_class=2, progress=False)
    assert (dic.D >= 0).all()


def test_degenerate_zero_atoms_warn_and_keep_shape() -> None:
    # a class whose activations are all zero (a class the layer never responds to): its SVD
    # start is zero and every curvature is 0, so its atoms stay exactly zero (as in
    # scikit-learn); the class keeps its r slots and the user is told
    from sklearn.decomposition import NMF

    A, classes = _class_data(0, 12, 2, 6)
    A[classes == 1] = 0.0
    with pytest.warns(UserWarning, match=r"3 of 6 atoms are all zero.*classes \[1\]"):
        dic = fit_dictionary(A, classes, n_atoms_per_class=3, progress=False)
    assert dic.D.shape == (6, 6) and not dic.D[3:].any() and dic.D[:3].any()
    assert not NMF(3, init="nndsvda").fit(A[classes == 1]).components_.any()


@pytest.mark.parametrize(
    "mutate, kwargs, match",
    [
        (lambda A, c: (A - 1.0, c), {"learner": "nmf"}, "must be ≥ 0 for NMF.*--learner semi_nmf"),
        (lambda A, c: (np.where(np.eye(*A.shape) > 0, np.nan, A), c), {}, "non-finite"),
        (lambda A, c: (A, np.where(np.arange(c.size) < 2, 3, c)), {"skip_empty_classes": False},
         "class 3 has 2 images for 3 atoms"),
        (lambda A, c: (A, c), {"n_classes": 4, "skip_empty_classes": False}, "class 3 has no images"),
        (lambda A, c: (A, None), {}, "needs the class of every image"),
        (lambda A, c: (A, np.where(np.arange(c.size) == 0, -1, c)), {}, "negative class"),
        (lambda A, c: (A, c[:-1]), {}, "image_class must have shape"),
        (lambda A, c: (A[:, 0], c), {}, "must be 2-D"),
        (lambda A, c: (A, c), {"method": "pca"}, "method must be"),
        (lambda A, c: (A, c), {"method": "global", "n_atoms": 0}, "needs n_atoms >= 1"),
        (lambda A, c: (A, c), {"n_atoms_per_class": 20}, "larger than the activation dimension"),
        (lambda A, c: (A, c), {"n_classes": 2}, "pass n_classes > 2"),
        (lambda A, c: (A, c), {"n_atoms_per_class": 11}, "no class has 11 images"),
        (lambda A, c: (A, c), {"max_iter": 0}, "max_iter must be >= 1"),
        (lambda A, c: (A, c), {"learner": "sae"}, "use --dictionary global"),
    ],
)
def test_fit_dictionary_bad_input(mutate, kwargs: dict, match: str) -> None:
    A, classes = _class_data(7, 10, 3, 12)
    A, classes = mutate(A, classes)
    with pytest.raises(ValueError, match=match):
        fit_dictionary(A, classes, progress=False, **{"n_atoms_per_class": 3, **kwargs})


def test_classes_with_too_few_images_are_skipped_with_a_warning() -> None:
    A, classes = _class_data(8, 10, 3, 8)
    classes = np.where(np.arange(classes.size) < 2, 3, classes)  # class 3 has 2 images
    with pytest.warns(UserWarning, match=r"1 classes have fewer images than --atoms-per-class 3.*\[3\]"):
        dic = fit_dictionary(A, classes, n_atoms_per_class=3, progress=False)
    np.testing.assert_array_equal(dic.feature_class, np.repeat([0, 1, 2], 3))
    alone = fit_dictionary(A[classes == 1], classes[classes == 1], n_atoms_per_class=3)
    np.testing.assert_array_equal(dic.D[3:6], alone.D)  # the skipped class changes no other class


def test_empty_class_can_be_skipped() -> None:
    A, classes = _class_data(8, 10, 3, 8)
    classes = np.where(classes == 1, 2, classes)  # class 1 now has no image
    dic = fit_dictionary(A, classes, n_atoms_per_class=2, skip_empty_classes=True, progress=False)
    np.testing.assert_array_equal(dic.feature_class, [0, 0, 2, 2])


def test_dictionary_save_load_roundtrip(tmp_path) -> None:
    A, classes = _class_data(9, 10, 2, 6)
    dic = fit_dictionary(A, classes, n_atoms_per_class=2, progress=False)
    path = tmp_path / "run" / "dictionary.npz"
    dic.save(path)
    assert os.listdir(path.parent) == ["dictionary.npz"]  # no temporary file left behind
    back = Dictionary.load(path)
    np.testing.assert_array_equal(back.D, dic.D)
    np.testing.assert_array_equal(back.feature_class, dic.feature_class)
    assert (back.method, back.scope, back.n_atoms_per_class) == ("nmf", "per_class", 2)
    assert back.reconstruction_error == pytest.approx(dic.reconstruction_error)
    glob = Dictionary(np.ones((2, 3)), np.array([-1, -1]), "semi_nmf", "global", None, 0.5,
                      extra={"decoder_bias": np.arange(3.0)})
    glob.save(path)  # overwrite in place
    back = Dictionary.load(path)
    assert back.n_atoms_per_class is None and back.scope == "global"
    np.testing.assert_array_equal(back.extra["decoder_bias"], np.arange(3.0))
    with pytest.raises(ValueError, match="no dictionary file"):
        Dictionary.load(tmp_path / "missing.npz")


# --------------------------------------------------------------------------------------------
# fidelity


def _linear_head(d: int, n_classes: int, seed: int) -> torch.nn.Linear:
    torch.manual_seed(seed)
    return torch.nn.Linear(d, n_classes).double().eval()


def test_fidelity_planted_exact_reconstruction() -> None:
    rng = np.random.default_rng(10)
    D = rng.random((6, 8))
    Z = rng.random((50, 6))
    A = Z @ D
    head = _linear_head(8, 3, 0)
    with torch.no_grad():
        labels = head(torch.as_tensor(A)).argmax(1).numpy()
    labels[:10] = (labels[:10] + 1) % 3  # some wrong labels: accuracy 0.8, kept exactly
    labels[-1] = -1  # unknown label: ignored
    rep = fidelity(A, Z, D, head, labels=labels, batch_size=7)
    json.dumps(rep)
    assert rep["relative_error"] < 1e-12 and rep["median_relative_error"] < 1e-12
    assert rep["agreement"] == 1.0
    assert rep["accuracy_original"] == pytest.approx(39 / 49)
    assert rep["accuracy_kept"] == 1.0
    assert rep["n_labelled"] == 49


def test_fidelity_matches_numpy_reference_on_random_data() -> None:
    rng = np.random.default_rng(11)
    A, D, Z = rng.random((40, 8)), rng.random((5, 8)), rng.random((40, 5)) * 0.3
    head = _linear_head(8, 4, 1)
    labels = rng.integers(0, 4, 40)
    rep = fidelity(A, Z, D, head, labels=labels)
    R = A - Z @ D
    assert rep["relative_error"] == pytest.approx(np.linalg.norm(R) / np.linalg.norm(A))
    assert rep["median_relative_error"] == pytest.approx(
        np.median(np.linalg.norm(R, axis=1) / np.linalg.norm(A, axis=1))
    )
    W, b = head.weight.detach().numpy(), head.bias.detach().numpy()
    p_a, p_r = (A @ W.T + b).argmax(1), ((Z @ D) @ W.T + b).argmax(1)
    assert rep["agreement"] == pytest.approx(np.mean(p_a == p_r))
    assert rep["accuracy_original"] == pytest.approx(np.mean(p_a == labels))
    assert rep["accuracy_reconstructed"] == pytest.approx(np.mean(p_r == labels))


def test_fidelity_zero_codes_have_relative_error_one_and_no_labels_give_none() -> None:
    rng = np.random.default_rng(12)
    A, D = rng.random((10, 4)), rng.random((3, 4))
    rep = fidelity(A, np.zeros((10, 3)), D, lambda x: x[:, :2])  # a plain callable head
    assert rep["relative_error"] == pytest.approx(1.0)
    assert rep["accuracy_kept"] is None and rep["n_labelled"] == 0


def test_fidelity_bad_shapes() -> None:
    with pytest.raises(ValueError, match="shapes do not match"):
        fidelity(np.ones((3, 4)), np.ones((3, 2)), np.ones((3, 4)), lambda x: x)
    with pytest.raises(ValueError, match="labels must have shape"):
        fidelity(np.ones((3, 4)), np.ones((3, 2)), np.ones((2, 4)), lambda x: x, labels=[0, 1])


def test_fidelity_device_other_than_the_heads_is_a_clear_error() -> None:
    head = torch.nn.Linear(4, 3).eval()
    with pytest.raises(ValueError, match="head's parameters are on cpu"):
        fidelity(np.ones((3, 4)), np.ones((3, 2)), np.ones((2, 4)), head, device="meta")
