"""``feature-complexity flow``: where features flow (skip vs main branch) in a finished run folder."""

from __future__ import annotations

import argparse

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "flow", help="residual flow: CKA / I_V of each block's skip and main branch with every feature",
        description="Residual-flow analysis (Fel et al. 2024, Fig. 4) of a run folder made by "
        "`feature-complexity run` with branch capture. Writes flow.parquet, flow_features.parquet, "
        "flow.json, figures/flow.png and a teleport_depth column in features.parquet.",
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="the run folder")
    p.add_argument("--measure", choices=["cka", "iv", "both"], default="both",
                   help="linear CKA (paper), V-information (paper's appendix), or both (default)")
    p.add_argument("--threshold", type=float, default=0.9,
                   help="teleport depth: fraction of the block output's I_V the skip branch must carry")
    p.add_argument("--debiased", action="store_true", help="debiased CKA (unbiased HSIC)")
    p.add_argument("--device", default=None, help="device for the I_V probes (default: the run's)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_flow)


def _flow(args: argparse.Namespace) -> int:
    from feature_complexity.analyses.flow import run_flow

    res = run_flow(args.run_dir, measure=args.measure, threshold=args.threshold,
                   debiased=args.debiased, device=args.device, progress=not args.quiet)
    import json
    from pathlib import Path

    summary = json.loads((Path(args.run_dir) / "flow.json").read_text())
    print(f"flow: {res.n_blocks} blocks x {res.n_features} features -> {args.run_dir}/flow.parquet, "
          "flow.json, figures/flow.png")
    for key, what in (("teleport_spearman", "teleport depth"), ("skip_share_spearman", "skip share")):
        if key in summary:
            rho = summary[key].get("rho")
            print(f"  {what} vs complexity: Spearman rho = "
                  + (f"{rho:.3f} (p = {summary[key]['p_value']:.2g})" if rho is not None
                     else "undefined (the same value for every feature)"))
    if "teleport_depth_counts" in summary:
        counts = summary["teleport_depth_counts"]
        print(f"  teleport depth counts per block (last = never): {counts}")
    return 0
