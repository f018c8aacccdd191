"""The images of the evidence: Fourier feature visualisation (MACO-style), the average spectrum,
top images and concept heatmaps, and the evidence stage (selection, thumbnails, resume, gallery)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from feature_complexity.analyses.visualize import (  # noqa: E402
    average_spectrum,
    color_correlation,
    decoder_figure,
    decoder_layers,
    visualize_decoder,
    visualize_feature,
)
from feature_complexity.models.spec import ModelSpec  # noqa: E402

SIZE = 16
MEAN, STD = (0.5, 0.4, 0.45), (0.25, 0.2, 0.22)


class TinyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.block1 = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
        self.block2 = nn.Sequential(nn.Conv2d(8, 12, 3, stride=2, padding=1), nn.ReLU())
        self.fc = nn.Linear(12, 3)

    def forward(self, x):
        return self.fc(self.block2(self.block1(x)).mean(dim=(2, 3)))


@pytest.fixture(scope="module")
def spec() -> ModelSpec:
    return ModelSpec(name="tiny", module=TinyNet(), probe_layers=["block1", "block2"], head="fc",
                     num_classes=3, input_size=SIZE, mean=MEAN, std=STD)


@pytest.fixture(scope="module")
def probe_images() -> torch.Tensor:
    """Smooth random pixel images (blurred noise), normalised like the model's inputs."""
    g = torch.Generator().manual_seed(1)
    x = torch.rand(32, 3, SIZE, SIZE, generator=g)
    x = nn.functional.avg_pool2d(x, 3, stride=1, padding=1)
    return (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)


