"""Option groups and helpers shared by several sub-commands (``train``, ``dynamics``, ``flow``).

The scoring options of ``run`` and ``demo`` live in :func:`feature_complexity.cli.run_cmd.add_analysis_arguments`.
"""

from __future__ import annotations

import argparse

__all__ = ["add_data_arguments", "open_data", "add_execution_arguments", "apply_threads"]


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


def add_execution_arguments(parser: argparse.ArgumentParser, *, batch_size: int | None = None) -> None:
    """The ``execution`` group: ``--device``, ``--batch-size`` (when ``batch_size`` is given, as
    its default), ``--workers``, ``--threads`` (see :func:`apply_threads`), ``--quiet``."""
    e = parser.add_argument_group("execution")
    e.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 …")
    if batch_size is not None:
        e.add_argument("--batch-size", type=int, default=batch_size)
    e.add_argument("--workers", type=int, default=0, help="data-loader worker processes")
    e.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: torch's choice; 1 is much faster on a busy shared CPU)")
    e.add_argument("--quiet", action="store_true", help="no progress bars")


def apply_threads(args: argparse.Namespace) -> None:
    """``torch.set_num_threads(--threads)`` when it is given."""
    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"--threads must be >= 1, got {args.threads}")
        import torch

        torch.set_num_threads(args.threads)
