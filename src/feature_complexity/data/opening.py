"""The CLI's ``--data`` value, and a recorded source description, as an :class:`ImageSource`.

Kept apart from :mod:`.sources` (the source types) and :mod:`.trifeature` (the generated set),
which both depend on nothing here: the dispatch is the one place that knows every kind.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .sources import TORCHVISION_DATASETS, ImageSource, image_folder, torchvision_dataset
from .trifeature import trifeature

__all__ = ["open_source", "load_source"]

_ACCEPTED = (
    "an ImageFolder directory (<root>/<class>/<image>.jpg), 'cifar10' or 'cifar100' "
    "(torchvision, with --data-root and optionally --download), or 'trifeature' (generated)"
)


def open_source(
    spec: str | os.PathLike,
    *,
    input_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    seed: int = 0,
    data_root: str | os.PathLike | None = None,
    download: bool = False,
    train: bool = False,
    n_images: int | None = None,
    target: str | Sequence[str] = "shape",
    size: int | None = None,
) -> ImageSource:
    """The CLI's ``--data`` value as an :class:`ImageSource`.

    Accepted forms (an existing folder wins over a name):

    - a folder: :func:`image_folder`;
    - ``"cifar10"`` / ``"cifar100"``: :func:`torchvision_dataset` in ``data_root``
      (default ``./data``), split ``train``, with ``download``;
    - ``"trifeature"`` or ``"trifeature:<target>"`` (e.g. ``"trifeature:shape+color"``):
      :func:`~feature_complexity.data.trifeature` with ``n_images`` (default 5000), ``target``,
      ``seed``, and ``size`` (default ``input_size``).
    """
    text = os.fspath(spec).strip()
    if not text:
        raise ValueError(f"--data is empty; pass {_ACCEPTED}")
    path = Path(text).expanduser()
    if path.is_dir():
        return image_folder(path, input_size=input_size, mean=mean, std=std)
    key = text.lower()
    if key.replace("-", "") in TORCHVISION_DATASETS:
        return torchvision_dataset(
            key,
            data_root if data_root is not None else "data",
            train=train,
            download=download,
            input_size=input_size,
            mean=mean,
            std=std,
        )
    if key == "trifeature" or key.startswith("trifeature:"):
        if ":" in key:
            target = key.split(":", 1)[1]
        return trifeature(
            5000 if n_images is None else n_images,
            size=size or input_size,
            target=target,
            seed=seed,
            mean=mean,
            std=std,
            input_size=input_size,
        )
    if path.exists():
        raise ValueError(f"--data {text} is a file; pass {_ACCEPTED}")
    raise FileNotFoundError(f"--data {text!r} is neither an existing folder nor a known dataset; pass {_ACCEPTED}")


def load_source(
    description: dict[str, Any],
    *,
    input_size: int | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    download: bool = False,
) -> ImageSource:
    """Rebuild the source that :meth:`ImageSource.describe` described (same images, same order,
    same subset). The preprocessing is the recorded one unless given.

    Raises:
        ValueError: unknown kind, or the images changed (an ImageFolder now holds a different
            number of images).
    """
    d = dict(description)
    kind = d.get("kind")
    size = int(input_size if input_size is not None else d["input_size"])
    mean = tuple(mean if mean is not None else d["mean"])
    std = tuple(std if std is not None else d["std"])
    if kind == "image_folder":
        source = image_folder(d["root"], input_size=size, mean=mean, std=std)
    elif kind == "torchvision":
        source = torchvision_dataset(
            d["dataset"], d["root"], train=d["train"], download=download, input_size=size, mean=mean, std=std
        )
    elif kind == "trifeature":
        source = trifeature(
            d["n_images"], size=d["size"], target=d["target"], seed=d["seed"], mean=mean, std=std, input_size=size
        )
    else:
        raise ValueError(
            f"cannot rebuild a source of kind {kind!r}; known kinds: image_folder, torchvision, trifeature"
        )
    if "n_images" in d and len(source) != d["n_images"]:
        raise ValueError(
            f"source {d.get('name', kind)} now holds {len(source)} images but {d['n_images']} were recorded; "
            "the images changed since the run, so its results no longer match them"
        )
    if "index_range" in d:
        start, stop = d["index_range"]
        source = source.subset(np.arange(start, stop))
    elif "indices" in d:
        source = source.subset(np.asarray(d["indices"], dtype=np.int64))
    return source
