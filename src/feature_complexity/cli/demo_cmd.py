"""``feature-complexity demo``: the whole tool on the built-in default, with no download.

Generate a Trifeature-style dataset, train a small ResNet on it on the CPU for a few epochs
(keeping checkpoints), analyse the final model, score the generating factors as planted ground
truth, follow complexity across the checkpoints, and write ``runs/demo/report.html``. Every
step is a stage of the same loop as ``run``: rerunning resumes, a changed setting is refused
unless --overwrite.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from ._common import Formatter, apply_threads, check_device, check_out_dir

__all__ = ["register", "run_demo"]


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("demo", help="run everything on the built-in generated dataset (no download)",
                              description=__doc__, formatter_class=Formatter)
    p.add_argument("--out", default="runs/demo", help="the run folder")
    p.add_argument("--train-images", type=int, default=8000, help="generated training images")
    p.add_argument("--probe-images", type=int, default=2000, help="generated probe images (analysed)")
    p.add_argument("--epochs", type=int, default=8, help="training epochs")
    p.add_argument("--target", default="shape", help="shape, color, texture or a combination like shape+color")
    p.add_argument("--seed", type=int, default=0, help="seed of the data, the training and the analysis")
    p.add_argument("--controls", nargs="*", default=["random-init"], choices=["random-init"],
                   help="control runs for the findings (pass --controls with nothing to skip them)")
    p.add_argument("--no-dynamics", action="store_true", help="skip the analysis across checkpoints")
    p.add_argument("--overwrite", action="store_true", help="recompute results made with other settings")
    e = p.add_argument_group("execution")
    e.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 …")
    e.add_argument("--workers", type=int, default=0, help="data-loader worker processes")
    e.add_argument("--threads", type=int, default=None, help="torch CPU threads (1 is fastest on a busy machine)")
    e.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_demo)


def _demo(args: argparse.Namespace) -> int:
    apply_threads(args)
    check_device(args.device)
    out = check_out_dir(args.out)
    run_demo(out, train_images=args.train_images, probe_images=args.probe_images, epochs=args.epochs,
             target=args.target, seed=args.seed, device=args.device, workers=args.workers,
             controls=tuple(args.controls), dynamics=not args.no_dynamics, overwrite=args.overwrite,
             progress=not args.quiet)
    return 0


def run_demo(out: str | Path = "runs/demo", *, train_images: int = 8000, probe_images: int = 2000,
             epochs: int = 8, target: str = "shape", seed: int = 0, device: str = "cpu", workers: int = 0,
             controls: tuple[str, ...] = ("random-init",), dynamics: bool = True, overwrite: bool = False,
             progress: bool = True) -> Any:
    """Run the built-in demo end to end; returns the :class:`~feature_complexity.pipeline.RunResult`."""
    from feature_complexity.config import RunConfig
    from feature_complexity.data import trifeature
    from feature_complexity.pipeline import run_analysis
    from feature_complexity.train import load_weights

    out = Path(out)
    started = time.perf_counter()
    targets = target.split("+") if "+" in target else target
    train_set = trifeature(train_images, target=targets, seed=seed)
    probe_set = trifeature(probe_images, target=targets, seed=seed + 1)

    def new_spec() -> Any:
        from feature_complexity.models.registry import build_model

        # a stride-2 stem halves the cost of every block: the demo trains in about a minute
        spec = build_model("small-resnet", num_classes=len(train_set.classes), stem_stride=2, seed=seed)
        spec.class_names = list(train_set.classes)
        return spec

    status, checkpoints = _train(out, new_spec, train_set, probe_set, epochs, seed, device, workers,
                                 overwrite, progress)
    spec = new_spec()
    load_weights(spec, checkpoints[-1].path)
    spec.build_args["checkpoint"] = str(Path(checkpoints[-1].path).resolve())
    extra, prints = _dynamics(checkpoints, new_spec) if dynamics else ([], {})
    # the appendix's noise analysis at the paper's 2,000 images x 100 draws would be 600,000 forward
    # passes: the demo uses 200 x 20 (recorded in the manifest's config)
    config = RunConfig(seed=seed, device=device, num_workers=workers, controls=controls, robustness_images=200,
                       robustness_draws=20)
    result = run_analysis(
        spec, probe_set, out, config, model_info={"name": "small-resnet", "checkpoint": spec.build_args["checkpoint"],
                                                  "num_classes": spec.num_classes},
        data_info=probe_set.describe(), extra_stages=extra, extra_fingerprints=prints, overwrite=overwrite,
        manifest_extra={"stages": status, "demo": {"train_images": train_images, "probe_images": probe_images,
                                                   "epochs": epochs, "target": target},
                        "dynamics_checkpoints": {"paths": [str(c.path) for c in checkpoints]} if dynamics else None},
        progress=progress)
    from .run_cmd import print_summary

    print_summary(result)
    print(f"\ndemo finished in {time.perf_counter() - started:.0f} s -> {out}")
    if (out / "report.html").exists():
        print(f"open {out / 'report.html'} in a browser")
    return result


def _train(out: Path, new_spec: Any, train_set: Any, probe_set: Any, epochs: int, seed: int, device: str,
           workers: int, overwrite: bool, progress: bool) -> tuple[dict[str, Any], list[Any]]:
    """Phase one of the demo: the training stage (its checkpoints feed the analysis)."""
    from feature_complexity.fingerprints import digest_of
    from feature_complexity.pipeline import run_stages_of
    from feature_complexity.stages import Context
    from feature_complexity.train import TrainConfig, train_stage

    tcfg = TrainConfig(epochs=epochs, seed=seed, device=device, batch_size=64, lr=0.1, num_workers=workers)
    tcfg.validate()
    stage = train_stage(new_spec, train_set, eval_set=probe_set)
    ctx = Context(config=tcfg, out=out, progress=progress, overwrite=overwrite,
                  fingerprints={"train_data": train_set.fingerprint(),
                                "init": digest_of(["small-resnet", "stem_stride=2", len(train_set.classes), seed])})
    manifest: dict[str, Any] = {}
    status = run_stages_of([stage], ctx, manifest)
    return status, ctx["train"]


def _dynamics(checkpoints: list[Any], new_spec: Any) -> tuple[list[Any], dict[str, str]]:
    from feature_complexity.analyses.dynamics import dynamics_stages

    return dynamics_stages(checkpoints, new_spec)
