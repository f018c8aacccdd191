"""Importance ``Γ`` of every feature: signed gradient × input on the codes.

Notation (docs/ARCHITECTURE.md): ``Z`` codes ``(n_images, k)``, ``D`` dictionary ``(k, d)``,
``y = head(Z @ D)`` logits ``(n_images, n_classes)``. For feature ``i`` extracted for class
``c(i)`` (paper-method.md §4 and §9.9):

    Γ_i = E_{x : class(x) = c(i)} [ z_i(x) · ∂y_{c(i)}(x) / ∂z_i ]

Signed on purpose: ``Γ_i < 0`` means the feature inhibits its class (paper Fig. 12). For a
linear head ``y = W a + b`` the gradient is the constant ``⟨d_i, w_c⟩`` and
``Γ_i = ⟨d_i, w_c⟩ · mean z_i``; autograd makes the same definition exact for any
differentiable head. For atoms of a global dictionary (``feature_class = -1``) each image uses
its own class: ``Γ_i = E_x [ z_i(x) · ∂y_{class(x)}(x) / ∂z_i ]``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from ._validation import as_array, as_class_indices
from .features.fidelity import resolve_head_device

if TYPE_CHECKING:
    import torch

__all__ = ["importance"]


def _as_int_vector(x: Any, name: str, length: int, what: str) -> np.ndarray:
    arr = as_array(x, name, 1)
    if arr.shape != (length,):
        raise ValueError(f"{name} must have shape ({length},), one per {what}, got {arr.shape}")
    return as_class_indices(arr, name)


def importance(
    Z: np.ndarray,
    D: np.ndarray,
    head: Callable[[torch.Tensor], torch.Tensor] | torch.nn.Module,
    *,
    feature_class: np.ndarray,
    image_class: np.ndarray,
    device: str | torch.device | None = None,
    batch_size: int = 1024,
    decode: Callable[[torch.Tensor], torch.Tensor] | None = None,
    reduce: Callable[[np.ndarray], np.ndarray] | None = None,
) -> np.ndarray:
    """Signed importance ``Γ (k,)`` of every feature, by autograd through ``head(decode(Z))``.

    One backward pass per batch gives every image's gradient at once: the images are
    independent through the head, so ``∂/∂Z Σ_x y_{class(x)}(x)`` has as row ``x`` exactly
    ``∂y_{class(x)}(x)/∂z``. Row ``x`` only enters the mean of the features of its own class
    (or of the global features), where ``class(x) = c(i)`` makes it the gradient we want.

    Args:
        Z: codes ``(n_images, k)``.
        D: dictionary ``(k, d)``.
        head: maps penultimate vectors ``(batch, d)`` to logits ``(batch, n_classes)``; must
            treat images independently (an ``nn.Module`` in eval mode: batch-norm in training
            mode mixes images and breaks the per-image gradient). It is not moved.
        feature_class: ``(k,)`` class ``c(i)`` of each feature, ``-1`` for a global atom.
        image_class: ``(n_images,)`` class of each image: its label, or the model's prediction
            where the label is unknown (the caller resolves that). Images with ``-1`` are left
            out of every mean.
        device: where to run; default the head's device (CPU for a plain callable).
        batch_size: images per backward pass.
        decode: the dictionary's decoder on torch tensors (``Dictionary.decode``); default
            ``Z @ D``. Any differentiable decoder works (an SAE adds its bias).
        reduce: sums an array over processes (``Comm.sum_array``) when ``Z`` is one process's
            shard of the images: the per-feature sums and the per-class image counts are reduced
            before the division, so the shards give the same ``Γ`` as one process.

    Returns:
        ``Γ`` as float64 ``(k,)``. A feature whose class has no image gets ``NaN`` (with a
        warning): there is nothing to average over.

    Raises:
        ValueError: on inconsistent shapes, classes outside the head's logits, or non-finite
            codes.
    """
    Z, D, fc, ic = _check_inputs(Z, D, head, feature_class, image_class, batch_size)
    dev, dtype = resolve_head_device(head, device)
    sums = _gradient_sums(Z, D, head, fc, ic, dev, dtype, batch_size, decode)
    return _class_means(sums.cpu().numpy(), fc, ic, reduce)


def _check_inputs(
    Z: np.ndarray, D: np.ndarray, head: Any, feature_class: np.ndarray, image_class: np.ndarray, batch_size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Validated ``Z, D`` and the class vectors ``fc (k,)``, ``ic (n,)``; warns on a head in training mode."""
    import torch

    Z = as_array(Z, "Z", 2)
    D = as_array(D, "D", 2)
    n, k = Z.shape
    if D.shape[0] != k:
        raise ValueError(
            f"Z has {k} columns (features) but D has {D.shape[0]} rows (atoms); Z must be "
            f"(n_images, k) and D (k, d)"
        )
    if not np.isfinite(Z).all() or not np.isfinite(D).all():
        raise ValueError("Z or D contains NaN or inf values; recompute the codes with encode()")
    fc = _as_int_vector(feature_class, "feature_class", k, "feature (row of D)")
    ic = _as_int_vector(image_class, "image_class", n, "image (row of Z)")
    if (fc < -1).any() or (ic < -1).any():
        raise ValueError("classes must be >= 0, or -1 (global atom / unknown image class)")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if isinstance(head, torch.nn.Module) and head.training:
        warnings.warn(
            "head is in training mode; call head.eval() so that dropout / batch-norm do not "
            "make the gradients random or mix images",
            stacklevel=3,
        )
    return Z, D, fc, ic


