"""A generated dataset in the spirit of Hermann & Lampinen's Trifeature (NeurIPS 2020).

Each image is one *shape* filled with a *texture* in a *colour*, at a random position, rotation
and scale, on a plain grey background. The three factors are drawn independently and exactly
balanced (every value appears ``n // 8`` or ``n // 8 + 1`` times), so any of them, or any
combination, can be the classification target, and the others are known nuisance factors whose
complexity can be scored as ground truth (``factor_values``).

Design choices, and why:

- Shapes are rotated by a uniform angle in [0, 360) degrees, so every shape is chosen to be
  distinguishable under any rotation (no square *and* diamond, no hexagon *and* circle at 32 px).
- Textures are drawn in *image* coordinates (not rotated with the shape): a rotated
  "horizontal stripes" would otherwise be a "vertical stripes". Every texture is a binary pattern
  ``m`` that mixes the full colour (``m = 1``) with a darker version of it (``m = 0``), so the
  hue stays identifiable and the mean colour of the shape is set by the colour factor.
- Images are rendered at ``2x`` resolution and averaged down (anti-aliasing), so edges are smooth
  at 32 px; interior pixels of a solid shape still carry the exact colour.
- Generation is vectorised over a chunk of images: coordinate grids of shape
  ``(n_chunk, H, W)``, inside tests in the shape's rotated coordinates, one boolean mask per
  shape/texture type. All random draws happen once, up front, so the chunk size never changes
  the result: the same seed gives byte-identical images.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

    from .sources import ImageSource

__all__ = [
    "SHAPES",
    "TEXTURES",
    "COLORS",
    "COLOR_RGB",
    "BACKGROUND",
    "FACTORS",
    "render_trifeature",
    "sample_factors",
    "trifeature",
    "factor_values",
    "parse_target",
    "texture_period",
]

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "cross", "ring", "crescent", "heart")
TEXTURES: tuple[str, ...] = (
    "solid",
    "hstripes",
    "vstripes",
    "diagonal",
    "checker",
    "dots",
    "grid",
    "waves",
)
COLORS: tuple[str, ...] = ("red", "orange", "yellow", "green", "cyan", "blue", "purple", "white")
# Saturated, well separated hues; none close to the grey background.
COLOR_RGB: np.ndarray = np.array(
    [
        [230, 30, 30],
        [250, 140, 20],
        [245, 225, 40],
        [40, 185, 50],
        [40, 215, 225],
        [40, 80, 235],
        [150, 50, 210],
        [250, 250, 250],
    ],
    dtype=np.uint8,
)
BACKGROUND: int = 128  # plain grey, same value in R, G and B
FACTORS: dict[str, tuple[str, ...]] = {"shape": SHAPES, "texture": TEXTURES, "color": COLORS}

_DARK = 0.35  # the m = 0 pixels of a texture: colour * _DARK
_SUPERSAMPLE = 2
# Shape radius (centre to farthest point) as a fraction of the image side: the shape's extent is
# then 55-80 % of the side, large enough to be recognised at 32 px.
_SCALE_RANGE = (0.275, 0.40)
_CHUNK = 1024


# --------------------------------------------------------------------------- shapes
# Each takes local coordinates (u, v), in units of the shape radius, arrays (m, H, W), and returns
# the inside mask. Every shape fits in the unit disc.
def _regular_polygon(u: np.ndarray, v: np.ndarray, n_sides: int, circumradius: float) -> np.ndarray:
    apothem = circumradius * np.cos(np.pi / n_sides)
    inside = np.ones(u.shape, dtype=bool)
    for k in range(n_sides):
        # edge normals point between the vertices; the first vertex points "up" (-v)
        angle = -np.pi / 2 + np.pi / n_sides + 2 * np.pi * k / n_sides
        inside &= u * np.cos(angle) + v * np.sin(angle) <= apothem
    return inside


def _star(u: np.ndarray, v: np.ndarray, points: int = 5, outer: float = 1.0, inner: float = 0.45) -> np.ndarray:
    # Fold the angle into one half-sector [0, pi/points] around a tip; the boundary there is the
    # segment from the tip P = (outer, 0) to the notch Q = inner * (cos(pi/p), sin(pi/p)).
    rho = np.hypot(u, v)
    sector = 2 * np.pi / points
    phi = np.mod(np.arctan2(v, u) + np.pi / 2, sector)
    phi = np.abs(phi - sector / 2)  # 0 at the notch direction ... sector/2 at the tip
    phi = sector / 2 - phi  # 0 at the tip
    x, y = rho * np.cos(phi), rho * np.sin(phi)
    px, py = outer, 0.0
    qx, qy = inner * np.cos(sector / 2), inner * np.sin(sector / 2)
    # origin side of the line PQ: sign of the cross product (Q - P) x (X - P) equals that of O
    cross = (qx - px) * (y - py) - (qy - py) * (x - px)
    cross_origin = (qx - px) * (0 - py) - (qy - py) * (0 - px)
    return cross * np.sign(cross_origin) >= 0


def _heart(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    # implicit heart (x^2 + y^2 - 1)^3 - x^2 y^3 <= 0; seen from (0, 0.2) its farthest point is at
    # 1.28, so flip v (image y points down), centre on (0, 0.2) and shrink into the unit disc.
    x = u * 1.3
    y = -v * 1.3 + 0.2
    return (x * x + y * y - 1) ** 3 - x * x * y**3 <= 0


_SHAPE_FUNCS: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "circle": lambda u, v: u * u + v * v <= 0.82**2,
    "square": lambda u, v: np.maximum(np.abs(u), np.abs(v)) <= 0.64,
    "triangle": lambda u, v: _regular_polygon(u, v, 3, 1.0),
    "star": _star,
    "cross": lambda u, v: ((np.abs(u) <= 0.3) & (np.abs(v) <= 0.92)) | ((np.abs(v) <= 0.3) & (np.abs(u) <= 0.92)),
    "ring": lambda u, v: (u * u + v * v <= 0.9**2) & (u * u + v * v >= 0.42**2),
    "crescent": lambda u, v: (u * u + v * v <= 0.9**2) & ((u - 0.5) ** 2 + v * v >= 0.7**2),
    "heart": _heart,
}


# --------------------------------------------------------------------------- textures
# Each takes texture coordinates (tx, ty) in output pixels (offset per image), and the period p,
# and returns m: True where the full colour is drawn, False where the darker one is.
def _texture_funcs(period: float) -> dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]]:
    half = period / 2
    dot_period = period + 2  # dots need more room than stripes, or they read as a grid
    return {
        "solid": lambda tx, ty: np.ones(tx.shape, dtype=bool),
        "hstripes": lambda tx, ty: np.floor(ty / half) % 2 == 0,
        "vstripes": lambda tx, ty: np.floor(tx / half) % 2 == 0,
        # (tx + ty) has period 1.5 p, i.e. about 1.06 p measured across the stripes
        "diagonal": lambda tx, ty: np.floor((tx + ty) / (0.75 * period)) % 2 == 0,
        "checker": lambda tx, ty: (np.floor(tx / half) + np.floor(ty / half)) % 2 == 0,
        "dots": lambda tx, ty: _dots(tx, ty, dot_period),
        "grid": lambda tx, ty: (np.mod(tx, period) >= period / 4) & (np.mod(ty, period) >= period / 4),
        "waves": lambda tx, ty: np.floor((ty + 0.45 * period * np.sin(2 * np.pi * tx / (2.5 * period))) / half) % 2
        == 0,
    }


def _dots(tx: np.ndarray, ty: np.ndarray, period: float) -> np.ndarray:
    # dark round dots on a hexagonal lattice (every other row shifted by half a period), which
    # tells them apart from the square grid
    row = np.floor(ty / period)
    x = np.mod(tx + 0.5 * period * (row % 2), period) - period / 2
    y = np.mod(ty, period) - period / 2
    return x * x + y * y > (0.22 * period) ** 2


def texture_period(size: int) -> float:
    """Texture period in pixels: 4 px at 32 px, scaled with the image side, at least 3 px."""
    return max(3.0, round(4.0 * size / 32.0))


# --------------------------------------------------------------------------- factors
def sample_factors(n_images: int, *, size: int = 32, seed: int = 0) -> dict[str, np.ndarray]:
    """Draw every random quantity of ``n_images`` images at once.

    Shape, texture and colour ids are exactly balanced (each a random permutation of
    ``arange(n) % 8``) and independent. Returns arrays of shape ``(n_images,)``: ``shape``,
    ``texture``, ``color`` (int64 ids into ``SHAPES``/``TEXTURES``/``COLORS``), ``x``, ``y``
    (shape centre as a fraction of the image side, 0 = left/top), ``rotation`` (degrees),
    ``scale`` (shape radius as a fraction of the side), ``offset_x``, ``offset_y`` (texture
    phase in pixels).
    """
    rng = np.random.default_rng(seed)
    ids = np.arange(n_images) % 8
    shape = rng.permutation(ids)
    texture = rng.permutation(ids)
    color = rng.permutation(ids)
    scale = rng.uniform(*_SCALE_RANGE, size=n_images)
    # keep the whole shape inside the image: centre at least one radius (plus a pixel) from the edge
    margin = scale + 1.0 / size
    x = margin + rng.uniform(0, 1, n_images) * (1 - 2 * margin)
    y = margin + rng.uniform(0, 1, n_images) * (1 - 2 * margin)
    rotation = rng.uniform(0, 360, n_images)
    period = texture_period(size)
    offset_x = rng.integers(0, int(period), n_images).astype(np.float64)
    offset_y = rng.integers(0, int(period), n_images).astype(np.float64)
    return {
        "shape": shape.astype(np.int64),
        "texture": texture.astype(np.int64),
        "color": color.astype(np.int64),
        "x": x,
        "y": y,
        "rotation": rotation,
        "scale": scale,
        "offset_x": offset_x,
        "offset_y": offset_y,
    }


def render_trifeature(
    factors: dict[str, np.ndarray], *, size: int = 32, chunk_size: int = _CHUNK
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Render the images described by ``factors`` (as returned by :func:`sample_factors`).

    Returns:
        images: ``(n_images, size, size, 3)`` uint8.
        area: ``(n_images,)`` fraction of the image covered by the shape (anti-aliased).
        mean_rgb: ``(n_images, 3)`` mean RGB (0-255) of the shape's pixels, texture included.
    """
    n = len(factors["shape"])
    ss = _SUPERSAMPLE
    hi = size * ss
    # sub-pixel centres in output-pixel units
    coords = ((np.arange(hi) + 0.5) / ss).astype(np.float32)  # float32: half the memory traffic
    gy, gx = np.meshgrid(coords, coords, indexing="ij")  # (hi, hi)
    textures = _texture_funcs(texture_period(size))
    colors = COLOR_RGB.astype(np.float32)
    images = np.empty((n, size, size, 3), dtype=np.uint8)
    area = np.empty(n, dtype=np.float64)
    mean_rgb = np.empty((n, 3), dtype=np.float64)
    for start in range(0, n, chunk_size):
        sl = slice(start, min(n, start + chunk_size))
        m = sl.stop - sl.start
        cx = (factors["x"][sl, None, None] * size).astype(np.float32)
        cy = (factors["y"][sl, None, None] * size).astype(np.float32)
        radius = (factors["scale"][sl, None, None] * size).astype(np.float32)
        theta = np.deg2rad(factors["rotation"][sl, None, None]).astype(np.float32)
        dx, dy = gx[None] - cx, gy[None] - cy  # (m, hi, hi)
        cos, sin = np.cos(theta), np.sin(theta)
        u = (dx * cos + dy * sin) / radius
        v = (-dx * sin + dy * cos) / radius
        del dx, dy
        mask = np.zeros((m, hi, hi), dtype=bool)
        shape_ids = factors["shape"][sl]
        for k, name in enumerate(SHAPES):
            sel = shape_ids == k
            if sel.any():
                mask[sel] = _SHAPE_FUNCS[name](u[sel], v[sel])
        del u, v
        tx = gx[None] + factors["offset_x"][sl, None, None].astype(np.float32)
        ty = gy[None] + factors["offset_y"][sl, None, None].astype(np.float32)
        full = np.zeros((m, hi, hi), dtype=bool)
        texture_ids = factors["texture"][sl]
        for k, name in enumerate(TEXTURES):
            sel = texture_ids == k
            if sel.any():
                full[sel] = textures[name](tx[sel], ty[sel])
        del tx, ty
        # Every sub-pixel is background, full colour or dark colour; count the full and dark
        # sub-pixels of each output pixel (anti-aliasing by box filter) and mix the three values.
        full_in = mask & full
        dark_in = mask & ~full
        n_full = _box_sum(full_in, size, ss)  # (m, size, size) in 0 .. ss*ss
        n_dark = _box_sum(dark_in, size, ss)
        n_bg = ss * ss - n_full - n_dark
        rgb = colors[factors["color"][sl]][:, None, None, :]  # (m, 1, 1, 3)
        img = (n_full[..., None] * rgb + n_dark[..., None] * (rgb * np.float32(_DARK))) + n_bg[
            ..., None
        ] * np.float32(BACKGROUND)
        images[sl] = np.clip(np.rint(img / (ss * ss)), 0, 255).astype(np.uint8)
        count_full = np.count_nonzero(full_in, axis=(1, 2))
        count_dark = np.count_nonzero(dark_in, axis=(1, 2))
        n_inside = count_full + count_dark
        area[sl] = n_inside / (hi * hi)
        shade = (count_full + _DARK * count_dark) / np.maximum(n_inside, 1)
        mean_rgb[sl] = shade[:, None] * COLOR_RGB[factors["color"][sl]].astype(np.float64)
    return images, area, mean_rgb


