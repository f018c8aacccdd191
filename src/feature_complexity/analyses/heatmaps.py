"""Evidence for a feature: its top-activating images and its concept heatmaps.

Notation (docs/ARCHITECTURE.md): ``Z`` codes ``(n_images, k)``, ``D`` dictionary ``(k, d)``.

A concept heatmap applies the dictionary *locally*: the spatial layer's output ``(b, d, h, w)``
(the map whose global average pool is the penultimate vector) is read as ``b * h * w`` vectors of
``R^d``, each is encoded against the **whole** dictionary with the same non-negative least squares
as the images' codes, and feature ``i``'s code at every position, upsampled to the input size,
shows where in the image the feature is. Encoding against the whole ``D`` (not ``d_i`` alone)
matters: a position explained better by another atom gets ``z_i = 0`` there, as in the image-level
codes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

    from feature_complexity.models.spec import ModelSpec

__all__ = ["top_images", "top_images_all", "spatial_output", "position_vectors", "position_codes", "concept_heatmaps",
           "upsample", "overlay", "NoSpatialMap"]


class NoSpatialMap(ValueError):
    """The model gives no grid of positions to encode (a token sequence the seam does not read yet)."""


def top_images(Z: np.ndarray, feature: int, n_top: int) -> np.ndarray:
    """Indices of the ``n_top`` images with the largest code for ``feature``, largest first.

    Args:
        Z: ``(n_images, k)`` codes.
        feature: feature id (column of ``Z``).
        n_top: how many images.

    Returns:
        ``(min(n_top, n_images),)`` int64 indices; ties are broken by the lower index (stable).
    """
    Z = np.asarray(Z)
    if Z.ndim != 2:
        raise ValueError(f"Z must be a 2-D (n_images, k) array of codes, got shape {Z.shape}")
    if not 0 <= feature < Z.shape[1]:
        raise ValueError(f"feature {feature} does not exist: Z has {Z.shape[1]} features (0 .. {Z.shape[1] - 1})")
    if n_top < 1:
        raise ValueError(f"n_top must be >= 1, got {n_top}")
    # stable sort on the negated column keeps ties in index order: reproducible galleries
    order = np.argsort(-Z[:, feature], kind="stable")
    return order[: min(n_top, Z.shape[0])].astype(np.int64)


def top_images_all(Z: np.ndarray, n_top: int, *, chunk: int | None = None) -> np.ndarray:
    """Every feature's top images in one pass over the rows of ``Z`` (a memmap is read once).

    Only images where the feature is active (code > 0) count: an image with a zero code shows
    nothing of the feature. Ties are broken by the lower image index, as in :func:`top_images`.

    Args:
        Z: ``(n_images, k)`` codes.
        n_top: images per feature.
        chunk: rows read at a time (default: about 4 M values, whatever ``k``).

    Returns:
        ``(k, n_top)`` int64, largest code first, ``-1`` where a feature has fewer active images.
    """
    n, k = Z.shape
    m = min(n_top, n)
    chunk = chunk or max(64, (1 << 22) // max(k, 1))
    best_v = np.full((m, k), -np.inf)
    best_i = np.full((m, k), -1, dtype=np.int64)
    for start in range(0, n, chunk):
        block = np.asarray(Z[start:start + chunk], dtype=np.float64)
        vals = np.concatenate([best_v, np.where(block > 0, block, -np.inf)])
        idx = np.concatenate([best_i, np.broadcast_to(np.arange(start, start + len(block))[:, None], block.shape)])
        # sort by (value descending, index ascending): lexsort's last key is the primary one
        order = np.lexsort((np.where(idx < 0, n, idx), -vals), axis=0)[:m]
        best_v = np.take_along_axis(vals, order, axis=0)
        best_i = np.take_along_axis(idx, order, axis=0)
    best_i[~np.isfinite(best_v)] = -1
    out = np.full((k, n_top), -1, dtype=np.int64)
    out[:, :m] = best_i.T
    return out


@contextmanager
def _hook_output(module: "torch.nn.Module") -> Iterator[dict]:
    """Record ``module``'s output on every forward; the hook is always removed."""
    box: dict = {}

    def hook(_m, _inp, out):
        # clone: ResNet blocks add their skip in place, which would change a bare reference
        box["out"] = out.detach().clone()

    handle = module.register_forward_hook(hook)
    try:
        yield box
    finally:
        handle.remove()


