"""Image sources: the images a run reads, with their labels and the model's preprocessing.

An :class:`ImageSource` is a map-style dataset (``len(source)``, ``source[i] -> (x, label)``,
usable as is by ``torch.utils.data.DataLoader``) where ``x`` is a float32 tensor ``(3, S, S)``
normalised with the model's ``mean``/``std`` and ``label`` an ``int`` (``-1`` when unknown).
Besides the images it carries ``classes`` (names), ``labels`` ``(n_images,)`` int64, ``factors``
(generated data only: a DataFrame with one row per image), ``name``, and ``describe()``: a
JSON-able dict from which :func:`load_source` rebuilds the same source for a later session.

Builders: :func:`image_folder` (``<root>/<class>/<image>``), :func:`torchvision_dataset`
(CIFAR-10/100), :func:`feature_complexity.data.trifeature` (generated), and :func:`open_source`,
which maps the CLI's ``--data`` value to one of them.

Preprocessing follows the torchvision convention for ImageNet models: images larger than the
model's input are resized (shorter side to ``round(S * 256 / 224)``) then centre-cropped to
``S``; images already at ``S`` (CIFAR at 32 px) are only converted and normalised; smaller ones
are resized up (shorter side to ``S``) and centre-cropped.

Torch, torchvision and PIL are imported by the functions that use them, so importing this
module is cheap.
"""

from __future__ import annotations

import copy
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pandas as pd
    import torch
    from PIL import Image

__all__ = [
    "IMAGE_EXTENSIONS",
    "Preprocessing",
    "ArrayStore",
    "FileStore",
    "ImageSource",
    "image_folder",
    "torchvision_dataset",
    "balanced_indices",
]

TORCHVISION_DATASETS = ("cifar10", "cifar100")
IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


# --------------------------------------------------------------------------- preprocessing
@dataclass(frozen=True)
class Preprocessing:
    """A model's input preprocessing.

    Attributes:
        input_size: side ``S`` of the square input, in pixels.
        mean, std: per-channel normalisation, applied to pixels scaled to [0, 1].
    """

    input_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    resize: int | None = None
    interpolation: str = "bilinear"

    def __post_init__(self) -> None:
        if not isinstance(self.input_size, (int, np.integer)) or self.input_size < 1:
            raise ValueError(f"input_size must be a positive integer (pixels), got {self.input_size!r}")
        object.__setattr__(self, "input_size", int(self.input_size))
        object.__setattr__(self, "mean", tuple(float(m) for m in self.mean))
        object.__setattr__(self, "std", tuple(float(s) for s in self.std))
        if len(self.mean) != 3 or len(self.std) != 3:
            raise ValueError(f"mean and std need 3 values (R, G, B), got mean={self.mean}, std={self.std}")
        if any(not np.isfinite(s) or s <= 0 for s in self.std) or not all(np.isfinite(self.mean)):
            raise ValueError(f"std must be positive and mean finite, got mean={self.mean}, std={self.std}")

    @property
    def resize_size(self) -> int:
        """Shorter side before the centre crop, for images larger than the input: the model's
        own (its weights' transforms, timm's data config) or torchvision's 256/224 rule."""
        return int(self.resize) if self.resize is not None else int(round(self.input_size * 256 / 224))

    def geometry(self, image: "np.ndarray | Image.Image") -> np.ndarray:
        """Resize / centre-crop one RGB image to the model's input.

        Args:
            image: an RGB ``PIL.Image`` or a uint8 array ``(H, W, 3)``.

        Returns:
            uint8 array ``(S, S, 3)``.
        """
        s = self.input_size
        if isinstance(image, np.ndarray):
            if image.shape[:2] == (s, s):
                return image
            from PIL import Image

            image = Image.fromarray(image)
        w, h = image.size
        if (w, h) == (s, s):
            return np.asarray(image, dtype=np.uint8)
        from torchvision.transforms import InterpolationMode
        from torchvision.transforms import functional as TF

        mode = InterpolationMode(self.interpolation)
        short = min(w, h)
        if short > s:
            image = TF.resize(image, [self.resize_size], interpolation=mode, antialias=True)
        elif short < s:
            image = TF.resize(image, [s], interpolation=mode, antialias=True)
        image = TF.center_crop(image, [s, s])
        return np.asarray(image, dtype=np.uint8)

    def to_tensor(self, image: np.ndarray) -> "torch.Tensor":
        """uint8 ``(S, S, 3)`` -> normalised float32 tensor ``(3, S, S)``."""
        import torch

        x: np.ndarray = image.astype(np.float32) / 255.0
        x = (x - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))


