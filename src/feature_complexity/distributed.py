"""Processes working on one run: the communicator the stages use (after ``torch.distributed``).

A statistic that is a sum over images is computed per shard and summed with
:meth:`Comm.all_reduce_`, so one process and many give the same numbers. :func:`current` returns
the communicator of this process: a single-process one unless the process was started by
``torchrun`` (``WORLD_SIZE > 1``), in which case ``torch.distributed`` is initialised with the
backend the environment calls for (``nccl`` with CUDA devices, else ``gloo``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

__all__ = ["Comm", "SingleProcess", "TorchComm", "current", "shard_rows"]


class Comm:
    """What a stage may ask of the other processes. All methods are collective: every rank calls
    them in the same order."""

    rank: int = 0
    world: int = 1

    @property
    def is_main(self) -> bool:
        """Rank 0 writes the manifest, the tables and the report."""
        return self.rank == 0

    def barrier(self) -> None:
        """Wait until every rank gets here."""

    def all_reduce_(self, tensors: Sequence["torch.Tensor"]) -> None:
        """Sum each tensor over the ranks, in place."""

    def broadcast_object(self, obj: Any, src: int = 0) -> Any:
        """``obj`` of rank ``src`` on every rank."""
        return obj

    def all_gather_object(self, obj: Any) -> list[Any]:
        """``[obj of rank 0, obj of rank 1, …]`` on every rank."""
        return [obj]

    def sum_array(self, a: np.ndarray) -> np.ndarray:
        """A numpy array summed over the ranks (float64 for floats)."""
        return a


class SingleProcess(Comm):
    """One process: every collective is the identity."""


class TorchComm(Comm):
    """``torch.distributed`` (already initialised) as a :class:`Comm`."""

    def __init__(self) -> None:
        import torch.distributed as dist

        self._dist = dist
        self.rank = dist.get_rank()
        self.world = dist.get_world_size()
        # NCCL reduces CUDA tensors only; gloo CPU tensors
        self._device = "cuda" if dist.get_backend() == "nccl" else "cpu"

    def barrier(self) -> None:
        self._dist.barrier()

    def all_reduce_(self, tensors: Sequence["torch.Tensor"]) -> None:
        for t in tensors:
            if str(t.device).split(":")[0] == self._device:
                self._dist.all_reduce(t)
            else:  # reduce on the backend's device, then copy back
                tmp = t.to(self._device)
                self._dist.all_reduce(tmp)
                t.copy_(tmp.to(t.device))

    def broadcast_object(self, obj: Any, src: int = 0) -> Any:
        box = [obj]
        self._dist.broadcast_object_list(box, src=src)
        return box[0]

    def all_gather_object(self, obj: Any) -> list[Any]:
        out: list[Any] = [None] * self.world
        self._dist.all_gather_object(out, obj)
        return out

    def sum_array(self, a: np.ndarray) -> np.ndarray:
        import torch

        t = torch.as_tensor(np.asarray(a, dtype=np.float64 if np.issubdtype(a.dtype, np.floating) else a.dtype))
        self.all_reduce_([t])
        return t.numpy()


_CURRENT: Comm | None = None


def current() -> Comm:
    """This process's communicator (initialising ``torch.distributed`` under ``torchrun``)."""
    global _CURRENT
    if _CURRENT is None:
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            import torch
            import torch.distributed as dist

            if not dist.is_initialized():
                backend = "nccl" if torch.cuda.is_available() else "gloo"
                if backend == "nccl":
                    torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
                dist.init_process_group(backend)
            _CURRENT = TorchComm()
        else:
            _CURRENT = SingleProcess()
    return _CURRENT


def shard_rows(n_chunks: int, comm: Comm) -> list[int]:
    """The chunk indices this rank handles: ``rank, rank + world, …`` (any world size splits the
    same chunks, so a run resumed with another number of processes skips the finished ones)."""
    return list(range(comm.rank, n_chunks, comm.world))
