"""Atomic writes and run bookkeeping shared by every stage that writes to a run folder.

Every file is written to a temporary name in its destination folder and moved into place with
``os.replace``, so an interrupted run never leaves a half-written file behind.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "atomic_path",
    "write_json",
    "read_json",
    "save_npy",
    "save_npz",
    "write_parquet",
    "save_figure",
    "package_versions",
    "jsonable",
    "save_dataclass",
    "load_dataclass",
]


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success move it onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp creates 0600 files; give the result the permissions a plain open() would
        os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def jsonable(value: Any) -> Any:
    """``value`` as JSON would return it: tuples as lists, numpy values as Python ones,
    paths as strings, non-finite floats as ``None``."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def write_json(path: str | Path, data: Any) -> None:
    """Write ``data`` as indented JSON (numpy values and paths converted), atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(jsonable(data), indent=2) + "\n")


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())


def save_npy(path: str | Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, array)


def save_npz(path: str | os.PathLike[str], **arrays: Any) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)


def write_parquet(path: str | Path, frame: "Any") -> None:
    """Write a pandas DataFrame to parquet (pyarrow), atomically."""
    with atomic_path(path) as tmp:
        frame.to_parquet(tmp, index=False)


def save_figure(path: str | Path, figure: "Any", *, dpi: int = 120) -> None:
    """Save a matplotlib Figure as PNG atomically and close it."""
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=dpi, bbox_inches="tight", format="png")
    plt.close(figure)


def package_versions() -> dict[str, str]:
    """Versions of Python and the packages whose behaviour shapes the numbers."""
    versions = {"python": sys.version.split()[0], "platform": platform.platform()}
    for name in ("feature-complexity", "numpy", "scipy", "scikit-learn", "torch", "torchvision",
                 "pandas", "pyarrow", "matplotlib", "umap-learn", "timm", "jinja2"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def save_dataclass(path: str | Path, obj: Any) -> None:
    """Write a dataclass of arrays and JSON-able values to one ``.npz``, atomically.

    Arrays, dicts of arrays and lists of arrays are stored as arrays (``allow_pickle=False``
    readable: entries ``field``, ``field::key``, ``field[i]``); every other field (numbers,
    strings, lists, dicts, ``None``) goes into one JSON entry. :func:`load_dataclass` reads it back.
    """
    import dataclasses

    arrays: dict[str, np.ndarray] = {}
    other: dict[str, Any] = {}
    kinds: dict[str, Any] = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if isinstance(value, np.ndarray):
            arrays[f.name] = value
        elif isinstance(value, dict) and value and all(isinstance(v, np.ndarray) for v in value.values()):
            arrays.update({f"{f.name}::{k}": v for k, v in value.items()})
            kinds[f.name] = ["dict", list(map(str, value))]
        elif isinstance(value, list) and value and all(isinstance(v, np.ndarray) for v in value):
            arrays.update({f"{f.name}[{i}]": v for i, v in enumerate(value)})
            kinds[f.name] = ["list", len(value)]
        else:
            other[f.name] = jsonable(value)
    save_npz(path, __fields__=np.array(json.dumps({"values": other, "kinds": kinds})), **arrays)


def load_dataclass(path: str | Path, cls: type) -> Any:
    """Read a file written by :func:`save_dataclass` into ``cls`` (fields it no longer has are
    dropped; fields the file lacks take their defaults)."""
    import dataclasses

    names = {f.name for f in dataclasses.fields(cls)}
    with np.load(path, allow_pickle=False) as f:
        meta = json.loads(str(f["__fields__"]))
        values: dict[str, Any] = dict(meta.get("values", meta))
        for name, (kind, spec) in meta.get("kinds", {}).items():
            values[name] = ({k: f[f"{name}::{k}"] for k in spec} if kind == "dict"
                            else [f[f"{name}[{i}]"] for i in range(spec)])
        values.update({k: f[k] for k in f.files if k != "__fields__" and "::" not in k and "[" not in k})
    return cls(**{k: v for k, v in values.items() if k in names})