# --------------------------------------------------------------------------- storage
class ArrayStore:
    """Images held in memory as one uint8 array ``(n_images, H, W, 3)``."""

    def __init__(self, images: np.ndarray) -> None:
        images = np.asarray(images)
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(
                f"images must be a uint8 array (n_images, H, W, 3), got {images.dtype} {images.shape}"
            )
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def load(self, i: int) -> np.ndarray:
        return self.images[i]

    def fingerprint(self) -> str:
        """Hash of every pixel."""
        from ..fingerprints import array_fingerprint

        return array_fingerprint(self.images)


class FileStore:
    """Images read from files on demand, as RGB ``PIL.Image``."""

    def __init__(self, paths: Sequence[str]) -> None:
        self.paths = list(paths)

    def __len__(self) -> int:
        return len(self.paths)

    def conversions(self, sample: int = 2000, seed: int = 0) -> tuple[int, int, int, int]:
        """``(checked, not RGB, not square, files checked)`` over all files, or a seeded sample of
        ``sample`` of them: reads image headers only (PIL opens lazily)."""
        from PIL import Image

        idx = np.arange(len(self.paths))
        if len(idx) > sample:
            idx = np.sort(np.random.default_rng(seed).choice(idx, sample, replace=False))
        gray = odd = 0
        for i in idx:
            try:
                with Image.open(self.paths[int(i)]) as im:
                    gray += im.mode != "RGB"
                    odd += im.size[0] != im.size[1]
            except Exception:  # noqa: BLE001 - unreadable files are reported when they are read
                continue
        return len(idx), gray, odd, len(self.paths)

    def fingerprint(self) -> str:
        """Paths, sizes and times of every file, content hashes of a sample."""
        from ..fingerprints import files_fingerprint

        root = os.path.commonpath(self.paths) if self.paths else None
        return files_fingerprint(self.paths, root)

    def load(self, i: int) -> "Image.Image":
        from PIL import Image

        path = self.paths[i]
        # Re-raise as a ValueError that names the file: a bare PIL error from inside a DataLoader
        # worker says neither which file nor what to do. ValueError(msg) survives the worker's
        # exception wrapper, which re-creates the exception from its message.
        try:
            with Image.open(path) as im:
                return im.convert("RGB")
        except Exception as e:  # PIL raises OSError, SyntaxError, ValueError, DecompressionBombError...
            raise ValueError(f"cannot read image {path}: {e}; remove or replace the file") from e