def spatial_output(spec: "ModelSpec", images: "torch.Tensor", *, device: str = "cpu") -> "torch.Tensor":
    """Output of ``spec.spatial`` for a batch of normalised images.

    Args:
        images: ``(b, 3, H, W)`` normalised tensor (as the dataset returns it).

    Returns:
        ``(b, d, h, w)`` float32 tensor on the CPU.
    """
    import torch

    if images.dim() != 4:
        raise ValueError(f"images must be a (b, 3, H, W) tensor, got shape {tuple(images.shape)}")
    module = spec.module.to(device).eval()
    with _hook_output(spec.get(spec.spatial)) as box, torch.no_grad():
        module(images.to(device))
    out = box["out"]
    if out.dim() != 4:
        raise NoSpatialMap(
            f"the spatial layer '{spec.spatial}' of model '{spec.name}' gives a tensor of shape "
            f"{tuple(out.shape)}, not (b, d, h, w); set ModelSpec.spatial_layer to the last "
            "convolutional block"
        )
    return out.float().cpu()


def _encode(A: np.ndarray, D: np.ndarray, device: str) -> np.ndarray:
    """The images' own coding rule (``features.encode``), applied to positions."""
    from feature_complexity.features import encode

    return np.asarray(encode(A, D, device=device))


def position_vectors(spec: "ModelSpec", images: "torch.Tensor", *, device: str = "cpu") -> np.ndarray:
    """Per-position penultimate vectors ``(b, H', W', d)``: the one seam between models and heatmaps.

    The model's own reading is used when the package has it (``models.spatial.spatial_tokens``:
    a CNN's last-block map, or a ViT's patch tokens without the class token, arranged on the
    patch grid, normed like the pooled vector); otherwise a CNN's spatial layer ``(b, d, h, w)``
    is read here, and a token model raises :class:`NoSpatialMap` (the evidence then shows top
    images without heatmaps).

    Args:
        images: ``(b, 3, H, W)`` normalised tensor.

    Returns:
        ``(b, H', W', d)`` float32.
    """
    import torch

    try:
        from ..models.spatial import spatial_tokens
    except ImportError:  # an older models/ package: CNN spatial maps only
        fmap = spatial_output(spec, images, device=device)  # (b, d, h, w)
        return fmap.permute(0, 2, 3, 1).contiguous().numpy()
    spec.module.to(device).eval()
    try:
        with torch.no_grad():
            out = spatial_tokens(spec, images.to(device))
    except ValueError as err:
        raise NoSpatialMap(str(err)) from err
    return out.float().cpu().numpy()


def position_codes(
    spec: "ModelSpec",
    images: "torch.Tensor",
    D: np.ndarray,
    *,
    device: str = "cpu",
    encoder: "Callable[[np.ndarray], np.ndarray] | None" = None,
) -> np.ndarray:
    """NNLS code of every spatial position of the spatial layer against the whole dictionary.

    Args:
        spec: the model.
        images: ``(b, 3, H, W)`` normalised tensor.
        D: ``(k, d)`` dictionary; ``d`` must equal the spatial layer's channels.
        device: where the model and the NNLS run.
        encoder: ``A (m, d) -> Z (m, k)``, the run's own coding rule (``Dictionary.encode`` with the
            run's options); default the exact NNLS against ``D``.

    Returns:
        ``(b, h, w, k)`` float32 codes (``h, w`` the spatial layer's resolution).
    """
    D = np.asarray(D, dtype=np.float32)
    if D.ndim != 2:
        raise ValueError(f"D must be a (k, d) dictionary, got shape {D.shape}")
    vectors = position_vectors(spec, images, device=device)  # (b, h, w, d)
    b, h, w, d = vectors.shape
    if d != D.shape[1]:
        raise ValueError(
            f"the spatial layer '{spec.spatial}' has {d} channels but the dictionary atoms have "
            f"{D.shape[1]}: the dictionary was fitted on another layer or model"
        )
    encode = _encode if encoder is None else (lambda A, D, device: encoder(A))
    A = vectors.reshape(b * h * w, d)
    return np.asarray(encode(A, D, device), dtype=np.float32).reshape(b, h, w, D.shape[0])


