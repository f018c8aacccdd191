"""How faithful is the dictionary? Reconstruction error and the head's accuracy on ``Z @ D``.

Notation (docs/ARCHITECTURE.md): ``A`` penultimate activations ``(n_images, d)``, ``Z`` codes
``(n_images, k)``, ``D`` dictionary ``(k, d)``. The paper's check (paper-method.md §2.1) is that
replacing each penultimate vector ``a`` by its reconstruction ``z D`` keeps over 99% of the
model's top-1 accuracy.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from .._validation import as_array

if TYPE_CHECKING:
    import torch

__all__ = ["fidelity", "resolve_head_device"]


def resolve_head_device(
    head: Callable[[Any], Any], device: str | torch.device | None
) -> tuple[torch.device, torch.dtype]:
    """Device and dtype to feed ``head`` with.

    An ``nn.Module`` head is never moved (it belongs to the caller): when ``device`` is ``None``
    its parameters' device and dtype are used; a plain callable gets CPU / float32.

    Raises:
        ValueError: ``device`` is not where the head's parameters are (torch would fail later
            with a device-mismatch error from inside the head).
    """
    import torch

    params = list(head.parameters()) if isinstance(head, torch.nn.Module) else []
    if device is None:
        dev = params[0].device if params else torch.device("cpu")
    else:
        dev = torch.device(device)
        have = params[0].device if params else None
        if have is not None and (
            have.type != dev.type or (dev.index is not None and have.index is not None and have.index != dev.index)
        ):
            raise ValueError(
                f"device={str(device)!r} but the head's parameters are on {have}; move the model "
                f"there first (model.to({str(device)!r})) or pass device=None to use the head's device"
            )
    dtype = params[0].dtype if params and params[0].is_floating_point() else torch.float32
    return dev, dtype


def fidelity(
    A: np.ndarray,
    Z: np.ndarray,
    D: np.ndarray,
    head: Callable[[torch.Tensor], torch.Tensor] | torch.nn.Module,
    *,
    labels: np.ndarray | None = None,
    batch_size: int = 4096,
    device: str | torch.device | None = None,
    decode: Callable[[np.ndarray], np.ndarray] | None = None,
) -> dict[str, float | int | None]:
    """Fidelity report of a dictionary and its codes.

    Args:
        A: penultimate activations ``(n_images, d)``.
        Z: codes ``(n_images, k)``.
        D: dictionary ``(k, d)``.
        head: maps a batch of penultimate vectors ``(batch, d)`` to logits ``(batch, n_classes)``.
            Put an ``nn.Module`` in eval mode first; it is not moved.
        labels: ``(n_images,)`` true classes, ``-1`` for unknown (ignored in the accuracies).
        batch_size: images per forward pass of the head.
        device: where to run the head; default: the head's own device (CPU for a callable).
        decode: the dictionary's decoder (``Dictionary.decode``, numpy); default ``Z @ D``.

    Returns:
        JSON-able dict:
        ``relative_error`` ``||A − Z D||_F / ||A||_F``;
        ``median_relative_error`` median over images of ``||a − z D|| / ||a||`` (images with
        ``a = 0`` left out);
        ``agreement`` fraction of images where ``argmax head(Z D) == argmax head(A)``;
        ``accuracy_original``, ``accuracy_reconstructed`` top-1 against ``labels`` and
        ``accuracy_kept`` = their ratio (``None`` without labels);
        ``n_images``, ``n_labelled``.
    """
    import torch

    A = as_array(A, "A", 2).astype(np.float64)
    Z = as_array(Z, "Z", 2).astype(np.float64)
    D = as_array(D, "D", 2).astype(np.float64)
    n, d = A.shape
    if Z.shape[0] != n or Z.shape[1] != D.shape[0] or D.shape[1] != d:
        raise ValueError(
            f"shapes do not match: A {A.shape} (n_images, d), Z {Z.shape} (n_images, k), "
            f"D {D.shape} (k, d)"
        )
    if labels is not None:
        labels = as_array(labels, "labels", 1).astype(np.int64)
        if labels.shape != (n,):
            raise ValueError(f"labels must have shape ({n},), one per image, got {labels.shape}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")

    R = A - (Z @ D if decode is None else np.asarray(decode(Z), dtype=np.float64))
    norm_a = np.linalg.norm(A, axis=1)
    norm_r = np.linalg.norm(R, axis=1)
    total = float(np.sqrt(np.sum(norm_a**2)))
    rel = float(np.sqrt(np.sum(norm_r**2)) / total) if total > 0 else 0.0
    nz = norm_a > 0
    med = float(np.median(norm_r[nz] / norm_a[nz])) if nz.any() else 0.0

    dev, dtype = resolve_head_device(head, device)
    pred_a = np.empty(n, dtype=np.int64)
    pred_r = np.empty(n, dtype=np.int64)
    with torch.no_grad():
        for s in range(0, n, batch_size):
            for src, out in ((A, pred_a), (A - R, pred_r)):
                x = torch.as_tensor(src[s : s + batch_size], dtype=dtype, device=dev)
                logits = head(x)
                if logits.ndim != 2 or logits.shape[0] != x.shape[0]:
                    raise ValueError(
                        f"head must map (batch, d) to logits (batch, n_classes); got output "
                        f"shape {tuple(logits.shape)} for input {tuple(x.shape)}"
                    )
                out[s : s + batch_size] = logits.argmax(dim=1).cpu().numpy()

    report: dict[str, float | int | None] = {
        "relative_error": rel,
        "median_relative_error": med,
        "agreement": float(np.mean(pred_a == pred_r)) if n else None,
        "accuracy_original": None,
        "accuracy_reconstructed": None,
        "accuracy_kept": None,
        "n_images": int(n),
        "n_labelled": 0,
    }
    if labels is not None:
        known = labels >= 0
        report["n_labelled"] = int(known.sum())
        if known.any():
            acc_a = float(np.mean(pred_a[known] == labels[known]))
            acc_r = float(np.mean(pred_r[known] == labels[known]))
            report["accuracy_original"] = acc_a
            report["accuracy_reconstructed"] = acc_r
            report["accuracy_kept"] = acc_r / acc_a if acc_a > 0 else None
    return report
