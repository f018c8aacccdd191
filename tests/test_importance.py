"""Tests for ``feature_complexity.importance``: signed gradient × input on the codes.

References: the closed form for a linear head (``Γ_i = ⟨d_i, w_c⟩ · mean z_i``), a brute-force
per-image autograd loop for a non-linear head, and a planted inhibitory atom.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from feature_complexity.importance import importance


def _data(seed: int, n: int = 60, k: int = 9, d: int = 7, n_classes: int = 3):
    rng = np.random.default_rng(seed)
    Z = rng.random((n, k)) * (rng.random((n, k)) < 0.7)
    D = rng.random((k, d))
    feature_class = np.repeat(np.arange(n_classes), k // n_classes)
    image_class = rng.integers(0, n_classes, n)
    return Z, D, feature_class, image_class


def _linear(d: int, n_classes: int, seed: int) -> torch.nn.Linear:
    torch.manual_seed(seed)
    return torch.nn.Linear(d, n_classes).double().eval()


def _mlp(d: int, n_classes: int, seed: int) -> torch.nn.Sequential:
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Linear(d, 16), torch.nn.Tanh(), torch.nn.Linear(16, n_classes)
    ).double().eval()


def _brute_force(Z, D, head, feature_class, image_class) -> np.ndarray:
    """One autograd call per image and per feature's class: the definition, with no batching."""
    k = Z.shape[1]
    sums, counts = np.zeros(k), np.zeros(k)
    Dt = torch.as_tensor(D)
    for x in range(Z.shape[0]):
        if image_class[x] < 0:
            continue
        for i in range(k):
            c = feature_class[i] if feature_class[i] >= 0 else image_class[x]
            if c != image_class[x]:
                continue
            z = torch.as_tensor(Z[x]).clone().requires_grad_(True)
            y = head((z @ Dt)[None])[0, c]
            (g,) = torch.autograd.grad(y, z)
            sums[i] += Z[x, i] * g[i].item()
            counts[i] += 1
    return sums / counts


def test_linear_head_matches_closed_form() -> None:
    Z, D, fc, ic = _data(0)
    head = _linear(D.shape[1], 3, 0)
    W = head.weight.detach().numpy()
    expected = np.array([(D[i] @ W[c]) * Z[ic == c, i].mean() for i, c in enumerate(fc)])
    gamma = importance(Z, D, head, feature_class=fc, image_class=ic, batch_size=7)
    assert gamma.shape == (9,) and gamma.dtype == np.float64
    np.testing.assert_allclose(gamma, expected, rtol=1e-10, atol=1e-12)


def test_nonlinear_head_matches_per_image_autograd_loop() -> None:
    Z, D, fc, ic = _data(1, n=25)
    head = _mlp(D.shape[1], 3, 1)
    gamma = importance(Z, D, head, feature_class=fc, image_class=ic, batch_size=8)
    np.testing.assert_allclose(gamma, _brute_force(Z, D, head, fc, ic), rtol=1e-10, atol=1e-12)


def test_global_dictionary_uses_each_images_own_class() -> None:
    Z, D, _, ic = _data(2, n=20)
    fc = np.full(Z.shape[1], -1)
    head = _mlp(D.shape[1], 3, 2)
    gamma = importance(Z, D, head, feature_class=fc, image_class=ic)
    np.testing.assert_allclose(gamma, _brute_force(Z, D, head, fc, ic), rtol=1e-10, atol=1e-12)
    # linear closed form: mean over all images of z_i(x) <d_i, w_class(x)>
    lin = _linear(D.shape[1], 3, 3)
    W = lin.weight.detach().numpy()
    expected = np.mean(Z * (W[ic] @ D.T), axis=0)
    gamma_lin = importance(Z, D, lin, feature_class=fc, image_class=ic)
    np.testing.assert_allclose(gamma_lin, expected, rtol=1e-10)


def test_planted_inhibitory_atom_has_negative_importance() -> None:
    d = 4
    head = torch.nn.Linear(d, 2, bias=False).double().eval()
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[1.0, 1.0, -1.0, -1.0], [0.0, 0.0, 1.0, 0.0]]))
    # atom 0 aligned with w_0, atom 1 anti-aligned with w_0 (lives where w_0 is negative)
    D = np.array([[1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 1.0]])
    Z = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    gamma = importance(Z, D, head, feature_class=np.array([0, 0]), image_class=np.zeros(3, int))
    # closed form: <d_0, w_0> = 2, <d_1, w_0> = -2; mean z = (3, 4)
    np.testing.assert_allclose(gamma, [6.0, -8.0])


