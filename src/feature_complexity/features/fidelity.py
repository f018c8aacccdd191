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
    comm: Any = None,
) -> dict[str, float | int | None]:
    """Fidelity report of a dictionary and its codes, streamed over row batches.

    Args:
        A: penultimate activations ``(n_images, d)`` (a memory map is read batch by batch).
        Z: codes ``(n_images, k)``.
        D: dictionary ``(k, d)``.
        head: maps a batch of penultimate vectors ``(batch, d)`` to logits ``(batch, n_classes)``.
            Put an ``nn.Module`` in eval mode first; it is not moved.
        labels: ``(n_images,)`` true classes, ``-1`` for unknown (ignored in the accuracies).
        batch_size: images per forward pass of the head.
        device: where to run the head; default: the head's own device (CPU for a callable).
        decode: the dictionary's decoder (``Dictionary.decode``, numpy); default ``Z @ D``.
        comm: when ``A``, ``Z``, ``labels`` are one process's shard, the communicator whose
            ``sum_array`` / ``all_gather_object`` combine the shards (same report as one process).

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
    A = as_array(A, "A", 2) if not isinstance(A, np.ndarray) else A
    Z = as_array(Z, "Z", 2) if not isinstance(Z, np.ndarray) else Z
    D = as_array(D, "D", 2).astype(np.float64)
    n, d = A.shape
    if A.ndim != 2 or Z.ndim != 2 or Z.shape[0] != n or Z.shape[1] != D.shape[0] or D.shape[1] != d:
        raise ValueError(f"shapes do not match: A {A.shape} (n_images, d), Z {Z.shape} (n_images, k), "
                         f"D {D.shape} (k, d)")
    if labels is not None:
        labels = as_array(labels, "labels", 1).astype(np.int64)
        if labels.shape != (n,):
            raise ValueError(f"labels must have shape ({n},), one per image, got {labels.shape}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    sums, ratios = _fidelity_sums(A, Z, D, head, labels, batch_size, device, decode)
    if comm is not None:
        sums = comm.sum_array(sums)
        ratios = np.concatenate(comm.all_gather_object(ratios))
    return _report(sums, ratios)


def _fidelity_sums(A: np.ndarray, Z: np.ndarray, D: np.ndarray, head: Any, labels: np.ndarray | None,
                   batch_size: int, device: Any, decode: Any) -> tuple[np.ndarray, np.ndarray]:
    """``[Σ||a||², Σ||r||², n, n_agree, n_labelled, n_correct, n_correct_reconstructed]`` and the
    per-image ``||r|| / ||a||`` of the images with ``a ≠ 0``."""
    import torch

    dev, dtype = resolve_head_device(head, device)
    sums = np.zeros(7)
    ratios = []
    with torch.no_grad():
        for s in range(0, A.shape[0], batch_size):
            a = np.asarray(A[s:s + batch_size], dtype=np.float64)
            z = np.asarray(Z[s:s + batch_size], dtype=np.float64)
            if not (np.isfinite(a).all() and np.isfinite(z).all()):
                raise ValueError("A or Z contains NaN or inf values; recompute the activations / codes")
            rec = z @ D if decode is None else np.asarray(decode(z), dtype=np.float64)
            norm_a, norm_r = np.linalg.norm(a, axis=1), np.linalg.norm(a - rec, axis=1)
            nz = norm_a > 0
            ratios.append(norm_r[nz] / norm_a[nz])
            pred_a, pred_r = (_predict(head, x, dtype, dev) for x in (a, rec))
            sums[:4] += [np.sum(norm_a**2), np.sum(norm_r**2), len(a), np.sum(pred_a == pred_r)]
            if labels is not None:
                y = labels[s:s + batch_size]
                known = y >= 0
                sums[4:] += [known.sum(), np.sum(pred_a[known] == y[known]), np.sum(pred_r[known] == y[known])]
    return sums, np.concatenate(ratios) if ratios else np.zeros(0)


def _predict(head: Any, x: np.ndarray, dtype: Any, dev: Any) -> np.ndarray:
    import torch

    from .._validation import writable

    t = torch.as_tensor(writable(x), dtype=dtype, device=dev)
    logits = head(t)
    if logits.ndim != 2 or logits.shape[0] != t.shape[0]:
        raise ValueError(f"head must map (batch, d) to logits (batch, n_classes); got output shape "
                         f"{tuple(logits.shape)} for input {tuple(t.shape)}")
    return logits.argmax(dim=1).cpu().numpy()


def _report(sums: np.ndarray, ratios: np.ndarray) -> dict[str, float | int | None]:
    norm_a2, norm_r2, n, agree, n_lab, correct, correct_r = (float(v) for v in sums)
    report: dict[str, float | int | None] = {
        "relative_error": float(np.sqrt(norm_r2 / norm_a2)) if norm_a2 > 0 else 0.0,
        "median_relative_error": float(np.median(ratios)) if ratios.size else 0.0,
        "agreement": agree / n if n else None,
        "accuracy_original": None, "accuracy_reconstructed": None, "accuracy_kept": None,
        "n_images": int(n), "n_labelled": int(n_lab),
    }
    if n_lab > 0:
        acc_a, acc_r = correct / n_lab, correct_r / n_lab
        report.update(accuracy_original=acc_a, accuracy_reconstructed=acc_r,
                      accuracy_kept=acc_r / acc_a if acc_a > 0 else None)
    return report