def _gradient_sums(
    Z: np.ndarray,
    D: np.ndarray,
    head: Any,
    fc: np.ndarray,
    ic: np.ndarray,
    dev: torch.device,
    dtype: torch.dtype,
    batch_size: int,
    decode: Callable[[torch.Tensor], torch.Tensor] | None,
) -> torch.Tensor:
    """Per-feature sums ``(k,)`` float64 of ``z_i(x) ∂y_{class(x)}(x)/∂z_i`` over the images that count for ``i``."""
    import torch

    n, k = Z.shape
    Dt = torch.as_tensor(D, dtype=dtype, device=dev)
    fc_t = torch.as_tensor(fc, device=dev)
    is_global = fc_t < 0
    sums = torch.zeros(k, dtype=torch.float64, device=dev)
    for s in range(0, n, batch_size):
        cls = torch.as_tensor(ic[s : s + batch_size], device=dev)
        known = cls >= 0
        if not known.any():
            continue
        Zb = torch.as_tensor(Z[s : s + batch_size][known.cpu().numpy()], dtype=dtype, device=dev)
        cls = cls[known]
        Zb.requires_grad_(True)
        logits = head(Zb @ Dt if decode is None else decode(Zb))
        if logits.ndim != 2 or logits.shape[0] != Zb.shape[0]:
            raise ValueError(
                f"head must map (batch, d) to logits (batch, n_classes); got output shape "
                f"{tuple(logits.shape)}"
            )
        n_logits = logits.shape[1]
        top = max(int(cls.max()), int(fc.max()))  # every batch may bring new classes
        if top >= n_logits:
            raise ValueError(
                f"class {top} is out of range for a head with {n_logits} logits; "
                f"feature_class and image_class must index the head's outputs"
            )
        target = logits.gather(1, cls[:, None]).sum()
        (grad,) = torch.autograd.grad(target, Zb)
        contrib = Zb.detach() * grad  # (batch, k): z_i(x) ∂y_{class(x)}/∂z_i
        # Row x counts for feature i iff it is of feature i's class, or i is a global atom.
        mask = (cls[:, None] == fc_t[None, :]) | is_global[None, :]
        sums += (contrib * mask).sum(dim=0, dtype=torch.float64)
    return sums


def _class_means(
    out: np.ndarray, fc: np.ndarray, ic: np.ndarray, reduce: Callable[[np.ndarray], np.ndarray] | None
) -> np.ndarray:
    """``Γ``: the sums ``out`` over the images of each feature's class (``NaN``, with a warning, when none)."""
    known_ic = ic[ic >= 0]
    n_fc = max(int(fc.max()) + 1, 1)
    # images per feature class, and all known images (for global atoms): the same length on
    # every process, whatever classes its shard holds
    tally = np.append(np.bincount(known_ic[known_ic < n_fc], minlength=n_fc), known_ic.size).astype(np.float64)
    if reduce is not None:  # sums over the images of every process, then the mean
        out, tally = reduce(out), reduce(tally)
    counts = np.where(fc >= 0, tally[np.clip(fc, 0, n_fc - 1)], tally[-1])
    with np.errstate(invalid="ignore", divide="ignore"):
        gamma = np.where(counts > 0, out / np.where(counts > 0, counts, 1.0), np.nan)
    empty = np.flatnonzero(counts == 0)
    if empty.size:
        warnings.warn(
            f"{empty.size} features have no image of their class (e.g. features "
            f"{empty[:10].tolist()}, classes {np.unique(fc[empty])[:10].tolist()}); their "
            f"importance is NaN. Include images of those classes",
            stacklevel=3,
        )
    return gamma
