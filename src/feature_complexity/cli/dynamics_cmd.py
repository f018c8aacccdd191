"""``feature-complexity dynamics``: complexity across training checkpoints (paper Fig. 5, 6)."""

from __future__ import annotations

import argparse

from ._common import (
    Formatter,
    add_analysis_arguments,
    add_data_arguments,
    add_execution_arguments,
    apply_threads,
    check_device,
    check_out_dir,
    config_from_args,
)

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "dynamics", help="complexity across training: per-checkpoint features, temporal decoding score",
        description="Analyse the LAST checkpoint as `run` does, and every checkpoint: its own features' complexity "
        "and importance, and the V-information of the final features from its penultimate layer (temporal "
        "decoding score A). Rerunning the same command skips the checkpoints already scored.",
        formatter_class=Formatter)
    p.add_argument("--checkpoints", required=True, nargs="+",
                   help="a training run folder (feature-complexity train --out), a folder of checkpoints, or files")
    p.add_argument("--model", default=None, help="the architecture (default: the name recorded in the checkpoints)")
    p.add_argument("--trust-checkpoint", action="store_true",
                   help="allow full unpickling of checkpoints the safe loader refuses (runs code from the files)")
    add_data_arguments(p, default_limit=2000)
    p.add_argument("--out", required=True, help="the run folder")
    add_analysis_arguments(p)
    d = p.add_argument_group("dynamics")
    d.add_argument("--top-fraction", type=float, default=0.01, help="fraction of most important features (paper: 1 %%)")
    d.add_argument("--min-top", type=int, default=5, help="at least this many features in the top group")
    d.add_argument("--rank-by", choices=["abs", "signed"], default="abs", help="rank importance by |Γ| or Γ")
    d.add_argument("--decodable-threshold", type=float, default=0.5, help="I_V at which a feature counts as decodable")
    add_execution_arguments(p)
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from feature_complexity.analyses.dynamics import _resolve_checkpoints, dynamics_stages, spec_loader
    from feature_complexity.pipeline import run_analysis

    from .run_cmd import prepare_data, print_summary

    apply_threads(args)
    args.extra_config = {"top_fraction": args.top_fraction, "min_top": args.min_top, "rank_by": args.rank_by,
                         "decodable_threshold": args.decodable_threshold}
    config = config_from_args(args)
    check_device(config.device)
    out = check_out_dir(args.out)
    infos = _resolve_checkpoints(args.checkpoints[0] if len(args.checkpoints) == 1 else args.checkpoints,
                                 args.trust_checkpoint)
    spec = spec_loader(args.model, trust=args.trust_checkpoint)(infos[-1].path)  # the final model
    probe = prepare_data(args, spec, config)
    stages, prints = dynamics_stages(infos, args.model, trust=args.trust_checkpoint)
    result = run_analysis(spec, probe, out, config, data_info=probe.describe(), extra_stages=stages,
                          extra_fingerprints=prints, report=not args.no_report, overwrite=args.overwrite,
                          model_info={"name": spec.name, "checkpoint": str(infos[-1].path.resolve())},
                          manifest_extra={"command": args.argv, "dynamics_checkpoints": {
                              "paths": [str(c.path) for c in infos], "model": args.model,
                              "trust": args.trust_checkpoint}}, progress=not args.quiet)
    print_summary(result)
    s = result["dynamics"].summary
    print(f"{s['n_checkpoints']} checkpoints; Spearman(A, K) = {s['spearman_A_K']:.3f}")
    for key in ("first", "last"):
        r = s[key]
        print(f"{key:5s} {r['checkpoint']}: mean K {r['mean_complexity']:.3f}, "
              f"top mean K {r['top_mean_complexity']:.3f}, "
              f"Spearman(K, importance) {r['spearman_k_importance']:.3f}, accuracy {r['accuracy']:.3f}")
    return 0
