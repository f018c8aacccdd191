"""``feature-complexity flow``: the residual-flow analysis of a finished run folder, again.

The flow analysis runs inside ``run`` when the model describes its residual branches; this
command recomputes it from the folder (another teleport threshold, for instance), with the
feature table and the report after it. The model is not needed.
"""

from __future__ import annotations

import argparse

from ._common import Formatter

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "flow", help="residual flow again on a run folder: CKA / I_V of each block's skip and main branch",
        description=__doc__, formatter_class=Formatter)
    p.add_argument("run_dir", metavar="RUN_DIR", help="the run folder")
    p.add_argument("--threshold", type=float, default=None,
                   help="teleport depth: share of the block output's I_V the skip branch must carry "
                        "(default: the run's)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_flow)


def _flow(args: argparse.Namespace) -> int:
    from feature_complexity.pipeline import run_folder

    changes = {} if args.threshold is None else {"teleport_threshold": args.threshold}
    result = run_folder(args.run_dir, ["flow", "features"], changes=changes, progress=not args.quiet)
    if not result.context.has("flow"):
        raise ValueError(f"{args.run_dir} has no residual branches to analyse: the run was made without branch "
                         "capture (a model whose ModelSpec describes no branches)")
    res = result["flow"]
    print(f"flow: {res.n_blocks} blocks x {res.n_features} features -> {args.run_dir}/flow.json, figures/flow.png")
    if res.teleport_depth is not None:
        from feature_complexity.analyses.flow import teleport_correlation

        rho, p = teleport_correlation(res.teleport_depth, result["complexity"].score)
        never = int((res.teleport_depth == res.n_blocks).sum())
        print("  teleport depth vs complexity: Spearman rho = "
              + (f"{rho:.3f} (p = {p:.2g})" if rho == rho else
                 f"undefined (every feature has the same depth; {never} are never teleported at threshold "
                 f"{res.threshold})"))
    return 0
