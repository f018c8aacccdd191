"""Per-position penultimate vectors, for concept heatmaps on CNNs and ViTs alike.

The penultimate vector ``A(x)`` ``(d,)`` pools a spatial map; a concept heatmap encodes every
position of that map against the dictionary ``D`` ``(k, d)`` instead. :func:`spatial_tokens`
returns those positions as ``(b, H', W', d)``:

- CNNs: the output of ``spec.spatial`` ``(b, d, H', W')`` (the last block), channels moved last;
- ViTs: the output of ``spec.spatial`` ``(b, T, d)`` (the normed last block), without its
  ``spec.prefix_tokens`` class / register tokens, reshaped to the patch grid (14 × 14 for /16
  patches at 224 px);

each position passed through ``spec.spatial_norm`` when the head norms the pooled vector
(ConvNeXt's LayerNorm, a ViT's ``fc_norm``), so positions live in the space the head sees.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from .spec import ModelSpec

__all__ = ["spatial_tokens", "token_grid"]


def token_grid(n_tokens: int, height: int, width: int) -> tuple[int, int]:
    """The patch grid ``(H', W')`` of ``n_tokens`` square patches tiling an image ``height × width``.

    Raises ``ValueError`` when no grid of square patches fits.
    """
    if n_tokens < 1:
        raise ValueError("there are no patch tokens to arrange on a grid")
    patch = math.sqrt(height * width / n_tokens)
    rows = max(1, round(height / patch))
    cols = n_tokens // rows
    if rows * cols != n_tokens:
        raise ValueError(f"{n_tokens} patch tokens do not tile a {height}x{width} image with square patches; "
                         "check ModelSpec.prefix_tokens (class / register tokens are not patches)")
    return rows, cols


def spatial_tokens(spec: "ModelSpec", images: "torch.Tensor") -> "torch.Tensor":
    """The penultimate vector at every position of the spatial map, one forward pass.

    Args:
        spec: the model (its module should be in eval mode and on the images' device).
        images: ``(b, 3, H, W)`` normalised images.

    Returns:
        ``(b, H', W', d)`` float tensor on the images' device: ``H' × W'`` is the last block's
        spatial size (CNN) or the patch grid (ViT), ``d`` the penultimate width.

    Raises:
        ValueError: ``images`` is not 4-d, or the spatial layer's output is neither a map nor a
            token sequence.
    """
    import torch

    if images.dim() != 4:
        raise ValueError(f"images must be a (b, 3, H, W) tensor, got shape {tuple(images.shape)}")
    box: dict[str, torch.Tensor] = {}
    handle = spec.get(spec.spatial).register_forward_hook(
        lambda _m, _i, out: box.__setitem__("out", out.detach().clone()))
    try:
        with torch.no_grad():
            spec.module(images)
    finally:
        handle.remove()
    out = box["out"]
    norm = spec.get(spec.spatial_norm) if spec.spatial_norm is not None else None
    with torch.no_grad():
        if out.dim() == 4:  # (b, d, H', W'): norms such as LayerNorm2d act on this layout
            out = norm(out) if norm is not None else out
            return out.permute(0, 2, 3, 1).contiguous()
        if out.dim() == 3:  # (b, T, d)
            patches = out[:, spec.prefix_tokens:]
            patches = norm(patches) if norm is not None else patches
            rows, cols = token_grid(patches.shape[1], images.shape[2], images.shape[3])
            return patches.reshape(out.shape[0], rows, cols, out.shape[2])
    raise ValueError(
        f"the spatial layer '{spec.spatial}' of model '{spec.name}' gives a tensor of shape "
        f"{tuple(out.shape)}, neither a map (b, d, h, w) nor tokens (b, T, d); set "
        "ModelSpec.spatial_layer to the last block (CNN) or the final norm (ViT)")
