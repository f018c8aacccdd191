"""Tests for feature_complexity.data: the generated Trifeature set, ImageFolder reading,
torchvision CIFAR wrapping, and the --data dispatcher."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from feature_complexity.data import (
    COLOR_RGB,
    COLORS,
    SHAPES,
    TEXTURES,
    ImageSource,
    Preprocessing,
    balanced_indices,
    factor_values,
    image_folder,
    load_source,
    open_source,
    torchvision_dataset,
    trifeature,
)
from feature_complexity.data.trifeature import BACKGROUND, render_trifeature, sample_factors

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
CIFAR_TEST = SHARED / "cifar10" / "test"
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
PLAIN = dict(input_size=32, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))


@pytest.fixture(scope="module")
def tri() -> ImageSource:
    return trifeature(1024, seed=3)


# --------------------------------------------------------------------------- trifeature
def test_trifeature_is_deterministic_for_a_seed_and_chunking() -> None:
    a = trifeature(96, seed=7)
    b = trifeature(96, seed=7, chunk_size=10)  # chunking must not change a byte
    c = trifeature(96, seed=8)
    assert np.array_equal(a._store.images, b._store.images)
    assert a.factors.equals(b.factors)
    assert np.array_equal(a.labels, b.labels)
    assert not np.array_equal(a._store.images, c._store.images)


def test_trifeature_items_are_normalised_tensors(tri: ImageSource) -> None:
    import torch

    x, y = tri[5]
    assert isinstance(x, torch.Tensor) and x.dtype == torch.float32 and tuple(x.shape) == (3, 32, 32)
    raw = tri.raw_image(5)
    assert raw.dtype == np.uint8 and raw.shape == (32, 32, 3)
    # mean = std = 0.5: x = 2 * pixel / 255 - 1
    np.testing.assert_allclose(x.numpy(), raw.transpose(2, 0, 1) / 127.5 - 1.0, atol=1e-6)
    assert y == tri.labels[5] == tri.factors["shape"][5]
    assert len(tri) == 1024 and tri.classes == list(SHAPES)


def test_factor_counts_are_at_least_eight_and_balanced(tri: ImageSource) -> None:
    assert min(len(SHAPES), len(TEXTURES), len(COLORS)) >= 8
    assert len(set(SHAPES)) == len(SHAPES) and len(set(TEXTURES)) == len(TEXTURES)
    for name, values in (("shape", SHAPES), ("texture", TEXTURES), ("color", COLORS)):
        counts = np.bincount(tri.factors[name], minlength=len(values))
        assert counts.min() >= len(tri) // len(values) and counts.max() <= len(tri) // len(values) + 1
    # independent factors: every (shape, colour) pair is present in 1024 images (64 pairs)
    pairs = tri.factors["shape"] * 8 + tri.factors["color"]
    assert np.bincount(pairs, minlength=64).min() > 0


def test_colours_are_distinct_and_far_from_the_background() -> None:
    rgb = COLOR_RGB.astype(float)
    dist = np.linalg.norm(rgb[:, None] - rgb[None], axis=-1) + np.eye(len(rgb)) * 1e9
    assert dist.min() > 60
    assert np.linalg.norm(rgb - BACKGROUND, axis=1).min() > 100


def test_shape_area_within_bounds(tri: ImageSource) -> None:
    # planted: the shape covers a sizeable part of the image and never spills out of it
    area = tri.factors["area"].to_numpy()
    assert area.min() > 0.05 and area.max() < 0.6
    images = tri._store.images
    border = np.concatenate([images[:, 0], images[:, -1], images[:, :, 0], images[:, :, -1]], axis=1)
    assert (border == BACKGROUND).all()
    # the measured area agrees with the count of non-background pixels (anti-aliased edges aside)
    non_bg = (images != BACKGROUND).any(-1).mean(axis=(1, 2))
    assert np.abs(non_bg - area).max() < 0.08


def test_solid_shapes_have_the_exact_colour_of_their_colour_factor() -> None:
    src = trifeature(256, seed=1)
    f = src.factors
    solid = np.flatnonzero(f["texture"].to_numpy() == TEXTURES.index("solid"))
    assert len(solid) >= 8 and set(f["color"][solid]) == set(range(len(COLORS)))
    for i in solid:
        img = src.raw_image(int(i)).reshape(-1, 3)
        fg = img[(img != BACKGROUND).any(1)]
        values, counts = np.unique(fg, axis=0, return_counts=True)
        # interior pixels carry exactly the colour; only edge pixels are mixed with the grey
        assert np.array_equal(values[counts.argmax()], COLOR_RGB[f["color"][i]])
        assert counts.max() > 0.5 * len(fg)
        np.testing.assert_allclose(f.loc[i, ["mean_r", "mean_g", "mean_b"]].to_numpy(float), COLOR_RGB[f["color"][i]])


def test_textures_darken_part_of_the_shape(tri: ImageSource) -> None:
    # every non-solid texture shows both the full and the darker colour inside the shape
    f = tri.factors
    for t in range(1, len(TEXTURES)):
        i = int(np.flatnonzero(f["texture"].to_numpy() == t)[0])
        img = tri.raw_image(i).reshape(-1, 3).astype(int)
        rgb = COLOR_RGB[f["color"][i]].astype(int)
        n_full = (img == rgb).all(1).sum()
        n_dark = (np.abs(img - np.rint(rgb * 0.35)) <= 1).all(1).sum()
        assert n_full > 10 and n_dark > 10, TEXTURES[t]


def test_shapes_are_told_apart_by_their_masks() -> None:
    # planted: the same position, rotation and scale for every shape; their masks must differ
    n = len(SHAPES)
    f = sample_factors(n, seed=0)
    f.update(
        shape=np.arange(n),
        texture=np.zeros(n, np.int64),
        color=np.zeros(n, np.int64),
        x=np.full(n, 0.5),
        y=np.full(n, 0.5),
        rotation=np.zeros(n),
        scale=np.full(n, 0.35),
    )
    images, area, _ = render_trifeature(f, size=32)
    masks = (images != BACKGROUND).any(-1).reshape(n, -1)
    iou = (masks[:, None] & masks[None]).sum(-1) / (masks[:, None] | masks[None]).sum(-1)
    assert iou[~np.eye(n, dtype=bool)].max() < 0.85
    # a circle of radius 0.82 * 0.35 * 32 px has the area of a disc
    assert abs(area[0] * 32 * 32 - np.pi * (0.82 * 0.35 * 32) ** 2) < 8


@pytest.mark.parametrize(
    "target, n_classes",
    [("shape", 8), ("color", 8), ("colour", 8), ("texture", 8), (("shape", "color"), 64), ("shape+texture+color", 512)],
)
def test_target_combinations(target, n_classes: int) -> None:
    src = trifeature(64, seed=2, target=target)
    assert src.n_classes == len(src.classes) == n_classes
    f = src.factors
    if n_classes == 64:
        expected = f["shape"].to_numpy() * 8 + f["color"].to_numpy()
        assert np.array_equal(src.labels, expected)
        i = 3
        assert src.classes[src.labels[i]] == f"{SHAPES[f['shape'][i]]}-{COLORS[f['color'][i]]}"
    elif n_classes == 8:
        key = "color" if target == "colour" else target
        assert np.array_equal(src.labels, f[key].to_numpy())
    assert src.labels.min() >= 0 and src.labels.max() < n_classes


@pytest.mark.parametrize("bad", ["size", ("shape", "shape"), (), "shape+hue"])
def test_bad_target_is_a_value_error(bad) -> None:
    with pytest.raises(ValueError, match="target"):
        trifeature(8, target=bad)


def test_bad_trifeature_arguments() -> None:
    with pytest.raises(ValueError, match="n_images"):
        trifeature(0)
    with pytest.raises(ValueError, match="size"):
        trifeature(8, size=8)
    with pytest.raises(ValueError, match="std"):
        trifeature(8, std=(0.5, 0.0, 0.5))


def test_trifeature_texture_scales_with_size() -> None:
    src = trifeature(16, size=64, seed=0)
    assert src.raw_image(0).shape == (64, 64, 3)
    assert src.factors["area"].min() > 0.05


def test_factor_values_shapes_and_content(tri: ImageSource, tmp_path: Path) -> None:
    values = factor_values(tri)
    n = len(tri)
    for name in ("shape", "texture", "color"):
        assert values[name].shape == (n, 8)
        assert np.array_equal(values[name].argmax(1), tri.factors[name].to_numpy())
        np.testing.assert_array_equal(values[name].sum(1), 1.0)
    assert values["mean_rgb"].shape == (n, 3) and values["position"].shape == (n, 2)
    assert 0 <= values["mean_rgb"].min() and values["mean_rgb"].max() <= 1
    sub = tri.subset([4, 2])
    np.testing.assert_array_equal(factor_values(sub)["color"], values["color"][[4, 2]])
    with pytest.raises(ValueError, match="generated"):
        factor_values(image_folder(_write_folder(tmp_path / "set"), **PLAIN))


def test_sample_grid_png(tri: ImageSource) -> None:
    """Writes test-artifacts/trifeature_samples.png (rows: shapes, columns: textures) to look at."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    f = tri.factors
    fig, axes = plt.subplots(8, 8, figsize=(9, 10))
    for r in range(8):
        for c in range(8):
            i = int(np.flatnonzero((f["shape"] == r).to_numpy() & (f["texture"] == c).to_numpy())[0])
            ax = axes[r, c]
            ax.imshow(tri.raw_image(i), interpolation="nearest")
            ax.set_title(f"{SHAPES[r]} {TEXTURES[c]}\n{COLORS[f['color'][i]]}", fontsize=6)
            ax.axis("off")
    fig.tight_layout()
    ARTIFACTS.mkdir(exist_ok=True)
    out = ARTIFACTS / "trifeature_samples.png"
    fig.savefig(out, dpi=100)
    plt.close(fig)
    assert out.stat().st_size > 10_000


