"""Benchmark: exact NNLS codes at the paper's scale (k = 10,000 atoms, d = 2,048).

The "scale" issue: the paper scores 1,000 classes x 10 NMF atoms in ResNet-50's penultimate
layer, and the code of an image is its NNLS against the whole dictionary. This script encodes
synthetic class-structured activations (``data.synthetic.class_structured``) against a
dictionary shaped like the paper's (``data.synthetic.per_class_atoms(1000, 2048, 10)``) and
prints, for ``encode``'s default method:

- images/s (median of ``--repeats`` runs, wall clock) and the CPU seconds the process used;
- the largest relative KKT residual over all images (``return_info``);
- the largest relative objective gap to ``scipy.optimize.nnls`` on ``--sample`` images, and
  SciPy's own images/s on them (the ratio is against SciPy measured in the same run);
- the peak of the process's anonymous memory during ``encode`` above what it held before
  (sampled from ``/proc/self/status``), or the CUDA allocator's peak on a GPU;
- per-class codes (``blocks=feature_class``) at the same size;
- a small-k line (k = 2,000, d = 512) against the old solvers: the batched Lawson–Hanson on the
  full Gram matrix (``method="active_set"``) and SciPy's loop.

It prints measured numbers and ratios, never asserts. The load average is printed with every
timing: on a shared machine the same run varies several-fold.

    python benchmarks/bench_nnls.py                                   # CPU, 1,000 images
    python benchmarks/bench_nnls.py --threads 1 --n-images 2000
    python benchmarks/bench_nnls.py --device cuda --n-images 20000
"""

from __future__ import annotations

import argparse
import os
import statistics
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np


def _load() -> str:
    """The 1-minute load average and the number of CPUs, e.g. ``"load 1.9 / 2 cpus"``."""
    return f"load {os.getloadavg()[0]:.1f} / {os.cpu_count()} cpus"


def _rss_anon_kb() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("RssAnon:"):
                return int(line.split()[1])
    return 0


class _PeakMemory:
    """Peak memory of a block above its start: the CUDA allocator's peak on a GPU, else the
    process's anonymous resident memory sampled every 5 ms (torch's CPU allocations are not
    visible to tracemalloc)."""

    def __init__(self, device: str) -> None:
        self.cuda = device.startswith("cuda")
        self.peak_bytes = 0

    def __enter__(self) -> "_PeakMemory":
        if self.cuda:
            import torch

            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
        else:
            self.base = _rss_anon_kb()
            self.top = self.base
            self.stop = threading.Event()
            self.thread = threading.Thread(target=self._sample, daemon=True)
            self.thread.start()
        return self

    def _sample(self) -> None:
        while not self.stop.wait(0.005):
            self.top = max(self.top, _rss_anon_kb())

    def __exit__(self, *exc: Any) -> None:
        if self.cuda:
            import torch

            torch.cuda.synchronize()
            self.peak_bytes = torch.cuda.max_memory_allocated() - self.base
        else:
            self.stop.set()
            self.thread.join()
            self.peak_bytes = (max(self.top, _rss_anon_kb()) - self.base) * 1024


def _timed(fn: Callable[[], Any], repeats: int, device: str) -> tuple[Any, list[float], float, int]:
    """Run ``fn`` ``repeats`` times; its last result, the wall times, the CPU seconds of the
    last run and the peak memory of the first."""
    import torch

    walls, result, cpu, peak = [], None, 0.0, 0
    for i in range(repeats):
        with _PeakMemory(device) as mem:
            t, c = time.perf_counter(), time.process_time()
            result = fn()
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            walls.append(time.perf_counter() - t)
            cpu = time.process_time() - c
        if i == 0:
            peak = mem.peak_bytes
    return result, walls, cpu, peak


def _objective_gap(A: np.ndarray, Z: np.ndarray, D: np.ndarray, rows: np.ndarray) -> tuple[float, float]:
    """Largest relative objective gap of ``Z`` to SciPy on ``rows``, and SciPy's images/s."""
    from scipy.optimize import nnls

    from feature_complexity.features import nnls_objective

    Dt = np.ascontiguousarray(D.T, dtype=np.float64)
    t = time.perf_counter()
    Z_ref = np.stack([nnls(Dt, A[r].astype(np.float64), maxiter=50 * D.shape[0])[0] for r in rows])
    rate = len(rows) / (time.perf_counter() - t)
    obj = nnls_objective(A[rows], Z[rows], D)
    obj_ref = nnls_objective(A[rows], Z_ref, D)
    return float(np.max((obj - obj_ref) / np.maximum(obj_ref, 1e-300))), rate


