"""The ``feature-complexity`` command line: one module per sub-command.

Each sub-command module exposes ``register(subparsers)``, which adds its parser and sets
``func`` (a callable taking the parsed ``argparse.Namespace`` and returning an exit code).
The CLI is a thin layer: it parses, checks what can be checked early, builds the objects, and
calls the pipeline. Every user error ends in exit code 2 and one line saying what is wrong and
what to do; an interruption keeps the finished stages (exit 130).
"""

from __future__ import annotations

import argparse
import errno
import importlib
import sys
import warnings

# sub-command modules, in the order they appear in --help
_COMMANDS = ["run", "demo", "train", "dynamics", "flow", "report"]


def build_parser() -> argparse.ArgumentParser:
    from feature_complexity import __version__

    parser = argparse.ArgumentParser(
        prog="feature-complexity",
        description="Complexity, importance, dynamics and flow of a vision model's features "
        "(Fel et al., NeurIPS 2024).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _COMMANDS:
        importlib.import_module(f"feature_complexity.cli.{name}_cmd").register(subparsers)
    return parser


def _sub_parser(parser: argparse.ArgumentParser, command: str | None) -> argparse.ArgumentParser:
    for action in parser._subparsers._group_actions if parser._subparsers else []:  # noqa: SLF001
        if isinstance(action, argparse._SubParsersAction) and command in action.choices:
            return action.choices[command]
    return parser


def _message(err: BaseException) -> str:
    """One line for a user error (OSError: the file and the reason, no errno noise)."""
    if isinstance(err, OSError) and not isinstance(err, FileNotFoundError):
        if err.errno in (errno.ENOSPC, errno.EDQUOT):
            return (f"the disk is full ({err.filename or 'writing the run folder'}); free some space or choose "
                    "another --out, then rerun the same command to resume")
        where = f" {err.filename}" if err.filename else ""
        return f"cannot access{where}: {err.strerror or err}"
    return str(err).splitlines()[0] if str(err) else type(err).__name__


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # the sub-command's usage, not the top-level one
        _sub_parser(parser, getattr(args, "command", None)).error(f"unrecognized arguments: {' '.join(unknown)}")
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    _quiet_library_warnings()
    args.argv = ["feature-complexity", *(sys.argv[1:] if argv is None else argv)]  # for the manifest
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("\ninterrupted: finished stages are kept in the run folder; rerun the same command to resume.",
              file=sys.stderr)
        return 130
    except (ValueError, OSError) as err:  # FileNotFoundError, DiskFullError, StaleRunError included
        print(f"error: {_message(err)}", file=sys.stderr)
        return 2


def _quiet_library_warnings() -> None:
    """Warnings as one line each (``warning: …``), without the source line that raised them."""

    def show(message, category, filename, lineno, file=None, line=None):  # noqa: ANN001
        print(f"warning: {message}", file=sys.stderr)

    warnings.showwarning = show
    # umap's note that a seed disables parallelism is about speed, not the numbers
    warnings.filterwarnings("ignore", message=".*n_jobs value.*overridden.*")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