# --------------------------------------------------------------------------- ImageSource
def test_subset_keeps_labels_factors_and_images_aligned(tri: ImageSource) -> None:
    idx = [10, 3, 500]
    sub = tri.subset(idx)
    assert len(sub) == 3
    assert np.array_equal(sub.labels, tri.labels[idx])
    assert sub.factors["rotation"].tolist() == tri.factors["rotation"][idx].tolist()
    for j, i in enumerate(idx):
        assert np.array_equal(sub.raw_image(j), tri.raw_image(i))
    subsub = sub.subset([2, 0])
    assert np.array_equal(subsub.raw_image(0), tri.raw_image(500))
    assert subsub.describe()["indices"] == [500, 10]
    with pytest.raises(ValueError, match="subset indices"):
        tri.subset([len(tri)])
    with pytest.raises(IndexError):
        sub[3]


def test_balanced_indices_spread_over_classes() -> None:
    labels = np.repeat([0, 1, 2], [50, 5, 30])
    idx = balanced_indices(labels, 30, seed=0)
    assert len(idx) == len(set(idx)) == 30
    assert np.bincount(labels[idx]).tolist() == [13, 5, 12] or np.bincount(labels[idx]).tolist() == [12, 5, 13]
    assert not np.array_equal(idx, balanced_indices(labels, 30, seed=1))
    assert np.array_equal(np.sort(balanced_indices(labels, 500)), np.arange(len(labels)))
    with pytest.raises(ValueError, match=">= 1"):
        balanced_indices(labels, 0)
    src = trifeature(80, seed=0, target="color").limit(16, seed=0)
    assert len(src) == 16 and np.bincount(src.labels, minlength=8).tolist() == [2] * 8


