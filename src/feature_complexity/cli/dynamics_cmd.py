"""``feature-complexity dynamics``: complexity across training checkpoints (paper Fig. 5, 6)."""

from __future__ import annotations

import argparse

from ._common import add_data_arguments, add_execution_arguments, apply_threads, open_data

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "dynamics", help="complexity across training: per-checkpoint features, temporal decoding score",
        description="For each checkpoint, extract features on the probe images and score their "
        "complexity and importance; for each feature of the final checkpoint, its V-information "
        "from every checkpoint's penultimate layer (temporal decoding score A). Rerunning the same "
        "command skips the checkpoints already analysed.",
    )
    p.add_argument("--checkpoints", required=True, nargs="+",
                   help="a folder of checkpoints (e.g. runs/train-r20/checkpoints) or a list of files")
    p.add_argument("--model", default=None,
                   help="the architecture (default: the model name recorded in the checkpoints)")
    add_data_arguments(p, generated_seed=1, generated_default=2000)
    p.add_argument("--out", required=True, help="the output folder")
    g = p.add_argument_group("features and scores")
    g.add_argument("--atoms-per-class", type=int, default=10, help="atoms per class (paper: 10)")
    g.add_argument("--class-source", choices=["auto", "label", "prediction"], default="auto")
    g.add_argument("--top-fraction", type=float, default=0.01, help="fraction of most important features (paper: 0.01)")
    g.add_argument("--min-top", type=int, default=5, help="at least this many features in the top group")
    g.add_argument("--rank-by", choices=["abs", "signed"], default="abs", help="rank importance by |Γ| or Γ")
    g.add_argument("--threshold", type=float, default=0.5, help="I_V at which a feature counts as decodable")
    g.add_argument("--folds", type=int, default=5)
    g.add_argument("--seed", type=int, default=0)
    add_execution_arguments(p, batch_size=256)
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    apply_threads(args)
    from feature_complexity.analyses.dynamics import DynamicsConfig, _spec_loader, run_dynamics
    from feature_complexity.train import list_checkpoints

    config = DynamicsConfig(
        n_atoms_per_class=args.atoms_per_class, class_source=args.class_source,
        top_fraction=args.top_fraction, min_top=args.min_top, rank_by=args.rank_by,
        decodable_threshold=args.threshold, n_folds=args.folds, seed=args.seed,
        batch_size=args.batch_size, device=args.device, num_workers=args.workers,
    )
    config.validate()
    infos = list_checkpoints(args.checkpoints[0] if len(args.checkpoints) == 1 else args.checkpoints)
    # the final model fixes the preprocessing of the probe images
    spec = _spec_loader(args.model)(infos[-1].path)
    probe = open_data(args, spec, train=False, generated_default=2000)
    result = run_dynamics(infos, args.model, probe, args.out, config, progress=not args.quiet)
    s = result.summary
    print(f"\ndynamics folder: {result.out_dir}")
    print(f"{s['n_checkpoints']} checkpoints, {s['n_final_features']} final features, "
          f"{s['seconds_per_checkpoint']:.1f} s per checkpoint")
    print(f"Spearman(A, K) = {s['spearman_A_K']:.3f}")
    for key in ("first", "last"):
        r = s[key]
        print(f"{key:5s} {r['checkpoint']}: mean K {r['mean_complexity']:.3f}, top mean K "
              f"{r['top_mean_complexity']:.3f}, Spearman(K, importance) {r['spearman_k_importance']:.3f}, "
              f"accuracy {r['accuracy']:.3f}")
    return 0