def _box_sum(mask: np.ndarray, size: int, ss: int) -> np.ndarray:
    """``(m, size*ss, size*ss)`` bool -> ``(m, size, size)`` float32 count of True per ss x ss box."""
    blocks = mask.reshape(mask.shape[0], size, ss, size, ss)
    out = np.zeros((mask.shape[0], size, size), dtype=np.float32)
    # summing the ss*ss strided views is several times faster than a reduction over axes (2, 4)
    for i in range(ss):
        for j in range(ss):
            out += blocks[:, :, i, :, j]
    return out


# --------------------------------------------------------------------------- targets
def parse_target(target: str | Sequence[str]) -> tuple[str, ...]:
    """Normalise a target ("shape", "color"/"colour", "texture", a tuple of them, or a string
    joined by "+" or ",") to a tuple of factor names."""
    if isinstance(target, str):
        parts = [p.strip() for p in target.replace(",", "+").split("+")]
    else:
        parts = [str(p).strip() for p in target]
    parts = ["color" if p == "colour" else p for p in parts]
    if not parts or any(p not in FACTORS for p in parts):
        raise ValueError(
            f"trifeature target {target!r} is not valid; use one of 'shape', 'color', 'texture' "
            "or a combination such as ('shape', 'color') or 'shape+color'"
        )
    if len(set(parts)) != len(parts):
        raise ValueError(f"trifeature target {target!r} repeats a factor; name each factor once")
    return tuple(parts)


