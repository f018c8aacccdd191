"""The paper's scale in one process: everything after the forward pass against the forward pass.

ImageNet shape (1,000 classes, d = 2048, the 16 ResNet-50 probe blocks of widths 256 to 2048,
k = 10,000 atoms), synthetic activations with per-class structure
(:mod:`feature_complexity.data.synthetic`), through the library's stable entry points
(``fc.fit_dictionary``, ``fc.encode``, ``fc.complexity``, ``fc.importance``), and a real
torchvision ResNet-50 forward pass (random weights, 224 px) in the same process, so every stage
is printed in seconds, per probe image, and as a ratio to the forward pass over the same images.

Stages and what they cost here:

- ``forward``: ResNet-50 on ``--forward-images`` random 224-px images (``torch.inference_mode``),
  per image; the baseline of every ratio.
- ``dictionary``: per-class NMF on ``--fit-per-class`` pooled vectors per class (1,000 classes).
- ``codes``: exact NNLS of the probe images on the whole ``D`` (k = 10,000), with its KKT residual.
- ``complexity``: 16 layers x 10,000 features on the probe images, with the jackknife intervals.
- ``importance`` and ``fidelity``: through a linear head (2048 -> 1,000).
- ``report``: ``report.html`` of a 10,000-feature run folder (``report.sample.fake_run_folder``).

A stage that does not grow with the probe images (dictionary, the complexity solves, report)
is a fixed cost; the per-image stages are measured on ``--probe-images`` and scale linearly.
``--probe-images 50000`` is the paper's experiment (ImageNet val): on a GPU that is the default
of ``benchmarks/gpu_check.sh``. Nothing is asserted: numbers and ratios only, with the load.

    .venv/bin/python benchmarks/bench_scale.py --threads 1                   # CPU, 2,000 probe images
    .venv/bin/python benchmarks/bench_scale.py --device cuda --probe-images 50000 --forward-images 2000
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

RESNET50_WIDTHS = (256,) * 3 + (512,) * 4 + (1024,) * 6 + (2048,) * 3


def _load() -> str:
    return "load average " + " ".join(f"{x:.1f}" for x in os.getloadavg())


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def _timed(device: str, fn: Callable[[], Any]) -> tuple[Any, float]:
    _sync(device)
    start = time.perf_counter()
    out = fn()
    _sync(device)
    return out, time.perf_counter() - start


def forward_seconds_per_image(n_images: int, device: str, batch: int) -> float:
    """Wall seconds per image of a torchvision ResNet-50 (random weights) at 224 px."""
    import torch
    from torchvision.models import resnet50

    model = resnet50(weights=None).eval().to(device)
    x = torch.randn(min(batch, n_images), 3, 224, 224, device=device)
    with torch.inference_mode():
        model(x[:2])  # warm-up (kernel selection, allocator)
        _sync(device)
        start, done = time.perf_counter(), 0
        while done < n_images:
            b = min(batch, n_images - done)
            model(x[:b])
            done += b
        _sync(device)
    return (time.perf_counter() - start) / n_images


def synthetic_run(args: argparse.Namespace) -> dict[str, Any]:
    """Fit set, probe set and probe layers with per-class structure (seeded)."""
    from feature_complexity.data.synthetic import class_structured, probe_layers

    fit = class_structured(args.fit_per_class, args.classes, args.d, seed=args.seed)
    per_class = max(1, args.probe_images // args.classes)
    probe = class_structured(per_class, args.classes, args.d, seed=args.seed + 1)
    layers = probe_layers(probe.latent, RESNET50_WIDTHS, seed=args.seed + 2)
    return {"fit": fit, "probe": probe, "layers": layers}


def run_stages(args: argparse.Namespace, data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Time every post-forward stage; returns ``{stage: {"seconds": s, ...}}``."""
    import torch

    import feature_complexity as fc

    dev, out = args.device, _Progress()
    fit, probe = data["fit"], data["probe"]
    dic, t = _timed(dev, lambda: fc.fit_dictionary(fit.A, fit.classes, args.atoms_per_class, device=dev,
                                                   seed=args.seed))
    out["dictionary"] = {"seconds": t, "k": int(dic.D.shape[0]), "rows": int(len(fit.A)), "fixed": True}
    (Z, info), t = _timed(dev, lambda: fc.encode(probe.A, dic.D, device=dev, return_info=True))
    out["codes"] = {"seconds": t, "max_relative_kkt": float(info["max_relative_kkt"]), "fixed": False}
    res, t = _timed(dev, lambda: fc.complexity(data["layers"], Z, device=dev, max_memory_gb=args.memory_gb))
    out["complexity"] = {"seconds": t, "mean_K": float(np.nanmean(res.score)), "fixed": False,
                         "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}
    head = torch.nn.Linear(args.d, args.classes).eval()
    gamma, t = _timed(dev, lambda: fc.importance(Z, dic.D, head, feature_class=dic.feature_class,
                                                 image_class=probe.classes, device=dev))
    out["importance"] = {"seconds": t, "fixed": False, "finite": int(np.isfinite(gamma).sum())}
    kept, t = _timed(dev, lambda: _agreement(head, probe.A, Z @ dic.D))
    out["fidelity"] = {"seconds": t, "agreement": kept, "fixed": False}
    out["report"] = {"seconds": _report_seconds(int(dic.D.shape[0]), args.classes), "fixed": True}
    return out


class _Progress(dict):
    """The stage table, printing each stage as it finishes (a long CPU run shows where it is)."""

    def __setitem__(self, name: str, row: dict[str, Any]) -> None:
        print(f"  {name}: {row['seconds']:.1f} s ({_load()})", flush=True)
        super().__setitem__(name, row)


def _agreement(head: Any, A: np.ndarray, A_hat: np.ndarray) -> float:
    """Share of images whose top class through ``head`` is the same on ``Z @ D`` as on ``A``."""
    import torch

    with torch.inference_mode():
        a = head(torch.from_numpy(np.ascontiguousarray(A, dtype=np.float32))).argmax(1)
        b = head(torch.from_numpy(np.ascontiguousarray(A_hat, dtype=np.float32))).argmax(1)
    return float((a == b).float().mean())


def _report_seconds(n_features: int, n_classes: int) -> float:
    from feature_complexity.report import render_report
    from feature_complexity.report.sample import fake_run_folder

    with tempfile.TemporaryDirectory(prefix="bench_scale_") as tmp:
        run = fake_run_folder(Path(tmp) / "run", n_features=n_features, n_classes=n_classes, n_layers=16,
                              n_thumbnails=300, n_figures=12, tile=64)
        start = time.perf_counter()
        render_report(run)
        return time.perf_counter() - start


def print_table(stages: dict[str, dict[str, Any]], n_probe: int, forward_s: float) -> None:
    """One line per stage: seconds, per image, ratio to the forward pass over the probe images."""
    fwd_total = forward_s * n_probe
    print(f"\nforward pass (ResNet-50, 224 px): {1e3 * forward_s:.1f} ms per image -> "
          f"{fwd_total:.1f} s for the {n_probe:,} probe images")
    print(f"{'stage':12s} {'seconds':>9s} {'ms/image':>9s} {'/ forward':>10s}  notes")
    total = 0.0
    for name, row in stages.items():
        total += row["seconds"]
        notes = ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}"
                          for k, v in row.items() if k not in ("seconds", "fixed"))
        kind = "fixed cost" if row["fixed"] else "per image"
        print(f"{name:12s} {row['seconds']:9.2f} {1e3 * row['seconds'] / n_probe:9.2f} "
              f"{row['seconds'] / fwd_total:10.3f}  {kind}; {notes}")
    print(f"{'after fwd':12s} {total:9.2f} {1e3 * total / n_probe:9.2f} {total / fwd_total:10.3f}  "
          "everything after the forward pass / the forward pass (target <= 0.5)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (1 on a busy machine)")
    ap.add_argument("--classes", type=int, default=1000)
    ap.add_argument("--atoms-per-class", type=int, default=10)
    ap.add_argument("--d", type=int, default=2048)
    ap.add_argument("--fit-per-class", type=int, default=50)
    ap.add_argument("--probe-images", type=int, default=2000, help="rounded down to a multiple of --classes")
    ap.add_argument("--forward-images", type=int, default=64, help="images timed through ResNet-50")
    ap.add_argument("--forward-batch", type=int, default=32)
    ap.add_argument("--memory-gb", type=float, default=6.0, help="the complexity engine's budget")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None, help="also write the numbers here")
    args = ap.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    print(f"bench_scale: device {args.device}, threads {args.threads or 'default'}, {_load()}")
    forward_s = forward_seconds_per_image(args.forward_images, args.device, args.forward_batch)
    data = synthetic_run(args)
    n_probe = len(data["probe"].A)
    print(f"synthetic: {args.classes} classes, d = {args.d}, fit {len(data['fit'].A):,} rows, "
          f"probe {n_probe:,} images, 16 blocks ({sum(RESNET50_WIDTHS):,} channels)")
    stages = run_stages(args, data)
    print_table(stages, n_probe, forward_s)
    print(_load())
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "forward_s_per_image": forward_s,
                                               "n_probe": n_probe, "stages": stages}, indent=2))


if __name__ == "__main__":
    main()
