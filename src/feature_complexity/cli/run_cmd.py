"""``feature-complexity run``: analyse a model on a set of images and write a run folder."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ._common import add_data_arguments, add_execution_arguments, apply_threads, open_data

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
    p.add_argument("--out", required=True, help="the run folder")
    add_data_arguments(p, generated_seed=1, generated_default=5000)
    p.add_argument("--train-split", action="store_true", help="use the training split of cifar10/100")
    add_analysis_arguments(p)
    add_execution_arguments(p, batch_size=256)
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from feature_complexity.models.registry import build_model
    from feature_complexity.pipeline import run_analysis

    apply_threads(args)
    spec = build_model(args.model, weights=args.weights, checkpoint=args.checkpoint,
                       num_classes=args.num_classes)
    source = open_data(args, spec, train=args.train_split, generated_default=5000)
    config = config_from_args(args)
    dataset = source
    if len(source.classes) != spec.num_classes:
        # Folder indices are not the model's class indices (e.g. 10 ImageNet class folders for a
        # 1000-class model): using them as labels would give wrong accuracies and importances.
        print(f"warning: the data has {len(source.classes)} classes, the model {spec.num_classes}; "
              "labels are ignored and images are grouped by the model's predictions", file=sys.stderr)
        dataset = _Unlabelled(source)
        if config.class_source == "label":
            raise ValueError("--class-source label needs data whose classes are the model's classes; "
                             "use --class-source prediction")
    elif spec.class_names is None:
        spec.class_names = list(source.classes)
    model_info = {"name": args.model, "weights": args.weights,
                  "checkpoint": str(Path(args.checkpoint).resolve()) if args.checkpoint else None,
                  "num_classes": args.num_classes}
    result = run_analysis(spec, dataset, args.out, config, model_info=model_info,
                          data_info=source.describe(), flow=not args.no_flow,
                          report=not args.no_report, progress=not args.quiet)
    _print_summary(result)
    return 0


class _Unlabelled:
    """The images of a source with every label replaced by -1 (unknown)."""

    def __init__(self, source):
        self.source = source

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, i: int):
        return self.source[i][0], -1


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
