"""Option groups and checks shared by the sub-commands.

Everything that can be checked before the forward pass is checked here (the device, the run
folder, the model's weights, the data, the class sizes), so a bad value costs seconds, not an
activation pass, and every message names the flag to change.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["add_model_arguments", "add_data_arguments", "add_analysis_arguments", "add_execution_arguments",
           "apply_threads", "build_spec", "open_data", "config_from_args", "check_device", "check_out_dir",
           "check_class_sizes", "Formatter", "plural"]


class Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """``--help`` shows every default and keeps the description's line breaks."""


def plural(n: int, word: str) -> str:
    """``"1 class"``, ``"3 classes"``."""
    suffix = "es" if word.endswith(("s", "x", "ch", "sh")) else "s"
    return f"{n} {word}" if n == 1 else f"{n} {word}{suffix}"


# ---------------------------------------------------------------------------------- options
def add_model_arguments(p: argparse.ArgumentParser, *, required: bool = True) -> None:
    """``--model``, ``--weights``, ``--checkpoint``, ``--num-classes``, ``--trust-checkpoint``."""
    from feature_complexity.models.registry import known_models

    g = p.add_argument_group("model")
    g.add_argument("--model", required=required, default=None,
                   help="one of: " + ", ".join(known_models()))
    g.add_argument("--weights", default=None,
                   help="named weights (torchvision: IMAGENET1K_V2 …; timm: pretrained), or 'random' for a "
                        "randomly initialised network (a control; never implied)")
    g.add_argument("--checkpoint", default=None, help="a local checkpoint (state_dict or {'state_dict': …})")
    g.add_argument("--num-classes", type=int, default=None,
                   help="classes of the checkpoint's head (default: read from it)")
    g.add_argument("--trust-checkpoint", action="store_true",
                   help="allow full unpickling of a checkpoint the safe loader refuses (runs code from the file)")


def add_data_arguments(p: argparse.ArgumentParser, *, default_limit: int) -> None:
    """The ``--data`` family (and ``--fit-data``)."""
    g = p.add_argument_group("images")
    g.add_argument("--data", required=True,
                   help="the probe images: an ImageFolder directory, 'cifar10'/'cifar100' (torchvision), or "
                        "'trifeature[:target]' (generated)")
    g.add_argument("--limit", type=int, default=None,
                   help=f"a class-balanced random subset of this many images (generated data: their number, "
                        f"default {default_limit})")
    g.add_argument("--data-root", default="data", help="download/cache folder for cifar10/cifar100")
    g.add_argument("--download", action="store_true", help="let torchvision download cifar10/cifar100")
    g.add_argument("--target", default="shape", help="trifeature target: shape, color, texture, shape+color …")
    g.add_argument("--data-seed", type=int, default=0, help="seed of the generated images and of the --limit subset")
    g.add_argument("--train-split", action="store_true", help="use the training split of cifar10/100")


def add_analysis_arguments(p: argparse.ArgumentParser) -> None:
    """The choices that change the numbers (see RunConfig)."""
    g = p.add_argument_group("features and scores")
    g.add_argument("--dictionary", choices=["per_class", "global"], default="per_class",
                   help="a dictionary per class, stacked (paper), or one global dictionary")
    g.add_argument("--learner", choices=["auto", "nmf", "semi_nmf", "sae"], default="auto",
                   help="NMF (non-negative activations), Semi-NMF (signed), TopK SAE (global); "
                        "auto picks NMF or Semi-NMF")
    g.add_argument("--atoms-per-class", type=int, default=10, help="atoms per class (paper: 10)")
    g.add_argument("--n-atoms", type=int, default=None, help="atoms of a global dictionary (default 10 per class)")
    g.add_argument("--class-source", choices=["auto", "label", "prediction"], default="auto",
                   help="which images stand for a class: labels, predictions, or labels where known")
    g.add_argument("--codes", choices=["joint", "per_class"], default="joint",
                   help="NNLS against the whole dictionary (paper) or against each class block")
    g.add_argument("--folds", type=int, default=5, help="folds of the held-out V-information estimate")
    g.add_argument("--ci-groups", type=int, default=2,
                   help="test cells per fold for the intervals on K and I_V (0: no intervals)")
    g.add_argument("--bootstrap", type=int, default=1000, help="bootstrap replicates of every finding's interval")
    g.add_argument("--controls", nargs="*", default=[], choices=["random-init"],
                   help="control runs the findings compare against")
    g.add_argument("--seed", type=int, default=0, help="seed of NMF, folds, bootstrap and every random choice")
    g.add_argument("--threshold", type=float, default=0.9, help="teleport threshold of the flow analysis")
    a = p.add_argument_group("appendix analyses and report")
    a.add_argument("--robustness-images", type=int, default=2000,
                   help="images of the noise-robustness analysis (paper: 2,000; 0 skips it; its cost is "
                        "images x draws x 3 forward passes)")
    a.add_argument("--robustness-draws", type=int, default=100, help="noise draws per image and level (paper: 100)")
    a.add_argument("--superclasses", default=None,
                   help="class -> super-class table for meta-feature purity: cifar100, imagenet[:level] or a CSV")
    a.add_argument("--evidence-features", type=int, default=300, help="features with top images and heatmaps")
    a.add_argument("--visualize", type=int, default=0,
                   help="features with a feature visualisation and Fig. 1B decoder visualisations (slow)")
    a.add_argument("--visualize-steps", type=int, default=64, help="optimisation steps per visualisation")
    a.add_argument("--report-mb", type=float, default=25.0, help="size budget of the self-contained report.html")
    g.add_argument("--no-report", action="store_true", help="skip the findings and report.html")
    g.add_argument("--overwrite", action="store_true",
                   help="recompute results of --out made from other inputs or settings (instead of refusing)")


