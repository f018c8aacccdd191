"""``feature-complexity demo``: the whole tool on the built-in default, with no download.

Generate a Trifeature-style dataset, train a small ResNet on it on the CPU for a few epochs
(keeping checkpoints), analyse the final model, score the generating factors as planted ground
truth, follow complexity across the checkpoints, and write ``runs/demo/report.html``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

__all__ = ["register", "run_demo"]


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("demo", help="run everything on the built-in generated dataset (no download)",
                              description=__doc__)
    p.add_argument("--out", default="runs/demo", help="the run folder (default runs/demo)")
    p.add_argument("--train-images", type=int, default=8000)
    p.add_argument("--probe-images", type=int, default=2000)
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--target", default="shape", help="shape, color, texture or a combination like shape+color")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-dynamics", action="store_true", help="skip the analysis across checkpoints")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=lambda args: run_demo(
        args.out, train_images=args.train_images, probe_images=args.probe_images, epochs=args.epochs,
        target=args.target, seed=args.seed, device=args.device, dynamics=not args.no_dynamics,
        progress=not args.quiet) and 0)


def factor_complexity(layers: dict, penultimate: np.ndarray, source, *, n_folds: int = 5,
                      seed: int = 0) -> dict[str, dict]:
    """Complexity of the dataset's generating factors (planted ground truth).

    For each factor (its one-hot columns, for a categorical factor): ``complexity``, the mean
    ``K`` over its columns; ``per_layer``, its mean decodability curve ``I_V(f_l -> factor)``; and
    ``kept``, its ``I_V`` from the penultimate layer, i.e. how much of it the model still holds
    at the end. ``K`` mixes how *early* a factor is decodable with whether the model *keeps* it:
    a shape classifier trained to convergence discards colour in its last blocks, which raises
    colour's ``K`` although colour is the factor best decodable at the first block.

    Args:
        layers: ``{block: (n_images, C_l)}`` pooled block outputs.
        penultimate: ``(n_images, d)`` penultimate activations.
        source: the generated :class:`~feature_complexity.data.ImageSource` (with ``factors``).
    """
    from feature_complexity.complexity import complexity
    from feature_complexity.data import factor_values

    out = {}
    for name, values in factor_values(source).items():
        values = np.asarray(values, dtype=np.float64)
        if values.ndim == 1:
            values = values[:, None]
        values = values[:, values.std(axis=0) > 0]
        res = complexity({**layers, "penultimate": penultimate}, values, n_folds=n_folds, seed=seed)
        per_layer = res.per_layer[:-1].mean(axis=1)  # the blocks only, as for the model's features
        out[name] = {"complexity": float(1.0 - per_layer.mean()),
                     "per_layer": per_layer.tolist(),
                     "kept": float(res.per_layer[-1].mean()),
                     "layer_names": res.layer_names[:-1]}
    return out


def run_demo(out: str | Path = "runs/demo", *, train_images: int = 8000, probe_images: int = 2000,
             epochs: int = 8, target: str = "shape", seed: int = 0, device: str = "cpu",
             dynamics: bool = True, progress: bool = True) -> Path:
    """Run the built-in demo end to end; returns the run folder."""
    from feature_complexity.activations import Activations
    from feature_complexity.data import trifeature
    from feature_complexity.io import read_json, save_figure, write_json
    from feature_complexity.models.registry import build_model
    from feature_complexity.pipeline import RunConfig, run_analysis
    from feature_complexity.report.figures import factor_complexity_figure
    from feature_complexity.train import TrainConfig, list_checkpoints, train

    out = Path(out)
    started = time.perf_counter()
    targets = target.split("+") if "+" in target else target
    train_set = trifeature(train_images, target=targets, seed=seed)
    probe_set = trifeature(probe_images, target=targets, seed=seed + 1)
    n_classes = len(train_set.classes)

    def new_spec():
        # a stride-2 stem halves the cost of every block: the demo trains in about a minute
        spec = build_model("small-resnet", num_classes=n_classes, stem_stride=2, seed=seed)
        spec.class_names = list(train_set.classes)
        return spec

    spec = new_spec()
    t0 = time.perf_counter()
    checkpoints = train(spec, train_set, out / "training",
                        TrainConfig(epochs=epochs, seed=seed, device=device, batch_size=64, lr=0.1),
                        eval_set=probe_set, progress=progress)
    train_seconds = time.perf_counter() - t0
    # the trained weights live in the last checkpoint: record it so the model can be rebuilt
    spec.build_args["checkpoint"] = str(Path(checkpoints[-1]).resolve())

    config = RunConfig(seed=seed, device=device, n_atoms_per_class=10)
    data_info = probe_set.describe()
    model_info = {"name": "small-resnet", "checkpoint": str(Path(checkpoints[-1]).resolve()),
                  "num_classes": n_classes}
    run_analysis(spec, probe_set, out, config, model_info=model_info, data_info=data_info,
                 report=False, progress=progress)

    # Planted ground truth: how complex are the factors that generated the images?
    t0 = time.perf_counter()
    acts = Activations.load(out / "activations")
    factors = factor_complexity(acts.layers, acts.penultimate, probe_set, seed=seed)
    write_json(out / "factors.json", {"target": target, "factors": factors})
    save_figure(out / "figures" / "factors.png", factor_complexity_figure(factors))
    factor_seconds = time.perf_counter() - t0

    dyn_seconds = 0.0
    if dynamics:
        from feature_complexity.analyses.dynamics import DynamicsConfig, run_dynamics

        t0 = time.perf_counter()
        run_dynamics(list_checkpoints(out / "training" / "checkpoints"), new_spec, probe_set,
                     out / "dynamics", DynamicsConfig(seed=seed, device=device), progress=progress)
        dyn_seconds = time.perf_counter() - t0

    manifest = read_json(out / "manifest.json")
    manifest["timings"].update({"train": round(train_seconds, 3), "factors": round(factor_seconds, 3),
                                "dynamics": round(dyn_seconds, 3)})
    manifest["demo"] = {"train_images": train_images, "probe_images": probe_images, "epochs": epochs,
                        "target": target}
    write_json(out / "manifest.json", manifest)
    from feature_complexity.report.html import build_report

    t0 = time.perf_counter()
    build_report(out, spec=spec, dataset=probe_set, device=device, progress=progress)
    manifest["timings"]["report"] = round(time.perf_counter() - t0, 3)
    manifest["timings"]["demo_total"] = round(time.perf_counter() - started, 3)
    write_json(out / "manifest.json", manifest)
    print(f"\ndemo finished in {manifest['timings']['demo_total']:.0f} s -> {out}")
    print("factor complexity (planted ground truth, lower = simpler; kept = I_V at the penultimate layer): "
          + ", ".join(f"{k} {v['complexity']:.3f} (kept {v['kept']:.2f})" for k, v in factors.items()))
    if (out / "report.html").exists():
        print(f"open {out / 'report.html'} in a browser")
    return out
