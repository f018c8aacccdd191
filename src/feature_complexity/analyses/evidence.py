"""Evidence: what the features look like (paper Fig. 1, 3, 7), for the report and for people.

Notation (docs/ARCHITECTURE.md): ``Z`` codes ``(n_images, k)``, ``D`` dictionary ``(k, d)``,
``K`` complexity ``(k,)``, ``Γ`` importance ``(k,)``.

- **Top images** of every feature, from ``Z`` alone (indices: cheap at any ``k``):
  ``evidence/top_images.npy`` ``(k, n_top)``, largest code first, ``-1`` where a feature is
  active on fewer images.
- **Thumbnails** for a bounded set of features (``config.evidence_features``, default 300;
  :func:`select_evidence_features`: the simplest, the most complex, the most important and a
  seeded sample, interleaved so that any prefix has some of each): the top images (top row) and
  their **concept heatmaps** (bottom row): every position of the spatial layer encoded against the
  whole dictionary with the run's own coding rule (``Dictionary.encode``), the feature's code at
  each position upsampled to the image (see :mod:`feature_complexity.analyses.heatmaps`; the one
  seam for ViT patch grids is ``heatmaps.position_vectors``). ``evidence/feature_NNNNN.jpg``.
- **Feature visualisations** (MACO, :mod:`feature_complexity.analyses.visualize`) and the paper's
  Fig. 1B decoder figures, off by default (``config.evidence_visualize`` features).
- The **meta-feature gallery** figure: clusters from simplest to most complex, each shown by its
  members' top images.

Thumbnails are computed in groups into the stage's work folder (``ctx.workdir``): an interrupted
run keeps its finished groups. ``evidence/index.json`` is written last and lists what exists.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

    from ..models.spec import ModelSpec

__all__ = ["Evidence", "select_evidence_features", "display_images", "thumbnail", "gallery_figure",
           "render_thumbnails", "STAGE"]

_FOLDER = "evidence"
_GROUP = 32  # features whose thumbnails are computed (and kept) together


def _thumb_name(feature: int) -> str:
    return f"feature_{int(feature):05d}.jpg"


def _vis_name(feature: int) -> str:
    return f"vis_{int(feature):05d}.png"


@dataclass
class Evidence:
    """What the evidence stage rendered.

    Attributes:
        top: ``(k, n_top)`` int64 top images of every feature (``-1``: fewer active images).
        selected: features chosen for thumbnails, in priority order.
        reasons: ``{"simplest" | "most_complex" | "most_important" | "sample": [features]}``.
        files: ``{feature: thumbnail file name}`` in ``evidence/``.
        visualizations: ``{feature: visualisation file name}`` in ``evidence/``.
        heatmap_note: why the thumbnails have no heatmaps, or ``None`` when they have.
        tile: side of one image in the thumbnails, in pixels.
        workdir: where the files were computed (not saved).
    """

    top: np.ndarray
    selected: list[int]
    reasons: dict[str, list[int]]
    files: dict[int, str]
    visualizations: dict[int, str] = field(default_factory=dict)
    heatmap_note: str | None = None
    tile: int = 64
    workdir: Path | None = None


# ---------------------------------------------------------------------------------- selection
def select_evidence_features(complexity: np.ndarray, importance: np.ndarray | None, budget: int, *,
                             seed: int = 0) -> tuple[list[int], dict[str, list[int]]]:
    """Which features get thumbnails, in priority order.

    A quarter of the budget each to the simplest, the most complex, the most important (largest
    ``|Γ|``) and a seeded uniform sample of the others; every feature when ``k <= budget``. The
    order interleaves the four groups (simplest, most complex, most important, sample, simplest …)
    so that a report that can embed only the first ones still shows both ends and the important.

    Returns:
        ``(features in priority order, {reason: features})``.
    """
    K = np.asarray(complexity, dtype=np.float64)
    k, budget = len(K), max(0, int(budget))
    quarter = max(1, budget // 4) if budget < k else k
    by_k = np.argsort(K, kind="stable")
    groups: dict[str, list[int]] = {"simplest": by_k[:quarter].tolist(),
                                    "most_complex": by_k[::-1][:quarter].tolist()}
    if importance is not None:
        by_g = np.argsort(-np.abs(np.asarray(importance, dtype=np.float64)), kind="stable")
        groups["most_important"] = by_g[:quarter].tolist()
    order: list[int] = list(dict.fromkeys(_interleave(list(groups.values()))))[:budget]
    rest = np.setdiff1d(np.arange(k), np.array(order, dtype=np.int64))
    n_sample = min(budget - len(order), rest.size)
    groups["sample"] = sorted(np.random.default_rng(seed).choice(rest, size=n_sample, replace=False).tolist())
    order = list(dict.fromkeys(_interleave([*(g for g in groups.values())])))
    order = [int(f) for f in order][:budget]
    chosen = set(order)
    return order, {name: [int(f) for f in g if f in chosen] for name, g in groups.items()}


def _interleave(lists: Sequence[Sequence[int]]) -> list[int]:
    out: list[int] = []
    for i in range(max((len(x) for x in lists), default=0)):
        out.extend(int(x[i]) for x in lists if i < len(x))
    return out


# ---------------------------------------------------------------------------------- images
def display_images(probe: Any, spec: "ModelSpec") -> Callable[[int], np.ndarray]:
    """``i -> (H, W, 3) uint8``: the probe image as the model sees it (``raw_image`` when the
    dataset has it, else the normalised tensor mapped back with the model's mean and std)."""
    if callable(getattr(probe, "raw_image", None)):
        return lambda i: np.asarray(probe.raw_image(int(i)), dtype=np.uint8)
    mean = np.asarray(spec.mean, dtype=np.float32).reshape(-1, 1, 1)
    std = np.asarray(spec.std, dtype=np.float32).reshape(-1, 1, 1)

    def unnormalised(i: int) -> np.ndarray:
        x = np.asarray(probe[int(i)][0], dtype=np.float32) * std + mean
        return np.clip(np.round(x.transpose(1, 2, 0) * 255), 0, 255).astype(np.uint8)

    return unnormalised


def thumbnail(images: Sequence[np.ndarray], heats: Sequence[np.ndarray] | None, tile: int) -> Any:
    """One PIL image: the top images in a row and, with ``heats``, their heatmap overlays below
    (one colour scale per feature, so that its images compare)."""
    from PIL import Image

    from .heatmaps import overlay

    n, rows, gap = len(images), 1 if heats is None else 2, 2
    canvas = Image.new("RGB", (tile * n + gap * (n - 1), tile * rows + gap * (rows - 1)), (255, 255, 255))
    vmax = max((float(h.max()) for h in heats), default=0.0) if heats is not None else 0.0
    for j, raw in enumerate(images):
        # Pillow defines the legacy constants at import time, invisibly to its type hints
        resample = Image.NEAREST if raw.shape[0] < tile else Image.BILINEAR  # type: ignore[attr-defined]
        canvas.paste(Image.fromarray(raw).resize((tile, tile), resample), (j * (tile + gap), 0))
        if heats is not None:
            over = overlay(raw, heats[j], vmax=vmax if vmax > 0 else None)
            canvas.paste(Image.fromarray(over).resize((tile, tile), resample), (j * (tile + gap), tile + gap))
    return canvas


def _heatmap_note(spec: "ModelSpec", probe: Any, device: str) -> str | None:
    """``None`` when the model gives a grid of positions to encode, else why not (said once)."""
    import torch

    from .heatmaps import NoSpatialMap, position_vectors

    try:
        position_vectors(spec, torch.stack([probe[0][0]]), device=device)
    except NoSpatialMap as err:
        return (f"The thumbnails show top images without concept heatmaps: {err} (heatmaps for token grids "
                "need the model's patch-grid reader in analyses/heatmaps.position_vectors).")
    return None


def _encoder(ctx: Any) -> Callable[[np.ndarray], np.ndarray]:
    """The run's own coding rule (as the codes stage applies it), for positions instead of images."""
    cfg, d = ctx.config, ctx["dictionary"]
    options: dict[str, Any] = {"device": cfg.device, "tol": cfg.nnls_tol, "max_iter": cfg.nnls_max_iter}
    if cfg.codes == "per_class":
        options["blocks"] = d.feature_class
    return lambda A: np.asarray(d.encode(np.asarray(A, dtype=np.float32), **options), dtype=np.float32)


def render_thumbnails(ctx: Any, features: Sequence[int], top: np.ndarray, folder: Path, *, tile: int,
                      heatmaps: bool) -> dict[int, str]:
    """Write the thumbnails of ``features`` into ``folder`` group by group (resumable: a file
    that exists is kept); returns ``{feature: file name}`` for those with an active image."""
    from tqdm.auto import tqdm

    features = [int(f) for f in features if (top[int(f)] >= 0).any()]
    image_of = display_images(ctx.inputs["probe"], ctx.inputs["spec"])
    bar = tqdm(total=len(features), desc="evidence", unit="feature", disable=not ctx.progress)
    for start in range(0, len(features), _GROUP):
        todo = [f for f in features[start:start + _GROUP] if not (folder / _thumb_name(f)).exists()]
        maps = _group_maps(ctx, todo, top) if heatmaps and todo else {}
        for f in todo:
            idx = [int(i) for i in top[f] if i >= 0]
            images = [image_of(i) for i in idx]
            heats = None if not heatmaps else [_upsampled(maps[(i, f)], img.shape[:2]) for i, img in zip(idx, images)]
            _save_jpeg(thumbnail(images, heats, tile), folder / _thumb_name(f))
        bar.update(len(features[start:start + _GROUP]))
    bar.close()
    return {f: _thumb_name(f) for f in features}


def _group_maps(ctx: Any, features: list[int], top: np.ndarray) -> dict[tuple[int, int], np.ndarray]:
    """``{(image, feature): (h, w) code map}`` for the top images of ``features``: each image of
    the group goes through the model and the encoder once."""
    import torch

    from .heatmaps import position_codes

    spec, probe, cfg = ctx.inputs["spec"], ctx.inputs["probe"], ctx.config
    D, encode = np.asarray(ctx["dictionary"].D), _encoder(ctx)
    wanted = {f: {int(i) for i in top[f] if i >= 0} for f in features}
    images = sorted(set().union(*wanted.values()))
    maps: dict[tuple[int, int], np.ndarray] = {}
    batch = max(1, min(64, int(cfg.batch_size)))
    for s in range(0, len(images), batch):
        chunk = images[s:s + batch]
        codes = position_codes(spec, torch.stack([probe[i][0] for i in chunk]), D, device=cfg.device, encoder=encode)
        for j, i in enumerate(chunk):
            for f in features:
                if i in wanted[f]:
                    maps[(i, f)] = codes[j, :, :, f].copy()
    return maps


def _upsampled(code_map: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    from .heatmaps import upsample

    return upsample(code_map, size)


def _save_jpeg(image: Any, path: Path) -> None:
    from ..io import atomic_path

    with atomic_path(path) as tmp:
        image.save(tmp, format="JPEG", quality=85, optimize=True)


# ---------------------------------------------------------------------------------- visualisations
def _extremes_first(complexity: np.ndarray, features: Sequence[int]) -> list[int]:
    """``features`` ordered simplest, most complex, next simplest, next most complex, …"""
    ranked = sorted((int(f) for f in features), key=lambda f: (complexity[f], f))
    return _interleave([ranked, ranked[::-1]])[:len(ranked)] if ranked else []


def _spectrum(ctx: Any) -> tuple[Any, Any]:
    """MACO's fixed magnitude and the colour correlation of the probe images (``None`` each when the
    dataset cannot give them: the plain Fourier parameterisation is used then)."""
    from .visualize import average_spectrum, color_correlation

    probe, spec = ctx.inputs["probe"], ctx.inputs["spec"]
    try:
        return (average_spectrum(probe, spec=spec, max_images=256), color_correlation(probe, spec=spec, max_images=256))
    except (ValueError, TypeError) as err:
        ctx.log(f"[evidence] average spectrum unavailable ({err}); plain Fourier parameterisation")
        return None, None


def render_visualizations(ctx: Any, features: Sequence[int], folder: Path, *, steps: int) -> dict[int, str]:
    """A MACO feature visualisation of the atom ``d_i`` per feature (resumable, atomic)."""
    from PIL import Image

    from ..io import atomic_path
    from .visualize import visualize_feature

    D, cfg = np.asarray(ctx["dictionary"].D), ctx.config
    spectrum, color = _spectrum(ctx) if features else (None, None)
    out = {}
    for f in features:
        path = folder / _vis_name(f)
        if not path.exists() and np.any(D[f] != 0):
            img = visualize_feature(ctx.inputs["spec"], D[f], spectrum=spectrum, color=color, steps=steps,
                                    seed=cfg.seed + int(f), device=cfg.device)
            with atomic_path(path) as tmp:
                Image.fromarray(img).save(tmp, format="PNG")
        if path.exists():
            out[int(f)] = _vis_name(f)
    return out


def decoder_figure_of(ctx: Any, feature: int, *, steps: int) -> "Figure":
    """The paper's Fig. 1B for one feature: what an early, a middle and the last block decode of
    it (the ridge probe refitted on all probe images with the penalty the complexity engine chose
    for that block), beside the feature's own visualisation."""
    from ..complexity import RidgeProbeStats
    from .visualize import decoder_figure, decoder_layers, visualize_decoder, visualize_feature

    spec, cfg, cx = ctx.inputs["spec"], ctx.config, ctx["complexity"]
    names = list(cx.layer_names)
    layers, Z = ctx["activations"].layers, ctx["codes"]
    spectrum, color = _spectrum(ctx)
    images, iv = {}, {}
    for name in decoder_layers(names):
        X = np.asarray(layers[name], dtype=np.float64)
        stats = RidgeProbeStats(X.shape[1], 1, n_folds=2)
        stats.update(X, np.asarray(Z[:, [feature]], dtype=np.float64), np.arange(X.shape[0]) % 2)
        W, _ = stats.decoder(np.asarray(cx.alpha)[names.index(name), [feature]])
        w = np.asarray(W)[:, 0]
        iv[name] = float(cx.per_layer[names.index(name)][feature])
        images[name] = (visualize_decoder(spec, name, w, spectrum=spectrum, color=color, steps=steps,
                                          seed=cfg.seed + feature, device=cfg.device) if np.any(w != 0)
                        else np.full((spec.input_size, spec.input_size, 3), 255, dtype=np.uint8))
    own = visualize_feature(spec, np.asarray(ctx["dictionary"].D)[feature], spectrum=spectrum, color=color,
                            steps=steps, seed=cfg.seed + feature, device=cfg.device)
    return decoder_figure(images, feature_image=own, iv=iv,
                          title=f"Feature {feature} (K = {float(cx.score[feature]):.2f}): "
                                f"what each block decodes of it")


# ---------------------------------------------------------------------------------- the gallery
def _row_images(members: Sequence[int], top: np.ndarray, n: int) -> list[int]:
    """``n`` images for a cluster row, round-robin over its members' top images (one feature
    does not fill the row)."""
    picks: list[int] = []
    tops = [[int(i) for i in top[int(f)] if i >= 0] for f in members]
    depth = 0
    while len(picks) < n and any(depth < len(t) for t in tops):
        for t in tops:
            if depth < len(t) and t[depth] not in picks and len(picks) < n:
                picks.append(t[depth])
        depth += 1
    return picks


def gallery_figure(clusters: "pd.DataFrame", top: np.ndarray, image_of: Callable[[int], np.ndarray], *,
                   n_rows: int = 10, n_per_row: int = 8) -> "Figure":
    """Meta-features from the simplest (top) to the most complex (bottom), each row its members'
    top images (paper Fig. 3 / 7).

    The axes are placed in inches (no layout engine), so the figure is exactly as tall as its
    rows plus the title: no empty band above or between them.

    Args:
        clusters: one row per cluster with ``cluster``, ``mean_complexity``, ``size``, ``members``.
        top: ``(k, n_top)`` top images per feature.
        image_of: ``i -> (H, W, 3) uint8``.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    t = clusters.sort_values("mean_complexity", kind="stable").reset_index(drop=True)
    rows: np.ndarray | list[int]
    rows = np.unique(np.linspace(0, len(t) - 1, min(n_rows, len(t))).round().astype(int)) if len(t) else []
    cell, gap, left, head = 1.0, 0.06, 1.9, 0.5
    width = left + n_per_row * (cell + gap)
    height = head + len(rows) * (cell + gap) + 0.1
    fig = Figure(figsize=(width, height))
    fig.text(0.5, 1 - 0.3 / height, "Meta-features from the simplest (top) to the most complex (bottom)",
             ha="center", va="center", fontsize=13)
    for r, row_idx in enumerate(rows):
        row = t.iloc[row_idx]
        y = height - head - (r + 1) * (cell + gap) + gap
        fig.text((left - 0.12) / width, (y + cell / 2) / height,
                 f"meta-feature {int(row['cluster'])}\nK = {row['mean_complexity']:.2f}, {int(row['size'])} features",
                 ha="right", va="center", fontsize=10)
        for c, i in enumerate(_row_images(row["members"], top, n_per_row)):
            ax = fig.add_axes(((left + c * (cell + gap)) / width, y / height, cell / width, cell / height))
            ax.imshow(image_of(i), interpolation="nearest")
            ax.set_axis_off()
    return fig


# ---------------------------------------------------------------------------------- the stage
def _n_visualized(cfg: Any) -> int:
    return int(cfg.evidence_visualize)


def _compute(ctx: Any) -> Evidence:
    from .heatmaps import top_images_all

    cfg, spec, probe = ctx.config, ctx.inputs["spec"], ctx.inputs["probe"]
    top = top_images_all(ctx["codes"], cfg.n_top)
    gamma = ctx.get("importance")
    selected, reasons = select_evidence_features(ctx["complexity"].score, None if gamma is None else np.asarray(gamma),
                                                 cfg.evidence_features, seed=cfg.seed)
    folder = ctx.workdir("evidence")
    note = _heatmap_note(spec, probe, cfg.device)
    tile = 64 if spec.input_size <= 64 else 96
    files = render_thumbnails(ctx, selected, top, folder, tile=tile, heatmaps=note is None)
    vis: dict[int, str] = {}
    if _n_visualized(cfg) > 0:
        chosen = _extremes_first(np.asarray(ctx["complexity"].score), selected)[:_n_visualized(cfg)]
        vis = render_visualizations(ctx, chosen, folder, steps=int(cfg.visualize_steps))
    return Evidence(top, selected, reasons, files, vis, note, tile, folder)


def _save(ev: Evidence, out: Path) -> None:
    """Copy the files into ``evidence/`` (dropping those of an earlier key), then the index last."""
    from ..io import atomic_path, save_npy, write_json

    target = out / _FOLDER
    target.mkdir(parents=True, exist_ok=True)
    keep = set(ev.files.values()) | set(ev.visualizations.values())
    for old in [*target.glob("feature_*.jpg"), *target.glob("vis_*.png")]:
        if old.name not in keep:
            old.unlink()
    for name in sorted(keep):
        if ev.workdir is not None and (ev.workdir / name).exists():
            with atomic_path(target / name) as tmp:
                shutil.copyfile(ev.workdir / name, tmp)
    save_npy(target / "top_images.npy", ev.top)
    write_json(target / "index.json", {
        "version": 1, "n_features": int(ev.top.shape[0]), "n_top": int(ev.top.shape[1]), "tile": ev.tile,
        "selected": ev.selected, "reasons": ev.reasons, "heatmap_note": ev.heatmap_note,
        "files": {str(f): n for f, n in ev.files.items()},
        "visualizations": {str(f): n for f, n in ev.visualizations.items()}})
    if ev.workdir is not None:  # the finished files now live in evidence/
        for name in keep:
            (ev.workdir / name).unlink(missing_ok=True)


def _load(out: Path) -> Evidence:
    from ..io import read_json

    info = read_json(out / _FOLDER / "index.json")
    return Evidence(top=np.load(out / _FOLDER / "top_images.npy"), selected=[int(f) for f in info["selected"]],
                    reasons={k: [int(f) for f in v] for k, v in info["reasons"].items()},
                    files={int(f): n for f, n in info["files"].items()},
                    visualizations={int(f): n for f, n in info.get("visualizations", {}).items()},
                    heatmap_note=info.get("heatmap_note"), tile=int(info.get("tile", 64)))


def _figures(ev: Evidence, ctx: Any) -> dict[str, Any]:
    from ..stages import FigureSpec

    figures: dict[str, Any] = {}
    mf = ctx.get("metafeatures")
    if mf is not None:
        image_of = display_images(ctx.inputs["probe"], ctx.inputs["spec"])
        figures["metafeatures_gallery"] = FigureSpec(
            gallery_figure(mf.cluster_table, ev.top, image_of), "Meta-features in pictures",
            "Each row is a meta-feature (a K-means cluster of the atoms), from the simplest (top) to the most complex "
            "(bottom), shown by the images on which its member features are strongest. In the paper, simple "
            "meta-features are colours and textures; complex ones are object parts.")
    if _n_visualized(ctx.config) > 0:
        K = np.asarray(ctx["complexity"].score)
        for f in _extremes_first(K, ev.selected)[:2]:
            figures[f"decoder_feature_{f:05d}"] = FigureSpec(
                decoder_figure_of(ctx, f, steps=int(getattr(ctx.config, "visualize_steps", 64))),
                f"What each block decodes of feature {f} (paper Fig. 1B)",
                "Images that maximise the linear probe of an early, a middle and the last block for this feature "
                "(with the block's I_V), and the feature's own visualisation (right). A simple feature is readable "
                "from the early block; a complex one only at the end.")
    return figures


def _applies(ctx: Any) -> bool:
    """With a run folder and a budget; when the inputs are not given (a folder-only rerun), the
    folder's record decides, so a rerun keeps the same keys as the run."""
    if ctx.out is None or ctx.config.evidence_features <= 0:
        return False
    probe, spec = ctx.inputs.get("probe"), ctx.inputs.get("spec")
    return probe is None or spec is None or len(probe) > 0


def _settings() -> tuple[str, ...]:
    """The settings that change the evidence."""
    return ("evidence_features", "n_top", "seed", "codes", "nnls_tol", "nnls_max_iter", "evidence_visualize",
            "visualize_steps")


def _stage() -> Any:
    from ..stages import Stage

    return Stage("evidence", _compute, needs=("activations", "dictionary", "codes", "complexity"),
                 optional=("importance", "metafeatures"), settings=_settings(), inputs=("model", "probe"),
                 save=_save, load=_load, outputs=(f"{_FOLDER}/index.json",), applies=_applies, section="what",
                 figures=_figures)


STAGE = _stage()