def add_execution_arguments(p: argparse.ArgumentParser, *, batch_size: int = 256) -> None:
    """Where and how fast: ``--device``, ``--batch-size``, ``--workers``, ``--threads``, ``--quiet``."""
    e = p.add_argument_group("execution")
    e.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 …")
    e.add_argument("--batch-size", type=int, default=batch_size, help="images per forward pass")
    e.add_argument("--workers", type=int, default=0, help="data-loader worker processes")
    e.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: torch's choice; 1 is much faster on a busy shared CPU)")
    e.add_argument("--quiet", action="store_true", help="no progress bars")


def config_from_args(args: argparse.Namespace) -> Any:
    """The :class:`~feature_complexity.config.RunConfig` of the parsed options, validated."""
    from feature_complexity.config import RunConfig

    return RunConfig(
        dictionary=args.dictionary, learner=args.learner, n_atoms_per_class=args.atoms_per_class,
        n_atoms=args.n_atoms, class_source=args.class_source, codes=args.codes, n_folds=args.folds,
        ci_groups=args.ci_groups, n_bootstrap=args.bootstrap, controls=tuple(args.controls), seed=args.seed,
        teleport_threshold=args.threshold, robustness_images=args.robustness_images,
        robustness_draws=args.robustness_draws, superclasses=args.superclasses,
        evidence_features=args.evidence_features, evidence_visualize=args.visualize,
        visualize_steps=args.visualize_steps, report_mb=args.report_mb, batch_size=args.batch_size,
        device=args.device, num_workers=args.workers, **getattr(args, "extra_config", {}),
    ).validate()


# ---------------------------------------------------------------------------------- checks
def apply_threads(args: argparse.Namespace) -> None:
    """``torch.set_num_threads(--threads)`` when it is given."""
    if getattr(args, "threads", None) is not None:
        if args.threads < 1:
            raise ValueError(f"--threads must be >= 1, got {args.threads}")
        import torch

        torch.set_num_threads(args.threads)


def check_device(device: str) -> None:
    """A device torch knows and this machine has, or a one-line error."""
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"--device {device!r} is not a device; use cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {device} asks for CUDA but this machine has no usable NVIDIA GPU; use --device cpu")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"--device {device} is not supported; use cpu or cuda")


def check_out_dir(out: str | os.PathLike[str]) -> Path:
    """``--out`` as a writable folder (created), or a one-line error."""
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise ValueError(f"--out {path} is a file; give a folder (it is created if missing)")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test."):
            pass
    except OSError as err:
        raise ValueError(f"--out {path} is not writable ({err.strerror}); choose a folder you can write to") from None
    return path


def build_spec(args: argparse.Namespace) -> Any:
    """The model of ``--model/--weights/--checkpoint``; random weights only with ``--weights random``."""
    from feature_complexity.models.registry import RANDOM, build_model

    if args.weights is None and args.checkpoint is None:
        raise ValueError(f"--model {args.model} needs its weights: --weights NAME (e.g. IMAGENET1K_V2), "
                         "--checkpoint FILE, or --weights random for a randomly initialised network")
    return build_model(args.model, weights=args.weights, checkpoint=args.checkpoint, num_classes=args.num_classes,
                       trust_checkpoint=args.trust_checkpoint, seed=args.seed if args.weights == RANDOM else None)


def open_data(args: argparse.Namespace, spec: Any, *, data: str | None = None, limit: int | None = None,
              train: bool | None = None, default_limit: int = 5000, apply_limit: bool = True) -> Any:
    """``--data`` (or ``data``) in ``spec``'s preprocessing, with ``--limit`` applied (unless
    ``apply_limit`` is false: ``--limit`` subsets the probe images, never ``--fit-data``)."""
    from feature_complexity.data import balanced_indices, open_source

    if apply_limit and limit is None:
        limit = args.limit
    if limit is not None and limit < 1:
        raise ValueError(f"--limit must be >= 1, got {limit}")
    source = open_source(
        data or args.data, input_size=spec.input_size, mean=spec.mean, std=spec.std, seed=args.data_seed,
        data_root=args.data_root, download=args.download, train=args.train_split if train is None else train,
        n_images=limit if limit is not None else default_limit, target=args.target)
    if limit is not None and limit < len(source):
        source = source.subset(balanced_indices(source.labels, limit, seed=args.data_seed))
    return source.for_model(spec)


def check_class_sizes(labels: Any, n_atoms: int, class_source: str) -> None:
    """Before the forward pass: with labels standing for the classes, some class must have at
    least ``--atoms-per-class`` images (classes with fewer are skipped with a warning later)."""
    import numpy as np

    labels = np.asarray(labels)
    if class_source == "prediction" or (labels < 0).any() or labels.size == 0:
        return  # the classes are the model's predictions: known after the forward pass
    largest = int(np.bincount(labels).max())
    if largest < n_atoms:
        raise ValueError(f"no class has {n_atoms} images for --atoms-per-class {n_atoms} (the largest has "
                         f"{largest}); use --atoms-per-class {largest} or fewer, or more images (--limit)")


def warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)