def test_unknown_images_are_ignored_and_batches_do_not_matter() -> None:
    Z, D, fc, ic = _data(4, n=30)
    ic = ic.copy()
    ic[::4] = -1
    head = _mlp(D.shape[1], 3, 4)
    g1 = importance(Z, D, head, feature_class=fc, image_class=ic, batch_size=1)
    g2 = importance(Z, D, head, feature_class=fc, image_class=ic, batch_size=1000)
    np.testing.assert_allclose(g1, g2, rtol=1e-12)
    keep = ic >= 0
    g3 = importance(Z[keep], D, head, feature_class=fc, image_class=ic[keep])
    np.testing.assert_allclose(g1, g3, rtol=1e-12)


def test_class_without_images_gives_nan_with_warning() -> None:
    Z, D, fc, ic = _data(5)
    ic = np.where(ic == 2, 0, ic)  # no image of class 2 left
    head = _linear(D.shape[1], 3, 5)
    with pytest.warns(UserWarning, match="no image of their class"):
        gamma = importance(Z, D, head, feature_class=fc, image_class=ic)
    assert np.isnan(gamma[fc == 2]).all()
    assert np.isfinite(gamma[fc != 2]).all()


def test_float32_head_and_plain_callable() -> None:
    Z, D, fc, ic = _data(6)
    head64 = _linear(D.shape[1], 3, 6)
    head32 = _linear(D.shape[1], 3, 6).float()
    W = head64.weight.detach().float()  # a plain callable is fed float32
    g64 = importance(Z, D, head64, feature_class=fc, image_class=ic)
    g32 = importance(Z, D, head32, feature_class=fc, image_class=ic)
    g_fn = importance(Z, D, lambda a: a @ W.T, feature_class=fc, image_class=ic)  # float32 input
    np.testing.assert_allclose(g32, g64, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(g_fn, g64, rtol=1e-4, atol=1e-6)


def test_training_mode_head_warns() -> None:
    Z, D, fc, ic = _data(7)
    head = _linear(D.shape[1], 3, 7).train()
    with pytest.warns(UserWarning, match="training mode"):
        importance(Z, D, head, feature_class=fc, image_class=ic)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"D": np.ones((5, 7))}, "D has 5 rows"),
        ({"feature_class": np.zeros(4, int)}, "feature_class must have shape"),
        ({"image_class": np.zeros(3, int)}, "image_class must have shape"),
        ({"image_class": np.full(60, 7)}, "class 7 is out of range"),
        ({"feature_class": np.full(9, -3)}, "classes must be >= 0, or -1"),
        ({"feature_class": np.full(9, 0.5)}, "integer class indices"),
        ({"Z": np.full((60, 9), np.nan)}, "NaN or inf"),
    ],
)
def test_bad_input(kwargs: dict, match: str) -> None:
    Z, D, fc, ic = _data(8)
    args = {"Z": Z, "D": D, "feature_class": fc, "image_class": ic, **kwargs}
    with pytest.raises(ValueError, match=match):
        importance(
            args["Z"],
            args["D"],
            _linear(7, 3, 8),
            feature_class=args["feature_class"],
            image_class=args["image_class"],
        )


@pytest.mark.parametrize("wrong", [lambda x: x.sum(dim=1), lambda x: x.sum(dim=0, keepdim=True)],
                         ids=["1-d output", "one row for the batch"])
def test_head_that_does_not_give_one_row_of_logits_per_image_is_refused(wrong) -> None:
    Z, D, fc, ic = _data(8)
    with pytest.raises(ValueError, match="logits \\(batch, n_classes\\)"):
        importance(Z, D, wrong, feature_class=fc, image_class=ic)


def test_device_other_than_the_heads_is_a_clear_error() -> None:
    # the head is never moved: a device it is not on would fail deep inside torch
    Z, D, fc, ic = _data(9)
    with pytest.raises(ValueError, match="head's parameters are on cpu"):
        importance(Z, D, _linear(7, 3, 9), feature_class=fc, image_class=ic, device="meta")
