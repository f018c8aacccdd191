"""``feature-complexity train``: train a built-in model with checkpoints for the dynamics analysis."""

from __future__ import annotations

import argparse
from typing import Any

from ._common import (
    Formatter,
    add_data_arguments,
    add_execution_arguments,
    apply_threads,
    check_device,
    check_out_dir,
    open_data,
)

__all__ = ["register"]


def _fractions(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError as err:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated fractions such as 0,0.1,0.25,0.5, got {text!r}") from err


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train", help="train a model with checkpoints (every epoch + early points of epoch 1)",
        description="Train a built-in model (SGD, momentum, weight decay, cosine or step schedule; crops and "
        "flips for natural images) and save checkpoints at every epoch end and at early fractions of the first "
        "epoch. Rerunning the same command resumes an interrupted run.", formatter_class=Formatter)
    p.add_argument("--model", required=True, help="cifar-resnet20…110, small-resnet, resnet18…")
    p.add_argument("--num-classes", type=int, default=None, help="default: the number of classes of --data")
    add_data_arguments(p, default_limit=5000)
    p.add_argument("--eval-data", default=None, help="held-out images whose accuracy is recorded at every "
                   "checkpoint (an ImageFolder directory, cifar10 …)")
    p.add_argument("--eval-limit", type=int, default=None, help="class-balanced subset of --eval-data")
    p.add_argument("--out", required=True, help="the training run folder")
    t = p.add_argument_group("recipe")
    t.add_argument("--epochs", type=int, default=15, help="passes over the training images")
    t.add_argument("--lr", type=float, default=0.1, help="peak learning rate")
    t.add_argument("--momentum", type=float, default=0.9, help="SGD momentum")
    t.add_argument("--weight-decay", type=float, default=5e-4, help="SGD weight decay")
    t.add_argument("--schedule", choices=["cosine", "step"], default="cosine", help="learning-rate schedule")
    aug = t.add_mutually_exclusive_group()
    aug.add_argument("--augment", dest="augment", action="store_true", default=None,
                     help="crops and flips (default: on for natural images, off for generated data)")
    aug.add_argument("--no-augment", dest="augment", action="store_false")
    t.add_argument("--early-fractions", type=_fractions, default=(0.0, 0.1, 0.25, 0.5),
                   help="fractions of epoch 1 with a checkpoint (0 = untrained)")
    t.add_argument("--seed", type=int, default=0, help="seeds the initialisation, the image order and the augmentation")
    p.add_argument("--overwrite", action="store_true", help="start over when --out holds a run with another recipe")
    add_execution_arguments(p, batch_size=128)
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from feature_complexity.fingerprints import dataset_fingerprint, digest_of
    from feature_complexity.models.registry import build_model
    from feature_complexity.pipeline import run_stages_of
    from feature_complexity.stages import Context
    from feature_complexity.train import TrainConfig, train_stage

    apply_threads(args)
    check_device(args.device)
    out = check_out_dir(args.out)
    config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, momentum=args.momentum,
                         weight_decay=args.weight_decay, schedule=args.schedule, augment=args.augment, seed=args.seed,
                         early_fractions=args.early_fractions, num_workers=args.workers, device=args.device)
    config.validate()
    probe = build_model(args.model, seed=args.seed)  # the preprocessing comes from the architecture
    source = open_data(args, probe, train=True)
    n_classes = args.num_classes or len(source.classes)

    def new_spec() -> Any:
        spec = build_model(args.model, num_classes=n_classes, seed=args.seed)
        if spec.class_names is None and len(source.classes) == spec.num_classes:
            spec.class_names = list(source.classes)
        return spec

    eval_set = None
    if args.eval_data is not None:
        eval_args = argparse.Namespace(**{**vars(args), "data_seed": args.data_seed + 1})
        eval_set = open_data(eval_args, probe, data=args.eval_data, limit=args.eval_limit, train=False,
                             default_limit=1000)
    ctx = Context(config=config, out=out, progress=not args.quiet, overwrite=args.overwrite,
                  fingerprints={"train_data": dataset_fingerprint(source),
                                "init": digest_of([args.model, n_classes, args.seed])})
    run_stages_of([train_stage(new_spec, source, eval_set=eval_set)], ctx, {"tool": "feature-complexity train"})
    paths = ctx["train"]
    print(f"\n{len(paths)} checkpoints in {out / 'training' / 'checkpoints'} (analyse them with "
          f"`feature-complexity dynamics --checkpoints {out} …`)")
    return 0
