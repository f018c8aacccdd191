"""Fingerprints of what a run reads: images, weights, checkpoint files.

A stage's key includes the fingerprints of its inputs (:mod:`feature_complexity.stages`), so a
run folder never hands on results computed from other inputs: replaced images, a retrained
checkpoint at the same path, another subset. What is fingerprinted:

- an image folder: every file's relative path, size and modification time, plus the content
  hash of a sample of files (so an edit that keeps size and time is caught on the sampled files);
- images in memory (CIFAR through torchvision, generated data): a hash of all pixels and labels;
- any other dataset: its length and a hash of a sample of its items;
- a model: a hash of every parameter and buffer (names, shapes, dtypes, bytes);
- a checkpoint file: its size, time and content hash.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["digest_of", "files_fingerprint", "array_fingerprint", "dataset_fingerprint", "file_fingerprint",
           "SAMPLE_FILES"]

#: files of an image folder whose content is hashed (evenly spaced over the sorted list)
SAMPLE_FILES = 64


def digest_of(material: Any) -> str:
    """A short SHA-256 of a JSON-able value."""
    return hashlib.sha256(json.dumps(material, sort_keys=True, default=str).encode()).hexdigest()[:20]


def _file_hash(path: str | Path, block: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(block):
            h.update(chunk)
    return h.hexdigest()


def files_fingerprint(paths: list[str], root: str | Path | None = None) -> str:
    """Paths (relative to ``root``), sizes and modification times of every file, and the content
    hash of :data:`SAMPLE_FILES` of them."""
    h = hashlib.sha256()
    for p in paths:
        st = os.stat(p)
        rel = os.path.relpath(p, root) if root is not None else p
        h.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    picks: np.ndarray | list[int]
    picks = np.unique(np.linspace(0, len(paths) - 1, min(SAMPLE_FILES, len(paths))).astype(int)) if paths else []
    for i in picks:
        h.update(_file_hash(paths[int(i)]).encode())
    return h.hexdigest()[:20]


def array_fingerprint(*arrays: np.ndarray) -> str:
    """Hash of the bytes, shapes and dtypes of ``arrays``."""
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.shape}{a.dtype}".encode())
        h.update(memoryview(a).cast("B"))  # type: ignore[arg-type]  # numpy stubs: ndarray is a Buffer only on py>=3.12
    return h.hexdigest()[:20]


def dataset_fingerprint(dataset: Any, *, n_sample: int = 16) -> str:
    """``dataset.fingerprint()`` when it has one (:class:`~feature_complexity.data.ImageSource`),
    else its length and a hash of ``n_sample`` items spread over it."""
    own = getattr(dataset, "fingerprint", None)
    if callable(own):
        return str(own())
    n = len(dataset)
    h = hashlib.sha256(f"{type(dataset).__name__}:{n}".encode())
    for i in np.unique(np.linspace(0, n - 1, min(n_sample, n)).astype(int)) if n else []:
        x, y = dataset[int(i)][:2]
        x = x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)
        h.update(array_fingerprint(np.asarray(x), np.asarray(y)).encode())
    return h.hexdigest()[:20]


def file_fingerprint(path: str | Path) -> str:
    """Size, modification time and content hash of one file (e.g. a checkpoint)."""
    st = os.stat(path)
    return digest_of([st.st_size, st.st_mtime_ns, _file_hash(path)])
