"""Row-chunked arrays on disk: what a streaming pass over images writes (activations, codes).

A :class:`RowStore` is a folder of raw C-order arrays with one row per image, written chunk by
chunk (``chunk`` rows) and read back as ``np.memmap``:

    <folder>/layout.json        n_rows, chunk, {array: [width, dtype]}, and the caller's meta
    <folder>/<array>.npy        (n_rows, width), a standard .npy file (``np.load(path, mmap_mode="r")``)
                                with a 4 KiB header, preallocated in full before the first write
    <folder>/done/<chunk>       one empty marker per finished chunk, written after its rows are flushed

Why this shape:

- **Resume with any number of processes**: a chunk is done or not, whoever wrote it; every
  process takes the chunks ``rank, rank + world, …`` that are not done (:meth:`todo`).
- **Disjoint writes**: with ``chunk`` a multiple of 1024 rows and 4- or 8-byte values, every
  chunk starts on a page boundary (the header is padded to one 4 KiB page), so processes on
  different nodes never write the same page of a shared file.
- **A full disk is an error, not a bus error**: the files are reserved with ``posix_fallocate``
  before anything is written (a memory map written into an unreserved sparse file dies with
  SIGBUS when the disk fills), and a shortfall is a clear ``ValueError`` that leaves the store
  resumable.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np

from .io import write_json

__all__ = ["RowStore", "DiskFullError", "check_free_space"]

_PAGE_ROWS = 1024
_HEADER = 4096  # one page: the data of every chunk then starts on a page boundary


def _npy_header(shape: tuple[int, ...], dtype: np.dtype) -> bytes:
    """A version-1.0 ``.npy`` header padded to exactly :data:`_HEADER` bytes."""
    meta = repr({"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": shape})
    body = meta.encode("latin1")
    pad = _HEADER - 10 - len(body) - 1
    return b"\x93NUMPY\x01\x00" + (_HEADER - 10).to_bytes(2, "little") + body + b" " * pad + b"\n"


class DiskFullError(ValueError):
    """Not enough free disk space for what a stage must write."""


def _human(n_bytes: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n_bytes < 1024 or unit == "TB":
            return f"{n_bytes:.1f} {unit}" if unit != "B" else f"{int(n_bytes)} B"
        n_bytes /= 1024
    return f"{n_bytes:.1f} TB"


def check_free_space(folder: Path, n_bytes: int, what: str) -> None:
    """Raise :class:`DiskFullError` when ``folder``'s file system has less than ``n_bytes`` free."""
    folder.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(folder).free
    if free < n_bytes:
        raise DiskFullError(f"not enough free disk space for {what} in {folder}: {_human(n_bytes)} needed, "
                            f"{_human(free)} free; free some space or choose another --out (finished "
                            "work is kept: rerun the same command to resume)")


class RowStore:
    """Arrays of ``n_rows`` rows written chunk by chunk (see the module docstring).

    Args:
        folder: the store's folder.
    """

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)

    # ------------------------------------------------------------------ layout
    @property
    def layout_path(self) -> Path:
        return self.folder / "layout.json"

    def layout(self) -> dict[str, Any] | None:
        """The stored layout, or ``None`` when the store was never allocated."""
        if not self.layout_path.exists():
            return None
        return dict(json.loads(self.layout_path.read_text()))

    def allocate(self, n_rows: int, arrays: Mapping[str, tuple[int, str]], *, chunk: int = _PAGE_ROWS,
                 meta: Mapping[str, Any] | None = None) -> None:
        """Create (or keep, when identical) the files for ``arrays`` ``{name: (width, dtype)}``;
        width 0 means a 1-D array ``(n_rows,)``.

        An existing store with another layout is wiped first: its chunks belong to other inputs.

        Raises:
            DiskFullError: the files do not fit on the disk (nothing is left half-reserved).
        """
        if chunk % _PAGE_ROWS:
            raise ValueError(f"chunk must be a multiple of {_PAGE_ROWS} rows (page-aligned writes), got {chunk}")
        layout = {"n_rows": int(n_rows), "chunk": int(chunk),
                  "arrays": {k: [int(w), str(np.dtype(t))] for k, (w, t) in arrays.items()},
                  "meta": dict(meta or {})}
        if self.layout() == json.loads(json.dumps(layout)):
            return
        self.clear()
        self.folder.mkdir(parents=True, exist_ok=True)
        need = sum(n_rows * max(w, 1) * np.dtype(t).itemsize for w, t in arrays.values())
        check_free_space(self.folder, need, f"{len(arrays)} arrays of {n_rows} rows")
        try:
            for name, (width, dtype) in arrays.items():
                shape = (n_rows, width) if width else (n_rows,)
                with open(self.folder / f"{name}.npy", "wb") as fh:
                    fh.write(_npy_header(shape, np.dtype(dtype)))
                    os.posix_fallocate(fh.fileno(), _HEADER, n_rows * max(width, 1) * np.dtype(dtype).itemsize)
        except OSError as err:
            self.clear()
            if err.errno in (errno.ENOSPC, errno.EDQUOT):
                raise DiskFullError(f"the disk filled while reserving {_human(need)} in {self.folder}; free "
                                    "some space or choose another --out") from None
            raise
        (self.folder / "done").mkdir()
        write_json(self.layout_path, layout)

    def clear(self) -> None:
        """Remove the store's own files (the layout first, so a half-cleared store is never trusted)."""
        self.layout_path.unlink(missing_ok=True)
        if self.folder.is_dir():
            for f in self.folder.glob("*.npy"):
                f.unlink()
            shutil.rmtree(self.folder / "done", ignore_errors=True)

    # ------------------------------------------------------------------ chunks
    def n_chunks(self) -> int:
        layout = self._require()
        return -(-layout["n_rows"] // layout["chunk"])

    def chunk_rows(self, i: int) -> tuple[int, int]:
        """``[start, stop)`` of chunk ``i``."""
        layout = self._require()
        start = i * layout["chunk"]
        return start, min(start + layout["chunk"], layout["n_rows"])

    def done(self) -> set[int]:
        """Indices of the finished chunks."""
        folder = self.folder / "done"
        return {int(p.name) for p in folder.iterdir() if p.name.isdigit()} if folder.is_dir() else set()

    def todo(self, rank: int = 0, world: int = 1) -> list[int]:
        """The unfinished chunks of this process: ``rank, rank + world, …`` not yet done."""
        done = self.done()
        return [i for i in range(rank, self.n_chunks(), world) if i not in done]

    def complete(self) -> bool:
        return self.layout() is not None and len(self.done()) == self.n_chunks()

    def mark_done(self, i: int, arrays: Iterable[np.memmap]) -> None:
        """Flush ``arrays`` (the writable maps) and mark chunk ``i`` finished."""
        for a in arrays:
            a.flush()
        (self.folder / "done" / f"{i:06d}").touch()

    # ------------------------------------------------------------------ access
    def open(self, mode: Literal["r", "r+", "w+", "c"] = "r") -> dict[str, np.memmap]:
        """Every array as a memory map ``(n_rows, width)`` (``mode="r+"`` to write)."""
        layout = self._require()
        n = layout["n_rows"]
        return {name: np.memmap(self.folder / f"{name}.npy", dtype=np.dtype(dtype), mode=mode, offset=_HEADER,
                                shape=(n, width) if width else (n,))
                for name, (width, dtype) in layout["arrays"].items()}

    def _require(self) -> dict[str, Any]:
        layout = self.layout()
        if layout is None:
            raise FileNotFoundError(f"no row store in {self.folder} (layout.json missing)")
        return layout