def _target_labels(factors: dict[str, np.ndarray], target: tuple[str, ...]) -> tuple[np.ndarray, list[str]]:
    """Class index of every image (mixed radix over the target factors, first factor most
    significant) and the readable class names, e.g. ``"circle-red"``."""
    labels = np.zeros(len(factors[target[0]]), dtype=np.int64)
    names = [""]
    for name in target:
        values = FACTORS[name]
        labels = labels * len(values) + factors[name]
        names = [f"{prefix}-{v}" if prefix else v for prefix in names for v in values]
    return labels, names


# --------------------------------------------------------------------------- public
def trifeature(
    n_images: int,
    *,
    size: int = 32,
    target: str | Sequence[str] = "shape",
    seed: int = 0,
    mean: Sequence[float] = (0.5, 0.5, 0.5),
    std: Sequence[float] = (0.5, 0.5, 0.5),
    input_size: int | None = None,
    chunk_size: int = _CHUNK,
) -> "ImageSource":
    """Generate a Trifeature-style dataset of ``n_images`` images of ``size x size`` pixels.

    Args:
        n_images: number of images (>= 1).
        size: image side in pixels (>= 16; 32 by default).
        target: the classification target: "shape", "color", "texture", or a combination such
            as ("shape", "color") whose classes are the combinations (8 ** len(target) classes,
            named like "circle-red").
        seed: the seed of every random draw; the same seed gives byte-identical images.
        mean, std: normalisation of the returned tensors (per RGB channel).
        input_size: side of the tensors handed to a model (the images are resized when it
            differs from ``size``); ``size`` by default.
        chunk_size: images rendered at once (memory ~ chunk_size * (2 * size)^2 * 40 bytes).

    Returns:
        An :class:`ImageSource` with ``labels (n_images,)``, ``classes`` and ``factors`` (one
        row per image: shape, texture, color ids; x, y, rotation, scale; area, mean_r/g/b).
    """
    import pandas as pd

    from .sources import ArrayStore, ImageSource, Preprocessing

    if not isinstance(n_images, (int, np.integer)) or n_images < 1:
        raise ValueError(f"trifeature: n_images must be a positive integer, got {n_images!r}")
    if not isinstance(size, (int, np.integer)) or size < 16:
        raise ValueError(f"trifeature: size must be an integer >= 16 pixels, got {size!r}")
    if chunk_size < 1:
        raise ValueError(f"trifeature: chunk_size must be >= 1, got {chunk_size}")
    target_t = parse_target(target)
    raw = sample_factors(int(n_images), size=int(size), seed=seed)
    images, area, mean_rgb = render_trifeature(raw, size=int(size), chunk_size=chunk_size)
    labels, classes = _target_labels(raw, target_t)
    factors: pd.DataFrame = pd.DataFrame(
        {
            "shape": raw["shape"],
            "texture": raw["texture"],
            "color": raw["color"],
            "x": raw["x"],
            "y": raw["y"],
            "rotation": raw["rotation"],
            "scale": raw["scale"],
            "area": area,
            "mean_r": mean_rgb[:, 0],
            "mean_g": mean_rgb[:, 1],
            "mean_b": mean_rgb[:, 2],
        }
    )
    description = {
        "kind": "trifeature",
        "n_images": int(n_images),
        "size": int(size),
        "target": list(target_t),
        "seed": int(seed),
    }
    return ImageSource(
        ArrayStore(images),
        name=f"trifeature-{'+'.join(target_t)}",
        classes=classes,
        labels=labels,
        factors=factors,
        description=description,
        preprocessing=Preprocessing(int(input_size or size), tuple(mean), tuple(std)),
    )


