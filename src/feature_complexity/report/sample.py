"""A fabricated run folder, to test and time the report without running a model.

:func:`fake_run_folder` writes every file the report reads (``docs/ARCHITECTURE.md``: manifest,
feature table, figures with their index, fidelity, flow, dynamics, findings, evidence) with
random values of the right shapes, at any scale (the benchmark uses 10,000 features and 1,000
classes). Nothing here is a result: it exercises the page.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["fake_run_folder"]

_VERDICTS = ("reproduced", "not_reproduced", "not_specific_to_training", "inconclusive")


def _features(rng: np.random.Generator, k: int, n_classes: int, layers: list[str], n_blocks: int) -> Any:
    import pandas as pd

    per_layer = np.sort(rng.random((len(layers), k)), axis=0)  # decodability grows with depth
    K = 1 - per_layer.mean(axis=0)
    fc = np.arange(k) % n_classes
    gamma = rng.normal(size=k) * np.exp(-3 * K)
    frame = pd.DataFrame({"feature": np.arange(k), "class": fc, "class_name": [f"class-{c}" for c in fc],
                          "complexity": K, "complexity_lo": K - 0.02, "complexity_hi": K + 0.02,
                          "importance": gamma, "abs_importance": np.abs(gamma), "inhibitor": gamma < 0,
                          "mean_code": rng.random(k), "teleport_depth": rng.integers(0, n_blocks + 1, size=k),
                          "skip_share": rng.random(k), "cluster": rng.integers(0, max(2, k // 67), size=k),
                          "embed_x": rng.normal(size=k), "embed_y": rng.normal(size=k), "A": rng.random(k),
                          "weird_score": rng.normal(size=k), "noise_sensitivity_0.1": rng.random(k),
                          "hierarchy_level_1": rng.integers(0, 2, size=k).astype(np.float64)})
    for name, row in zip(layers, per_layer):
        frame[f"iv_{name}"] = row
    return frame


def _figures(run: Path, n_figures: int) -> None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    from ..io import save_figure, write_json

    sections = ["what", "what", "importance", "where", "when", "findings"]
    index = {}
    for i in range(n_figures):
        fig = Figure(figsize=(6, 4), layout="constrained")
        ax = fig.add_subplot()
        x = np.linspace(0, 1, 200)
        ax.plot(x, np.sin(6 * x + i), label="a curve")
        ax.set_xlabel("complexity K")
        ax.set_ylabel("features")
        ax.set_title(f"Fabricated figure {i}")
        name = f"figure_{i}"
        save_figure(run / "figures" / f"{name}.png", fig)
        index[name] = {"title": f"Fabricated figure {i}", "caption": f"Caption sentence of figure {i}.",
                       "section": sections[i % len(sections)], "stage": "fake"}
    write_json(run / "figures" / "index.json", index)


def _findings(control: bool) -> list[dict[str, Any]]:
    out = []
    f: dict[str, Any]
    for i, verdict in enumerate(_VERDICTS * 2):
        f = {"claim": f"claim_{i}", "statistic": f"Spearman(statistic {i}, K)", "expected": ("negative", "positive",
             "none")[i % 3], "paper": f"what the paper says about claim {i}", "unit": "features", "n": 100,
             "verdict": verdict, "reason": f"the reason for verdict {verdict}", "value": -0.5 + 0.1 * i,
             "ci_low": -0.6 + 0.1 * i, "ci_high": -0.4 + 0.1 * i, "p_value": 0.001, "band": 0.2}
        if control:  # the last ones have a control on which the statistic could not be computed
            computed = i < 6
            f.update(control="random-init", control_value=0.01 if computed else None, control_ci_low=-0.1,
                     control_ci_high=0.12, difference=-0.5 if computed else None, difference_ci_low=-0.6,
                     difference_ci_high=-0.4)
        out.append(f)
    return out


def _evidence(run: Path, rng: np.random.Generator, k: int, n_thumbs: int, tile: int, n_top: int) -> None:
    from PIL import Image

    from ..io import save_npy, write_json

    folder = run / "evidence"
    folder.mkdir(parents=True, exist_ok=True)
    selected = rng.permutation(k)[:n_thumbs].tolist()
    files = {}
    for f in selected:
        pixels = rng.integers(0, 256, size=(2 * tile, n_top * tile, 3), dtype=np.uint8)
        pixels = np.repeat(np.repeat(pixels[::8, ::8], 8, axis=0), 8, axis=1)  # blocky: JPEG-like sizes
        Image.fromarray(pixels).save(folder / f"feature_{f:05d}.jpg", quality=85)
        files[str(f)] = f"feature_{f:05d}.jpg"
    save_npy(folder / "top_images.npy", rng.integers(0, 1000, size=(k, n_top)))
    write_json(folder / "index.json", {"version": 1, "n_features": k, "n_top": n_top, "tile": tile,
                                       "selected": selected, "reasons": {"sample": selected}, "files": files,
                                       "visualizations": {}, "heatmap_note": None})


def fake_run_folder(root: str | Path, *, n_features: int = 40, n_classes: int = 4, n_layers: int = 4,
                    n_thumbnails: int = 10, n_figures: int = 6, tile: int = 64, n_top: int = 6,
                    control: bool = True, accuracy: float = 0.9, seed: int = 0) -> Path:
    """Write a fabricated run folder ``root`` (created) and return its path.

    Args:
        n_features, n_classes, n_layers: shape of the feature table.
        n_thumbnails: features with evidence thumbnails (``tile`` px per image, ``n_top`` images).
        n_figures: figures in ``figures/`` (spread over the sections).
        control: the findings compare with a random-init control.
        accuracy: the model's own accuracy in ``fidelity.json``.
    """
    from ..io import write_json, write_parquet

    rng = np.random.default_rng(seed)
    run = Path(root)
    run.mkdir(parents=True, exist_ok=True)
    layers = [f"layer{1 + i // 3}.{i % 3}" for i in range(n_layers)]
    write_parquet(run / "features.parquet", _features(rng, n_features, n_classes, layers, n_layers))
    write_json(run / "manifest.json", {
        "tool": "feature-complexity", "config": {"seed": seed, "n_atoms_per_class": 10, "dictionary": "per_class"},
        "model": {"name": "fake-net", "num_classes": n_classes, "probe_layers": layers, "n_parameters": 12345},
        "data": {"kind": "fake", "name": "fabricated images"}, "n_images": 1000,
        "fingerprints": {"model": "m", "probe": "p"}, "versions": {"python": "3", "numpy": np.__version__},
        "stages": {"activations": {"status": "reused", "seconds": 12.0}, "report": {"status": "computed",
                                                                                     "seconds": 1.0}}})
    write_json(run / "fidelity.json", {"relative_error": 0.1, "agreement": 0.98, "accuracy_original": accuracy,
                                       "accuracy_reconstructed": accuracy - 0.01, "accuracy_kept": 0.99})
    counts = np.bincount(rng.integers(0, n_layers + 1, size=n_features), minlength=n_layers + 1).tolist()
    write_json(run / "flow.json", {
        "blocks": layers, "threshold": 0.9, "n_features": n_features, "teleport_depth_counts": counts,
        "teleport_spearman": {"rho": 0.3, "p_value": 0.01}, "skip_share_spearman": {"rho": -0.4, "p_value": 0.001},
        "groups": {g: {"n": n_features // 3, "complexity_min": 0.1, "complexity_max": 0.9, "mean_teleport_depth": 2.0,
                       "never_teleported": 0.3, "mean_skip_share": 0.5} for g in ("simple", "middle", "complex")}})
    write_json(run / "dynamics.json", {"summary": {
        "n_checkpoints": 3, "time_unit": "epoch", "spearman_A_K": 0.6, "mean_A": 0.4, "fraction_never_decodable": 0.1,
        "first": {"checkpoint": "epoch_001", "time": 1, "accuracy": 0.3, "mean_complexity": 0.5,
                  "top_mean_complexity": 0.6, "spearman_k_importance": 0.0},
        "last": {"checkpoint": "epoch_010", "time": 10, "accuracy": 0.9, "mean_complexity": 0.7,
                 "top_mean_complexity": 0.4, "spearman_k_importance": -0.5}}})
    write_json(run / "findings.json", _findings(control))
    if n_figures:
        _figures(run, n_figures)
    if n_thumbnails:
        _evidence(run, rng, n_features, min(n_thumbnails, n_features), tile, n_top)
    return run