def upsample(maps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear upsampling of ``(..., h, w)`` maps to ``(..., H, W)``, clipped at 0 (bilinear
    interpolation of non-negative codes is non-negative up to rounding)."""
    import torch
    import torch.nn.functional as F

    maps = np.asarray(maps, dtype=np.float32)
    lead = maps.shape[:-2]
    t = torch.from_numpy(np.ascontiguousarray(maps)).reshape(-1, 1, *maps.shape[-2:])
    up = F.interpolate(t, size=tuple(size), mode="bilinear", align_corners=False).clamp_min(0)
    return up.reshape(*lead, *size).numpy()


def concept_heatmaps(
    spec: "ModelSpec",
    images: "torch.Tensor",
    D: np.ndarray,
    features: Sequence[int],
    *,
    device: str = "cpu",
) -> np.ndarray:
    """Per-position codes of the chosen features, upsampled to the image size.

    Args:
        spec: the model.
        images: ``(b, 3, H, W)`` normalised tensor.
        D: ``(k, d)`` dictionary; ``d`` must equal the spatial layer's channels.
        features: feature ids to return.
        device: where the model and the NNLS run.

    Returns:
        ``(b, len(features), H, W)`` float32, non-negative.
    """
    features = [int(f) for f in features]
    k = np.asarray(D).shape[0]
    bad = [f for f in features if not 0 <= f < k]
    if bad:
        raise ValueError(f"features {bad} do not exist: the dictionary has {k} atoms")
    codes = position_codes(spec, images, D, device=device)[..., features]  # (b, h, w, m)
    return upsample(codes.transpose(0, 3, 1, 2), (images.shape[-2], images.shape[-1]))


def overlay(image: np.ndarray, heat: np.ndarray, *, alpha: float = 0.55, vmax: float | None = None,
            cmap: str = "inferno") -> np.ndarray:
    """Blend a heatmap over an image.

    Args:
        image: ``(H, W, 3)`` uint8.
        heat: ``(H, W)`` non-negative map (any scale).
        alpha: maximal opacity of the heatmap; the opacity grows with the heat so that cold
            regions show the image untouched.
        vmax: value mapped to full colour; ``None``: the map's maximum (so each image is
            normalised on its own; pass a shared value to compare images).
        cmap: matplotlib colormap name.

    Returns:
        ``(H, W, 3)`` uint8.
    """
    from matplotlib import colormaps

    image = np.asarray(image)
    heat = np.asarray(heat, dtype=np.float64)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be (H, W, 3) uint8, got {image.shape} {image.dtype}")
    if heat.shape != image.shape[:2]:
        raise ValueError(f"heat has shape {heat.shape} but the image is {image.shape[:2]}")
    top = float(np.nanmax(heat)) if vmax is None else float(vmax)
    h = np.clip(heat / top, 0.0, 1.0) if top > 0 else np.zeros_like(heat)
    rgb = colormaps[cmap](h)[..., :3]
    a = (alpha * h)[..., None]
    out = (1 - a) * image.astype(np.float64) / 255.0 + a * rgb
    return np.clip(np.round(out * 255), 0, 255).astype(np.uint8)