def _penultimate(spec: ModelSpec, x_normalised: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return spec.module.block2(spec.module.block1(x_normalised)).mean(dim=(2, 3))


def _to_input(img_uint8: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(img_uint8).permute(2, 0, 1).float().unsqueeze(0) / 255.0
    return (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)


def test_average_spectrum_finds_a_planted_frequency():
    yy, xx = torch.meshgrid(torch.arange(SIZE), torch.arange(SIZE), indexing="ij")
    stripes = 0.5 + 0.4 * torch.cos(2 * torch.pi * 3 * xx / SIZE)  # 3 cycles across the width
    imgs = stripes.expand(5, 3, SIZE, SIZE).clone()
    spec_ = average_spectrum(imgs)
    assert spec_.shape == (3, SIZE, SIZE // 2 + 1)
    peak = np.unravel_index(int(spec_[0].argmax()), spec_[0].shape)
    assert peak == (0, 3)
    # magnitude of a cosine of amplitude a over N pixels: a * N / 2 per half-spectrum bin
    assert float(spec_[0, 0, 3]) == pytest.approx(0.4 * SIZE * SIZE / 2, rel=1e-4)
    assert float(spec_[0, 0, 0]) == pytest.approx(0.0, abs=1e-3)  # the mean is removed


def test_average_spectrum_from_a_dataset_unnormalises(spec, probe_images):
    ds = [(probe_images[i], 0) for i in range(len(probe_images))]
    a = average_spectrum(ds, spec=spec)
    pixels = probe_images * torch.tensor(STD).view(1, 3, 1, 1) + torch.tensor(MEAN).view(1, 3, 1, 1)
    b = average_spectrum(pixels)
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="at least one image"):
        average_spectrum(torch.zeros(0, 3, SIZE, SIZE))


def test_color_correlation_is_the_normalised_covariance_square_root():
    from scipy.linalg import sqrtm

    g = torch.Generator().manual_seed(0)
    base = torch.rand(10, 1, 8, 8, generator=g)
    mixing = torch.tensor([[1.0, 0.2, 0.0], [0.8, 0.5, 0.1], [0.3, 0.3, 0.9]])
    noise = torch.rand(10, 3, 8, 8, generator=g)
    imgs = base * mixing[:, 0].view(1, 3, 1, 1) + 0.5 * noise  # correlated channels
    C = color_correlation(imgs).double().numpy()
    pix = imgs.permute(1, 0, 2, 3).reshape(3, -1).double().numpy()
    ref = np.real(sqrtm(np.cov(pix)))
    ref /= np.linalg.norm(ref, axis=0).max()
    np.testing.assert_allclose(C, ref, atol=1e-5)
    with pytest.raises(ValueError, match="constant colour"):
        color_correlation(torch.ones(2, 3, 4, 4))


@pytest.mark.parametrize("mode", ["maco", "maco-color", "plain-fourier"])
def test_visualisation_excites_the_direction_reproducibly(spec, probe_images, mode):
    spectrum = average_spectrum(probe_images, spec=spec) if mode != "plain-fourier" else None
    color = color_correlation(probe_images, spec=spec) if mode == "maco-color" else None
    A = _penultimate(spec, probe_images)  # (n, d), non-negative (ReLU)
    d = A[3]  # a non-negative direction, like a dictionary atom
    d_unit = d / d.norm()
    probe_act = A @ d_unit
    img = visualize_feature(spec, d.numpy(), spectrum=spectrum, color=color, steps=30, seed=7)
    assert img.shape == (SIZE, SIZE, 3) and img.dtype == np.uint8
    act = float(_penultimate(spec, _to_input(img)) @ d_unit)
    # well above the probe images' average (by 10 of their standard deviations; the best probe
    # image reaches about 2), and above every probe image
    z = (act - float(probe_act.mean())) / float(probe_act.std())
    assert z > 10 and act > float(probe_act.max()), (z, act, float(probe_act.max()))
    # same seed -> same image; another seed -> another image (short runs suffice for that)
    a = visualize_feature(spec, d.numpy(), spectrum=spectrum, color=color, steps=3, seed=7)
    again = visualize_feature(spec, d.numpy(), spectrum=spectrum, color=color, steps=3, seed=7)
    np.testing.assert_array_equal(a, again)
    assert not np.array_equal(a, visualize_feature(spec, d.numpy(), spectrum=spectrum, color=color, steps=3, seed=8))
    # the caller's model is left as it was
    assert all(p.requires_grad for p in spec.module.parameters())


def test_batched_directions_match_single_ones_in_shape_and_errors(spec):
    d = np.abs(np.random.default_rng(0).normal(size=(2, 12))).astype(np.float32)
    imgs = visualize_feature(spec, d, steps=3, seed=0)
    assert imgs.shape == (2, SIZE, SIZE, 3)
    with pytest.raises(ValueError, match="dimensions"):
        visualize_feature(spec, np.ones(5), steps=1)
    with pytest.raises(ValueError, match="all zeros"):
        visualize_feature(spec, np.zeros(12), steps=1)
    with pytest.raises(ValueError, match="spectrum has shape"):
        visualize_feature(spec, np.ones(12), spectrum=torch.ones(3, 8, 5), steps=1)


def test_decoder_visualisation_raises_the_probe_output(spec, probe_images):
    with torch.no_grad():
        g = spec.module.block1(probe_images).mean(dim=(2, 3))  # (n, 8)
    w = torch.linspace(-1, 1, 8)
    img = visualize_decoder(spec, "block1", w.numpy(), steps=30, seed=0)
    with torch.no_grad():
        act = float(spec.module.block1(_to_input(img)).mean(dim=(2, 3)) @ (w / w.norm()))
    base = g @ (w / w.norm())
    assert act > float(base.mean()) + 3 * float(base.std())
    with pytest.raises(ValueError, match="not found"):
        visualize_decoder(spec, "block9", w.numpy(), steps=1)
    with pytest.raises(ValueError, match="all-zero"):
        visualize_decoder(spec, "block1", np.zeros(8), steps=1)
    assert decoder_layers(["a", "b", "c", "d", "e"]) == ["a", "c", "e"]
    assert decoder_layers(["a"]) == ["a"]
    fig = decoder_figure({"block1": img, "block2": img}, feature_image=img, iv={"block1": 0.2})
    assert len(fig.axes) == 3


# ---------------------------------------------------------------------------- top images, heatmaps
from feature_complexity.analyses.heatmaps import concept_heatmaps, overlay, top_images, top_images_all  # noqa: E402


def test_top_images_against_sort():
    Z = np.random.default_rng(0).random((50, 5))
    np.testing.assert_array_equal(top_images(Z, 3, 7), np.argsort(Z[:, 3])[::-1][:7])
    assert top_images(Z, 0, 500).shape == (50,)
    with pytest.raises(ValueError, match="does not exist"):
        top_images(Z, 5, 3)


def test_top_images_of_every_feature_in_one_pass_match_a_sort_per_feature():
    rng = np.random.default_rng(1)
    Z = rng.random((500, 30)) * (rng.random((500, 30)) < 0.5)
    Z[:, 7] = 0.0
    Z[:3, 7] = [0.1, 0.3, 0.2]  # active on three images only
    got = top_images_all(Z, 6, chunk=64)  # several chunks: the running top must merge correctly
    for f in range(30):
        active = np.flatnonzero(Z[:, f] > 0)
        ref = active[np.argsort(-Z[active, f], kind="stable")][:6]
        np.testing.assert_array_equal(got[f, :len(ref)], ref)
        assert (got[f, len(ref):] == -1).all()
    np.testing.assert_array_equal(got[7], [1, 2, 0, -1, -1, -1])


class ColourNet(nn.Module):
    """Spatial layer = the image's three colour channels, average-pooled 2x2 (8x8 from 16x16)."""

    def __init__(self) -> None:
        super().__init__()
        self.block1 = nn.Identity()
        self.block2 = nn.AvgPool2d(2)
        self.fc = nn.Linear(3, 2)

    def forward(self, x):
        return self.fc(self.block2(self.block1(x)).mean(dim=(2, 3)))


def _colour_spec() -> ModelSpec:
    return ModelSpec(name="colour", module=ColourNet(), probe_layers=["block1", "block2"], head="fc", num_classes=2,
                     input_size=SIZE, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))


def test_heatmap_lights_up_on_the_planted_colour_patch():
    x = torch.zeros(2, 3, SIZE, SIZE)
    x[0, 0, 2:8, 9:15] = 1.0  # image 0: red patch top-right
    x[0, 1, 10:15, 1:6] = 1.0  # and a green patch bottom-left
    x[1, 0, 9:15, 1:7] = 1.0  # image 1: red patch bottom-left
    heat = concept_heatmaps(_colour_spec(), x, np.eye(3, dtype=np.float32), [0, 1])  # atoms: red, green, blue
    assert heat.shape == (2, 2, SIZE, SIZE)
    for b, feat, region in [(0, 0, (slice(2, 8), slice(9, 15))), (0, 1, (slice(10, 15), slice(1, 6))),
                            (1, 0, (slice(9, 15), slice(1, 7)))]:
        h = heat[b, feat]
        mask = np.zeros_like(h, dtype=bool)
        mask[region] = True
        assert h[mask].mean() > 10 * (h[~mask].mean() + 1e-6)
        assert mask[np.unravel_index(h.argmax(), h.shape)]
    assert heat[1, 0, 2:8, 9:15].max() < 1e-3  # red stays dark where only image 0 had red


def test_heatmap_channel_mismatch_is_explained():
    with pytest.raises(ValueError, match="channels"):
        concept_heatmaps(_colour_spec(), torch.zeros(1, 3, SIZE, SIZE), np.eye(4, dtype=np.float32), [0])


def test_overlay_keeps_cold_pixels_and_colours_hot_ones():
    img = np.full((4, 4, 3), 100, dtype=np.uint8)
    heat = np.zeros((4, 4))
    heat[0, 0] = 1.0
    out = overlay(img, heat)
    assert out.dtype == np.uint8 and out.shape == (4, 4, 3)
    np.testing.assert_array_equal(out[1:, 1:], img[1:, 1:])
    assert not np.array_equal(out[0, 0], img[0, 0])
    with pytest.raises(ValueError, match="heat has shape"):
        overlay(img, np.zeros((3, 3)))


# ---------------------------------------------------------------------------- the evidence stage
from feature_complexity.analyses import evidence as ev  # noqa: E402


def test_selection_is_bounded_seeded_and_keeps_both_ends_first():
    rng = np.random.default_rng(0)
    K, G = rng.random(1000), rng.normal(size=1000)
    order, reasons = ev.select_evidence_features(K, G, 40, seed=1)
    assert len(order) == 40 == len(set(order))
    # the first three are the simplest, the most complex and the most important feature
    assert order[:3] == [int(np.argmin(K)), int(np.argmax(K)), int(np.argmax(np.abs(G)))]
    assert set(reasons) == {"simplest", "most_complex", "most_important", "sample"}
    assert sum(map(len, reasons.values())) >= 40 and len(reasons["sample"]) >= 10
    assert ev.select_evidence_features(K, G, 40, seed=1) == (order, reasons)
    assert ev.select_evidence_features(K, G, 40, seed=2)[0] != order
    small, _ = ev.select_evidence_features(K[:30], None, 40)
    assert sorted(small) == list(range(30))
    assert ev.select_evidence_features(K, G, 0)[0] == []


def test_gallery_has_no_empty_band_above_its_rows():
    import pandas as pd

    clusters = pd.DataFrame({"cluster": [0, 1, 2], "mean_complexity": [0.2, 0.5, 0.8], "size": [2, 2, 1],
                             "members": [[0, 1], [2, 3], [4]]})
    top = np.arange(5 * 4).reshape(5, 4)
    fig = ev.gallery_figure(clusters, top, lambda i: np.full((8, 8, 3), i * 10, dtype=np.uint8), n_per_row=4)
    tops = [ax.get_position().y1 for ax in fig.axes]
    height = fig.get_size_inches()[1]
    assert (1 - max(tops)) * height < 0.6  # only the title's band above the first row
    assert len(fig.axes) == 2 * 4 + 4  # round-robin over members: a row of 4 even from 1 feature


@pytest.fixture(scope="module")
def evidence_ctx(tmp_path_factory):
    """A context with everything the evidence stage reads: the tiny CNN, 64 images, 40 atoms."""
    from types import SimpleNamespace

    from conftest import TinyImages, make_tiny_spec
    from feature_complexity.activations import extract_activations
    from feature_complexity.config import RunConfig
    from feature_complexity.features.base import Dictionary
    from feature_complexity.stages import Context

    spec, probe = make_tiny_spec(), TinyImages()
    acts = extract_activations(spec, probe, batch_size=64, progress=False)
    rng = np.random.default_rng(0)
    # atoms: the activations of 40 of the images (so that every atom is active on some images)
    A = np.asarray(acts.penultimate, dtype=np.float32)
    d = Dictionary(D=A[:40] + 0.01, feature_class=np.repeat(np.arange(4), 10),
                   method="nmf", scope="per_class", n_atoms_per_class=10, reconstruction_error=0.1)
    Z = np.asarray(d.encode(np.asarray(acts.penultimate)), dtype=np.float32)
    results = {"dictionary": d, "codes": Z, "complexity": SimpleNamespace(score=rng.random(40)),
               "importance": rng.normal(size=40), "activations": acts}

    def make(out, **config):
        ctx = Context(config=RunConfig(**config), out=out, inputs={"spec": spec, "probe": probe},
                      results=dict(results), log=lambda m: None)
        ctx.keys = dict.fromkeys(results, "k") | {"evidence": repr(sorted(config.items()))}
        return ctx

    return make


class _Stop(Exception):
    """Stands for an interruption (Ctrl-C, a killed job) in the middle of the evidence."""


_THUMBNAIL = ev.thumbnail


def _counting(monkeypatch, fail_after=None):
    """Count the thumbnails drawn (and stop after ``fail_after``)."""
    calls = []
    real = _THUMBNAIL

    def counted(*args, **kwargs):
        if fail_after is not None and len(calls) >= fail_after:
            raise _Stop
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(ev, "thumbnail", counted)
    return calls


@pytest.mark.slow
def test_evidence_resumes_where_it_stopped(evidence_ctx, tmp_path, monkeypatch):
    ctx = evidence_ctx(tmp_path)
    calls = _counting(monkeypatch, fail_after=35)  # the first group of 32 and 3 of the second
    with pytest.raises(_Stop):
        ev._compute(ctx)
    calls = _counting(monkeypatch)
    result = ev._compute(ctx)
    active = int((result.top >= 0).any(axis=1).sum())
    assert active >= 36
    assert len(calls) == active - 35 and len(result.files) == active
    ev._save(result, tmp_path)
    loaded = ev._load(tmp_path)
    assert loaded.files == result.files and loaded.selected == result.selected
    np.testing.assert_array_equal(loaded.top, result.top)
    assert sorted(p.name for p in (tmp_path / "evidence").glob("*.jpg")) == sorted(result.files.values())
    # other settings: another key, the work folder is wiped and everything is drawn again
    calls = _counting(monkeypatch)
    ev._compute(evidence_ctx(tmp_path, n_top=3))
    assert len(calls) == active


@pytest.mark.slow
def test_evidence_renders_only_its_budget(evidence_ctx, tmp_path, monkeypatch):
    from PIL import Image

    calls = _counting(monkeypatch)
    result = ev._compute(evidence_ctx(tmp_path, evidence_features=8, n_top=4))
    assert len(result.files) == len(calls) == 8 and result.top.shape == (40, 4)  # top images: every feature
    assert result.heatmap_note is None
    ev._save(result, tmp_path)
    first = tmp_path / "evidence" / next(iter(result.files.values()))
    w, h = Image.open(first).size
    assert (w, h) == (4 * 64 + 3 * 2, 2 * 64 + 2)  # 4 images, heatmaps below
    # a second save with fewer features removes the files of the first
    fewer = ev.Evidence(result.top, result.selected[:2], result.reasons, dict(list(result.files.items())[:2]),
                        workdir=None)
    ev._save(fewer, tmp_path)
    assert len(list((tmp_path / "evidence").glob("*.jpg"))) == 2
