"""The self-contained HTML report of a run folder.

``build_report(run_dir)`` writes ``run_dir/report.html``. Everything it shows is in the file or
beside it in the run folder (``figures/*.png``, ``evidence/feature_XXXX.png``,
``visualizations/feature_XXXX.png``), referenced by relative paths: the page makes no network
request, loads no font, script or style from elsewhere, and opens from a copied run folder.

Layout: a summary (model, data, feature count, fidelity, timings), one section per question of
the paper (what / when / where / importance) with the figures found in ``figures/``, and a feature
explorer: the per-feature table as JSON in a ``<script type="application/json">`` tag, rendered
by vanilla JavaScript one page at a time (fast with 10,000 features), sortable and filterable by
complexity, importance, class and cluster, with a detail view per feature (evidence images,
visualisation, decodability curve drawn as inline SVG from the per-layer ``I_V``, flow and
dynamics values).

Evidence images (top images with concept heatmaps) need the model and the images; they are
rendered for a bounded set of features chosen by :func:`select_evidence_features`: every feature
when ``k <= max_evidence_features``, otherwise the simplest, the most complex and the most
important ones (by ``|Γ|``) plus a seeded random sample, a quarter of the budget each.

Stable element ids and attributes for tests and users' scripts: ``#explorer``, ``#detail``,
``th[data-sort="<column>"]``, ``tr[data-feature="<id>"]``.
"""

from __future__ import annotations

import html
import json
import math
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

if TYPE_CHECKING:
    import pandas as pd
    import torch

    from feature_complexity.models.spec import ModelSpec

__all__ = ["build_report", "render_feature_evidence", "render_feature_visualizations", "render_decoder_figures",
           "select_evidence_features", "SECTIONS"]

# Figure files go to the section of the first pattern their name matches (order matters:
# "complexity_vs_importance" is an importance figure, not a "what" one).
SECTIONS: list[tuple[str, str, str, tuple[str, ...]]] = [
    ("where", "Where: skip connections and residual branches",
     "Simple features are teleported to the last layer by the skip connections; complex ones are "
     "built up by the residual branches (paper §5, Fig. 4).",
     ("flow", "cka", "teleport", "branch", "residual")),
    ("when", "When: complexity across training",
     "Simple features are decodable early in training, complex ones later; important features get "
     "simpler over training (paper §6, Fig. 5-6).",
     ("dynamics", "temporal", "epoch", "sediment", "training", "checkpoint", "mean_complexity")),
    ("importance", "Importance: what the model relies on",
     "Signed importance Γ of each feature for its class against its complexity K (paper §4).",
     ("importance", "support", "inhibit", "gamma")),
    ("what", "What: features along the complexity spectrum",
     "Complexity K = 1 − mean over layers of the V-information I_V(f_l → z); the per-layer I_V is "
     "the feature's decodability curve (paper §3, §7).",
     ("complexity", "hist", "iv", "layer", "decod", "metafeature", "umap", "cluster", "gallery", "factor",
      "visual", "what")),
]

_EVIDENCE_DIR = "evidence"
_VIS_DIR = "visualizations"


# ----------------------------------------------------------------------------------- loading
def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err}); rerun the stage that writes it") from err


def _load_features(run_dir: Path) -> "pd.DataFrame":
    import pandas as pd

    path = run_dir / "features.parquet"
    if not path.exists():
        raise FileNotFoundError(
            f"{path} not found: {run_dir} is not a finished run folder; run "
            "`feature-complexity run ... --out RUN_DIR` first (or resume it)"
        )
    df = pd.read_parquet(path)
    missing = [c for c in ("feature", "complexity") if c not in df.columns]
    if missing:
        raise ValueError(f"{path} lacks the columns {missing}; it was not written by this package")
    return df.sort_values("feature").reset_index(drop=True)


def _evidence_name(feature: int) -> str:
    return f"feature_{int(feature):04d}.png"


def select_evidence_features(df: "pd.DataFrame", max_features: int, *, seed: int = 0) -> list[int]:
    """Which features get pre-rendered evidence images.

    All of them when ``len(df) <= max_features``; otherwise a quarter of the budget each to the
    simplest, the most complex, the most important (largest ``|importance|``) and a seeded
    uniform sample of the rest.

    Returns:
        sorted feature ids.
    """
    ids = df["feature"].to_numpy().astype(int)
    if len(ids) <= max_features:
        return sorted(ids.tolist())
    quarter = max(1, max_features // 4)
    order_k = np.argsort(df["complexity"].to_numpy(), kind="stable")
    chosen: list[int] = list(ids[order_k[:quarter]]) + list(ids[order_k[::-1][:quarter]])
    if "importance" in df.columns:
        order_g = np.argsort(-np.abs(df["importance"].to_numpy()), kind="stable")
        chosen += [i for i in ids[order_g] if i not in set(chosen)][:quarter]
    rest = np.setdiff1d(ids, np.array(chosen, dtype=int))
    n_rest = max(0, max_features - len(set(chosen)))
    rng = np.random.default_rng(seed)
    chosen += rng.choice(rest, size=min(n_rest, rest.size), replace=False).tolist()
    return sorted({int(i) for i in chosen})


# ---------------------------------------------------------------------- evidence rendering
def render_feature_evidence(
    run_dir: str | Path,
    spec: "ModelSpec",
    dataset: Any,
    features: Sequence[int],
    n_top: int = 6,
    device: str = "cpu",
    *,
    tile: int = 96,
    batch_size: int = 32,
    group_size: int = 64,
    progress: bool = False,
) -> list[Path]:
    """Write ``evidence/feature_XXXX.png`` for each feature: its ``n_top`` top images (top row)
    and the same images with the feature's concept heatmap overlaid (bottom row).

    Resumable: a feature whose file exists is skipped. Files are written atomically.

    Args:
        run_dir: run folder holding ``codes.npy`` (``Z (n, k)``) and ``dictionary.npz`` (``D``).
        spec: the model the run analysed.
        dataset: the probe images, in the order of ``codes.npy``: indexable to
            ``(normalised tensor (3, H, W), label)``, with ``raw_image(i) -> (H, W, 3) uint8``.
        features: feature ids.
        n_top: images per feature.
        device: where the model and the NNLS run.
        tile: side in pixels of each image in the PNG (small images are enlarged).
        batch_size: images per forward pass and NNLS batch.
        group_size: features whose files are computed together (and written before the next
            group starts).
        progress: show a progress bar (features done, features/s).

    Returns:
        the paths of all requested evidence files.
    """
    import torch

    from feature_complexity.report.heatmaps import position_codes, top_images

    run_dir = Path(run_dir)
    for name in ("codes.npy", "dictionary.npz"):
        if not (run_dir / name).exists():
            raise FileNotFoundError(f"{run_dir / name} not found; evidence needs the run's codes and dictionary")
    Z = np.load(run_dir / "codes.npy", mmap_mode="r")
    D = np.load(run_dir / "dictionary.npz")["D"]
    if len(dataset) != Z.shape[0]:
        raise ValueError(
            f"the dataset has {len(dataset)} images but codes.npy has {Z.shape[0]} rows: pass the "
            "same probe images, in the same order, as the run used"
        )
    out_dir = run_dir / _EVIDENCE_DIR
    out_dir.mkdir(exist_ok=True)
    paths = [out_dir / _evidence_name(f) for f in features]
    todo = [int(f) for f, p in zip(features, paths) if not p.exists()]
    from tqdm.auto import tqdm

    bar = tqdm(total=len(todo), desc="evidence", unit="feature", disable=not progress or not todo)
    # Features are done in groups: inside a group the union of their top images goes through
    # the model and the NNLS once (batched), and each group's files are written before the
    # next starts, so an interrupted run keeps its finished groups.
    for start in range(0, len(todo), group_size):
        group = todo[start:start + group_size]
        tops = {f: top_images(np.asarray(Z[:, [f]]), 0, n_top) for f in group}
        needed = sorted({int(i) for idx in tops.values() for i in idx})
        maps: dict[tuple[int, int], np.ndarray] = {}  # (image, feature) -> (h, w) codes
        for c in range(0, len(needed), batch_size):
            chunk = needed[c:c + batch_size]
            batch = torch.stack([dataset[i][0] for i in chunk])
            codes = position_codes(spec, batch, D, device=device)  # (b, h, w, k)
            for j, i in enumerate(chunk):
                for f in group:
                    if i in tops[f]:
                        maps[(i, f)] = codes[j, :, :, f].copy()
        for f in group:
            _write_evidence(out_dir / _evidence_name(f), [
                (np.asarray(dataset.raw_image(int(i)), dtype=np.uint8), maps[(int(i), f)]) for i in tops[f]
            ], tile)
            bar.update(1)
    bar.close()
    return paths


def _write_evidence(path: Path, items: list[tuple[np.ndarray, np.ndarray]], tile: int) -> None:
    """One PNG: the images (top row) and their heatmap overlays (bottom row), atomically.

    ``items``: ``(raw image (H, W, 3) uint8, code map (h, w))`` pairs.
    """
    from PIL import Image

    from feature_complexity.io import atomic_path
    from feature_complexity.report.heatmaps import overlay, upsample

    heats = [upsample(m, raw.shape[:2]) for raw, m in items]
    vmax = max(float(h.max()) for h in heats)  # one scale per feature: its images compare
    n = len(items)
    canvas = Image.new("RGB", (tile * n + 2 * (n - 1), 2 * tile + 2), (255, 255, 255))
    for j, ((raw, _), heat) in enumerate(zip(items, heats)):
        resample = Image.NEAREST if raw.shape[0] < tile else Image.BILINEAR
        canvas.paste(Image.fromarray(raw).resize((tile, tile), resample), (j * (tile + 2), 0))
        over = overlay(raw, heat, vmax=vmax if vmax > 0 else None)
        canvas.paste(Image.fromarray(over).resize((tile, tile), resample), (j * (tile + 2), tile + 2))
    with atomic_path(path) as tmp:
        canvas.save(tmp, format="PNG")


def render_feature_visualizations(
    run_dir: str | Path,
    spec: "ModelSpec",
    features: Sequence[int],
    *,
    spectrum: "torch.Tensor | None" = None,
    color: "torch.Tensor | None" = None,
    steps: int = 64,
    seed: int = 0,
    device: str = "cpu",
    progress: bool = False,
) -> list[Path]:
    """Write ``visualizations/feature_XXXX.png`` (a Fourier feature visualisation of the atom
    ``d_i``) for each feature; resumable, atomic. See :mod:`feature_complexity.report.visualize`
    (``spectrum``: :func:`average_spectrum`, ``color``: :func:`color_correlation`)."""
    from PIL import Image

    from feature_complexity.io import atomic_path
    from feature_complexity.report.visualize import visualize_feature

    run_dir = Path(run_dir)
    D = np.load(run_dir / "dictionary.npz")["D"]
    out_dir = run_dir / _VIS_DIR
    out_dir.mkdir(exist_ok=True)
    from tqdm.auto import tqdm

    paths = []
    for f in tqdm(features, desc="visualisations", unit="feature", disable=not progress):
        path = out_dir / _evidence_name(f)
        paths.append(path)
        if path.exists():
            continue
        img = visualize_feature(spec, D[int(f)], spectrum=spectrum, color=color, steps=steps,
                                seed=seed + int(f), device=device)
        with atomic_path(path) as tmp:
            Image.fromarray(img).save(tmp, format="PNG")
    return paths


def render_decoder_figures(
    run_dir: str | Path,
    spec: "ModelSpec",
    features: Sequence[int],
    *,
    layers: "dict[str, np.ndarray] | None" = None,
    spectrum: "torch.Tensor | None" = None,
    color: "torch.Tensor | None" = None,
    steps: int = 64,
    seed: int = 0,
    device: str = "cpu",
) -> list[Path]:
    """The paper's Fig. 1B for each feature: what an early, a middle and the last block can
    decode of it (visualisation of the ridge probe refitted on all probe images, with the penalty
    the complexity engine chose for that layer and feature), beside the feature's own
    visualisation. Writes ``figures/decoder_feature_XXXX.png``; resumable, atomic.

    Args:
        run_dir: run folder with ``codes.npy``, ``dictionary.npz``, ``complexity.npz`` and, unless
            ``layers`` is given, ``activations/``.
        spec: the model.
        features: feature ids.
        layers: ``{layer name: (n_images, C_l)}`` pooled activations (default: read
            ``run_dir/activations`` with ``Activations.load``).
        spectrum, color, steps, seed, device: as
            :func:`~feature_complexity.report.visualize.visualize_feature`.
    """
    from feature_complexity.complexity import RidgeProbeStats
    from feature_complexity.io import save_figure
    from feature_complexity.report.visualize import (
        decoder_figure,
        decoder_layers,
        visualize_decoder,
        visualize_feature,
    )

    run_dir = Path(run_dir)
    paths = [run_dir / "figures" / f"decoder_{_evidence_name(f)}" for f in features]
    todo = [int(f) for f, p in zip(features, paths) if not p.exists()]
    if not todo:
        return paths
    for name in ("codes.npy", "dictionary.npz", "complexity.npz"):
        if not (run_dir / name).exists():
            raise FileNotFoundError(f"{run_dir / name} not found; the decoder figure needs it")
    if layers is None:
        from feature_complexity.activations import Activations

        layers = Activations.load(run_dir / "activations").layers
    cx = np.load(run_dir / "complexity.npz")
    names = [str(n) for n in cx["layer_names"]]
    Z = np.load(run_dir / "codes.npy", mmap_mode="r")
    D = np.load(run_dir / "dictionary.npz")["D"]
    chosen = decoder_layers(names)
    weights: dict[str, np.ndarray] = {}  # layer -> (C_l, len(todo))
    for name in chosen:
        X = np.asarray(layers[name], dtype=np.float64)
        stats = RidgeProbeStats(X.shape[1], len(todo), n_folds=2)
        # decoder() refits on all folds together, so the fold split does not matter here
        stats.update(X, np.asarray(Z[:, todo], dtype=np.float64), np.arange(X.shape[0]) % 2)
        W, _ = stats.decoder(cx["alpha"][names.index(name), todo])
        weights[name] = np.asarray(W)
    for j, f in enumerate(todo):
        images, iv = {}, {}
        for name in chosen:
            w = weights[name][:, j]
            iv[name] = float(cx["per_layer"][names.index(name), f])
            if np.any(w != 0):  # nan penalty = the null model: this layer decodes nothing
                images[name] = visualize_decoder(spec, name, w, spectrum=spectrum, color=color,
                                                 steps=steps, seed=seed + f, device=device)
            else:
                images[name] = np.full((spec.input_size, spec.input_size, 3), 255, dtype=np.uint8)
        own = visualize_feature(spec, D[f], spectrum=spectrum, color=color, steps=steps, seed=seed + f,
                                device=device)
        fig = decoder_figure(images, feature_image=own, iv=iv,
                             title=f"feature {f}: K = {float(cx['score'][f]):.2f} — what each block decodes")
        save_figure(run_dir / "figures" / f"decoder_{_evidence_name(f)}", fig)
    return paths


# ------------------------------------------------------------------------- meta-features
def _ensure_metafeatures(run_dir: Path, df: "pd.DataFrame", dataset: Any, seed: int,
                         embed: str = "umap") -> "pd.DataFrame | None":
    """Cluster the dictionary (once: ``metafeatures.parquet`` is reused) and write its figures.

    Returns the per-feature table ``feature, cluster, embed_x, embed_y`` or ``None`` when the run
    has no dictionary.
    """
    import pandas as pd

    from feature_complexity.io import save_figure, write_parquet

    path = run_dir / "metafeatures.parquet"
    if path.exists():
        return pd.read_parquet(path)
    if not (run_dir / "dictionary.npz").exists() or "importance" not in df.columns:
        return None
    from feature_complexity.analyses import metafeatures as mfm

    D = np.load(run_dir / "dictionary.npz")["D"]
    if D.shape[0] != len(df):
        raise ValueError(f"dictionary.npz has {D.shape[0]} atoms but features.parquet {len(df)} rows")
    K = df["complexity"].to_numpy()
    G = df["importance"].to_numpy()
    mf = mfm.metafeatures(D, K, G, seed=seed, embed=embed)  # type: ignore[arg-type]
    fig_dir = run_dir / "figures"
    save_figure(fig_dir / "metafeatures_embedding.png", mfm.embedding_figure(mf, K, G))
    save_figure(fig_dir / "metafeatures_clusters.png", mfm.cluster_complexity_figure(mf))
    if dataset is not None and hasattr(dataset, "raw_image") and (run_dir / "codes.npy").exists():
        from feature_complexity.report.heatmaps import top_images

        Z = np.load(run_dir / "codes.npy", mmap_mode="r")
        fig = mfm.cluster_gallery_figure(
            mf, dataset.raw_image, lambda f: top_images(np.asarray(Z[:, [f]]), 0, 3)
        )
        save_figure(fig_dir / "metafeatures_gallery.png", fig)
    table = pd.DataFrame({
        "feature": df["feature"].to_numpy(),
        "cluster": mf.cluster,
        "embed_x": mf.embedding[:, 0],
        "embed_y": mf.embedding[:, 1],
    })
    write_parquet(path, table)
    return table


# ------------------------------------------------------------------------------ building
def build_report(
    run_dir: str | Path,
    *,
    spec: "ModelSpec | None" = None,
    dataset: Any = None,
    n_top: int = 6,
    max_evidence_features: int = 300,
    visualize: bool = False,
    visualize_steps: int = 64,
    max_visualized_features: int = 40,
    decoder_features: int = 2,
    metafeatures: bool = True,
    embed: str = "umap",
    device: str = "cpu",
    seed: int = 0,
    no_evidence_reason: str | None = None,
    progress: bool = True,
) -> Path:
    """Write ``run_dir/report.html`` and return its path.

    Args:
        run_dir: a run folder (``features.parquet`` required; everything else optional).
        spec, dataset: the model and probe images of the run; with both, evidence images (top
            images + heatmaps) are rendered for the features of :func:`select_evidence_features`.
            Without them the report shows what the run folder holds and says so.
        n_top: top images per feature in the evidence.
        max_evidence_features: budget of features with evidence images.
        visualize: also compute Fourier feature visualisations (for at most
            ``max_visualized_features`` of the evidence features, the extremes first).
        visualize_steps: optimisation steps per visualisation.
        decoder_features: with ``visualize``, draw the paper's Fig. 1B (decoder visualisations at
            an early, a middle and the last block) for this many features, the simplest and the
            most complex, into ``figures/decoder_feature_XXXX.png``.
        metafeatures: cluster the dictionary (K-means + UMAP/PCA) when ``features.parquet`` has
            no ``cluster`` column; cached in ``metafeatures.parquet``.
        embed: ``"umap"`` or ``"pca"``, the 2-D embedding of the meta-features figure.
        device: ``"cpu"`` or ``"cuda"``.
        seed: seeds the evidence sample, the clustering and the visualisations.
        no_evidence_reason: why ``spec``/``dataset`` are missing, shown in the report.
        progress: progress bars for the evidence images and visualisations (stderr).
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run folder {run_dir} does not exist; give the --out folder of a run")
    df = _load_features(run_dir)
    manifest = _read_json(run_dir / "manifest.json") or {}
    notes: list[str] = []

    if metafeatures and "cluster" not in df.columns:
        mf_table = _ensure_metafeatures(run_dir, df, dataset, seed, embed)
        if mf_table is not None:
            df = df.merge(mf_table[["feature", "cluster"]], on="feature", how="left")

    df = _merge_dynamics(run_dir, df)

    evidence_ids: list[int] = []
    if spec is not None and dataset is not None:
        evidence_ids = select_evidence_features(df, max_evidence_features, seed=seed)
        render_feature_evidence(run_dir, spec, dataset, evidence_ids, n_top, device, progress=progress)
        if visualize:
            vis_ids = _extremes_first(df, evidence_ids)[:max_visualized_features]
            spectrum = color = None
            try:
                from feature_complexity.report.visualize import average_spectrum, color_correlation

                spectrum = average_spectrum(dataset, spec=spec, max_images=256)
                color = color_correlation(dataset, spec=spec, max_images=256)
            except (ValueError, TypeError) as err:  # unusual dataset: plain Fourier fallback
                notes.append(f"average spectrum unavailable ({err}); plain Fourier parameterisation used")
            render_feature_visualizations(run_dir, spec, vis_ids, spectrum=spectrum, color=color,
                                          steps=visualize_steps, seed=seed, device=device,
                                          progress=progress)
            if decoder_features > 0 and (run_dir / "complexity.npz").exists():
                order = df.sort_values("complexity", kind="stable")["feature"].astype(int).tolist()
                half = (decoder_features + 1) // 2  # the simplest and the most complex
                picks = list(dict.fromkeys(order[:half] + order[::-1][:decoder_features - half]))
                try:
                    render_decoder_figures(run_dir, spec, picks, spectrum=spectrum, color=color,
                                           steps=visualize_steps, seed=seed, device=device)
                except FileNotFoundError as err:  # activations were not kept
                    notes.append(f"Decoder visualisations (Fig. 1B) skipped: {err}")
    else:
        why = no_evidence_reason or "the model and the probe images were not given"
        notes.append(
            f"Evidence images (top images and concept heatmaps) were not rendered: {why}. Rebuild "
            "with `feature-complexity report RUN_DIR` on a machine that has the model and the images."
        )
    # files present from earlier builds count as well (the renderers are resumable)
    has_evidence = _rendered(run_dir / _EVIDENCE_DIR)
    has_vis = _rendered(run_dir / _VIS_DIR)
    if has_evidence and len(has_evidence) < len(df):
        notes.append(
            f"Evidence images exist for {len(has_evidence)} of {len(df)} features (the simplest, the "
            "most complex, the most important and a random sample); tick “with images” to list them."
        )

    page = _render_page(run_dir, df, manifest, has_evidence, has_vis, notes)
    out = run_dir / "report.html"
    from feature_complexity.io import atomic_path

    with atomic_path(out) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return out


def _rendered(folder: Path) -> set[int]:
    """Feature ids with a ``feature_XXXX.png`` in ``folder``."""
    if not folder.is_dir():
        return set()
    found = (re.fullmatch(r"feature_(\d+)\.png", p.name) for p in folder.iterdir())
    return {int(m.group(1)) for m in found if m}


def _extremes_first(df: "pd.DataFrame", ids: Sequence[int]) -> list[int]:
    """``ids`` ordered simplest, most complex, next simplest, next most complex, …"""
    sub = df[df["feature"].isin(ids)].sort_values("complexity", kind="stable")["feature"].tolist()
    out: list[int] = []
    lo, hi = 0, len(sub) - 1
    while lo <= hi:
        out.append(int(sub[lo]))
        if hi != lo:
            out.append(int(sub[hi]))
        lo, hi = lo + 1, hi - 1
    return out


# ------------------------------------------------------------------------------ rendering
def _esc(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _fmt(v: Any) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, (int, np.integer)):
        return f"{int(v):,}"
    if isinstance(v, (float, np.floating)):
        v = float(v)
        if not math.isfinite(v):
            return "—"
        return f"{v:.4g}"
    if isinstance(v, (list, tuple)) and len(v) <= 8 and all(not isinstance(i, (dict, list)) for i in v):
        return ", ".join(_fmt(i) for i in v)
    if isinstance(v, (dict, list, tuple)):
        return json.dumps(v)[:300]
    return str(v)


def _kv_table(items: dict[str, Any], cls: str = "kv") -> str:
    rows = "".join(f"<tr><th>{_esc(k)}</th><td>{_esc(_fmt(v))}</td></tr>" for k, v in items.items()
                   if v is not None and v != {} and v != [])
    return f'<table class="{cls}">{rows}</table>' if rows else ""


def _scalars(d: Any, prefix: str = "", depth: int = 0) -> dict[str, Any]:
    """Flatten the scalar leaves of a JSON object (two levels) for a key/value table."""
    out: dict[str, Any] = {}
    if not isinstance(d, dict):
        return out
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and depth < 1:
            out.update(_scalars(v, key + " · ", depth + 1))
        elif isinstance(v, (str, int, float, bool)) or (isinstance(v, list) and len(v) <= 8
                                                         and all(isinstance(i, (int, float, str)) for i in v)):
            out[key] = v
    return out


def _summary(run_dir: Path, df: "pd.DataFrame", manifest: dict) -> str:
    model = manifest.get("model")
    data = manifest.get("data")
    info: dict[str, Any] = {}
    if isinstance(model, dict):
        info["model"] = model.get("name")
        for key in ("checkpoint", "weights"):
            if model.get(key):
                info[f"model {key}"] = model[key]
    elif model:
        info["model"] = model
    if isinstance(data, dict):
        desc = data.get("description") or data.get("name") or data.get("kind") or data.get("root")
        info["data"] = desc if desc else json.dumps(data)[:200]
    elif data:
        info["data"] = data
    info["images"] = manifest.get("n_images") or (data.get("n_images") if isinstance(data, dict) else None)
    info["features"] = len(df)
    if "class" in df.columns:
        info["classes with features"] = int(df["class"].nunique())
    info["complexity (mean ± sd)"] = f"{df['complexity'].mean():.3f} ± {df['complexity'].std():.3f}"
    if "importance" in df.columns:
        imp = df["importance"].to_numpy()
        info["inhibiting features (Γ < 0)"] = int((imp < 0).sum())
        if len(df) > 2:
            from scipy.stats import spearmanr

            rho = spearmanr(df["complexity"], np.abs(imp)).statistic
            info["Spearman(K, |Γ|)"] = float(rho)
    for key in ("seed", "created", "finished"):
        if key in manifest:
            info[key] = manifest[key]
    parts = [f'<div class="card"><h3>Run</h3>{_kv_table(info)}</div>']
    fidelity = _read_json(run_dir / "fidelity.json")
    if isinstance(fidelity, dict):
        parts.append(f'<div class="card"><h3>Dictionary fidelity</h3>{_kv_table(_scalars(fidelity))}</div>')
    timings = manifest.get("timings") or manifest.get("timings_s")
    if isinstance(timings, dict) and timings:
        t = {k: (f"{v:.1f} s" if isinstance(v, (int, float)) else v) for k, v in _scalars(timings).items()}
        parts.append(f'<div class="card"><h3>Timings</h3>{_kv_table(t)}</div>')
    versions = manifest.get("versions")
    if isinstance(versions, dict):
        parts.append(f'<details class="card"><summary>Package versions</summary>{_kv_table(versions)}</details>')
    return '<div class="cards">' + "".join(parts) + "</div>"


# Analyses that may write into a subfolder of the run (the demo puts dynamics in dynamics/):
# their figures belong to one section whatever their names.
_SUBFOLDERS: dict[str, str] = {"dynamics": "when", "flow": "where"}


def _figure_sections(run_dir: Path) -> dict[str, list[str]]:
    """Figure paths relative to ``run_dir``, by section key (plus ``"other"``)."""
    by_section: dict[str, list[str]] = {key: [] for key, *_ in SECTIONS}
    by_section["other"] = []
    fig_dir = run_dir / "figures"
    for path in sorted(fig_dir.glob("*.png")) if fig_dir.is_dir() else []:
        name = path.stem.lower()
        for key, _title, _blurb, patterns in SECTIONS:
            if any(p in name for p in patterns):
                by_section[key].append(f"figures/{path.name}")
                break
        else:
            by_section["other"].append(f"figures/{path.name}")
    for sub, key in _SUBFOLDERS.items():
        sub_dir = run_dir / sub / "figures"
        if sub_dir.is_dir():
            by_section[key] += [f"{sub}/figures/{p.name}" for p in sorted(sub_dir.glob("*.png"))]
    return by_section


def _figures_html(paths: list[str]) -> str:
    return "".join(
        f'<figure><img src="{_esc(p)}" alt="{_esc(Path(p).name)}" loading="lazy">'
        f"<figcaption>{_esc(Path(p).stem.replace('_', ' '))}</figcaption></figure>"
        for p in paths
    )


def _merge_dynamics(run_dir: Path, df: "pd.DataFrame") -> "pd.DataFrame":
    """Add the per-feature dynamics values (temporal decoding score ``A`` …) to the table when
    ``dynamics_features.parquet`` describes the same features (same count and complexities:
    the dynamics analysis extracts its own features at the final checkpoint, which are the
    run's only when both used the same model, images and settings)."""
    import pandas as pd

    for path in (run_dir / "dynamics_features.parquet", run_dir / "dynamics" / "dynamics_features.parquet"):
        if not path.exists():
            continue
        dyn = pd.read_parquet(path)
        if len(dyn) != len(df) or "complexity" not in dyn.columns:
            return df
        if not np.allclose(dyn["complexity"].to_numpy(), df["complexity"].to_numpy(), atol=1e-5):
            return df
        new = [c for c in dyn.columns if c not in df.columns and not c.startswith("iv_")
               and dyn[c].dtype.kind in "biuf"]
        if new:
            df = df.copy()
            for c in new:
                df[c] = dyn[c].to_numpy()
        return df
    return df


def _json_for_script(obj: Any) -> str:
    # "</" would close the script element early; "<!--" could start a comment state
    return json.dumps(obj, separators=(",", ":"), allow_nan=False).replace("</", "<\\/").replace("<!--", "<\\!--")


def _clean(v: Any, nd: int = 5) -> Any:
    if isinstance(v, (float, np.floating)):
        v = float(v)
        return round(v, nd) if math.isfinite(v) else None
    if isinstance(v, (np.integer,)):
        return int(v)
    return v


def _explorer_data(df: "pd.DataFrame", has_evidence: set[int], has_vis: set[int], manifest: dict) -> dict:
    iv_cols = [c for c in df.columns if c.startswith("iv_")]
    base = {"feature", "class", "class_name", "complexity", "importance", "cluster"}
    extra = [c for c in df.columns if c not in base and not c.startswith("iv_")
             and df[c].dtype.kind in "biuf"]
    cols: dict[str, list] = {}
    for c in ["feature", "class", "class_name", "complexity", "importance", "cluster", *extra]:
        if c in df.columns:
            cols[c] = [_clean(v) for v in df[c].tolist()]
    ids = df["feature"].astype(int).tolist()
    cols["evidence"] = [1 if i in has_evidence else 0 for i in ids]
    cols["vis"] = [1 if i in has_vis else 0 for i in ids]
    return {
        "columns": cols,
        "extra": extra,
        "layers": [c[3:] for c in iv_cols],
        "iv": [[_clean(v, 4) for v in row] for row in df[iv_cols].to_numpy().tolist()] if iv_cols else [],
        "evidence_dir": _EVIDENCE_DIR,
        "vis_dir": _VIS_DIR,
    }


def _section_extras(run_dir: Path, key: str) -> str:
    """Scalar results of the optional analyses, shown beside their figures."""
    name = {"when": "dynamics.json", "where": "flow.json"}.get(key)
    if name is None:
        return ""
    data = _read_json(run_dir / name)
    if data is None:
        data = _read_json(run_dir / name.split(".")[0] / name)
    if not isinstance(data, dict):
        return ""
    return f'<div class="card"><h3>{_esc(name)}</h3>{_kv_table(_scalars(data))}</div>'


def _spectrum_strip(df: "pd.DataFrame", has_evidence: set[int], has_vis: set[int], n: int = 3) -> str:
    """The simplest and the most complex features that have evidence images, side by side
    (top images with heatmaps, and the visualisation when computed): what features look like at
    both ends of the complexity spectrum."""
    sub = df[df["feature"].astype(int).isin(has_evidence)].sort_values("complexity", kind="stable")
    if sub.empty:
        return ""
    ends = [("Simplest", sub.head(n)), ("Most complex", sub.iloc[::-1].head(n))]
    cols = []
    for label, rows in ends:
        items = []
        for f, k in zip(rows["feature"].astype(int), rows["complexity"]):
            vis = (f'<img src="{_VIS_DIR}/{_evidence_name(f)}" alt="visualisation of feature {f}" '
                   'class="vis" loading="lazy">' if f in has_vis else "")
            items.append(f'<div class="strip-item"><div class="muted">feature {f} · K = {float(k):.3f}</div>'
                         f'<div class="strip-row"><img src="{_EVIDENCE_DIR}/{_evidence_name(f)}" '
                         f'alt="top images of feature {f}" class="ev" loading="lazy">{vis}</div></div>')
        cols.append(f'<div class="strip-col"><h3>{label}</h3>{"".join(items)}</div>')
    return f'<div class="strip">{"".join(cols)}</div>'


def _render_page(run_dir: Path, df: "pd.DataFrame", manifest: dict, has_evidence: set[int],
                 has_vis: set[int], notes: list[str]) -> str:
    model = manifest.get("model")
    model_name = model.get("name") if isinstance(model, dict) else model
    title = f"Feature complexity report — {model_name or run_dir.name}"
    figs = _figure_sections(run_dir)
    sections = []
    missing_hint = {
        "when": "No training-dynamics results in this run (run `feature-complexity dynamics`).",
        "where": "No residual-flow results in this run (run `feature-complexity flow`).",
        "importance": "No importance figure in this run.",
        "what": "No complexity figure in this run.",
    }
    for key, sec_title, blurb, _ in SECTIONS[::-1]:  # what, importance, when, where
        body = _figures_html(figs[key]) + _section_extras(run_dir, key)
        if key == "what":
            body = _spectrum_strip(df, has_evidence, has_vis) + body
        if not body:
            body = f'<p class="muted">{_esc(missing_hint[key])}</p>'
        sections.append(f'<section id="sec-{key}"><h2>{_esc(sec_title)}</h2><p>{_esc(blurb)}</p>'
                        f'<div class="figs">{body}</div></section>')
    order = {"what": 0, "when": 1, "where": 2, "importance": 3}
    sections.sort(key=lambda s: order[re.search(r'id="sec-(\w+)"', s).group(1)])
    if figs["other"]:
        sections.append(f'<section id="sec-other"><h2>Other figures</h2><div class="figs">'
                        f'{_figures_html(figs["other"])}</div></section>')
    notes_html = "".join(f'<p class="note">{_esc(n)}</p>' for n in notes)
    data = _explorer_data(df, has_evidence, has_vis, manifest)
    has_cluster = "cluster" in df.columns
    has_importance = "importance" in df.columns
    nav = "".join(f'<a href="#sec-{k}">{k.capitalize()}</a>' for k in ("what", "when", "where", "importance"))
    return _TEMPLATE.format(
        title=_esc(title),
        heading=_esc(title),
        nav=nav,
        summary=_summary(run_dir, df, manifest),
        notes=notes_html,
        sections="".join(sections),
        data=_json_for_script(data),
        css=_CSS,
        js=_JS,
        cluster_th='<th data-sort="cluster">cluster</th>' if has_cluster else "",
        importance_th='<th data-sort="importance">importance Γ</th>' if has_importance else "",
        cluster_filter=('<label>cluster <select id="f-cluster"><option value="">all</option></select></label>'
                        if has_cluster else ""),
        importance_filter=('<label>Γ from <input id="f-gmin" type="number" step="any" size="6"></label>'
                           '<label>to <input id="f-gmax" type="number" step="any" size="6"></label>'
                           if has_importance else ""),
        n_features=len(df),
    )


_CSS = """
:root{--fg:#1d232b;--muted:#65707d;--line:#dfe3e8;--accent:#2f6fb3;--bg:#fff;--soft:#f5f7f9}
*{box-sizing:border-box}
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;color:var(--fg);
 background:var(--bg);margin:0}
header{padding:18px 28px 8px;border-bottom:1px solid var(--line)}
header h1{font-size:20px;margin:0 0 6px}
nav a{margin-right:14px;color:var(--accent);text-decoration:none}
main{padding:0 28px 40px;max-width:1400px}
h2{font-size:17px;margin:28px 0 6px;border-bottom:1px solid var(--line);padding-bottom:4px}
h3{font-size:14px;margin:0 0 6px}
.muted{color:var(--muted)} .note{background:#fff8e1;border-left:3px solid #e0b000;padding:6px 10px;margin:8px 0}
.cards{display:flex;flex-wrap:wrap;gap:14px;margin-top:14px}
.card{border:1px solid var(--line);border-radius:6px;padding:10px 12px;background:var(--soft);min-width:260px}
table.kv th{text-align:left;font-weight:500;color:var(--muted);padding:1px 12px 1px 0;vertical-align:top}
table.kv td{padding:1px 0;word-break:break-word;max-width:420px}
.figs{display:flex;flex-wrap:wrap;gap:16px;align-items:flex-start}
figure{margin:0;max-width:640px} figure img{max-width:100%;border:1px solid var(--line)}
figcaption{font-size:12px;color:var(--muted)}
#explorer-wrap{display:flex;gap:20px;align-items:flex-start;flex-wrap:wrap}
#explorer-pane{flex:1 1 560px;min-width:480px}
.filters{display:flex;flex-wrap:wrap;gap:10px;align-items:center;margin:8px 0}
.filters label{font-size:13px;color:var(--muted)}
.filters input,.filters select{font:inherit;padding:2px 4px} .filters input[type=number]{width:6.5em}
table#explorer{border-collapse:collapse;width:100%;font-variant-numeric:tabular-nums}
#explorer th{position:sticky;top:0;background:var(--soft);border-bottom:2px solid var(--line);text-align:left;
 padding:5px 8px;cursor:pointer;user-select:none;white-space:nowrap}
#explorer th.asc::after{content:" ▲"} #explorer th.desc::after{content:" ▼"}
#explorer td{border-bottom:1px solid var(--line);padding:3px 8px}
#explorer tr[data-feature]{cursor:pointer} #explorer tr[data-feature]:hover{background:#eef4fb}
#explorer tr.selected{background:#dbe9f8}
.bar{display:inline-block;height:8px;background:var(--accent);vertical-align:middle;margin-left:6px;opacity:.6}
.neg{color:#8a2be2}
.pager{margin:8px 0;display:flex;gap:8px;align-items:center}
#detail{flex:1 1 420px;min-width:380px;border:1px solid var(--line);border-radius:6px;padding:12px;position:sticky;top:10px}
#detail img{max-width:100%;image-rendering:pixelated;border:1px solid var(--line)}
#detail .row{display:flex;gap:16px;flex-wrap:wrap}
svg text{font-size:10px;fill:var(--muted)}
.strip{display:flex;gap:24px;flex-wrap:wrap;width:100%}
.strip-col{flex:1 1 420px} .strip-item{margin-bottom:10px}
.strip-row{display:flex;gap:6px;align-items:flex-start}
.strip-item img{image-rendering:pixelated} .strip-item img.ev{max-width:calc(100% - 102px)}
.strip-item img.vis{width:96px;flex:none}
"""

_JS = r"""
(function(){
"use strict";
const DATA = JSON.parse(document.getElementById("feature-data").textContent);
const C = DATA.columns, N = C.feature.length, PAGE = 50;
const has = k => Object.prototype.hasOwnProperty.call(C, k);
let order = Array.from({length: N}, (_, i) => i), view = order, page = 0;
let sortKey = null, sortDir = 1, selected = null;
const $ = id => document.getElementById(id);
const fmt = v => (v === null || v === undefined) ? "—" :
  (typeof v === "number" ? (Number.isInteger(v) ? String(v) : v.toFixed(3)) : String(v));
const esc = s => String(s).replace(/[&<>"']/g, c => ({"&":"&amp;","<":"&lt;",">":"&gt;","\"":"&quot;","'":"&#39;"}[c]));
const className = i => has("class_name") && C.class_name[i] !== null ? C.class_name[i] : (has("class") ? C["class"][i] : "");
const pad = n => String(n).padStart(4, "0");

// filter choices
const classSel = $("f-class"), clusterSel = $("f-cluster");
if (has("class")) {
  const seen = new Map();
  for (let i = 0; i < N; i++) if (!seen.has(C["class"][i])) seen.set(C["class"][i], className(i));
  [...seen.entries()].sort((a, b) => a[0] - b[0]).forEach(([v, name]) => {
    const o = document.createElement("option"); o.value = v; o.textContent = v + " · " + name; classSel.appendChild(o);
  });
} else { classSel.parentElement.style.display = "none"; }
if (clusterSel) {
  [...new Set(C.cluster.filter(v => v !== null))].sort((a, b) => a - b).forEach(v => {
    const o = document.createElement("option"); o.value = v; o.textContent = v; clusterSel.appendChild(o);
  });
}
const num = id => { const el = $(id); if (!el || el.value === "") return null; const v = parseFloat(el.value); return isNaN(v) ? null : v; };

function applyFilters() {
  const cls = classSel.value, clu = clusterSel ? clusterSel.value : "";
  const kmin = num("f-kmin"), kmax = num("f-kmax"), gmin = num("f-gmin"), gmax = num("f-gmax");
  const ev = $("f-evidence").checked;
  view = order.filter(i =>
    (cls === "" || String(C["class"][i]) === cls) &&
    (clu === "" || String(C.cluster[i]) === clu) &&
    (kmin === null || C.complexity[i] >= kmin) && (kmax === null || C.complexity[i] <= kmax) &&
    (gmin === null || C.importance[i] >= gmin) && (gmax === null || C.importance[i] <= gmax) &&
    (!ev || C.evidence[i]));
  page = 0; render();
}
function sortBy(key) {
  if (sortKey === key) sortDir = -sortDir; else { sortKey = key; sortDir = 1; }
  const col = key === "class" ? C["class"] : C[key];
  order = Array.from({length: N}, (_, i) => i).sort((a, b) => {
    const x = col[a], y = col[b];
    if (x === y) return C.feature[a] - C.feature[b];
    if (x === null) return 1; if (y === null) return -1;
    return (x < y ? -1 : 1) * sortDir;
  });
  document.querySelectorAll("#explorer th[data-sort]").forEach(th => {
    th.classList.remove("asc", "desc");
    if (th.dataset.sort === key) th.classList.add(sortDir > 0 ? "asc" : "desc");
  });
  applyFilters();
}
// bars span the observed range of K (features often cluster in a narrow band of [0, 1])
const kVals = C.complexity.filter(v => v !== null);
const kLo = Math.min(...kVals), kSpan = Math.max(1e-9, Math.max(...kVals) - kLo);
function render() {
  const body = $("explorer-body"), pages = Math.max(1, Math.ceil(view.length / PAGE));
  page = Math.min(page, pages - 1);
  const rows = [];
  for (const i of view.slice(page * PAGE, page * PAGE + PAGE)) {
    const f = C.feature[i];
    let tr = `<tr data-feature="${f}"${f === selected ? ' class="selected"' : ""}><td>${f}</td>`;
    tr += `<td>${esc(className(i))}</td>`;
    tr += `<td>${fmt(C.complexity[i])}<span class="bar" style="width:${2 + Math.round(40 * (C.complexity[i] - kLo) / kSpan)}px"></span></td>`;
    if (has("importance")) tr += `<td class="${C.importance[i] < 0 ? "neg" : ""}">${fmt(C.importance[i])}</td>`;
    if (clusterSel) tr += `<td>${fmt(C.cluster[i])}</td>`;
    tr += `<td>${C.evidence[i] ? "▣" : ""}${C.vis[i] ? " ✦" : ""}</td></tr>`;
    rows.push(tr);
  }
  body.innerHTML = rows.join("");
  $("page-info").textContent = `${view.length} of ${N} features · page ${page + 1} / ${pages}`;
  $("prev").disabled = page === 0; $("next").disabled = page >= pages - 1;
}
function curve(i) {
  if (!DATA.layers.length) return '<p class="muted">No per-layer I_V in features.parquet.</p>';
  const iv = DATA.iv[i], L = iv.length, W = 360, H = 170, l = 34, r = 10, t = 10, b = 34;
  const x = j => l + (L === 1 ? (W - l - r) / 2 : j * (W - l - r) / (L - 1)), y = v => t + (1 - v) * (H - t - b);
  let s = `<svg id="ivcurve" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" role="img" aria-label="decodability curve">`;
  for (const v of [0, 0.5, 1]) s += `<line x1="${l}" x2="${W - r}" y1="${y(v)}" y2="${y(v)}" stroke="#e3e6ea"/><text x="${l - 4}" y="${y(v) + 3}" text-anchor="end">${v}</text>`;
  const pts = iv.map((v, j) => `${x(j)},${y(v === null ? 0 : v)}`).join(" ");
  s += `<polygon points="${x(0)},${y(0)} ${pts} ${x(L - 1)},${y(0)}" fill="#2f6fb3" opacity="0.12"/>`;
  s += `<polyline points="${pts}" fill="none" stroke="#2f6fb3" stroke-width="2"/>`;
  iv.forEach((v, j) => { s += `<circle cx="${x(j)}" cy="${y(v === null ? 0 : v)}" r="3" fill="#2f6fb3"><title>${esc(DATA.layers[j])}: ${fmt(v)}</title></circle>`; });
  const step = Math.max(1, Math.ceil(L / 5));  // about five labels fit under 360 px
  DATA.layers.forEach((n, j) => { if (j % step === 0 || j === L - 1) s += `<text x="${x(j)}" y="${H - b + 14}" text-anchor="${j === L - 1 && L > 1 ? "end" : (j === 0 && L > 1 ? "start" : "middle")}">${esc(n)}</text>`; });
  s += `<text x="${(l + W - r) / 2}" y="${H - 4}" text-anchor="middle">probe layer (forward order)</text>`;
  return s + "</svg>";
}
function showDetail(f) {
  const i = C.feature.indexOf(f); if (i < 0) return;
  selected = f;
  document.querySelectorAll("#explorer tr.selected").forEach(tr => tr.classList.remove("selected"));
  const tr = document.querySelector(`#explorer tr[data-feature="${f}"]`); if (tr) tr.classList.add("selected");
  let h = `<h3>Feature ${f} <span class="muted">· class ${esc(className(i))}</span></h3><table class="kv">`;
  h += `<tr><th>complexity K</th><td>${fmt(C.complexity[i])}</td></tr>`;
  if (has("importance")) h += `<tr><th>importance Γ</th><td>${fmt(C.importance[i])}${C.importance[i] < 0 ? " (inhibits its class)" : ""}</td></tr>`;
  if (has("cluster")) h += `<tr><th>meta-feature cluster</th><td>${fmt(C.cluster[i])}</td></tr>`;
  for (const k of DATA.extra) h += `<tr><th>${esc(k)}</th><td>${fmt(C[k][i])}</td></tr>`;
  h += "</table><h4>Decodability across layers (I_V)</h4>" + curve(i);
  h += '<div class="row">';
  if (C.evidence[i]) h += `<div><h4>Top images · concept heatmaps</h4><img id="evidence-img" src="${DATA.evidence_dir}/feature_${pad(f)}.png" alt="top images of feature ${f}"></div>`;
  else h += '<p class="muted">No evidence images for this feature (rendered for a bounded set; tick “with images”).</p>';
  if (C.vis[i]) h += `<div><h4>Feature visualisation</h4><img id="vis-img" src="${DATA.vis_dir}/feature_${pad(f)}.png" alt="visualisation of feature ${f}" style="width:160px"></div>`;
  h += "</div>";
  const d = $("detail"); d.innerHTML = h; d.hidden = false;
}
document.querySelectorAll("#explorer th[data-sort]").forEach(th => th.addEventListener("click", () => sortBy(th.dataset.sort)));
$("explorer-body").addEventListener("click", e => { const tr = e.target.closest("tr[data-feature]"); if (tr) showDetail(parseInt(tr.dataset.feature, 10)); });
["f-class", "f-cluster", "f-kmin", "f-kmax", "f-gmin", "f-gmax", "f-evidence"].forEach(id => {
  const el = $(id); if (el) { el.addEventListener("input", applyFilters); el.addEventListener("change", applyFilters); } });
$("prev").addEventListener("click", () => { page--; render(); });
$("next").addEventListener("click", () => { page++; render(); });
render();
})();
"""

_TEMPLATE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src 'self' data: file:; style-src 'unsafe-inline'; script-src 'unsafe-inline'">
<title>{title}</title><style>{css}</style></head>
<body>
<header><h1>{heading}</h1><nav>{nav}<a href="#sec-explorer">Feature explorer</a></nav></header>
<main>
<section id="sec-summary"><h2>Summary</h2>{summary}{notes}</section>
{sections}
<section id="sec-explorer"><h2>Feature explorer</h2>
<p class="muted">{n_features} features. Click a column to sort, a row to see the feature.
▣ evidence images, ✦ visualisation.</p>
<div id="explorer-wrap"><div id="explorer-pane">
<div class="filters">
<label>class <select id="f-class"><option value="">all</option></select></label>
{cluster_filter}
<label>K from <input id="f-kmin" type="number" step="any" size="6"></label>
<label>to <input id="f-kmax" type="number" step="any" size="6"></label>
{importance_filter}
<label><input id="f-evidence" type="checkbox"> with images</label>
</div>
<table id="explorer"><thead><tr><th data-sort="feature">feature</th><th data-sort="class">class</th>
<th data-sort="complexity">complexity K</th>{importance_th}{cluster_th}<th></th></tr></thead>
<tbody id="explorer-body"></tbody></table>
<div class="pager"><button id="prev" type="button">‹ prev</button><button id="next" type="button">next ›</button>
<span id="page-info" class="muted"></span></div>
</div>
<div id="detail" hidden></div></div>
</section>
</main>
<script type="application/json" id="feature-data">{data}</script>
<script>{js}</script>
</body></html>
"""