def _data(n_classes: int, d: int, r: int, n_images: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-class atoms ``D (n_classes r, d)`` and ``n_images`` class-structured rows of every
    class in turn (shuffled), as float32 like a run's activations."""
    from feature_complexity.data.synthetic import class_structured, per_class_atoms

    D, feature_class = per_class_atoms(n_classes, d, r, seed=seed)
    per_class = -(-n_images // n_classes)
    A = class_structured(per_class, n_classes, d, seed=seed).A
    A = A[np.random.default_rng(seed).permutation(A.shape[0])[:n_images]]
    return A, D, feature_class


def _line(name: str, n: int, walls: list[float], cpu: float, info: dict[str, float] | None, peak: int,
          base_rate: float | None = None, extra: str = "") -> float:
    rate = n / statistics.median(walls)
    ratio = f"  {rate / base_rate:7.1f}x scipy" if base_rate else ""
    kkt = f"max rel KKT {info['max_relative_kkt']:.1e}  fallback {int(info['n_fallback'])}" if info else ""
    print(f"  {name:<34} {rate:8.1f} img/s (median of {len(walls)}: {', '.join(f'{w:.1f}' for w in walls)} s; "
          f"cpu {cpu:.1f} s){ratio}  {kkt}  peak +{peak / 2**20:.0f} MiB{extra}  [{_load()}]", flush=True)
    return rate


def _paper_scale(args: argparse.Namespace) -> None:
    from feature_complexity import encode

    A, D, feature_class = _data(1000, 2048, 10, args.n_images, args.seed)
    k, n = D.shape[0], A.shape[0]
    print(f"k = {k} atoms, d = {D.shape[1]}, {n} images, device {args.device}, {args.threads} torch threads")
    kw = {"device": args.device, "return_info": True}
    if args.max_memory:
        kw["max_memory"] = args.max_memory
    (Z, info), walls, cpu, peak = _timed(lambda: encode(A, D, **kw), args.repeats, args.device)
    sample = np.random.default_rng(args.seed).choice(n, size=min(args.sample, n), replace=False)
    gap, scipy_rate = _objective_gap(A, Z, D, sample)
    print(f"  scipy.optimize.nnls (loop)          {scipy_rate:8.2f} img/s on {len(sample)} images  [{_load()}]")
    _line("encode (default: working set)", n, walls, cpu, info, peak, scipy_rate,
          f"  max rel objective gap vs scipy {gap:.1e} on {len(sample)} images")
    (Zb, info_b), walls_b, cpu_b, peak_b = _timed(
        lambda: encode(A, D, blocks=feature_class, **kw), args.repeats, args.device)
    _line("encode per class (blocks=)", n, walls_b, cpu_b, info_b, peak_b, scipy_rate)


def _small_k(args: argparse.Namespace) -> None:
    from feature_complexity import encode
    from feature_complexity.features import nnls_objective

    A, D, _ = _data(200, 512, 10, args.small_n, args.seed)
    n = A.shape[0]
    print(f"k = {D.shape[0]} atoms, d = {D.shape[1]}, {n} images (the old solvers' size)")
    runs = {}
    for method in ("scipy", "active_set", "working_set"):
        (Z, info), walls, cpu, peak = _timed(
            lambda m=method: encode(A, D, device=args.device if m != "scipy" else "cpu", method=m,
                                    return_info=True), args.repeats, args.device)
        runs[method] = (Z, info, walls, cpu, peak)
    base = n / statistics.median(runs["scipy"][2])
    obj_ref = nnls_objective(A, runs["scipy"][0], D)
    for method, (Z, info, walls, cpu, peak) in runs.items():
        gap = float(np.max((nnls_objective(A, Z, D) - obj_ref) / np.maximum(obj_ref, 1e-300)))
        _line(f"method={method}", n, walls, cpu, info, peak, base, f"  max rel objective gap vs scipy {gap:.1e}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--n-images", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--repeats", type=int, default=3, help="timings per line (the median is printed)")
    parser.add_argument("--sample", type=int, default=5, help="images checked against SciPy (seconds each)")
    parser.add_argument("--small-n", type=int, default=200, help="images of the small-k line (0: skip it)")
    parser.add_argument("--max-memory", type=int, default=0, help="encode's max_memory in bytes (0: default)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    _paper_scale(args)
    if args.small_n:
        _small_k(args)


if __name__ == "__main__":
    main()
