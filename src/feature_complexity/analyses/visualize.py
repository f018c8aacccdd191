"""Feature visualisation: images optimised to excite a feature (paper Fig. 1B, 3, 7).

Notation (docs/ARCHITECTURE.md): ``D`` dictionary ``(k, d)``, atom ``d_i`` ``(d,)``; the
penultimate vector ``A(x)`` ``(d,)`` is the head's input (or ``spec.penultimate``'s pooled output).

The image is parameterised in the Fourier domain, as in MACO (Fel et al. 2023,
"Unlocking feature visualization for deeper networks with magnitude constrained optimization"):
the **magnitude** of the image's spectrum is fixed to the average spectrum of natural images and
only the **phase** is optimised. MACO ships an ImageNet spectrum; here it is computed from the
user's own images with :func:`average_spectrum`, so nothing is downloaded and the magnitude matches
the data the model was probed on. Without a spectrum, a plain Fourier parameterisation (the
complex spectrum itself, scaled by ``1 / frequency``, as in Lucid) is the fallback.

Pixels: the inverse FFT is standardised per channel and passed through a sigmoid, which keeps
every pixel in ``(0, 1)`` with non-vanishing gradients (a clamp would stop them), then normalised
with the model's mean and std.

Each step sees ``n_crops`` copies of the image under random jitter (translation), scaling and
rotation, one affine warp each (``grid_sample`` with reflection padding): a pattern survives only if
it excites the feature wherever and however large it is, which keeps it readable. The random
transforms come from a seeded ``torch.Generator`` on the CPU, so a seed gives the same image on
every run on the CPU, and the same transforms on CPU and GPU (on a GPU the backward pass of
``grid_sample`` accumulates with atomics, so images may differ in the last bits between runs).

Objectives:
- :func:`visualize_feature`: ``<A(x), d_i> / ||d_i||``, the feature's direction in the penultimate
  layer;
- :func:`visualize_decoder` (Fig. 1B): ``<GAP(f_l(x)), w>``, the output of the linear probe ``w``
  that the complexity engine fitted on block ``l`` for a feature
  (``RidgeProbeStats.decoder(alpha, i)``), to see what each depth can see of the feature.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch
    from matplotlib.figure import Figure

    from feature_complexity.models.spec import ModelSpec

__all__ = [
    "average_spectrum",
    "color_correlation",
    "visualize_feature",
    "visualize_decoder",
    "penultimate_of",
    "decoder_layers",
    "decoder_figure",
]


# ------------------------------------------------------------------------------ spectrum
def average_spectrum(
    images: Any,
    *,
    spec: "ModelSpec | None" = None,
    size: int | None = None,
    max_images: int = 512,
    batch_size: int = 64,
) -> "torch.Tensor":
    """Average Fourier magnitude of a set of images, the fixed magnitude of MACO.

    Args:
        images: a ``(n, 3, H, W)`` tensor, or a dataset whose items are ``(image tensor, label)``
            (e.g. ``ImageSource``).
        spec: when given, the tensors are taken as normalised with ``spec.mean``/``spec.std`` and
            mapped back to pixels in ``[0, 1]`` first, and ``size`` defaults to ``spec.input_size``.
            Without it, the tensors are taken as pixels.
        size: side of the (square) images the spectrum is for; images of another size are resized
            bilinearly. ``None``: the images' own size (they must then be square).
        max_images: use at most this many images (the first ones; the average converges fast).
        batch_size: images per FFT batch.

    Returns:
        ``(3, size, size // 2 + 1)`` float32 tensor (``rfft2`` layout), the mean over images of
        ``|rfft2(x - mean(x))|`` per channel.
    """
    import torch
    import torch.nn.functional as F

    if isinstance(images, torch.Tensor):
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be a (n, 3, H, W) tensor, got shape {tuple(images.shape)}")
        n = min(len(images), max_images)
        get_batch = lambda a, b: images[a:b].float()  # noqa: E731
    else:
        try:
            n = min(len(images), max_images)
        except TypeError as err:
            raise TypeError("images must be a (n, 3, H, W) tensor or a dataset of (tensor, label)") from err
        get_batch = lambda a, b: torch.stack([images[i][0] for i in range(a, b)]).float()  # noqa: E731
    if n == 0:
        raise ValueError("average_spectrum needs at least one image")
    if size is None and spec is not None:
        size = spec.input_size
    total: torch.Tensor | None = None
    for a in range(0, n, batch_size):
        x = get_batch(a, min(n, a + batch_size))
        if spec is not None:
            mean = torch.tensor(spec.mean, dtype=x.dtype).view(1, -1, 1, 1)
            std = torch.tensor(spec.std, dtype=x.dtype).view(1, -1, 1, 1)
            x = x * std + mean
        if size is None:
            if x.shape[-1] != x.shape[-2]:
                raise ValueError(f"images are {tuple(x.shape[-2:])}, not square; pass size=")
            size = int(x.shape[-1])
        if tuple(x.shape[-2:]) != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
        # the DC term (mean colour) is set by the sigmoid mapping, not the spectrum
        x = x - x.mean(dim=(2, 3), keepdim=True)
        mag = torch.fft.rfft2(x).abs().sum(0)
        total = mag if total is None else total + mag
    assert total is not None
    return (total / n).float()


def color_correlation(
    images: Any, *, spec: "ModelSpec | None" = None, max_images: int = 512
) -> "torch.Tensor":
    """Square root of the images' 3x3 colour covariance, to recorrelate optimised colours.

    Optimising three independent channels gives saturated, rainbow-coloured images; mixing
    decorrelated channels with ``C = sqrt(cov)`` (as Lucid does) gives the colour statistics of
    the user's images instead. ``C`` is scaled so that its largest column norm is 1.

    Args:
        images, spec, max_images: as :func:`average_spectrum`.

    Returns:
        ``(3, 3)`` float32 symmetric positive semi-definite tensor.
    """
    import torch

    if isinstance(images, torch.Tensor):
        x = images[:max_images].float()
    else:
        x = torch.stack([images[i][0] for i in range(min(len(images), max_images))]).float()
    if x.dim() != 4 or x.shape[1] != 3 or len(x) == 0:
        raise ValueError(f"need (n, 3, H, W) images, got shape {tuple(x.shape)}")
    if spec is not None:
        x = x * torch.tensor(spec.std).view(1, -1, 1, 1) + torch.tensor(spec.mean).view(1, -1, 1, 1)
    pix = x.permute(1, 0, 2, 3).reshape(3, -1).double()
    cov = torch.cov(pix)
    evals, evecs = torch.linalg.eigh(cov)
    C = evecs @ torch.diag(evals.clamp_min(0).sqrt()) @ evecs.T
    norm = C.norm(dim=0).max()
    if float(norm) == 0:
        raise ValueError("the images have constant colour: no colour correlation to estimate")
    return (C / norm).float()


# ------------------------------------------------------------------------------- hooks
def penultimate_of(spec: "ModelSpec") -> tuple["torch.nn.Module", str]:
    """Where the penultimate vector is read: ``(module, "input" | "output")``."""
    if spec.penultimate is None:
        assert spec.head is not None  # ModelSpec validation: no penultimate= means a head
        return spec.get(spec.head), "input"
    return spec.get(spec.penultimate), "output"


@contextmanager
def _record(module: "torch.nn.Module", where: str) -> Iterator[dict]:
    """Keep ``module``'s input or output (with its graph: gradients flow) on every forward."""
    box: dict = {}
    if where == "input":
        handle = module.register_forward_pre_hook(lambda _m, inp: box.__setitem__("x", inp[0]))
    else:
        handle = module.register_forward_hook(lambda _m, _i, out: box.__setitem__("x", out))
    try:
        yield box
    finally:
        handle.remove()


@contextmanager
def _frozen(model: "torch.nn.Module") -> Iterator[None]:
    """Only the image learns: switch off the weights' gradients, and restore them afterwards
    (the caller's model must come back as it was)."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        for p, _ in flags:
            p.requires_grad_(False)
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def _gap(t: "torch.Tensor") -> "torch.Tensor":
    """Global average pooling to ``(b, C)`` (``(b, C, h, w)`` over space, ``(b, T, C)`` over tokens)."""
    if t.dim() == 4:
        return t.mean(dim=(2, 3))
    if t.dim() == 3:
        return t.mean(dim=1)
    return t.flatten(1)


# ---------------------------------------------------------------------------- optimiser
def _frequency_scale(size: int, decay: float = 1.0) -> "torch.Tensor":
    """``1 / max(|f|, 1/size)^decay`` on the rfft2 grid ``(size, size // 2 + 1)``."""
    import torch

    fy = torch.fft.fftfreq(size).view(-1, 1)
    fx = torch.fft.rfftfreq(size).view(1, -1)
    f = torch.sqrt(fx**2 + fy**2).clamp_min(1.0 / size)
    return 1.0 / f**decay


def _random_affine(n: int, gen: "torch.Generator", *, jitter: float, scale: tuple[float, float],
                   rotate_deg: float) -> "torch.Tensor":
    """``(n, 2, 3)`` affine matrices (normalised coordinates) for ``F.affine_grid``."""
    import torch

    u = torch.rand(n, 4, generator=gen)
    s = scale[0] + (scale[1] - scale[0]) * u[:, 0]
    ang = (2 * u[:, 1] - 1) * math.radians(rotate_deg)
    tx, ty = (2 * u[:, 2] - 1) * jitter, (2 * u[:, 3] - 1) * jitter
    # grid coordinates are output -> input, so a zoom in by s samples a region 1/s as large
    cos, sin = torch.cos(ang) / s, torch.sin(ang) / s
    return torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1)


def _parameterisation(n_images: int, size: int, spectrum: "torch.Tensor | None", color: "torch.Tensor | None",
                      gen: "torch.Generator", dev: "torch.device",
                      ) -> tuple[list["torch.Tensor"], Callable[[], "torch.Tensor"]]:
    """The optimised leaves and ``pixels() -> (n, 3, H, W)`` in (0, 1): MACO's phase with a fixed
    magnitude when ``spectrum`` is given, else a plain Fourier spectrum scaled by ``1 / f``."""
    import torch

    shape = (n_images, 3, size, size // 2 + 1)
    if spectrum is not None:
        magnitude = spectrum.to(dev, torch.float32)
        if tuple(magnitude.shape) != shape[1:]:
            raise ValueError(
                f"spectrum has shape {tuple(magnitude.shape)} but the model's input needs "
                f"{shape[1:]}; compute it with average_spectrum(images, spec=spec)"
            )
        phase = (torch.rand(shape, generator=gen) * 2 * math.pi - math.pi).to(dev).requires_grad_(True)
        leaves = [phase]

        def spectrum_of() -> torch.Tensor:
            return torch.polar(magnitude.expand(shape), phase)
    else:
        freq = _frequency_scale(size).to(dev)
        re = torch.randn(shape, generator=gen).to(dev).requires_grad_(True)
        im = torch.randn(shape, generator=gen).to(dev).requires_grad_(True)
        leaves = [re, im]

        def spectrum_of() -> torch.Tensor:
            return torch.complex(re, im) * freq

    mix = None
    if color is not None:
        mix = color.to(dev, torch.float32)
        if tuple(mix.shape) != (3, 3):
            raise ValueError(f"color must be a (3, 3) matrix from color_correlation(), got {tuple(mix.shape)}")
        # mixed unit-variance channels have std = row norm of C: bring that back to about 1
        mix = mix / mix.norm(dim=1).mean().clamp_min(1e-6)

    def pixels() -> torch.Tensor:
        x = torch.fft.irfft2(spectrum_of(), s=(size, size))
        x = (x - x.mean(dim=(2, 3), keepdim=True)) / (x.std(dim=(2, 3), keepdim=True) + 1e-8)
        if mix is not None:  # decorrelated channels -> the images' colour correlations
            x = torch.einsum("ij,njhw->nihw", mix, x)
        return torch.sigmoid(1.5 * x)  # (n, 3, H, W) in (0, 1); 1.5: a natural-looking contrast

    return leaves, pixels


def _optimise(
    spec: "ModelSpec",
    objective: Callable[["torch.Tensor"], "torch.Tensor"],
    module: "torch.nn.Module",
    where: str,
    n_images: int,
    *,
    spectrum: "torch.Tensor | None",
    color: "torch.Tensor | None",
    steps: int,
    lr: float | None,
    seed: int,
    device: str,
    n_crops: int,
    jitter: float,
    scale: tuple[float, float],
    rotate_deg: float,
) -> np.ndarray:
    """Maximise ``objective(recorded (n_images * n_crops, ...)) -> (n_images * n_crops,)``.

    Returns ``(n_images, H, W, 3)`` uint8.
    """
    import torch
    import torch.nn.functional as F

    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if n_crops < 1:
        raise ValueError(f"n_crops must be >= 1, got {n_crops}")
    size = spec.input_size
    gen = torch.Generator().manual_seed(int(seed))
    dev = torch.device(device)
    model = spec.module.to(dev).eval()
    mean = torch.tensor(spec.mean, device=dev, dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(spec.std, device=dev, dtype=torch.float32).view(1, -1, 1, 1)
    leaves, pixels = _parameterisation(n_images, size, spectrum, color, gen, dev)

    if lr is None:
        lr = 0.3 if spectrum is not None else 0.1
    if lr <= 0:
        raise ValueError(f"lr must be > 0, got {lr}")
    opt = torch.optim.Adam(leaves, lr=lr)
    with _record(module, where) as box, _frozen(model):
        for _ in range(steps):
            img = pixels().repeat_interleave(n_crops, dim=0)
            theta = _random_affine(img.shape[0], gen, jitter=jitter, scale=scale, rotate_deg=rotate_deg).to(dev)
            grid = F.affine_grid(theta, list(img.shape), align_corners=False)
            warped = F.grid_sample(img, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
            model((warped - mean) / std)
            loss = -objective(box["x"]).sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    with torch.no_grad():
        out = pixels().permute(0, 2, 3, 1).cpu().numpy()
    return np.clip(np.round(out * 255), 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------- public API
def visualize_feature(
    spec: "ModelSpec",
    direction: Any,
    *,
    spectrum: "torch.Tensor | None" = None,
    color: "torch.Tensor | None" = None,
    steps: int = 128,
    lr: float | None = None,
    seed: int = 0,
    device: str = "cpu",
    n_crops: int = 4,
    jitter: float = 0.1,
    scale: tuple[float, float] = (0.9, 1.1),
    rotate_deg: float = 10.0,
) -> np.ndarray:
    """An image that maximises ``<A(x), d> / ||d||`` for a direction ``d`` of the penultimate layer.

    Args:
        spec: the model.
        direction: ``(d,)`` one atom ``d_i``, or ``(m, d)`` several (optimised together, one image
            each, independently: the objectives are summed, their gradients do not mix).
        spectrum: ``(3, H, W // 2 + 1)`` from :func:`average_spectrum` (MACO: phase-only
            optimisation); ``None``: plain Fourier parameterisation.
        color: ``(3, 3)`` from :func:`color_correlation`: optimise decorrelated colour channels
            and mix them into the images' colour statistics; ``None``: independent channels.
        steps: optimisation steps (128 is a CPU-friendly default; MACO uses about 256+).
        lr: Adam learning rate; ``None``: 0.3 on the phase (radians) with a spectrum, 0.1 on
            the unit-scale complex spectrum without.
        seed: seeds the initial phase and every random transform.
        device: ``"cpu"``, ``"cuda"``, …
        n_crops: transformed copies per step.
        jitter: maximal translation, as a fraction of the half-width of the image.
        scale: range of the random zoom factor.
        rotate_deg: maximal rotation in degrees.

    Returns:
        ``(H, W, 3)`` uint8 for one direction, ``(m, H, W, 3)`` for several.
    """
    import torch

    d = torch.as_tensor(np.asarray(direction, dtype=np.float32))
    single = d.dim() == 1
    d = d.view(1, -1) if single else d
    if d.dim() != 2:
        raise ValueError(f"direction must be (d,) or (m, d), got shape {tuple(d.shape)}")
    norms = d.norm(dim=1, keepdim=True)
    if torch.any(norms == 0):
        raise ValueError("a direction is all zeros: there is nothing to maximise")
    d = (d / norms).to(device)
    module, where = penultimate_of(spec)
    m = d.shape[0]

    def objective(pen: torch.Tensor) -> torch.Tensor:
        pen = _gap(pen)
        if pen.shape[1] != d.shape[1]:
            raise ValueError(
                f"the penultimate layer of model '{spec.name}' has {pen.shape[1]} dimensions but "
                f"the direction has {d.shape[1]}: was the dictionary fitted on this model?"
            )
        return (pen.view(m, n_crops, -1) * d.view(m, 1, -1)).sum(-1).flatten()

    imgs = _optimise(spec, objective, module, where, m, spectrum=spectrum, color=color, steps=steps, lr=lr,
                     seed=seed, device=device, n_crops=n_crops, jitter=jitter, scale=scale, rotate_deg=rotate_deg)
    return imgs[0] if single else imgs


def visualize_decoder(spec: "ModelSpec", layer_name: str, weights: Any, *, device: str = "cpu",
                      **options: Any) -> np.ndarray:
    """An image that maximises a linear probe's output ``<GAP(f_l(x)), w>`` on block ``l``
    (Fig. 1B: what block ``l`` can see of a feature).

    Args:
        layer_name: the block ``l`` (a module name of ``spec.module``, usually a probe layer).
        weights: ``(C_l,)`` the probe's weights, e.g. ``RidgeProbeStats.decoder(alpha, i)[0]``
            (the bias does not change the maximiser).
        device: ``"cpu"``, ``"cuda"``, …
        options: the optimisation's keywords, as :func:`visualize_feature` (``spectrum``,
            ``color``, ``steps`` 128, ``lr``, ``seed`` 0, ``n_crops`` 4, ``jitter`` 0.1, ``scale``
            (0.9, 1.1), ``rotate_deg`` 10).

    Returns:
        ``(H, W, 3)`` uint8.
    """
    import torch

    if layer_name not in spec.module_names():
        raise ValueError(f"layer '{layer_name}' not found in model '{spec.name}'; probe layers are: "
                         f"{', '.join(spec.probe_layers)}")
    w = torch.as_tensor(np.asarray(weights, dtype=np.float32)).flatten()
    if float(w.norm()) == 0:
        raise ValueError(f"the probe on '{layer_name}' has all-zero weights (the null model): "
                         "this layer decodes nothing of the feature, so there is nothing to show")
    w = (w / w.norm()).to(device)

    def objective(out: torch.Tensor) -> torch.Tensor:
        g = _gap(out)
        if g.shape[1] != w.shape[0]:
            raise ValueError(f"layer '{layer_name}' has {g.shape[1]} channels but the probe has {w.shape[0]} weights")
        return g @ w

    # the optimisation's keywords and defaults are visualize_feature's (one place for them)
    defaults = {name: p.default for name, p in inspect.signature(visualize_feature).parameters.items()
                if p.kind is p.KEYWORD_ONLY and name != "device"}
    if set(options) - set(defaults):
        raise TypeError(f"visualize_decoder() got unexpected keyword arguments {sorted(set(options) - set(defaults))}")
    return _optimise(spec, objective, spec.get(layer_name), "output", 1, device=device,
                     **{**defaults, **options})[0]


def decoder_layers(probe_layers: Sequence[str]) -> list[str]:
    """An early, a middle and the last block (the paper shows blocks 1, 5 and 10)."""
    if not probe_layers:
        raise ValueError("no probe layers")
    idx = sorted({0, len(probe_layers) // 2, len(probe_layers) - 1})
    return [probe_layers[i] for i in idx]


def decoder_figure(
    images: dict[str, np.ndarray],
    *,
    feature_image: np.ndarray | None = None,
    iv: dict[str, float] | None = None,
    title: str = "",
) -> "Figure":
    """Fig. 1B: the decoder visualisation per block (left to right), optionally the feature's
    own visualisation last, with each block's ``I_V`` in the panel title.

    Args:
        images: ``{layer name: (H, W, 3) uint8}`` from :func:`visualize_decoder`, in depth order.
        feature_image: ``(H, W, 3)`` uint8 from :func:`visualize_feature`.
        iv: ``{layer name: I_V}`` for the titles.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    panels = list(images.items()) + ([("feature (penultimate)", feature_image)] if feature_image is not None else [])
    fig, axes = plt.subplots(1, len(panels), figsize=(2.4 * len(panels), 2.7), squeeze=False)
    for ax, (name, img) in zip(axes[0], panels):
        ax.imshow(img)
        ax.axis("off")
        sub = f"\nI_V = {iv[name]:.2f}" if iv and name in iv else ""
        ax.set_title(f"{name}{sub}", fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig
