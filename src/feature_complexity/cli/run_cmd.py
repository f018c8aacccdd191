"""``feature-complexity run``: analyse a model on a set of images and write a run folder."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from feature_complexity.config import NMF_SOLVERS

from ._common import (
    Formatter,
    add_analysis_arguments,
    add_data_arguments,
    add_execution_arguments,
    add_model_arguments,
    apply_threads,
    build_spec,
    check_class_sizes,
    check_device,
    check_out_dir,
    config_from_args,
    open_data,
    plural,
    warn,
)

__all__ = ["register", "prepare_data", "print_summary"]


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "run", help="analyse a model on images: features, complexity, importance, flow, findings, report",
        description="Analyse a trained model on a set of images and write a run folder (features.parquet, "
        "manifest.json, findings.json, figures/, report.html). Rerunning the same command resumes an "
        "interrupted run; a folder made from other inputs or settings is refused unless --overwrite.",
        formatter_class=Formatter)
    add_model_arguments(p)
    p.add_argument("--out", required=True, help="the run folder")
    add_data_arguments(p, default_limit=5000)
    f = p.add_argument_group("dictionary fit set")
    f.add_argument("--fit-data", default=None, help="images the dictionary is fitted on (default: --data), "
                   "e.g. ImageNet's training set")
    f.add_argument("--fit-per-class", type=int, default=None, help="at most this many fit images per class")
    f.add_argument("--fit-samples", choices=["pooled", "spatial", "crops"], default="pooled",
                   help="one pooled vector per image, every position of the penultimate map, or CRAFT crops")
    f.add_argument("--fit-memory", type=float, default=4.0,
                   help="GB the gathered fit samples may take (random positions per image are kept below it)")
    f.add_argument("--nmf-solver", choices=NMF_SOLVERS, default="auto",
                   help="hals: scikit-learn's coordinate-descent iterates; accelerated: several sweeps per pass "
                        "over the samples (Gillis & Glineur), for fits of many samples per class; auto: "
                        "accelerated for spatial and crops, hals for pooled")
    add_analysis_arguments(p)
    add_execution_arguments(p)
    p.set_defaults(func=_run)


def prepare_data(args: argparse.Namespace, spec: Any, config: Any, *, fit: bool = False) -> Any:
    """The probe images (or, with ``fit``, the ``--fit-data`` images: all of them, training split),
    with labels dropped (and said so) when their classes are not the model's."""
    source = open_data(args, spec, data=args.fit_data, apply_limit=False, train=True) if fit else open_data(args, spec)
    what = "the fit data" if fit else "the data"
    note = source.conversion_note()
    if note:
        warn(note)
    if spec.num_classes is not None and len(source.classes) != spec.num_classes:
        # folder indices are not the model's class indices (10 ImageNet class folders for a
        # 1000-class model): as labels they would give wrong accuracies and importances
        if config.class_source == "label":
            raise ValueError(f"--class-source label needs data whose classes are the model's: {what} has "
                             f"{plural(len(source.classes), 'class')}, the model {spec.num_classes}; use "
                             "--class-source prediction (or auto)")
        warn(f"{what} has {plural(len(source.classes), 'class')}, the model {spec.num_classes}: labels are "
             "ignored and images are grouped by the model's predictions")
        return source.without_labels()
    if spec.class_names is None:
        spec.class_names = list(source.classes)
    return source


def _run(args: argparse.Namespace) -> int:
    from feature_complexity.pipeline import run_analysis

    apply_threads(args)
    args.extra_config = {"fit_samples": args.fit_samples, "fit_per_class": args.fit_per_class,
                         "fit_memory_gb": args.fit_memory, "nmf_solver": args.nmf_solver}
    config = config_from_args(args)
    check_device(config.device)
    out = check_out_dir(args.out)
    spec = build_spec(args)
    source = prepare_data(args, spec, config)
    check_class_sizes(source.labels, config.n_atoms_per_class, config.class_source)
    fit = None if args.fit_data is None else prepare_data(args, spec, config, fit=True)
    model_info = {"name": args.model, "weights": args.weights, "num_classes": args.num_classes,
                  "checkpoint": str(Path(args.checkpoint).resolve()) if args.checkpoint else None}
    result = run_analysis(spec, source, out, config, fit_dataset=fit, model_info=model_info,
                          data_info=source.describe(), report=not args.no_report, overwrite=args.overwrite,
                          manifest_extra={"command": args.argv}, progress=not args.quiet)
    if result.context.comm.is_main:
        print_summary(result)
    return 0


def print_summary(result: Any) -> None:
    """The run in a few lines: features, K, the model's own accuracy beside what the dictionary
    keeps, and which stages ran now (with their times) or were reused."""
    frame = result.features
    print(f"\nrun folder: {result.out_dir}")
    if frame is not None:
        K = frame["complexity"]
        print(f"features: {len(frame)}  complexity K: median {K.median():.3f} [{K.min():.3f}, {K.max():.3f}]")
    fid = result.context.get("fidelity")
    if fid:
        acc, kept = fid.get("accuracy_original"), fid.get("accuracy_kept")
        model_acc = "unknown (no labels)" if acc is None else f"{acc:.4f}"
        kept_txt = "" if kept is None else f", accuracy kept by Z @ D {kept:.4f}"
        print(f"model accuracy {model_acc}{kept_txt}, agreement {fid['agreement']:.4f}, "
              f"relative error {fid['relative_error']:.4f}")
    computed = {k: v["seconds"] for k, v in result.status.items() if v["status"] == "computed"}
    reused = [k for k, v in result.status.items() if v["status"] == "reused"]
    if computed:
        print("computed now (s): " + ", ".join(f"{k} {v:.1f}" for k, v in computed.items()))
    if reused:
        print("reused from an earlier run: " + ", ".join(reused))
