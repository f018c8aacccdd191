"""The samples the dictionary is fitted on, gathered in one streaming pass (``--fit-data``).

The paper fits its dictionary on ImageNet's training set ("58 million samples", paper-method.md
§2) and scores features on other images. A run gathers the fit samples from ``--fit-data``
(default: the probe images) in one of three readings of what a sample is:

- ``pooled``: one pooled penultimate vector per image;
- ``spatial``: every position of the penultimate feature map (ResNet-50: 7 × 7 = 49 per image,
  1.2 M images × 49 ≈ 58 M samples, the paper's count);
- ``crops``: CRAFT's crops (patches of ``crop_fraction`` of the side at stride 0.8 × patch, each
  resized to the input size), one pooled vector per crop.

Memory is bounded by ``fit_memory_gb`` whatever the size of the fit set: when all samples would
not fit, every image contributes the same number of randomly chosen positions (seeded). At most
``fit_per_class`` images per class are used (a seeded choice). The pass writes a
:class:`~feature_complexity.store.RowStore` chunk by chunk, so an interrupted gathering resumes,
also with another number of processes. The class of a sample is its image's class (the label
where known, else the model's prediction, as ``class_source`` says).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .store import RowStore

if TYPE_CHECKING:
    import torch

    from .models.spec import ModelSpec
    from .stages import Context

__all__ = ["FitSamples", "FIT_SAMPLES", "samples_per_image", "crop_boxes"]

_IMAGES_PER_CHUNK = 1024
_CROP_FRACTION = 64 / 224  # CRAFT's 64-px patches on 224-px images
_CROP_STRIDE = 0.8


@dataclass
class FitSamples:
    """``A (n_samples, d)`` float32 rows to fit the dictionary on, and their ``classes (n_samples,)``."""

    A: np.ndarray
    classes: np.ndarray


def crop_boxes(size: int, fraction: float = _CROP_FRACTION, stride: float = _CROP_STRIDE) -> list[tuple[int, int, int]]:
    """``(top, left, side)`` of CRAFT's square crops of an image of side ``size``."""
    side = max(2, int(round(fraction * size)))
    step = max(1, int(round(stride * side)))
    starts = list(range(0, size - side + 1, step))
    if starts[-1] != size - side:  # cover the far edge too
        starts.append(size - side)
    return [(t, left, side) for t in starts for left in starts]


def _spatial_map(spec: "ModelSpec", images: "torch.Tensor") -> "torch.Tensor":
    """Per-position penultimate vectors ``(b, P, d)`` of a batch: the spatial layer's map."""
    box: dict[str, Any] = {}
    handle = spec.get(spec.spatial).register_forward_hook(lambda m, i, o: box.__setitem__("out", o.detach().clone()))
    try:
        spec.module(images)
    finally:
        handle.remove()
    out = box["out"]
    if out.dim() != 4:
        raise ValueError(f"--fit-samples spatial needs a (b, d, h, w) map at '{spec.spatial}', got shape "
                         f"{tuple(out.shape)}; use --fit-samples pooled or crops for this model")
    return out.flatten(2).transpose(1, 2)


def samples_per_image(spec: "ModelSpec", image: "torch.Tensor", mode: str) -> int:
    """How many samples one image gives in ``mode``."""
    import torch

    if mode == "pooled":
        return 1
    if mode == "crops":
        return len(crop_boxes(spec.input_size))
    with torch.inference_mode():
        return int(_spatial_map(spec, image[None]).shape[1])


def _batch_samples(spec: "ModelSpec", images: "torch.Tensor", mode: str) -> tuple["torch.Tensor", "torch.Tensor"]:
    """``(samples (b, P, d), logits (b, n_classes))`` of a batch of images."""
    import torch
    import torch.nn.functional as F

    from .models.hooks import capture

    if mode == "spatial":
        with capture(spec, layers=False) as rec:
            positions = _spatial_map(spec, images)
        return positions, rec["logits"]
    with capture(spec, layers=False) as rec:
        spec.module(images)
    logits = rec["logits"]
    if mode == "pooled":
        return rec["penultimate"][:, None], logits
    crops = [F.interpolate(images[:, :, t:t + s, left:left + s], size=images.shape[-2:], mode="bilinear",
                           align_corners=False) for t, left, s in crop_boxes(images.shape[-1])]
    with capture(spec, layers=False) as rec:
        spec.module(torch.cat(crops))
    pen = rec["penultimate"]  # (n_crops * b, d), crop-major
    return pen.reshape(len(crops), images.shape[0], -1).transpose(0, 1), logits


def _chosen_images(dataset: Any, per_class: int | None, seed: int) -> np.ndarray:
    """Indices of the fit images: all, or at most ``per_class`` per label (seeded)."""
    labels = np.asarray(getattr(dataset, "labels", np.full(len(dataset), -1)))
    if per_class is None:
        return np.arange(len(dataset))
    rng = np.random.default_rng(seed)
    keep = [rng.permutation(np.flatnonzero(labels == c))[:per_class] for c in np.unique(labels)]
    return np.sort(np.concatenate(keep))