# --------------------------------------------------------------------------- the source
class ImageSource:
    """Images, labels and preprocessing, as a map-style dataset.

    ``source[i]`` returns ``(x, label)``: ``x`` float32 tensor ``(3, S, S)`` normalised,
    ``label`` int (``-1`` when unknown).

    Attributes:
        name: a short name for reports.
        classes: class names; ``labels`` index into it.
        labels: ``(n_images,)`` int64, ``-1`` when unknown.
        factors: generated data only, a DataFrame with one row per image (aligned with
            ``labels``), else ``None``.
        preprocessing: the model's :class:`Preprocessing`.
    """

    _fingerprint: str | None  # set by fingerprint(), reset by the derived sources

    def __init__(
        self,
        store: ArrayStore | FileStore,
        *,
        name: str,
        classes: Sequence[str],
        labels: np.ndarray,
        preprocessing: Preprocessing,
        description: dict[str, Any],
        factors: "pd.DataFrame | None" = None,
        indices: np.ndarray | None = None,
    ) -> None:
        self._store = store
        self._indices = np.arange(len(store), dtype=np.int64) if indices is None else np.asarray(indices, np.int64)
        self.name = name
        self.classes = list(classes)
        self.labels = np.asarray(labels, dtype=np.int64)
        self.factors = factors
        self.preprocessing = preprocessing
        self._description = dict(description)
        if len(self.labels) != len(self._indices):
            raise ValueError(f"{len(self.labels)} labels for {len(self._indices)} images")
        if factors is not None and len(factors) != len(self._indices):
            raise ValueError(f"{len(factors)} factor rows for {len(self._indices)} images")

    # ------------------------------------------------------------ dataset protocol
    def __len__(self) -> int:
        return len(self._indices)

    def _check_index(self, i: int) -> int:
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"image index {i} out of range for a source of {n} images")
        return int(self._indices[i])

    def __getitem__(self, i: int) -> tuple["torch.Tensor", int]:
        image = self.preprocessing.geometry(self._store.load(self._check_index(i)))
        return self.preprocessing.to_tensor(image), int(self.labels[i])

    def raw_image(self, i: int) -> np.ndarray:
        """The image as the model sees it (resized and cropped) but not normalised:
        uint8 ``(S, S, 3)``, for display and heatmap overlays."""
        return np.array(self.preprocessing.geometry(self._store.load(self._check_index(i))), dtype=np.uint8)

    # ------------------------------------------------------------ properties
    @property
    def n_classes(self) -> int:
        return len(self.classes)

    @property
    def input_size(self) -> int:
        return self.preprocessing.input_size

    @property
    def mean(self) -> tuple[float, ...]:
        return self.preprocessing.mean

    @property
    def std(self) -> tuple[float, ...]:
        return self.preprocessing.std

    @property
    def indices(self) -> np.ndarray:
        """``(n_images,)`` positions of these images in the full (unsubsetted) source."""
        return self._indices.copy()

    def __repr__(self) -> str:
        return (
            f"ImageSource(name={self.name!r}, n_images={len(self)}, n_classes={self.n_classes}, "
            f"input_size={self.input_size})"
        )

    # ------------------------------------------------------------ derived sources
    def subset(self, indices: Sequence[int] | np.ndarray) -> "ImageSource":
        """The images at ``indices`` (positions in this source), labels and factors aligned."""
        idx = np.asarray(indices)
        if idx.dtype == bool:
            if idx.shape != (len(self),):
                raise ValueError(f"boolean subset mask has shape {idx.shape}, expected ({len(self)},)")
            idx = np.flatnonzero(idx)
        if idx.ndim != 1 or (idx.size and not np.issubdtype(idx.dtype, np.integer)):
            raise ValueError(f"subset indices must be a 1-d array of integers, got {idx.dtype} {idx.shape}")
        idx = idx.astype(np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= len(self)):
            raise ValueError(f"subset indices must lie in [0, {len(self)}), got [{idx.min()}, {idx.max()}]")
        out = copy.copy(self)
        out._fingerprint = None  # other images or preprocessing: another fingerprint
        out._indices = self._indices[idx]
        out.labels = self.labels[idx]
        out.factors = None if self.factors is None else self.factors.iloc[idx].reset_index(drop=True)
        return out

    def conversion_note(self) -> str | None:
        """One sentence on the images converted on the way to the model (grayscale or palette to
        RGB, non-square resized and centre-cropped), with counts; ``None`` when there are none."""
        check = getattr(self._store, "conversions", None)
        if check is None:
            return None
        checked, gray, odd, total = check()
        if not gray and not odd:
            return None
        where = f"of {checked} images" if checked == total else f"in a sample of {checked} of the {total} images"
        parts = [f"{gray} are not RGB (converted)" if gray else "", f"{odd} are not square (resized and centre-"
                 f"cropped to {self.input_size} px)" if odd else ""]
        return f"{where} of {self.name}: " + " and ".join(p for p in parts if p)

    def without_labels(self) -> "ImageSource":
        """The same images with every label unknown (``-1``): for data whose classes are not the
        model's (their folder indices would be wrong class ids); images and ``raw_image`` stay."""
        out = copy.copy(self)
        out._fingerprint = None
        out.labels = np.full(len(self), -1, dtype=np.int64)
        return out

    def limit(self, n_images: int, *, balanced: bool = True, seed: int = 0) -> "ImageSource":
        """At most ``n_images`` images: class-balanced (as equal as possible per class, chosen at
        random with ``seed``) when ``balanced`` and labels are known, else the first ones."""
        if n_images < 1:
            raise ValueError(f"limit must be a positive number of images, got {n_images}")
        if n_images >= len(self):
            return self
        if balanced and (self.labels >= 0).all():
            return self.subset(balanced_indices(self.labels, n_images, seed=seed))
        return self.subset(np.arange(n_images))

    def with_preprocessing(
        self, input_size: int, mean: Sequence[float], std: Sequence[float], *, resize: int | None = None,
        interpolation: str = "bilinear",
    ) -> "ImageSource":
        """The same images read with another model's preprocessing."""
        out = copy.copy(self)
        out._fingerprint = None  # other images or preprocessing: another fingerprint
        out.preprocessing = Preprocessing(input_size, tuple(mean), tuple(std), resize, interpolation)
        return out

    def for_model(self, spec: Any) -> "ImageSource":
        """The same images in ``spec``'s preprocessing (size, resize, interpolation, mean, std)."""
        return self.with_preprocessing(spec.input_size, spec.mean, spec.std, resize=getattr(spec, "resize_size", None),
                                       interpolation=getattr(spec, "interpolation", "bilinear"))

    # ------------------------------------------------------------ description
    def fingerprint(self) -> str:
        """What the images are (see :mod:`feature_complexity.fingerprints`): the stored images,
        the subset, the labels and the preprocessing. Cached: the files are read once."""
        cached = getattr(self, "_fingerprint", None)
        if cached is None:
            from ..fingerprints import array_fingerprint, digest_of

            pre = self.preprocessing
            cached = digest_of([self._store.fingerprint(), array_fingerprint(self._indices, self.labels),
                                self.input_size, list(self.mean), list(self.std), pre.resize, pre.interpolation])
            self._fingerprint = cached
        return cached

    def describe(self) -> dict[str, Any]:
        """JSON-able description, enough for :func:`load_source` to rebuild this source:
        ``kind`` and its parameters, ``name``, ``n_classes``, the preprocessing, and, for a
        subset, ``n_selected`` with ``index_range`` ``[start, stop)`` or ``indices``."""
        d: dict[str, Any] = dict(self._description)
        d.update(
            name=self.name,
            n_classes=self.n_classes,
            input_size=self.input_size,
            mean=list(self.mean),
            std=list(self.std),
        )
        full = len(self._store)
        if len(self._indices) != full or not np.array_equal(self._indices, np.arange(full)):
            d["n_selected"] = len(self)
            idx = self._indices
            if idx.size and np.array_equal(idx, np.arange(idx[0], idx[0] + idx.size)):
                d["index_range"] = [int(idx[0]), int(idx[0] + idx.size)]
            else:
                d["indices"] = [int(i) for i in idx]
        return d


