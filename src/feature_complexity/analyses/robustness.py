"""Robustness of each feature to Gaussian input noise (paper Fig. 11).

Notation (docs/ARCHITECTURE.md): ``Z`` codes ``(n_images, k)``, ``z`` one feature, ``K`` complexity.

The paper perturbs each image ``x̃ = x + ε``, ``ε ~ N(0, σ² I)``, for 100 draws and
``σ ∈ {0.01, 0.1, 0.5}`` on 2,000 validation images, and measures the variance of ``z(x̃)``
("complex features consistently showed higher sensitivity"). Choices made here:

- **Input scale.** ``σ`` is in units of pixels in ``[0, 1]``, the scale at which σ = 0.5 is a
  heavy but meaningful corruption. The model sees normalised images ``(x − mean) / std``, so the
  noise added to them is ``σ / std`` per channel (``std`` is the preprocessing's). Pass
  ``std=1.0`` when ``images`` already are pixels in ``[0, 1]``. Noisy pixels are not clipped:
  clipping would give the noise a non-zero mean near 0 and 1.
- **Statistic.** For every image the unbiased variance of ``z`` over the draws, averaged over
  images. Dividing it by ``Var(z)`` across the clean images makes it comparable between
  features: codes have arbitrary scales (NMF trades an atom's norm against its codes), so a raw
  variance would rank features by scale; the ratio is the noise-induced spread as a share of the
  feature's natural spread across images (0 = unmoved, 1 = as large as the signal).
- **Batching.** The draws of several images go through ``codes_of`` together: the images of a
  chunk are repeated ``n_draws`` times and perturbed in one tensor of at most ``batch_size`` rows.

Cost: ``n_images × n_draws × len(sigmas)`` forward passes (600,000 at the paper's settings).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch
    from matplotlib.figure import Figure

__all__ = ["Robustness", "robustness", "columns", "robustness_figure", "DEFAULT_SIGMAS"]

DEFAULT_SIGMAS = (0.01, 0.1, 0.5)


@dataclass
class Robustness:
    """Result of :func:`robustness`.

    Attributes:
        sigmas: ``(n_sigmas,)`` noise standard deviations, in pixel units (``[0, 1]`` scale).
        variance: ``(n_sigmas, k)`` mean over images of the variance of ``z`` over draws, in the
            units of ``z``².
        sensitivity: ``(n_sigmas, k)`` ``variance / clean_variance`` (higher = less robust);
            ``nan`` for a feature constant on the clean images.
        clean_variance: ``(k,)`` variance of ``z`` across the clean images.
        n_images, n_draws, seed: what was run.
    """

    sigmas: np.ndarray
    variance: np.ndarray
    sensitivity: np.ndarray
    clean_variance: np.ndarray
    n_images: int
    n_draws: int
    seed: int


def _codes(codes_of: Callable[[Any], Any], batch: "torch.Tensor", k: int | None) -> np.ndarray:
    """``codes_of(batch)`` as float64 numpy ``(b, k)``, with the contract checked."""
    out = codes_of(batch)
    out = out.detach().cpu().numpy() if hasattr(out, "detach") else np.asarray(out)
    out = np.asarray(out, dtype=np.float64)
    if out.ndim != 2 or out.shape[0] != batch.shape[0] or (k is not None and out.shape[1] != k):
        raise ValueError(
            f"codes_of must map a batch of {batch.shape[0]} images to codes (b, k); got shape {out.shape}"
        )
    return out


def robustness(
    codes_of: Callable[["torch.Tensor"], Any],
    images: Any,
    *,
    std: float | Sequence[float],
    sigmas: Sequence[float] = DEFAULT_SIGMAS,
    n_draws: int = 100,
    seed: int = 0,
    batch_size: int = 1000,
    progress: bool = False,
) -> Robustness:
    """Noise sensitivity of every feature.

    Args:
        codes_of: maps a float tensor of preprocessed images ``(b, 3, H, W)`` (on ``images``'
            device) to codes ``(b, k)`` (tensor or array): the model, the penultimate capture and
            the dictionary's ``encode`` composed. Called without gradients.
        images: ``(n_images, 3, H, W)`` preprocessed (normalised) images, tensor or array; the
            paper uses 2,000 validation images.
        std: the preprocessing's per-channel std (one value or three), so that ``σ`` is in pixel
            units; ``1.0`` when ``images`` are unnormalised pixels in ``[0, 1]``.
        sigmas: noise levels in pixel units.
        n_draws: noise draws per image and level (at least 2, for a variance).
        seed: seed of the noise (same seed and device → same output).
        batch_size: noisy images per call of ``codes_of`` (at least ``n_draws`` is efficient).
        progress: show a progress bar.

    Returns:
        a :class:`Robustness`.
    """
    import torch

    x = images if isinstance(images, torch.Tensor) else torch.as_tensor(np.asarray(images))
    if x.ndim != 4:
        raise ValueError(f"images must be (n_images, channels, H, W), got shape {tuple(x.shape)}")
    x = x if x.is_floating_point() else x.float()
    n, c = x.shape[0], x.shape[1]
    scale = torch.as_tensor(np.broadcast_to(np.asarray(std, dtype=np.float64), (c,)).copy(), dtype=x.dtype)
    if not torch.all(scale > 0):
        raise ValueError(f"std must be positive (the preprocessing's per-channel std), got {std}")
    scale = scale.to(x.device).view(1, c, 1, 1)
    sig = np.asarray(sigmas, dtype=np.float64).reshape(-1)
    if sig.size == 0 or not np.all(sig >= 0):
        raise ValueError(f"sigmas must be non-negative noise levels, got {list(sig)}")
    if n_draws < 2 or n < 2 or batch_size < 1:
        raise ValueError(f"need n_draws >= 2, n_images >= 2 and batch_size >= 1; got {n_draws}, {n}, {batch_size}")
    gen = torch.Generator(device=x.device).manual_seed(seed)
    per_chunk = max(1, batch_size // n_draws)  # images whose draws share one call
    with torch.no_grad():
        clean = np.concatenate([_codes(codes_of, x[a : a + batch_size], None) for a in range(0, n, batch_size)])
        k = clean.shape[1]
        variance = np.zeros((sig.size, k))
        steps = [(s, a) for s in range(sig.size) for a in range(0, n, per_chunk)]
        if progress:
            from tqdm.auto import tqdm

            steps = tqdm(steps, desc="noise draws", unit="chunk")
        for s, a in steps:
            xb = x[a : a + per_chunk]
            b = xb.shape[0]
            noisy = xb.repeat_interleave(n_draws, dim=0)  # rows: image 0 draw 0..r-1, image 1 ...
            noise = torch.randn(noisy.shape, generator=gen, device=x.device, dtype=x.dtype)
            noisy = noisy + noise * (float(sig[s]) / scale)
            z = np.concatenate(
                [_codes(codes_of, noisy[i : i + batch_size], k) for i in range(0, noisy.shape[0], batch_size)]
            ).reshape(b, n_draws, k)
            # deviations from the clean code keep the variance free of cancellation
            dev = z - clean[a : a + b, None, :]
            var = (np.sum(dev**2, axis=1) - np.sum(dev, axis=1) ** 2 / n_draws) / (n_draws - 1)
            variance[s] += var.sum(axis=0)
    variance /= n
    clean_var = clean.var(axis=0, ddof=1)
    sensitivity = np.full_like(variance, np.nan)
    ok = clean_var > 1e-12 * np.maximum(np.mean(clean**2, axis=0), 1e-300)
    sensitivity[:, ok] = variance[:, ok] / clean_var[ok]
    return Robustness(sig, variance, sensitivity, clean_var, n, n_draws, seed)


def columns(result: Robustness) -> dict[str, np.ndarray]:
    """Per-feature columns ``(k,)``: the noise sensitivity at every ``σ`` (pixel units)."""
    return {f"noise_sensitivity_{s:g}": row for s, row in zip(result.sigmas, result.sensitivity)}


def robustness_figure(result: Robustness, complexity: np.ndarray) -> "Figure":
    """Noise sensitivity against complexity ``K``, one panel per ``σ``, log scale, with the
    Spearman correlation (Fig. 11)."""
    from scipy.stats import spearmanr

    from ..figures import new_figure

    K = np.asarray(complexity, dtype=float)
    if K.shape != result.clean_variance.shape:
        raise ValueError(f"complexity has shape {K.shape}, the result has {result.clean_variance.shape[0]} features")
    m = result.sigmas.size
    fig = new_figure(3.4 * m + 0.8, 3.4)
    axes = np.atleast_1d(fig.subplots(1, m, sharey=True))
    for ax, s, row in zip(axes, result.sigmas, result.sensitivity):
        ok = np.isfinite(K) & np.isfinite(row) & (row > 0)
        sc = ax.scatter(K[ok], row[ok], c=K[ok], cmap="viridis", s=10, linewidths=0, alpha=0.8)
        rho = spearmanr(K[ok], row[ok]).statistic if _varies(K[ok], row[ok]) else float("nan")
        ax.set_yscale("log")
        ax.set_xlabel("complexity K")
        ax.set_title(f"σ = {s:g} (pixels in [0, 1]), ρ = {rho:.2f}", fontsize=9)
    axes[0].set_ylabel("Var over noise / Var over images of z")
    fig.colorbar(sc, ax=axes[-1], label="complexity K")
    fig.suptitle(f"Noise sensitivity ({result.n_draws} draws × {result.n_images} images)")
    return fig


def _varies(x: np.ndarray, y: np.ndarray) -> bool:
    """Whether a rank correlation of ``x`` and ``y`` is defined (3+ points, neither constant)."""
    return x.size > 2 and bool(np.ptp(x) > 0) and bool(np.ptp(y) > 0)


# ---------------------------------------------------------------------------------- the stage
def _probe_images(ctx: Any) -> "torch.Tensor":
    """A seeded, class-balanced subset of ``robustness_images`` probe images, stacked."""
    import torch

    from ..data import balanced_indices

    probe, n = ctx.inputs["probe"], ctx.config.robustness_images
    labels = np.asarray(getattr(probe, "labels", np.zeros(len(probe), dtype=np.int64)))
    idx = np.arange(len(probe)) if n >= len(probe) else balanced_indices(labels, n, seed=ctx.config.seed)
    return torch.stack([probe[int(i)][0] for i in idx])


def _compute(ctx: Any) -> Robustness:
    import torch

    from ..models.hooks import capture

    cfg, spec, d = ctx.config, ctx.inputs["spec"], ctx["dictionary"]
    device = torch.device(cfg.device)

    def codes_of(batch: "torch.Tensor") -> np.ndarray:
        with capture(spec, layers=False) as rec, torch.no_grad():
            spec.module(batch.to(device))
        return np.asarray(d.encode(rec["penultimate"].float().cpu().numpy(), device=cfg.device, tol=cfg.nnls_tol))

    return robustness(codes_of, _probe_images(ctx), std=spec.std, sigmas=cfg.robustness_sigmas,
                      n_draws=cfg.robustness_draws, seed=cfg.seed, batch_size=max(cfg.batch_size, cfg.robustness_draws),
                      progress=ctx.progress)


def _figures(result: Robustness, ctx: Any) -> dict[str, Any]:
    from ..stages import FigureSpec

    return {"robustness": FigureSpec(
        robustness_figure(result, ctx["complexity"].score), "Robustness to input noise (paper Fig. 11)",
        "Variance of each feature's value under Gaussian pixel noise (σ in units of the [0, 1] pixel range), "
        "over the feature's variance across clean images, against K. The paper finds complex features less "
        "robust (more sensitive).")}


def _stage() -> Any:
    from ._stage import result_stage

    return result_stage("robustness", _compute, Robustness, needs=("dictionary", "complexity"),
                        settings=("robustness_sigmas", "robustness_draws", "robustness_images", "seed", "nnls_tol"),
                        inputs=("model", "probe"), section="what", figures=_figures, columns=columns,
                        applies=lambda ctx: ctx.config.robustness_images > 0)


STAGE = _stage()
