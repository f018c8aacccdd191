"""``feature-complexity report RUN_DIR``: render ``report.html`` of a run folder again.

Without options this needs no model: the finished stages are reused from the folder and only
the page is rendered (seconds). ``--evidence`` rebuilds the model and the probe images from
``manifest.json`` (``model.name`` with ``model.build_args``, or ``weights``/``checkpoint``/
``num_classes``; ``data`` as written by ``ImageSource.describe()``), checks that they are the
run's own (their fingerprints, and the model reproducing the run's activations on its first
images), and runs the evidence stage (top images, concept heatmaps) before the report.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

__all__ = ["register", "rebuild_from_manifest"]


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "report", help="render report.html of a run folder again (--evidence: with top images and heatmaps)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", metavar="RUN_DIR", help="the run folder (holds features.parquet and manifest.json)")
    p.add_argument("--evidence", action="store_true",
                   help="rebuild the model and images from the manifest and render the evidence first")
    p.add_argument("--evidence-features", type=int, default=None,
                   help="features with thumbnails (default: the run's, 300): the simplest, most complex, most "
                   "important and a seeded sample; needs --evidence")
    p.add_argument("--n-top", type=int, default=None, help="top images per feature (default: the run's, 6); "
                   "needs --evidence")
    p.add_argument("--report-mb", type=float, default=None,
                   help="size budget of report.html in MB (default: the run's, 25): thumbnails beyond it stay in "
                   "RUN_DIR/evidence/ and the page says so")
    p.add_argument("--data", default=None, help="the probe images, when they moved since the run (an ImageFolder "
                   "path; same images in the same order)")
    p.add_argument("--checkpoint", default=None, help="the model checkpoint, when it moved since the run")
    p.add_argument("--trust-checkpoint", action="store_true",
                   help="allow full unpickling of a checkpoint the safe loader refuses (only for files you trust)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 … for the evidence (default cpu)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_report)


def rebuild_from_manifest(manifest: dict[str, Any], *, data: str | None = None, checkpoint: str | None = None,
                          trust_checkpoint: bool = False) -> tuple[Any, Any, str | None]:
    """The model and probe images of a run, from its manifest.

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
        spec = build_model(model["name"], trust_checkpoint=trust_checkpoint, **kwargs)
    except (ValueError, FileNotFoundError, RuntimeError, TypeError, OSError) as err:
        return None, None, f"cannot rebuild model '{model['name']}': {err}"
    return spec, *_rebuild_data(manifest, spec, data)


def _rebuild_data(manifest: dict[str, Any], spec: Any, data: str | None) -> tuple[Any, str | None]:
    from feature_complexity.data import image_folder, load_source

    desc = manifest.get("data")
    try:
        if data is not None:
            return image_folder(data, input_size=spec.input_size, mean=spec.mean, std=spec.std), None
        if isinstance(desc, dict) and desc.get("kind"):
            return load_source(dict(desc), input_size=spec.input_size, mean=spec.mean, std=spec.std), None
    except (ValueError, FileNotFoundError, RuntimeError, KeyError, OSError) as err:
        return None, f"cannot rebuild the probe images: {err} (pass --data PATH)"
    return None, "manifest.json does not describe the probe images (data.kind); pass --data PATH"


def _check_reproduces(spec: Any, source: Any, run_dir: Path, *, device: str = "cpu", n_images: int = 8) -> str | None:
    """Does the rebuilt model give the run's own penultimate activations on its first images?

    Evidence drawn with another model (a fresh initialisation, a different checkpoint) would be
    silently wrong; this compares with the run's stored activations when it kept them.

    Returns:
        ``None`` when they agree (or there is nothing to compare with), else the reason.
    """
    import numpy as np
    import torch

    from feature_complexity.activations import Activations
    from feature_complexity.models.hooks import capture

    try:
        stored = Activations.load(run_dir / "activations").penultimate
    except (FileNotFoundError, ValueError, KeyError):
        return None
    n = min(n_images, len(source), stored.shape[0])
    x = torch.stack([source[i][0] for i in range(n)]).to(device)
    module = spec.module.to(device).eval()
    with capture(spec, layers=False) as rec, torch.no_grad():
        module(x)
    got = rec["penultimate"].float().cpu().numpy()
    want = np.asarray(stored[:n], dtype=np.float32)
    if got.shape != want.shape or not np.allclose(got, want, rtol=1e-3, atol=1e-3 * (np.abs(want).max() + 1e-12)):
        return ("the model rebuilt from manifest.json does not reproduce the run's activations (another checkpoint "
                "or other images?); pass --checkpoint / --data with the run's own")
    return None


def _evidence_inputs(args: argparse.Namespace, run_dir: Path) -> dict[str, Any]:
    """The run's model and probe images, rebuilt and checked, or a ``ValueError`` saying why not."""
    from feature_complexity.pipeline import open_run
    from feature_complexity.report.rerun import check_inputs_match

    manifest = open_run(run_dir)[2]
    spec, source, reason = rebuild_from_manifest(manifest, data=args.data, checkpoint=args.checkpoint,
                                                 trust_checkpoint=args.trust_checkpoint)
    if reason is None and manifest.get("n_images") is not None and len(source) != manifest["n_images"]:
        reason = (f"the rebuilt probe images ({len(source)}) are not the run's ({manifest['n_images']}); pass --data "
                  "with the run's images")
    reason = reason or check_inputs_match(spec, source, manifest) or _check_reproduces(spec, source, run_dir,
                                                                                        device=args.device)
    if reason is not None:
        raise ValueError(f"no evidence for {run_dir}: {reason}")
    return {"spec": spec, "probe": source, "class_names": spec.class_names}


def _report(args: argparse.Namespace) -> int:
    from feature_complexity.report.folder import check_run_dir
    from feature_complexity.report.rerun import rerender

    run_dir = check_run_dir(args.run_dir)
    if not args.evidence and (args.evidence_features is not None or args.n_top is not None):
        raise ValueError("--evidence-features and --n-top change the evidence: add --evidence (it needs the model "
                         "and the images)")
    changes = {k: v for k, v in (("evidence_features", args.evidence_features), ("n_top", args.n_top),
                                 ("report_mb", args.report_mb)) if v is not None}
    if args.evidence:
        changes["device"] = args.device
    inputs = _evidence_inputs(args, run_dir) if args.evidence else None
    out = rerender(run_dir, evidence_inputs=inputs, changes=changes, progress=not args.quiet)
    size = out.stat().st_size / 1e6
    print(f"report: {out} ({size:.1f} MB)", file=sys.stdout)
    return 0
