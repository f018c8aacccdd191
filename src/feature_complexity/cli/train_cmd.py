"""``feature-complexity train``: train a built-in model with checkpoints for the dynamics analysis."""

from __future__ import annotations

import argparse

from ._common import add_data_arguments, add_execution_arguments, apply_threads, open_data

__all__ = ["register", "open_data"]


def _fractions(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected comma-separated fractions such as 0,0.1,0.25,0.5, got {text!r}") from err


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
    add_execution_arguments(p)
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    apply_threads(args)
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