def balanced_indices(labels: np.ndarray, n_images: int, *, seed: int = 0) -> np.ndarray:
    """Sorted positions of ``n_images`` images spread as evenly as possible over the classes of
    ``labels`` ``(n,)``; within a class the images are a random choice (``seed``)."""
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"labels must be a 1-d array (n_images,), got shape {labels.shape}")
    if n_images < 1:
        raise ValueError(f"the number of images to keep must be >= 1, got {n_images}")
    rng = np.random.default_rng(seed)
    # Rank every image within its class in a random order, then take images by rank: all
    # classes' rank-0 images first, then rank 1, ... This fills small classes completely and
    # splits the rest evenly, without a loop over images.
    order = rng.permutation(len(labels))
    shuffled = labels[order]
    sort = np.argsort(shuffled, kind="stable")
    sorted_labels = shuffled[sort]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_labels)) + 1]
    counts = np.diff(np.r_[starts, len(labels)])
    rank = np.arange(len(labels)) - np.repeat(starts, counts)
    chosen = order[sort][np.lexsort((rng.random(len(labels)), rank))[:n_images]]
    return np.sort(chosen)


# --------------------------------------------------------------------------- builders
def _scan_image_folder(root: Path) -> tuple[list[str], list[str], np.ndarray]:
    """Class names, image paths and labels of an ImageFolder tree (sorted like torchvision)."""
    if not root.exists():
        raise FileNotFoundError(
            f"image folder {root} does not exist; pass a folder laid out as <root>/<class>/<image>.jpg"
        )
    if not root.is_dir():
        raise ValueError(f"{root} is a file, not a folder; pass a folder laid out as <root>/<class>/<image>.jpg")
    # hidden folders (.ipynb_checkpoints, .git) are not classes; counting them would shift labels
    class_dirs = sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
    if not class_dirs:
        loose = [e.name for e in os.scandir(root) if e.is_file() and e.name.lower().endswith(IMAGE_EXTENSIONS)]
        if loose:
            raise ValueError(
                f"image folder {root} holds {len(loose)} images but no class subfolders; the layout is "
                f"<root>/<class>/<image>.jpg: move the images into one subfolder per class (or one "
                f"subfolder, e.g. {root / 'images'}, when the classes are unknown)"
            )
        raise ValueError(f"image folder {root} is empty; expected <root>/<class>/<image>.jpg")
    paths: list[str] = []
    labels: list[int] = []
    empty: list[str] = []
    for label, name in enumerate(class_dirs):
        found: list[str] = []
        for dirpath, dirnames, filenames in os.walk(root / name, followlinks=True):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            found.extend(
                os.path.join(dirpath, f) for f in sorted(filenames) if f.lower().endswith(IMAGE_EXTENSIONS)
            )
        if not found:
            empty.append(name)
        paths.extend(found)
        labels.extend([label] * len(found))
    if not paths:
        raise ValueError(
            f"no images ({', '.join(IMAGE_EXTENSIONS)}) found in the {len(class_dirs)} class folders of {root}"
        )
    if empty:
        # kept as classes: dropping them would shift the labels away from the model's class order
        warnings.warn(f"image folder {root}: {len(empty)} class folders hold no images: {', '.join(empty[:10])}",
                      stacklevel=2)
    return class_dirs, paths, np.asarray(labels, dtype=np.int64)


