"""One streaming forward pass: pooled probe-layer outputs, penultimate vectors and logits.

For every image ``x`` the pass records

- ``layers[name]``: the output of each probe point (the residual stream after a block)
  ``f_l(x)``, pooled over space or tokens, shape ``(n_images, C_l)``;
- ``penultimate``: ``A``, the head's input (or the ``penultimate`` module's pooled output),
  shape ``(n_images, d)``;
- ``logits``: the head's output, shape ``(n_images, n_classes)`` (``None`` for a model without a
  classification head);
- optionally, for the residual-flow analysis, ``skip[unit]`` and ``main[unit]``: the two inputs of
  every residual addition *before* the addition, pooled, ``(n_images, C_l)``. Pooling is linear,
  so ``skip + main`` is the pooled sum.

Hooks are owned by :func:`~feature_complexity.models.hooks.capture`. With a ``store`` folder the
arrays go to a :class:`~feature_complexity.store.RowStore` as the pass goes: an interrupted pass
resumes from its finished chunks, with any number of processes (each takes its share of the
chunks), and no process holds more than one batch in memory.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .distributed import Comm, SingleProcess
from .store import RowStore

if TYPE_CHECKING:
    import torch
    from torch.utils.data import Dataset

    from .models.spec import ModelSpec

__all__ = ["Activations", "extract_activations", "resolve_classes"]


def resolve_classes(labels: np.ndarray, logits: np.ndarray | None, source: str = "auto") -> np.ndarray:
    """The class each image stands for, ``(n_images,)`` int64.

    ``"label"``: the dataset label (error if any is unknown); ``"prediction"``: the model's top-1
    prediction; ``"auto"``: the label where known, else the prediction.
    """
    labels = np.asarray(labels)
    if source not in ("auto", "label", "prediction"):
        raise ValueError(f"unknown class source '{source}'; use 'label', 'prediction' or 'auto'")
    if source == "label" or logits is None:
        if (labels < 0).any():
            why = "the model has no classification head to predict them" if logits is None else \
                "use --class-source prediction or auto to group them by the model's prediction"
            raise ValueError(f"{int((labels < 0).sum())} images have no label; {why}")
        return labels.astype(np.int64)
    predictions = np.asarray(logits).argmax(axis=1).astype(np.int64)
    if source == "prediction":
        return predictions
    return np.where(labels >= 0, labels, predictions).astype(np.int64)


@dataclass
class Activations:
    """What one pass over the probe images recorded (see the module docstring for shapes).

    ``labels`` holds ``-1`` for images whose label is unknown. Arrays may be ``np.memmap``.
    """

    layers: dict[str, np.ndarray]
    penultimate: np.ndarray
    logits: np.ndarray | None
    labels: np.ndarray
    skip: dict[str, np.ndarray] = field(default_factory=dict)
    main: dict[str, np.ndarray] = field(default_factory=dict)
    unit_blocks: dict[str, str] = field(default_factory=dict)

    @property
    def n_images(self) -> int:
        return int(self.penultimate.shape[0])

    @property
    def layer_names(self) -> list[str]:
        return list(self.layers)

    @property
    def predictions(self) -> np.ndarray:
        """Top-1 predicted class per image, ``(n_images,)`` int64."""
        if self.logits is None:
            raise ValueError("the model has no classification head: there are no predictions")
        return np.asarray(self.logits).argmax(axis=1).astype(np.int64)

    def image_classes(self, source: str = "auto") -> np.ndarray:
        """See :func:`resolve_classes`."""
        return resolve_classes(self.labels, self.logits, source)

    @classmethod
    def load(cls, folder: str | Path) -> "Activations":
        """Read a finished pass written by :func:`extract_activations` with ``store=folder``."""
        store = RowStore(folder)
        layout = store.layout()
        if layout is None:
            raise FileNotFoundError(f"no activations in {folder} (layout.json missing)")
        if not store.complete():
            raise ValueError(f"activations in {folder} are incomplete ({len(store.done())}/{store.n_chunks()} "
                             "chunks); rerun the same command to resume the pass")
        return cls._from_arrays(store.open("r"), layout["meta"])

    @classmethod
    def _from_arrays(cls, arrays: Mapping[str, np.ndarray], meta: dict[str, Any]) -> "Activations":
        return cls(layers={n: arrays[_name("layer", n)] for n in meta["layers"]},
                   penultimate=arrays["penultimate"], logits=arrays.get("logits"), labels=arrays["labels"],
                   skip={n: arrays[_name("skip", n)] for n in meta["branches"]},
                   main={n: arrays[_name("main", n)] for n in meta["branches"]},
                   unit_blocks=dict(meta.get("unit_blocks", {})))


def _name(kind: str, name: str) -> str:
    return f"{kind}__{name}"


def _check_finite(name: str, value: np.ndarray, start: int) -> None:
    if not np.isfinite(value).all():
        bad = np.where(~np.isfinite(value).all(axis=tuple(range(1, value.ndim))))[0]
        raise ValueError(
            f"the model produced non-finite values (NaN or inf) at '{name}' for images "
            f"{(bad[:5] + start).tolist()}…; check the checkpoint (does it match the architecture?) and "
            "the input preprocessing (mean/std, pixel range)")


def _batch_values(record: dict[str, Any], spec: "ModelSpec", units: list[str]) -> dict[str, Any]:
    """The pooled tensors of one forward pass, keyed by array name."""
    values = {_name("layer", n): record["layers"][n] for n in spec.probe_layers}
    values["penultimate"] = record["penultimate"]
    if record.get("logits") is not None:
        values["logits"] = record["logits"]
    for n in units:
        values[_name("skip", n)] = record["skip"][n]
        values[_name("main", n)] = record["main"][n]
    return values


def _first_forward(spec: "ModelSpec", dataset: "Dataset", device: str, branches: bool) -> dict[str, tuple[int, str]]:
    """Run one image to learn every array's width: ``{array: (width, dtype)}``."""
    import torch

    from .models.hooks import capture

    x = dataset[0][0][None].to(device)
    with capture(spec, branches=branches) as record, torch.inference_mode():
        spec.module(x)
    units = list(spec.branches) if branches else []
    widths = {k: (int(v.shape[1]), "float32") for k, v in _batch_values(record, spec, units).items()}
    widths["labels"] = (0, "int64")
    return widths


