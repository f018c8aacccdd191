"""Images for a run: ImageFolder directories, torchvision's CIFAR, and the generated Trifeature set.

Every builder returns an :class:`ImageSource`, a map-style dataset whose items are
``(x, label)`` with ``x`` a normalised float32 tensor ``(3, S, S)`` in the model's preprocessing
and ``label`` an int (``-1`` when unknown); it also carries ``classes``, ``labels`` ``(n_images,)``,
``factors`` (generated data only) and ``describe()`` for the run manifest.

Importing this package is cheap (numpy only); torch, torchvision, PIL and pandas are imported by
the functions that need them.
"""

from __future__ import annotations

from .opening import load_source, open_source
from .sources import (
    IMAGE_EXTENSIONS,
    ImageSource,
    Preprocessing,
    balanced_indices,
    image_folder,
    torchvision_dataset,
)
from .trifeature import COLOR_RGB, COLORS, FACTORS, SHAPES, TEXTURES, factor_values, trifeature

__all__ = [
    "IMAGE_EXTENSIONS",
    "ImageSource",
    "Preprocessing",
    "balanced_indices",
    "image_folder",
    "load_source",
    "open_source",
    "torchvision_dataset",
    "trifeature",
    "factor_values",
    "SHAPES",
    "TEXTURES",
    "COLORS",
    "COLOR_RGB",
    "FACTORS",
]
