"""``feature-complexity report RUN_DIR``: rebuild ``report.html`` from a run folder.

The model and the probe images are rebuilt from ``manifest.json`` (``model.name`` with
``model.build_args``, or ``weights``/``checkpoint``/``num_classes``; ``data`` as written by
``ImageSource.describe()``) to render the evidence images (top images + concept heatmaps) and,
with ``--visualize``, feature visualisations. When they cannot be rebuilt (a custom model, moved
images), the report is written without evidence and the reason is printed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

__all__ = ["register", "rebuild_from_manifest"]


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "report", help="(re)build report.html of a run folder",
        description="Write RUN_DIR/report.html: summary, figures per question (what / when / where / "
        "importance) and a feature explorer. Evidence images (top images with concept heatmaps) are "
        "rendered when the model and images recorded in manifest.json can be rebuilt; existing "
        "evidence files are kept (delete RUN_DIR/evidence to redraw them).",
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="the run folder (holds features.parquet)")
    p.add_argument("--n-top", type=int, default=6, help="top images per feature (default 6)")
    p.add_argument("--max-evidence", type=int, default=300,
                   help="features with evidence images: all when there are fewer, else the simplest, "
                   "most complex, most important and a random sample (default 300)")
    p.add_argument("--no-evidence", action="store_true", help="do not rebuild the model; no evidence images")
    p.add_argument("--visualize", action="store_true",
                   help="also compute Fourier feature visualisations (slow on a CPU)")
    p.add_argument("--visualize-steps", type=int, default=64, help="optimisation steps per visualisation")
    p.add_argument("--max-visualized", type=int, default=40, help="features to visualise (extremes first)")
    p.add_argument("--embed", choices=["umap", "pca"], default="umap",
                   help="2-D embedding of the meta-features figure (default umap; pca without umap-learn)")
    p.add_argument("--data", default=None, help="the probe images, when they moved since the run "
                   "(an ImageFolder path; same images in the same order)")
    p.add_argument("--checkpoint", default=None, help="the model checkpoint, when it moved since the run")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 … (default cpu)")
    p.add_argument("--seed", type=int, default=0, help="seeds the evidence sample, clusters, visualisations")
    p.set_defaults(func=_report)


def rebuild_from_manifest(
    manifest: dict[str, Any], *, data: str | None = None, checkpoint: str | None = None
) -> tuple[Any, Any, str | None]:
    """The model and probe images of a run, from its manifest.

    Args:
        manifest: the parsed ``manifest.json``.
        data: an ImageFolder path overriding the recorded one.
        checkpoint: a checkpoint path overriding the recorded one.

    Returns:
        ``(spec, source, None)`` on success, ``(None, None, reason)`` otherwise.
    """
    model = manifest.get("model")
    if not isinstance(model, dict) or not model.get("name"):
        return None, None, "manifest.json does not record the model (model.name)"
    from feature_complexity.models.registry import build_model

    kwargs = dict(model.get("build_args") or {})
    for key in ("weights", "checkpoint", "num_classes"):
        # a model trained in-process (the demo) is built without a checkpoint, which the caller
        # records beside build_args: the recorded file wins over the fresh initialisation
        if model.get(key) is not None and kwargs.get(key) is None:
            kwargs[key] = model[key]
    if checkpoint is not None:
        kwargs["checkpoint"] = checkpoint
    if kwargs.get("checkpoint") is not None:
        kwargs.pop("weights", None)
    ckpt = kwargs.get("checkpoint")
    if ckpt and not Path(ckpt).exists():
        return None, None, f"the model checkpoint {ckpt} no longer exists (pass --checkpoint PATH)"
    try:
        spec = build_model(model["name"], **kwargs)
    except (ValueError, FileNotFoundError, RuntimeError, TypeError, OSError) as err:
        return None, None, f"cannot rebuild model '{model['name']}': {err}"

    data_desc = manifest.get("data")
    try:
        from feature_complexity.data.sources import image_folder, load_source

        if data is not None:
            source = image_folder(data, input_size=spec.input_size, mean=spec.mean, std=spec.std)
        elif isinstance(data_desc, dict) and data_desc.get("kind"):
            source = load_source(dict(data_desc), input_size=spec.input_size, mean=spec.mean, std=spec.std)
        else:
            return None, None, "manifest.json does not describe the probe images (data.kind); pass --data"
    except (ValueError, FileNotFoundError, RuntimeError, KeyError, OSError) as err:
        return None, None, f"cannot rebuild the probe images: {err} (pass --data PATH)"
    return spec, source, None


def _check_reproduces(spec: Any, source: Any, run_dir: Path, *, device: str = "cpu",
                      n_images: int = 8) -> str | None:
    """Does the rebuilt model give the run's own penultimate activations on its first images?

    Evidence drawn with another model (a fresh initialisation, a different checkpoint) would be
    silently wrong; this compares against ``activations/penultimate.npy`` when the run kept it.

    Returns:
        ``None`` when they agree (or nothing to compare with), else the reason.
    """
    import numpy as np
    import torch

    from feature_complexity.models.hooks import capture

    path = run_dir / "activations" / "penultimate.npy"
    if not path.exists():
        return None
    stored = np.load(path, mmap_mode="r")
    n = min(n_images, len(source), stored.shape[0])
    x = torch.stack([source[i][0] for i in range(n)]).to(device)
    module = spec.module.to(device).eval()
    with capture(spec, layers=False) as rec, torch.no_grad():
        module(x)
    got = rec["penultimate"].float().cpu().numpy()
    want = np.asarray(stored[:n], dtype=np.float32)
    if got.shape != want.shape or not np.allclose(got, want, rtol=1e-3, atol=1e-3 * (np.abs(want).max() + 1e-12)):
        return ("the model rebuilt from manifest.json does not reproduce the run's activations "
                "(another checkpoint or images?); pass --checkpoint / --data")
    return None


def _report(args: argparse.Namespace) -> int:
    import json

    from feature_complexity.report.html import build_report

    run_dir = Path(args.run_dir)
    if not (run_dir / "features.parquet").exists():
        raise FileNotFoundError(
            f"{run_dir / 'features.parquet'} not found: RUN_DIR must be the --out folder of "
            "`feature-complexity run` (or `demo`)"
        )
    if args.n_top < 1 or args.max_evidence < 0 or args.visualize_steps < 1:
        raise ValueError("--n-top and --visualize-steps must be >= 1, --max-evidence >= 0")
    spec = source = None
    reason: str | None = "--no-evidence was given"
    if not args.no_evidence:
        manifest_path = run_dir / "manifest.json"
        manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
        spec, source, reason = rebuild_from_manifest(manifest, data=args.data, checkpoint=args.checkpoint)
    if spec is not None and source is not None:
        import numpy as np

        n_codes = np.load(run_dir / "codes.npy", mmap_mode="r").shape[0] if (run_dir / "codes.npy").exists() else None
        if n_codes is not None and n_codes != len(source):
            reason = (f"the rebuilt probe images ({len(source)}) do not match codes.npy ({n_codes} rows); "
                      "pass --data with the run's images")
            spec = source = None
    if spec is not None and source is not None:
        mismatch = _check_reproduces(spec, source, run_dir, device=args.device)
        if mismatch is not None:
            reason, spec, source = mismatch, None, None
    if reason is not None and spec is None:
        print(f"report: no evidence images: {reason}", file=sys.stderr)
    out = build_report(run_dir, spec=spec, dataset=source, n_top=args.n_top,
                       max_evidence_features=args.max_evidence, visualize=args.visualize,
                       visualize_steps=args.visualize_steps, max_visualized_features=args.max_visualized,
                       embed=args.embed, device=args.device, seed=args.seed,
                       no_evidence_reason=reason if spec is None else None)
    print(f"report: {out}")
    return 0
