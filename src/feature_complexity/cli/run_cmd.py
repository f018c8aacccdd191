"""``feature-complexity run``: analyse a model on a set of images and write a run folder."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["register", "add_analysis_arguments", "config_from_args"]


def add_analysis_arguments(parser: argparse.ArgumentParser) -> None:
    """Options shared by every command that scores features (run, demo)."""
    g = parser.add_argument_group("features and scores")
    g.add_argument("--dictionary", choices=["per_class", "global"], default="per_class",
                   help="per-class NMF stacked (paper, default) or one global NMF")
    g.add_argument("--atoms-per-class", type=int, default=10, help="atoms per class (paper: 10)")
    g.add_argument("--n-atoms", type=int, default=None, help="atoms of the global dictionary")
    g.add_argument("--class-source", choices=["auto", "label", "prediction"], default="auto",
                   help="which images stand for a class: labels, predictions, or labels where known")
    g.add_argument("--folds", type=int, default=5, help="folds of the held-out V-information estimate")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--no-flow", action="store_true", help="skip the residual-flow analysis")
    g.add_argument("--no-report", action="store_true", help="skip report.html")
    h = parser.add_argument_group("execution")
    h.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 …")
    h.add_argument("--batch-size", type=int, default=256)
    h.add_argument("--workers", type=int, default=0, help="data-loader worker processes")
    h.add_argument("--quiet", action="store_true", help="no progress bars")


def config_from_args(args: argparse.Namespace):
    from feature_complexity.pipeline import RunConfig

    return RunConfig(
        dictionary=args.dictionary, n_atoms_per_class=args.atoms_per_class, n_atoms=args.n_atoms,
        class_source=args.class_source, n_folds=args.folds, seed=args.seed,
        batch_size=args.batch_size, device=args.device, num_workers=args.workers,
    )


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "run", help="analyse a model on images: features, complexity, importance, flow, report",
        description="Analyse a trained model on a set of images and write a run folder "
        "(features.parquet, manifest.json, figures/, report.html).",
    )
    p.add_argument("--model", required=True,
                   help="resnet18/34/50/101/152, wide_resnet50_2, resnext50_32x4d, cifar-resnet20…110, small-resnet")
    p.add_argument("--weights", default=None, help="torchvision weight name, e.g. IMAGENET1K_V2")
    p.add_argument("--checkpoint", default=None, help="a local checkpoint (state_dict or {'state_dict': …})")
    p.add_argument("--num-classes", type=int, default=None, help="classes of the checkpoint's head")
    p.add_argument("--data", required=True,
                   help="an ImageFolder directory, 'cifar10'/'cifar100' (torchvision), or 'trifeature'")
    p.add_argument("--data-root", default="data", help="download/cache folder for cifar10/cifar100")
    p.add_argument("--download", action="store_true", help="let torchvision download cifar10/cifar100")
    p.add_argument("--train-split", action="store_true", help="use the training split of cifar10/100")
    p.add_argument("--limit", type=int, default=None, help="analyse a random subset of this many images")
    p.add_argument("--out", required=True, help="the run folder")
    add_analysis_arguments(p)
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from feature_complexity.data import open_source
    from feature_complexity.models.registry import build_model
    from feature_complexity.pipeline import run_analysis

    spec = build_model(args.model, weights=args.weights, checkpoint=args.checkpoint,
                       num_classes=args.num_classes)
    source = open_source(args.data, input_size=spec.input_size, mean=spec.mean, std=spec.std,
                         seed=args.seed, data_root=args.data_root, download=args.download,
                         train=args.train_split)
    if args.limit is not None and args.limit < len(source):
        import numpy as np

        rng = np.random.default_rng(args.seed)
        source = source.subset(np.sort(rng.choice(len(source), size=args.limit, replace=False)))
    if spec.class_names is None and len(source.classes) == spec.num_classes:
        spec.class_names = list(source.classes)
    model_info = {"name": args.model, "weights": args.weights,
                  "checkpoint": str(Path(args.checkpoint).resolve()) if args.checkpoint else None,
                  "num_classes": args.num_classes}
    result = run_analysis(spec, source, args.out, config_from_args(args), model_info=model_info,
                          data_info=source.describe(), flow=not args.no_flow,
                          report=not args.no_report, progress=not args.quiet)
    _print_summary(result)
    return 0


def _print_summary(result) -> None:
    frame = result.features
    fid = result.scores.fidelity
    print(f"\nrun folder: {result.out_dir}")
    print(f"features: {len(frame)}  complexity K: median {frame['complexity'].median():.3f} "
          f"[{frame['complexity'].min():.3f}, {frame['complexity'].max():.3f}]")
    keys = [k for k in ("relative_error", "accuracy_kept", "agreement") if k in fid]
    if keys:
        print("fidelity: " + ", ".join(f"{k} {fid[k]:.4f}" for k in keys))
    timings = result.manifest.get("timings", {})
    print("timings (s): " + ", ".join(f"{k} {v:.1f}" for k, v in timings.items()))