def _gather(ctx: "Context") -> FitSamples:
    import torch

    cfg, spec, fit = ctx.config, ctx.inputs["spec"], ctx.inputs.get("fit") or ctx.inputs["probe"]
    images = _chosen_images(fit, cfg.fit_per_class, cfg.seed)
    d = int(ctx["activations"].penultimate.shape[1])
    per_image = samples_per_image(spec, fit[0][0].to(cfg.device), cfg.fit_samples)
    budget = int(cfg.fit_memory_gb * 2**30 // (4 * d * len(images)))
    keep = max(1, min(per_image, budget))
    if keep < per_image and ctx.comm.is_main:
        ctx.log(f"fit samples: {len(images)} images × {per_image} {cfg.fit_samples} samples exceed "
                f"--fit-memory {cfg.fit_memory_gb} GB; keeping {keep} random samples per image")
    if budget < 1 and ctx.comm.is_main:
        import warnings

        need = len(images) * 4 * d / 2**30
        warnings.warn(f"--fit-memory {cfg.fit_memory_gb} GB is less than one sample per fit image "
                      f"({need:.1f} GB): keeping one per image anyway; raise --fit-memory or lower "
                      "--fit-per-class", stacklevel=2)
    folder = ctx.workdir("fit_samples", ctx.out / "fit_samples") if ctx.out is not None else None
    store = RowStore(folder) if folder is not None else None
    rows = len(images) * keep
    arrays = _allocate(store, rows, d, keep, ctx)
    chunks = list(range(0, len(images), _IMAGES_PER_CHUNK))
    todo = range(len(chunks)) if store is None else store.todo(ctx.comm.rank, ctx.comm.world)
    with torch.inference_mode():
        for c in todo:
            part = images[chunks[c]:chunks[c] + _IMAGES_PER_CHUNK]
            _gather_chunk(spec, fit, part, chunks[c], keep, arrays, cfg)
            if store is not None:
                store.mark_done(c, [a for a in arrays.values() if isinstance(a, np.memmap)])
    if store is None:
        return FitSamples(arrays["A"], arrays["classes"])
    ctx.comm.barrier()
    opened = store.open("r")
    return FitSamples(opened["A"], opened["classes"])


def _allocate(store: RowStore | None, rows: int, d: int, keep: int, ctx: "Context") -> Mapping[str, np.ndarray]:
    if store is None:
        return {"A": np.zeros((rows, d), np.float32), "classes": np.zeros(rows, np.int64)}
    if ctx.comm.is_main:
        store.allocate(rows, {"A": (d, "float32"), "classes": (0, "int64")}, chunk=_IMAGES_PER_CHUNK * keep,
                       meta={"samples_per_image": keep})
    ctx.comm.barrier()
    return store.open("r+")


def _gather_chunk(spec: "ModelSpec", fit: Any, part: np.ndarray, first: int, keep: int, arrays: Mapping[str, Any],
                  cfg: Any) -> None:
    """Forward the images ``part`` (positions ``first…`` of the chosen list) and write their samples."""
    import torch

    from .activations import resolve_classes

    samples: torch.Tensor | np.ndarray
    for s in range(0, len(part), cfg.batch_size):
        idx = part[s:s + cfg.batch_size]
        batch = [fit[int(i)] for i in idx]
        x = torch.stack([b[0] for b in batch]).to(cfg.device)
        samples, logits = _batch_samples(spec, x, cfg.fit_samples)
        labels = np.array([int(b[1]) for b in batch])
        classes = resolve_classes(labels, logits.float().cpu().numpy(), cfg.class_source)
        samples = samples.float().cpu().numpy()
        if keep < samples.shape[1]:  # the same random positions whoever processes the image
            pick = [np.random.default_rng([int(cfg.seed), int(i)])
                    .choice(samples.shape[1], keep, replace=False) for i in idx]
            samples = np.stack([samples[j, p] for j, p in enumerate(pick)])
        start = (first + s) * keep
        arrays["A"][start:start + len(idx) * keep] = samples.reshape(-1, samples.shape[-1])
        arrays["classes"][start:start + len(idx) * keep] = np.repeat(classes, keep)


def _applies(ctx: "Context") -> bool:
    cfg = ctx.config
    return ctx.inputs.get("fit") is not None or cfg.fit_samples != "pooled" or cfg.fit_per_class is not None


def _load(out: Path) -> FitSamples:
    opened = RowStore(out / "fit_samples").open("r")
    return FitSamples(opened["A"], opened["classes"])


def _stage() -> Any:
    from .stages import Stage

    return Stage("fit_samples", _gather, needs=("activations",), inputs=("model", "fit_or_probe"),
                 settings=("fit_samples", "fit_per_class", "fit_memory_gb", "class_source", "seed"),
                 applies=_applies, save=lambda r, out: None, load=_load, outputs=("fit_samples/layout.json",),
                 collective=True)


FIT_SAMPLES = _stage()