def extract_activations(
    spec: "ModelSpec",
    dataset: "Dataset",
    *,
    batch_size: int = 256,
    device: str = "cpu",
    num_workers: int = 0,
    capture_branches: bool = False,
    store: str | Path | None = None,
    comm: Comm | None = None,
    progress: bool = True,
) -> Activations:
    """Run the model once over ``dataset`` and record pooled activations.

    Args:
        spec: the model description; its module is put in eval mode and moved to ``device``.
        dataset: a map-style dataset of ``(image_tensor (3, H, W), label)``; label ``-1`` if unknown.
        batch_size, device, num_workers: passed to the ``DataLoader`` and the model.
        capture_branches: also record every residual addition's skip and main input (flow).
        store: a folder for a :class:`~feature_complexity.store.RowStore`; an interrupted pass
            resumes from its finished chunks. ``None`` keeps everything in memory.
        comm: the processes sharing the pass (each runs its chunks); default one process.
        progress: show a progress bar with images/s.

    Returns:
        :class:`Activations` with float32 arrays (memory maps when ``store`` is given).
    """
    n_images = len(dataset)  # type: ignore[arg-type]
    if n_images == 0:
        raise ValueError("the dataset is empty; point --data at a folder with images")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    comm = comm or SingleProcess()
    spec.module.eval().to(device)
    units = list(spec.branches) if capture_branches else []
    # which block each residual addition belongs to (a transformer block has two)
    blocks = {u: spec.unit_block(u) if hasattr(spec, "unit_block") else u for u in units}
    meta = {"layers": list(spec.probe_layers), "branches": units, "unit_blocks": blocks, "model": spec.name,
            # two checkpoints of one architecture share every name: a store is resumed only by
            # the weights that began it (the stage loop's keys say the same for run folders)
            "weights": weights_digest(spec.module) if store is not None else None}
    widths = _first_forward(spec, dataset, device, capture_branches)
    if store is None:
        arrays: Mapping[str, np.ndarray]
        arrays = {k: np.zeros((n_images, w) if w else (n_images,), dtype=t) for k, (w, t) in widths.items()}
        _pass(spec, dataset, arrays, [(0, n_images)], None, units, batch_size, device, num_workers, progress)
        return Activations._from_arrays(arrays, meta)
    rows = RowStore(store)
    if comm.is_main:
        rows.allocate(n_images, widths, meta=meta)
    comm.barrier()
    chunks = rows.todo(comm.rank, comm.world)
    arrays = rows.open("r+")
    _pass(spec, dataset, arrays, [rows.chunk_rows(i) for i in chunks], (rows, chunks), units, batch_size,
          device, num_workers, progress and comm.is_main)
    del arrays
    comm.barrier()
    return Activations.load(store)


def _pass(spec: "ModelSpec", dataset: "Dataset", arrays: Mapping[str, np.ndarray], ranges: list[tuple[int, int]],
          marks: tuple[RowStore, list[int]] | None, units: list[str], batch_size: int, device: str,
          num_workers: int, progress: bool) -> None:
    """Forward the images of ``ranges`` and write their rows; mark each chunk done as it ends."""
    import torch
    from torch.utils.data import DataLoader, Subset
    from tqdm.auto import tqdm

    from .models.hooks import capture

    order = [i for a, b in ranges for i in range(a, b)]
    if not order:
        return
    loader = DataLoader(Subset(dataset, order), batch_size=batch_size, shuffle=False,  # type: ignore[arg-type]
                        num_workers=num_workers, pin_memory=str(device).startswith("cuda"))
    ends = np.cumsum([b - a for a, b in ranges])
    bar = tqdm(total=len(dataset), initial=len(dataset) - len(order), unit="img", desc="activations",  # type: ignore[arg-type]
               disable=not progress, mininterval=1.0)
    written, next_chunk = 0, 0
    writable = [a for a in arrays.values() if isinstance(a, np.memmap)]
    # the bar is closed whatever happens: an error then prints on a line of its own
    with bar, capture(spec, branches=bool(units)) as record, torch.inference_mode():
        for images, labels in loader:
            spec.module(images.to(device, non_blocking=True))
            idx = np.asarray(order[written:written + len(labels)])
            for key, tensor in _batch_values(record, spec, units).items():
                value = tensor.float().cpu().numpy()
                _check_finite(key.split("__")[-1], value, int(idx[0]))
                arrays[key][idx] = value
            arrays["labels"][idx] = np.asarray(labels, dtype=np.int64)
            written += len(labels)
            bar.update(len(labels))
            while marks is not None and next_chunk < len(ends) and written >= ends[next_chunk]:
                marks[0].mark_done(marks[1][next_chunk], writable)
                next_chunk += 1


def weights_digest(module: "torch.nn.Module") -> str:
    """SHA-256 of every parameter and buffer (names, shapes, dtypes and bytes), in key order."""
    import hashlib

    import torch

    digest = hashlib.sha256()
    for key, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{key}:{tuple(tensor.shape)}:{tensor.dtype};".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]

