"""``feature-complexity train``: train a built-in model with checkpoints for the dynamics analysis."""

from __future__ import annotations

import argparse

__all__ = ["register", "open_data"]


def _fractions(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected comma-separated fractions such as 0,0.1,0.25,0.5, got {text!r}") from err


def add_data_arguments(parser: argparse.ArgumentParser, *, generated_seed: int, generated_default: int) -> None:
    """The ``--data`` family shared by ``train`` and ``dynamics``."""
    g = parser.add_argument_group("images")
    g.add_argument("--data", required=True,
                   help="an ImageFolder directory, 'cifar10'/'cifar100' (torchvision), or 'trifeature[:target]'")
    g.add_argument("--limit", type=int, default=None,
                   help=f"use a class-balanced random subset of this many images (generated data: the "
                        f"number of images, default {generated_default})")
    g.add_argument("--data-root", default="data", help="download/cache folder for cifar10/cifar100")
    g.add_argument("--download", action="store_true", help="let torchvision download cifar10/cifar100")
    g.add_argument("--target", default="shape", help="trifeature target: shape, color, texture, shape+color …")
    g.add_argument("--data-seed", type=int, default=generated_seed,
                   help=f"seed of the generated images and of the --limit subset (default {generated_seed})")


def open_data(args: argparse.Namespace, spec, *, train: bool, generated_default: int):
    """Open ``--data`` in ``spec``'s preprocessing, with ``--limit`` applied."""
    from feature_complexity.data import balanced_indices, open_source

    if args.limit is not None and args.limit < 1:
        raise ValueError(f"--limit must be >= 1, got {args.limit}")
    source = open_source(
        args.data, input_size=spec.input_size, mean=spec.mean, std=spec.std, seed=args.data_seed,
        data_root=args.data_root, download=args.download, train=train,
        n_images=args.limit if args.limit is not None else generated_default, target=args.target,
    )
    if args.limit is not None and args.limit < len(source):
        source = source.subset(balanced_indices(source.labels, args.limit, seed=args.data_seed))
    return source


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train", help="train a model with checkpoints (every epoch + early points of epoch 1)",
        description="Train a built-in model (SGD, momentum, weight decay, cosine or step schedule; "
        "crops and flips for natural images) and save checkpoints at every epoch end and at early "
        "fractions of the first epoch. Rerunning the same command resumes an interrupted run.",
    )
    p.add_argument("--model", required=True, help="cifar-resnet20…110, small-resnet, resnet18…")
    p.add_argument("--num-classes", type=int, default=None, help="default: the number of classes of --data")
    add_data_arguments(p, generated_seed=0, generated_default=5000)
    p.add_argument("--eval-data", default=None, help="optional held-out images whose accuracy is "
                   "recorded at every checkpoint (an ImageFolder directory, cifar10 …)")
    p.add_argument("--eval-limit", type=int, default=None, help="class-balanced subset of --eval-data")
    p.add_argument("--out", required=True, help="the training run folder")
    t = p.add_argument_group("recipe")
    t.add_argument("--epochs", type=int, default=15)
    t.add_argument("--batch-size", type=int, default=128)
    t.add_argument("--lr", type=float, default=0.1)
    t.add_argument("--momentum", type=float, default=0.9)
    t.add_argument("--weight-decay", type=float, default=5e-4)
    t.add_argument("--schedule", choices=["cosine", "step"], default="cosine")
    aug = t.add_mutually_exclusive_group()
    aug.add_argument("--augment", dest="augment", action="store_true", default=None,
                     help="crops and flips (default: on for natural images, off for generated data)")
    aug.add_argument("--no-augment", dest="augment", action="store_false")
    t.add_argument("--early-fractions", type=_fractions, default=(0.0, 0.1, 0.25, 0.5),
                   help="fractions of epoch 1 with a checkpoint (default 0,0.1,0.25,0.5; 0 = untrained)")
    t.add_argument("--seed", type=int, default=0, help="seeds the initialisation, the image order and the augmentation")
    e = p.add_argument_group("execution")
    e.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 …")
    e.add_argument("--workers", type=int, default=0, help="data-loader worker processes")
    e.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: torch's choice; 1 is much faster on a busy shared CPU)")
    e.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    if args.threads is not None:
        import torch

        if args.threads < 1:
            raise ValueError(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    from feature_complexity.models.registry import build_model
    from feature_complexity.train import TrainConfig, train

    config = TrainConfig(
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, momentum=args.momentum,
        weight_decay=args.weight_decay, schedule=args.schedule, augment=args.augment, seed=args.seed,
        early_fractions=args.early_fractions, num_workers=args.workers, device=args.device,
    )
    config.validate()
    # the preprocessing comes from the architecture; the head's width from the data
    probe = build_model(args.model, seed=args.seed)
    source = open_data(args, probe, train=True, generated_default=5000)
    n_classes = args.num_classes or len(source.classes)
    spec = probe if probe.num_classes == n_classes else build_model(args.model, num_classes=n_classes, seed=args.seed)
    if spec.class_names is None and len(source.classes) == spec.num_classes:
        spec.class_names = list(source.classes)
    eval_set = None
    if args.eval_data is not None:
        eval_args = argparse.Namespace(**{**vars(args), "data": args.eval_data, "limit": args.eval_limit,
                                          "data_seed": args.data_seed + 1})
        eval_set = open_data(eval_args, spec, train=False, generated_default=1000)
    paths = train(spec, source, args.out, config, eval_set=eval_set, progress=not args.quiet)
    print(f"\n{len(paths)} checkpoints in {paths[0].parent}" if paths else "no checkpoints written")
    return 0
