"""Input checks shared by the public functions that take arrays (``A``, ``Z``, ``D``, classes).

Every function accepts a numpy array, anything ``np.asarray`` takes, or a torch tensor (detached
and copied to the CPU, without importing torch), and raises ``ValueError`` with a message that
names the argument and, where given, the fix.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["as_array", "as_class_indices"]


def as_array(x: Any, name: str, ndim: int, *, expected: str | None = None, fix: str = "") -> np.ndarray:
    """``x`` as a numpy array with ``ndim`` dimensions.

    Args:
        x: a numpy array, a torch tensor or anything ``np.asarray`` takes.
        name: the argument's name for the message, e.g. ``"Z"``.
        ndim: the number of dimensions required.
        expected: how the message describes what is expected (default ``"{ndim}-D"``).
        fix: appended to the message, e.g. ``"; pool spatial maps first"``.

    Raises:
        ValueError: ``"{name} must be {expected}, got shape {shape}{fix}"``.
    """
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # a torch tensor, without importing torch
        x = x.detach().cpu().numpy()
    arr = np.asarray(x)
    if arr.ndim != ndim:
        raise ValueError(f"{name} must be {expected or f'{ndim}-D'}, got shape {arr.shape}{fix}")
    return arr


def as_class_indices(arr: np.ndarray, name: str) -> np.ndarray:
    """Class indices ``arr`` as int64; floats are accepted when they hold whole numbers.

    Raises:
        ValueError: ``arr`` holds fractions, NaN/inf, or is not numeric.
    """
    if np.issubdtype(arr.dtype, np.integer):
        return arr.astype(np.int64)
    if np.issubdtype(arr.dtype, np.floating) and np.isfinite(arr).all() and np.all(arr == np.round(arr)):
        return arr.astype(np.int64)
    raise ValueError(f"{name} must hold integer class indices, got dtype {arr.dtype}")


def writable(a: Any) -> Any:
    """``a`` itself, or a copy when it is a read-only array (a slice of a memmap opened ``"r"``):
    torch cannot wrap read-only memory and warns (once, with a source line) before copying."""
    if isinstance(a, np.ndarray) and not a.flags.writeable:
        return np.array(a)
    return a