def image_folder(
    root: str | os.PathLike, *, input_size: int, mean: Sequence[float], std: Sequence[float]
) -> ImageSource:
    """Images in ImageFolder layout, ``<root>/<class>/<image>``, read with a model's preprocessing.

    Classes are the subfolder names sorted (torchvision's order); images are found recursively
    in each class folder. Files are opened when an item is read; an unreadable file raises a
    ``ValueError`` naming it.
    """
    root = Path(root).expanduser().resolve()
    classes, paths, labels = _scan_image_folder(root)
    return ImageSource(
        FileStore(paths),
        name=root.name if root.name not in ("train", "test", "val") else f"{root.parent.name}-{root.name}",
        classes=classes,
        labels=labels,
        preprocessing=Preprocessing(input_size, tuple(mean), tuple(std)),
        description={"kind": "image_folder", "root": str(root), "n_images": len(paths)},
    )


def torchvision_dataset(
    name: str,
    root: str | os.PathLike,
    *,
    train: bool = False,
    download: bool = False,
    input_size: int = 32,
    mean: Sequence[float],
    std: Sequence[float],
) -> ImageSource:
    """CIFAR-10 or CIFAR-100 through ``torchvision.datasets`` (held in memory, 32 px).

    Args:
        name: "cifar10" or "cifar100".
        root: torchvision's dataset folder (where ``cifar-10-batches-py`` lives or is downloaded).
        train: the training split (50,000 images) instead of the test split (10,000).
        download: let torchvision download the files when they are missing.
    """
    key = name.lower().replace("-", "")
    if key not in TORCHVISION_DATASETS:
        raise ValueError(f"unknown torchvision dataset {name!r}; use 'cifar10' or 'cifar100'")
    from torchvision import datasets

    cls = datasets.CIFAR10 if key == "cifar10" else datasets.CIFAR100
    root = Path(root).expanduser()
    try:
        ds = cls(root=str(root), train=train, download=download)
    except RuntimeError as e:  # torchvision: "Dataset not found or corrupted"
        fix = (
            "the download did not complete; retry, or download it elsewhere and pass --data-root"
            if download
            else "pass --download (download=True) to fetch it there"
        )
        raise FileNotFoundError(
            f"{key} not found in {root} ({e}); {fix}, or point --data at an ImageFolder copy of it"
        ) from e
    except OSError as e:  # no network, permission denied...
        raise OSError(
            f"could not download {key} to {root}: {e}; download it elsewhere and pass --data-root, "
            "or point --data at an ImageFolder copy"
        ) from e
    images = np.asarray(ds.data, dtype=np.uint8)
    labels = np.asarray(ds.targets, dtype=np.int64)
    return ImageSource(
        ArrayStore(images),
        name=f"{key}-{'train' if train else 'test'}",
        classes=list(ds.classes),
        labels=labels,
        preprocessing=Preprocessing(input_size, tuple(mean), tuple(std)),
        description={
            "kind": "torchvision",
            "dataset": key,
            "root": str(root.resolve()),
            "train": bool(train),
            "n_images": len(images),
        },
    )
