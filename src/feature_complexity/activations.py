"""One streaming forward pass: pooled probe-layer outputs, penultimate vectors and logits.

For every image ``x`` the pass records

- ``layers[name]``: the output of each probe layer (residual block) ``f_l(x)``, globally
  average-pooled over space, shape ``(n_images, C_l)``;
- ``penultimate``: ``A``, the head's input (or the ``penultimate`` module's pooled output),
  shape ``(n_images, d)``;
- ``logits``: the head's output, shape ``(n_images, n_classes)``;
- optionally, for the residual-flow analysis, ``skip[name]`` and ``main[name]``: the block's
  skip branch and main (residual) branch *before* their addition, pooled, ``(n_images, C_l)``.
  Pooling is linear, so ``skip + main`` is the pooled pre-activation sum of the block.

Hooks are owned by the :func:`~feature_complexity.models.hooks.capture` context manager, which always removes them. With a
``store`` folder the arrays are written to ``.npy`` memory maps as the pass goes, and an
interrupted pass resumes from the last finished batch.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch
    from torch.utils.data import Dataset

    from .models.spec import ModelSpec

__all__ = ["Activations", "extract_activations"]

_PROGRESS_FILE = "progress.json"


@dataclass
class Activations:
    """What one pass over the probe images recorded (see the module docstring for shapes).

    ``labels`` holds ``-1`` for images whose label is unknown. Arrays may be ``np.memmap``.
    """

    layers: dict[str, np.ndarray]
    penultimate: np.ndarray
    logits: np.ndarray
    labels: np.ndarray
    skip: dict[str, np.ndarray] = field(default_factory=dict)
    main: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def n_images(self) -> int:
        return int(self.penultimate.shape[0])

    @property
    def layer_names(self) -> list[str]:
        return list(self.layers)

    @property
    def predictions(self) -> np.ndarray:
        """Top-1 predicted class per image, ``(n_images,)`` int64."""
        return np.asarray(self.logits).argmax(axis=1).astype(np.int64)

    def image_classes(self, source: str = "auto") -> np.ndarray:
        """The class each image stands for, ``(n_images,)``.

        ``"label"``: the dataset label (error if any is unknown); ``"prediction"``: the model's
        top-1 prediction; ``"auto"``: the label where known, else the prediction.
        """
        labels = np.asarray(self.labels)
        if source == "prediction":
            return self.predictions
        if source == "label":
            if (labels < 0).any():
                raise ValueError(
                    f"{int((labels < 0).sum())} images have no label; use class source "
                    "'prediction' or 'auto' to group them by the model's prediction"
                )
            return labels.astype(np.int64)
        if source == "auto":
            return np.where(labels >= 0, labels, self.predictions).astype(np.int64)
        raise ValueError(f"unknown class source '{source}'; use 'label', 'prediction' or 'auto'")

    @classmethod
    def load(cls, folder: str | Path, *, mmap: bool = True) -> "Activations":
        """Read a folder written by :func:`extract_activations` with ``store=folder``."""
        folder = Path(folder)
        meta_path = folder / _PROGRESS_FILE
        if not meta_path.exists():
            raise FileNotFoundError(f"no activations in {folder} ({_PROGRESS_FILE} missing)")
        meta = json.loads(meta_path.read_text())
        if meta["done"] < meta["n_images"]:
            raise ValueError(
                f"activations in {folder} are incomplete ({meta['done']}/{meta['n_images']} "
                "images); rerun the same command to resume the pass"
            )
        mode = "r" if mmap else None

        def read(name: str) -> np.ndarray:
            return np.load(folder / f"{name}.npy", mmap_mode=mode)

        return cls(
            layers={n: read(_layer_file(n)) for n in meta["layers"]},
            penultimate=read("penultimate"),
            logits=read("logits"),
            labels=read("labels"),
            skip={n: read(_layer_file(n, "skip")) for n in meta.get("branches", [])},
            main={n: read(_layer_file(n, "main")) for n in meta.get("branches", [])},
        )


def _layer_file(name: str, kind: str | None = None) -> str:
    return f"{kind}__{name}" if kind else f"layer__{name}"


def _check_finite(name: str, value: np.ndarray, start: int) -> None:
    if not np.isfinite(value).all():
        bad = np.where(~np.isfinite(value).all(axis=tuple(range(1, value.ndim))))[0]
        raise ValueError(
            f"the model produced non-finite values (NaN or inf) at '{name}' for images "
            f"{(bad[:5] + start).tolist()}…; check the checkpoint (does it match the "
            "architecture?) and the input preprocessing (mean/std, pixel range)"
        )


def extract_activations(
    spec: "ModelSpec",
    dataset: "Dataset",
    *,
    batch_size: int = 256,
    device: str = "cpu",
    num_workers: int = 0,
    capture_branches: bool = False,
    store: str | Path | None = None,
    progress: bool = True,
) -> Activations:
    """Run the model once over ``dataset`` and record pooled activations.

    Args:
        spec: the model description; its module is put in eval mode and moved to ``device``.
        dataset: a map-style dataset of ``(image_tensor (3, H, W), label)``; label ``-1`` if unknown.
        batch_size, device, num_workers: passed to the ``DataLoader`` and the model.
        capture_branches: also record every block's skip and main branch (residual flow).
        store: a folder for ``.npy`` memory maps; an interrupted pass resumes from the last
            finished batch. ``None`` keeps everything in memory.
        progress: show a progress bar with images/s.

    Returns:
        :class:`Activations` with float32 arrays (memory maps when ``store`` is given).
    """
    import torch
    from torch.utils.data import DataLoader, Subset
    from tqdm.auto import tqdm

    n_images = len(dataset)  # type: ignore[arg-type]
    if n_images == 0:
        raise ValueError("the dataset is empty; point --data at a folder with images")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    model = spec.module.eval().to(device)

    # One probe batch fixes every array's width before anything is allocated.
    arrays: dict[str, np.ndarray] = {}
    done = 0
    store_path = Path(store) if store is not None else None
    branch_names = list(spec.branches) if capture_branches else []

    def allocate(first: dict[str, Any]) -> None:
        shapes = {_layer_file(n): v.shape[1] for n, v in first["layers"].items()}
        shapes["penultimate"] = first["penultimate"].shape[1]
        shapes["logits"] = first["logits"].shape[1]
        for n in branch_names:
            shapes[_layer_file(n, "skip")] = first["skip"][n].shape[1]
            shapes[_layer_file(n, "main")] = first["main"][n].shape[1]
        for key, width in shapes.items():
            if store_path is None:
                arrays[key] = np.zeros((n_images, width), dtype=np.float32)
            else:
                arrays[key] = np.lib.format.open_memmap(
                    store_path / f"{key}.npy", mode="w+", dtype=np.float32, shape=(n_images, width)
                )
        if store_path is None:
            arrays["labels"] = np.full(n_images, -1, dtype=np.int64)
        else:
            arrays["labels"] = np.lib.format.open_memmap(
                store_path / "labels.npy", mode="w+", dtype=np.int64, shape=(n_images,)
            )

    meta: dict[str, Any] = {
        "n_images": n_images,
        "done": 0,
        "layers": list(spec.probe_layers),
        "branches": branch_names,
        "model": spec.name,
        # the model's name does not tell two checkpoints of one architecture apart
        "weights": _weights_digest(model) if store is not None else None,
    }
    if store_path is not None:
        store_path.mkdir(parents=True, exist_ok=True)
        meta_path = store_path / _PROGRESS_FILE
        if meta_path.exists():
            previous = json.loads(meta_path.read_text())
            same = all(
                previous.get(k) == meta[k] for k in ("n_images", "layers", "branches", "model", "weights")
            )
            if same:
                done = int(previous["done"])
                for key in [_layer_file(n) for n in meta["layers"]] + ["penultimate", "logits", "labels"] + [
                    _layer_file(n, kind) for n in branch_names for kind in ("skip", "main")
                ]:
                    arrays[key] = np.load(store_path / f"{key}.npy", mmap_mode="r+")
            else:
                # a pass made with other settings is simply redone; its progress record goes
                # first, so an interruption before the new pass's first flush cannot leave it
                # vouching for arrays this pass is about to overwrite
                meta_path.unlink()

    loader_set = dataset if done == 0 else Subset(dataset, range(done, n_images))
    loader = DataLoader(
        loader_set,  # type: ignore[arg-type]
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        pin_memory=str(device).startswith("cuda"),
    )
    started = time.perf_counter()
    bar = tqdm(total=n_images, initial=done, unit="img", desc="activations", disable=not progress)
    position = done
    last_flush = time.perf_counter()
    from .models.hooks import capture

    with capture(spec, branches=capture_branches) as record, torch.inference_mode():
        for batch in loader:
            images, labels = batch[0], batch[1]
            images = images.to(device, non_blocking=True)
            model(images)
            if not arrays:
                allocate(record)
            end = position + images.shape[0]
            values = {_layer_file(n): record["layers"][n] for n in spec.probe_layers}
            values["penultimate"] = record["penultimate"]
            values["logits"] = record["logits"]
            for n in branch_names:
                values[_layer_file(n, "skip")] = record["skip"][n]
                values[_layer_file(n, "main")] = record["main"][n]
            for key, tensor in values.items():
                value = tensor.float().cpu().numpy()
                _check_finite(key.replace("layer__", ""), value, position)
                arrays[key][position:end] = value
            arrays["labels"][position:end] = np.asarray(labels, dtype=np.int64)
            position = end
            bar.update(images.shape[0])
            # Record progress at most every few seconds: the memory maps are flushed first so
            # the count never claims images that are not on disk.
            if store_path is not None and (time.perf_counter() - last_flush > 5 or end == n_images):
                _flush(arrays, store_path, meta, end)
                last_flush = time.perf_counter()
    bar.close()
    if store_path is not None:
        _flush(arrays, store_path, meta, position)
    meta["seconds"] = time.perf_counter() - started

    return Activations(
        layers={n: arrays[_layer_file(n)] for n in spec.probe_layers},
        penultimate=arrays["penultimate"],
        logits=arrays["logits"],
        labels=arrays["labels"],
        skip={n: arrays[_layer_file(n, "skip")] for n in branch_names},
        main={n: arrays[_layer_file(n, "main")] for n in branch_names},
    )


def _weights_digest(module: "torch.nn.Module") -> str:
    """SHA-256 of every parameter and buffer (names, shapes, dtypes and bytes), in key order."""
    import hashlib

    import torch

    digest = hashlib.sha256()
    for key, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{key}:{tuple(tensor.shape)}:{tensor.dtype};".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def _flush(arrays: dict[str, np.ndarray], folder: Path, meta: dict[str, Any], done: int) -> None:
    for array in arrays.values():
        if isinstance(array, np.memmap):
            array.flush()
    meta = dict(meta, done=int(done))
    tmp = folder / f".{_PROGRESS_FILE}.tmp"
    tmp.write_text(json.dumps(meta, indent=1))
    os.replace(tmp, folder / _PROGRESS_FILE)
