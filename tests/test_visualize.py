"""Fourier feature visualisation (MACO-style) and the average spectrum."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from feature_complexity.models.spec import ModelSpec  # noqa: E402
from feature_complexity.report.visualize import (  # noqa: E402
    average_spectrum,
    color_correlation,
    decoder_figure,
    decoder_layers,
    visualize_decoder,
    visualize_feature,
)

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
    np.testing.assert_array_equal(a, visualize_feature(spec, d.numpy(), spectrum=spectrum, color=color, steps=3, seed=7))
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
