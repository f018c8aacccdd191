"""The ``feature-complexity`` command line: one module per sub-command.

Each sub-command module exposes ``register(subparsers)``, which adds its parser and sets
``func`` (a callable taking the parsed ``argparse.Namespace`` and returning an exit code).
The CLI is a thin layer: it parses, builds the objects, and calls the pipeline.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# sub-command modules, in the order they appear in --help
_COMMANDS = ["run", "demo", "train", "dynamics", "flow", "report"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="feature-complexity",
        description="Complexity, importance, dynamics and flow of a vision model's features "
        "(Fel et al., NeurIPS 2024).",
    )
    from feature_complexity import __version__

    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _COMMANDS:
        try:
            module = importlib.import_module(f"feature_complexity.cli.{name}_cmd")
        except ModuleNotFoundError as err:  # a command still being written: leave it out
            if err.name != f"feature_complexity.cli.{name}_cmd":
                raise
            continue
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("\ninterrupted: finished stages are kept in the run folder; rerun the same command "
              "to resume.", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError) as err:
        # user errors: one clear line, no traceback from deep inside torch
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