def factor_values(source: "ImageSource") -> dict[str, np.ndarray]:
    """The generating factors of a generated source as numeric arrays, ready for
    ``fc.complexity(layers, values)``.

    Returns:
        ``"shape"``, ``"texture"``, ``"color"``: one-hot ``(n_images, 8)`` float32;
        ``"mean_rgb"``: ``(n_images, 3)`` mean colour of the shape's pixels, in [0, 1];
        ``"position"``: ``(n_images, 2)`` shape centre (x, y) as a fraction of the side;
        ``"scale"``: ``(n_images, 1)``; ``"area"``: ``(n_images, 1)`` fraction of the image covered.
    """
    factors = getattr(source, "factors", None)
    if factors is None:
        raise ValueError(
            f"source '{getattr(source, 'name', source)}' has no generating factors; "
            "factor_values needs a generated source such as trifeature(...)"
        )
    out: dict[str, np.ndarray] = {}
    for name, values in FACTORS.items():
        ids = factors[name].to_numpy()
        out[name] = np.eye(len(values), dtype=np.float32)[ids]
    out["mean_rgb"] = factors[["mean_r", "mean_g", "mean_b"]].to_numpy(np.float32) / 255.0
    out["position"] = factors[["x", "y"]].to_numpy(np.float32)
    out["scale"] = factors[["scale"]].to_numpy(np.float32)
    out["area"] = factors[["area"]].to_numpy(np.float32)
    return out