def test_describe_round_trips_through_load_source(tri: ImageSource) -> None:
    sub = tri.limit(40, seed=1)
    d = json.loads(json.dumps(sub.describe()))
    assert d["kind"] == "trifeature" and d["seed"] == 3 and d["n_images"] == 1024 and d["n_selected"] == 40
    back = load_source(d)
    assert np.array_equal(back.labels, sub.labels)
    assert np.array_equal(back.raw_image(7), sub.raw_image(7))
    assert tri.subset(np.arange(5, 9)).describe()["index_range"] == [5, 9]
    with pytest.raises(ValueError, match="kind"):
        load_source({"kind": "lmdb", "input_size": 32, "mean": [0, 0, 0], "std": [1, 1, 1]})


def test_with_preprocessing_rebinds_size_and_normalisation(tri: ImageSource) -> None:
    big = tri.with_preprocessing(48, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    x, _ = big[0]
    assert tuple(x.shape) == (3, 48, 48) and 0 <= float(x.min()) and float(x.max()) <= 1
    assert tri[0][0].shape[-1] == 32  # the original is untouched


# --------------------------------------------------------------------------- ImageFolder
def _write_folder(root: Path, sizes: dict[str, tuple[int, int]] | None = None) -> Path:
    from PIL import Image

    sizes = sizes or {"b_cls": (32, 32), "a_cls": (32, 32)}
    rng = np.random.default_rng(0)
    for cls, (w, h) in sorted(sizes.items()):
        (root / cls).mkdir(parents=True, exist_ok=True)
        for j in range(3):
            arr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            Image.fromarray(arr).save(root / cls / f"img{j}.png")
    return root


def test_image_folder_reads_classes_labels_and_pixels(tmp_path: Path) -> None:
    from PIL import Image

    root = _write_folder(tmp_path / "set")
    (root / ".hidden").mkdir()  # hidden folders are not classes
    (root / "a_cls" / "notes.txt").write_text("not an image")
    src = image_folder(root, **PLAIN)
    assert src.classes == ["a_cls", "b_cls"]
    assert src.labels.tolist() == [0, 0, 0, 1, 1, 1]
    x, y = src[4]
    expected = np.asarray(Image.open(root / "b_cls" / "img1.png").convert("RGB"))
    np.testing.assert_allclose(x.numpy().transpose(1, 2, 0), expected / 255.0, atol=1e-6)
    assert y == 1
    assert np.array_equal(src.raw_image(4), expected)
    d = src.describe()
    assert d["kind"] == "image_folder" and d["root"] == str(root.resolve()) and d["n_images"] == 6
    assert np.array_equal(load_source(d).raw_image(4), expected)


def test_grayscale_and_rgba_files_are_read_as_rgb(tmp_path: Path) -> None:
    from PIL import Image

    (tmp_path / "set" / "c").mkdir(parents=True)
    gray = np.arange(32 * 32, dtype=np.uint8).reshape(32, 32)
    Image.fromarray(gray, mode="L").save(tmp_path / "set" / "c" / "g.png")
    Image.fromarray(np.zeros((32, 32, 4), np.uint8), mode="RGBA").save(tmp_path / "set" / "c" / "r.png")
    src = image_folder(tmp_path / "set", **PLAIN)
    assert np.array_equal(src.raw_image(0), np.repeat(gray[..., None], 3, axis=-1))
    assert tuple(src[1][0].shape) == (3, 32, 32)


def test_importing_the_data_package_stays_light() -> None:
    import subprocess
    import sys

    code = (
        "import sys, feature_complexity.data as d; "
        "print(sorted(m for m in ('torch', 'torchvision', 'PIL', 'pandas') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_image_folder_geometry_large_and_small_images(tmp_path: Path) -> None:
    root = _write_folder(tmp_path / "mixed", {"big": (64, 48), "small": (16, 20)})
    src = image_folder(root, **PLAIN)
    for i in range(len(src)):
        assert tuple(src[i][0].shape) == (3, 32, 32)
    # large image: shorter side resized to round(32 * 256 / 224) = 37, then centre crop 32
    assert Preprocessing(32, (0, 0, 0), (1, 1, 1)).resize_size == 37
    from PIL import Image
    from torchvision import transforms

    ref = transforms.Compose([transforms.Resize(37), transforms.CenterCrop(32)])
    img = Image.open(root / "big" / "img0.png").convert("RGB")
    assert np.array_equal(src.raw_image(0), np.asarray(ref(img)))
    # small image: shorter side resized up to 32, then centre crop
    ref_up = transforms.Compose([transforms.Resize(32), transforms.CenterCrop(32)])
    small = Image.open(root / "small" / "img0.png").convert("RGB")
    assert np.array_equal(src.raw_image(3), np.asarray(ref_up(small)))


def test_image_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        image_folder(tmp_path / "missing", **PLAIN)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="empty"):
        image_folder(tmp_path / "empty", **PLAIN)
    flat = tmp_path / "flat"
    flat.mkdir()
    from PIL import Image

    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(flat / "x.png")
    with pytest.raises(ValueError, match="no class subfolders"):
        image_folder(flat, **PLAIN)
    (tmp_path / "noimg" / "cls").mkdir(parents=True)
    with pytest.raises(ValueError, match="no images"):
        image_folder(tmp_path / "noimg", **PLAIN)
    with pytest.raises(ValueError, match="mean and std"):
        image_folder(_write_folder(tmp_path / "ok"), input_size=32, mean=(0.5,), std=(0.5,))


def test_corrupt_image_names_the_file_also_through_a_dataloader(tmp_path: Path) -> None:
    from torch.utils.data import DataLoader

    root = _write_folder(tmp_path / "set")
    bad = root / "a_cls" / "broken.jpg"
    bad.write_bytes(b"this is not a jpeg" * 10)
    src = image_folder(root, **PLAIN)
    i = src._store.paths.index(str(bad))
    with pytest.raises(ValueError, match=r"cannot read image .*broken\.jpg.*remove or replace"):
        src[i]
    loader = DataLoader(src.subset([i]), batch_size=1, num_workers=1)
    with pytest.raises(ValueError, match=r"cannot read image .*broken\.jpg"):
        next(iter(loader))


@pytest.mark.shared_data
def test_real_cifar10_test_folder() -> None:
    if not CIFAR_TEST.is_dir():
        pytest.skip(f"shared CIFAR-10 JPEG folder not found at {CIFAR_TEST}")
    src = image_folder(CIFAR_TEST, input_size=32, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    assert len(src) == 10_000 and src.n_classes == 10
    assert src.classes[0] == "airplane" and src.classes[9] == "truck"
    assert np.bincount(src.labels).tolist() == [1000] * 10
    x, y = src[9_999]
    assert tuple(x.shape) == (3, 32, 32) and y == 9


# --------------------------------------------------------------------------- torchvision / dispatcher
def test_torchvision_missing_files_say_how_to_fix(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="--download"):
        torchvision_dataset("cifar10", tmp_path, train=False, download=False, **PLAIN)
    with pytest.raises(ValueError, match="cifar100"):
        torchvision_dataset("svhn", tmp_path, **PLAIN)


def test_torchvision_wrapper_uses_the_dataset_arrays(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from torchvision import datasets

    data = np.random.default_rng(0).integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)

    class FakeCIFAR:
        def __init__(self, root: str, train: bool, download: bool) -> None:
            assert download is True and train is True
            self.data, self.targets, self.classes = data, [1, 0, 1, 1, 0], ["cat", "dog"]

    monkeypatch.setattr(datasets, "CIFAR10", FakeCIFAR)
    src = open_source("cifar10", data_root=tmp_path, train=True, download=True, **PLAIN)
    assert src.labels.tolist() == [1, 0, 1, 1, 0] and src.classes == ["cat", "dog"]
    assert np.array_equal(src.raw_image(2), data[2])
    d = src.describe()
    assert d["kind"] == "torchvision" and d["dataset"] == "cifar10" and d["train"] is True


def test_open_source_dispatch_and_errors(tmp_path: Path) -> None:
    root = _write_folder(tmp_path / "imgs")
    assert open_source(str(root), **PLAIN).describe()["kind"] == "image_folder"
    src = open_source("trifeature:shape+color", n_images=16, seed=4, **PLAIN)
    assert src.n_classes == 64 and len(src) == 16 and src.describe()["seed"] == 4
    assert open_source("trifeature", n_images=8, target="texture", **PLAIN).classes == list(TEXTURES)
    with pytest.raises(FileNotFoundError, match="ImageFolder directory.*cifar10.*trifeature"):
        open_source(str(tmp_path / "nowhere"), **PLAIN)
    with pytest.raises(FileNotFoundError, match="trifeature"):
        open_source("imagenet", **PLAIN)
