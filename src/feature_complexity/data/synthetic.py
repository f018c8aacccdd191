"""Synthetic activations with per-class structure, at any shape (ImageNet's included).

For benchmarks and tests of the stages after the forward pass (dictionary, codes, complexity)
without a model or images. The generator mimics what a ResNet's penultimate layer looks like to
those stages: non-negative vectors, a per-class mixture of a few class-specific directions plus
directions shared across classes, sparse-ish after a ReLU; and probe layers that see a noisy,
progressively more linear view of the same latent factors.

Everything is a pure function of its seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["ClassStructured", "class_structured", "per_class_atoms", "probe_layers", "RESNET50_WIDTHS"]

#: channel widths of ResNet-50's 16 bottleneck blocks, forward order
RESNET50_WIDTHS: tuple[int, ...] = (256,) * 3 + (512,) * 4 + (1024,) * 6 + (2048,) * 3


@dataclass
class ClassStructured:
    """Activations ``A (n, d)`` (float32, ≥ 0), their classes ``(n,)`` and the latent factors
    ``U (n, r)`` that generated them (for planted probe targets)."""

    A: np.ndarray
    classes: np.ndarray
    latent: np.ndarray


def _prototypes(rng: np.random.Generator, n_classes: int, d: int, n_shared: int) -> tuple[np.ndarray, np.ndarray]:
    # class directions: sparse non-negative vectors (about 15 % active units each)
    proto = np.maximum(rng.standard_normal((n_classes, d)) - 1.0, 0).astype(np.float32)
    shared = np.maximum(rng.standard_normal((n_shared, d)) - 1.0, 0).astype(np.float32)
    return proto, shared


def per_class_atoms(n_classes: int = 1000, d: int = 2048, atoms_per_class: int = 10, *, seed: int = 0,
                    n_shared: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """A dictionary shaped like the paper's: ``D (n_classes * r, d)`` float32 ≥ 0 and the class of
    each atom ``(k,)``. Each class's atoms are its direction, perturbed, plus a little of the shared
    directions, so atoms of different classes overlap (as NMF atoms of a real network do)."""
    rng = np.random.default_rng(seed)
    proto, shared = _prototypes(rng, n_classes, d, n_shared)
    mix = rng.uniform(0, 0.3, size=(n_classes, atoms_per_class, n_shared)).astype(np.float32)
    noise = np.maximum(rng.standard_normal((n_classes, atoms_per_class, d)).astype(np.float32) - 1.5, 0)
    D = proto[:, None, :] * rng.uniform(0.5, 1.5, size=(n_classes, atoms_per_class, 1)).astype(np.float32)
    D = D + mix @ shared + noise
    return D.reshape(n_classes * atoms_per_class, d), np.repeat(np.arange(n_classes), atoms_per_class)


def class_structured(n_per_class: int, n_classes: int = 1000, d: int = 2048, *, seed: int = 0,
                     n_shared: int = 32, spatial: int = 1) -> ClassStructured:
    """Penultimate-like activations: ``n_per_class`` images of each class (``spatial`` positions per
    image, e.g. 49 for a 7×7 map; rows of one image are consecutive).

    Each row is ``relu(s_c * proto_c + shared @ u + noise)`` with ``u`` a non-negative latent
    mixture of the shared directions.
    """
    rng = np.random.default_rng(seed)
    proto, shared = _prototypes(rng, n_classes, d, n_shared)
    n = n_per_class * n_classes * spatial
    classes = np.repeat(np.arange(n_classes), n_per_class * spatial)
    latent = rng.gamma(0.5, 1.0, size=(n, n_shared)).astype(np.float32)
    A = np.empty((n, d), dtype=np.float32)
    step = 8192
    for s in range(0, n, step):  # chunks: bounded temporary memory at ImageNet shape
        e = min(s + step, n)
        scale = rng.uniform(0.5, 1.5, size=(e - s, 1)).astype(np.float32)
        block = scale * proto[classes[s:e]] + latent[s:e] @ shared
        block += 0.3 * rng.standard_normal((e - s, d)).astype(np.float32)
        A[s:e] = np.maximum(block, 0)
    return ClassStructured(A=A, classes=classes, latent=latent)


def probe_layers(latent: np.ndarray, widths: tuple[int, ...] = RESNET50_WIDTHS, *, seed: int = 0,
                 dtype: type = np.float32) -> dict[str, np.ndarray]:
    """Pooled block outputs ``{"block{i}": (n, C_i)}`` seeing the latent factors through random
    ReLU features, with noise that shrinks with depth (later blocks decode more)."""
    rng = np.random.default_rng(seed)
    n, r = latent.shape
    out = {}
    for i, width in enumerate(widths):
        W = rng.standard_normal((r, width)).astype(np.float32) / np.sqrt(r)
        noise = 1.5 * (1 - i / max(1, len(widths) - 1)) + 0.2
        X = latent @ W + noise * rng.standard_normal((n, width)).astype(np.float32)
        out[f"block{i}"] = np.maximum(X, 0).astype(dtype)
    return out
