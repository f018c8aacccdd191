"""The FIT_SAMPLES stage (``--fit-data``, ``--fit-per-class``, ``--fit-samples``, the memory bound)
against independent references: a forward hook of our own on the model's spatial layer, the
crops cut and resized by hand, per-class counts and seeds, and a resumed gathering against an
uninterrupted one."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import feature_complexity.fitset as fitset
from conftest import TinyImages
from feature_complexity.pipeline import RunConfig, run_analysis

P = 8 * 8  # the tiny model's spatial map: 16 x 16 input, one stride-2 block -> (16, 8, 8)
D_PEN = 16


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _config(**kw) -> RunConfig:
    return RunConfig(**{"n_atoms_per_class": 3, "n_folds": 3, "batch_size": 16, "robustness_images": 8,
                        "robustness_draws": 4, **kw})


def _run(spec, probe, out, *, fit=None, targets=("fit_samples",), progress=False, **kw):
    return run_analysis(spec, probe, out, _config(**kw), fit_dataset=fit, report=False, progress=progress,
                        targets=list(targets))


def _gathered(result) -> tuple[np.ndarray, np.ndarray]:
    s = result["fit_samples"]
    return np.array(s.A), np.array(s.classes)


def _spatial_reference(spec, images: torch.Tensor) -> torch.Tensor:
    """``(n, C, H, W)``: the output of the last probe layer, by a hook of our own."""
    box: dict[str, torch.Tensor] = {}
    handle = spec.get("layer1.1").register_forward_hook(lambda m, i, o: box.__setitem__("out", o.detach().clone()))
    try:
        with torch.no_grad():
            spec.module(images)
    finally:
        handle.remove()
    return box["out"]


def _positions(spec, images: torch.Tensor) -> np.ndarray:
    """``(n, H*W, C)``: every spatial position of every image, row-major over (h, w)."""
    out = _spatial_reference(spec, images)
    n, c, h, w = out.shape
    return out.permute(0, 2, 3, 1).reshape(n, h * w, c).numpy()


def _pooled(spec, images: torch.Tensor) -> np.ndarray:
    """``(n, C)``: the penultimate vectors, global average pooling of the spatial map."""
    return _spatial_reference(spec, images).mean(dim=(2, 3)).numpy()


def test_spatial_rows_are_every_position_of_the_feature_map(tiny_spec, tiny_images, tmp_path):
    fit = TinyImages(n=40, seed=1)
    A, classes = _gathered(_run(tiny_spec, tiny_images, tmp_path / "r", fit=fit, fit_samples="spatial"))
    ref = _positions(tiny_spec, fit.images)
    assert ref.shape == (40, P, D_PEN)
    assert A.shape == (40 * P, D_PEN) and A.dtype == np.float32
    np.testing.assert_allclose(A, ref.reshape(40 * P, D_PEN), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(classes, np.repeat(fit.labels, P))
    # the pooled penultimate vector is the mean of the positions (what the codes are fitted to)
    np.testing.assert_allclose(A.reshape(40, P, D_PEN).mean(axis=1), _pooled(tiny_spec, fit.images), atol=1e-5)


def test_spatial_rows_of_the_probe_images_without_fit_data(tiny_spec, tiny_images, tmp_path):
    A, classes = _gathered(_run(tiny_spec, tiny_images, tmp_path / "r", fit_samples="spatial"))
    np.testing.assert_allclose(A, _positions(tiny_spec, tiny_images.images).reshape(-1, D_PEN), atol=1e-5)
    np.testing.assert_array_equal(classes, np.repeat(tiny_images.labels, P))


@pytest.mark.filterwarnings("ignore:NMF of .* did not converge")
def test_pooled_fit_data_fits_the_dictionary_on_the_fit_images(tiny_spec, tiny_images, tmp_path):
    from scipy.optimize import nnls

    fit = TinyImages(n=48, seed=1)
    with_fit = _run(tiny_spec, tiny_images, tmp_path / "fit", fit=fit, targets=("dictionary",), nmf_max_iter=300)
    A, classes = _gathered(with_fit)
    ref = _pooled(tiny_spec, fit.images)
    np.testing.assert_allclose(A, ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(classes, fit.labels)

    on_probe = _run(tiny_spec, tiny_images, tmp_path / "probe", targets=("dictionary",), nmf_max_iter=300)
    assert "fit_samples" not in on_probe.status and not on_probe.context.has("fit_samples")
    D_fit, D_probe = with_fit["dictionary"], on_probe["dictionary"]
    assert D_fit.D.shape == D_probe.D.shape == (4 * 3, D_PEN)
    assert np.abs(D_fit.D - D_probe.D).max() > 1e-3

    # independent check (scipy NNLS, not the package's solvers): each class's block of the
    # fit-set dictionary reconstructs that class's fit images better than the probe-set one
    def error(D, c):
        block = D.D[D.feature_class == c]
        return sum(nnls(block.T.astype(np.float64), a.astype(np.float64))[1] ** 2 for a in ref[fit.labels == c])

    for c in range(4):
        assert error(D_fit, c) < error(D_probe, c), c


def _matches(rows: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """For each row, the index of the candidate it equals (asserting there is exactly one)."""
    dist = np.abs(rows[:, None, :] - candidates[None, :, :]).max(axis=2)
    hit = dist < 1e-5
    assert (hit.sum(axis=1) == 1).all(), "a row equals no candidate (or several)"
    return hit.argmax(axis=1)


def test_fit_per_class_caps_each_label_and_is_seeded(tiny_spec, tiny_images, tmp_path):
    fit = TinyImages(n=48, seed=2)
    few = np.flatnonzero(fit.labels == 3)[2:]
    fit.labels[few] = 0  # class 3 keeps 2 images: fewer than the cap
    fit.labels_[torch.as_tensor(few)] = 0
    available = np.bincount(fit.labels, minlength=4)
    assert available[3] == 2 and (available[:3] > 5).all()
    ref = _pooled(tiny_spec, fit.images)

    A, classes = _gathered(_run(tiny_spec, tiny_images, tmp_path / "a", fit=fit, fit_per_class=5))
    np.testing.assert_array_equal(np.bincount(classes, minlength=4), np.minimum(5, available))
    chosen = _matches(A, ref)
    assert len(set(chosen)) == len(chosen) and (np.diff(chosen) > 0).all()  # distinct images, in order
    np.testing.assert_array_equal(classes, fit.labels[chosen])  # each row has its own image's class
    assert set(np.flatnonzero(fit.labels == 3)) <= set(chosen)

    again, _ = _gathered(_run(tiny_spec, tiny_images, tmp_path / "b", fit=fit, fit_per_class=5))
    np.testing.assert_array_equal(again, A)  # same seed, same images
    other, other_classes = _gathered(_run(tiny_spec, tiny_images, tmp_path / "c", fit=fit, fit_per_class=5, seed=1))
    np.testing.assert_array_equal(np.bincount(other_classes, minlength=4), np.minimum(5, available))
    assert set(_matches(other, ref)) != set(chosen)  # another seed, another choice


def test_memory_bound_keeps_the_same_random_true_positions_of_each_image(tiny_spec, tiny_images, tmp_path, capsys):
    fit = TinyImages(n=40, seed=3)
    keep = 10
    gb = keep * 4 * D_PEN * 40 / 2**30  # room for exactly 10 float32 rows of width 16 per image
    first = _run(tiny_spec, tiny_images, tmp_path / "a", fit=fit, fit_samples="spatial", fit_memory_gb=gb,
                 progress=True)
    assert f"keeping {keep} random samples per image" in capsys.readouterr().err
    A, classes = _gathered(first)
    assert A.shape == (40 * keep, D_PEN)
    np.testing.assert_array_equal(classes, np.repeat(fit.labels, keep))
    ref = _positions(tiny_spec, fit.images)
    picked = [_matches(A[j * keep:(j + 1) * keep], ref[j]) for j in range(40)]
    assert all(len(set(p)) == keep for p in picked)  # distinct positions of the image itself
    assert len({tuple(sorted(p)) for p in picked}) > 1  # random per image, not one set for all

    # deterministic: another folder, another batch size (the choice follows the image, not its batch)
    second = _run(tiny_spec, tiny_images, tmp_path / "b", fit=fit, fit_samples="spatial", fit_memory_gb=gb,
                  batch_size=7)
    np.testing.assert_array_equal(_gathered(second)[0], A)


def test_crop_boxes_tile_the_image():
    boxes = fitset.crop_boxes(224)
    assert len(boxes) == 25 and {s for _, _, s in boxes} == {64}
    starts = sorted({t for t, _, _ in boxes})
    assert starts[0] == 0 and starts[-1] + 64 == 224 and all(b - a <= 64 for a, b in zip(starts, starts[1:]))
    assert fitset.crop_boxes(16) == [(t, left, 5) for t in (0, 4, 8, 11) for left in (0, 4, 8, 11)]


def test_crops_rows_are_the_penultimate_of_each_resized_crop(tiny_spec, tiny_images, tmp_path):
    fit = TinyImages(n=12, seed=4)
    A, classes = _gathered(_run(tiny_spec, tiny_images, tmp_path / "r", fit=fit, fit_samples="crops"))
    boxes = fitset.crop_boxes(16)
    assert A.shape == (12 * len(boxes), D_PEN)
    ref = []
    for img in fit.images:
        for t, left, s in boxes:
            crop = img[None, :, t:t + s, left:left + s]
            ref.append(_pooled(tiny_spec, F.interpolate(crop, size=(16, 16), mode="bilinear", align_corners=False))[0])
    np.testing.assert_allclose(A, np.stack(ref), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(classes, np.repeat(fit.labels, len(boxes)))


def test_interrupted_gathering_resumes_without_recomputing_finished_chunks(tiny_spec, tiny_images, tmp_path,
                                                                          monkeypatch):
    fit = TinyImages(n=48, seed=5)
    monkeypatch.setattr(fitset, "_IMAGES_PER_CHUNK", 16)  # 16 images x 64 positions = one 1024-row chunk
    real = fitset._gather_chunk
    calls: list[int] = []

    def interrupt_second(spec, data, part, first, *args):
        calls.append(first)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(spec, data, part, first, *args)

    monkeypatch.setattr(fitset, "_gather_chunk", interrupt_second)
    with pytest.raises(KeyboardInterrupt):
        _run(tiny_spec, tiny_images, tmp_path / "cut", fit=fit, fit_samples="spatial")
    assert calls == [0, 16]
    assert len(list((tmp_path / "cut" / "fit_samples" / "done").iterdir())) == 1

    def record(spec, data, part, first, *args):
        calls.append(first)
        return real(spec, data, part, first, *args)

    calls.clear()
    monkeypatch.setattr(fitset, "_gather_chunk", record)
    resumed = _run(tiny_spec, tiny_images, tmp_path / "cut", fit=fit, fit_samples="spatial")
    assert calls == [16, 32]  # the first chunk was kept, not recomputed
    A, classes = _gathered(resumed)

    calls.clear()
    clean = _run(tiny_spec, tiny_images, tmp_path / "clean", fit=fit, fit_samples="spatial")
    assert calls == [0, 16, 32]
    np.testing.assert_array_equal(A, _gathered(clean)[0])
    np.testing.assert_array_equal(classes, _gathered(clean)[1])
    np.testing.assert_allclose(A, _positions(tiny_spec, fit.images).reshape(-1, D_PEN), atol=1e-5)


def test_spatial_fit_uses_the_accelerated_solver_unless_asked_otherwise(tiny_spec, tiny_images, tmp_path):
    # --nmf-solver auto: the dictionary stage fits the gathered spatial rows with the accelerated
    # HALS (an independent fit_dictionary call on the same rows gives the same atoms); hals asks
    # for scikit-learn's iterates, and is another stage key
    from feature_complexity.features import fit_dictionary

    fit = TinyImages(n=40, seed=1)
    auto = _run(tiny_spec, tiny_images, tmp_path / "auto", fit=fit, fit_samples="spatial",
                targets=("dictionary",))
    A, classes = _gathered(auto)
    for solver, result in (("accelerated", auto),
                           ("hals", _run(tiny_spec, tiny_images, tmp_path / "hals", fit=fit, fit_samples="spatial",
                                         nmf_solver="hals", targets=("dictionary",)))):
        ref = fit_dictionary(A, classes, 3, max_iter=RunConfig().nmf_max_iter, nmf_solver=solver)
        np.testing.assert_array_equal(result["dictionary"].D, ref.D)
