"""Per-class NMF at ImageNet shape: the batched torch solver against scikit-learn, on synthetic
class-structured activations (``feature_complexity.data.synthetic.class_structured``).

Two workloads (targets on the 2-core CPU: printed, never asserted):

- pooled: 1,000 classes x 50 images, d = 2048 (target <= 60 s);
- spatial: 1,000 classes x 50 images x 49 positions = 2,450 rows per class (target <= 15 min,
  bounded memory). 20 GB of float32 in all, so it is generated and fitted chunk by chunk
  (``--chunk-classes``): a class's atoms do not depend on the other classes of its chunk.

The torch solver is the one ``--nmf-solver auto`` picks (``--solver`` overrides): scikit-learn's
coordinate-descent iterates (HALS) for pooled samples, the accelerated HALS (three sweeps per pass
over the samples, objective-based stop) for spatial ones.
scikit-learn (``NMF(init="nndsvda", solver="cd")`` with its default ``tol=1e-4``, the reference)
is timed on a sample of classes in the same run, and each sampled class's objective is compared
with the torch solver's (the requirement: <= 1.01 x scikit-learn's). ``--classes`` /
``--spatial-classes`` fit fewer classes and extrapolate linearly (printed as such). One thread
unless ``--threads``.

    .venv/bin/python benchmarks/bench_dictionary.py --classes 1000 --spatial-classes 8
"""

from __future__ import annotations

import argparse
import os
import resource
import time

import numpy as np

#: scikit-learn's default stopping tolerance: the reference always runs with it
SKLEARN_TOL = 1e-4


def _peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # kB on Linux


def _sklearn_reference(A: np.ndarray, classes: np.ndarray, sample: list[int], r: int, max_iter: int,
                       tol: float) -> tuple[float, dict[int, float]]:
    """Median seconds per class and each sampled class's squared error, scikit-learn CD."""
    import warnings

    from sklearn.decomposition import NMF

    times, sq = [], {}
    for c in sample:
        X = A[classes == c]
        t = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ConvergenceWarning at max_iter: counted by n_iter
            nmf = NMF(r, init="nndsvda", random_state=0, max_iter=max_iter, tol=tol).fit(X)
        times.append(time.perf_counter() - t)
        sq[c] = float(nmf.reconstruction_err_) ** 2
    return float(np.median(times)), sq


def _report(name: str, solver: str, n_target: int, n_done: int, seconds: float, fits: list, sk_seconds: float,
            sk_sq: dict[int, float], target_s: float) -> None:
    n_iter = np.concatenate([f.n_iter for f in fits])
    converged = np.concatenate([f.converged for f in fits])
    ours = {int(c): float(e) for f in fits for c, e in zip(f.labels, f.sq_err)}
    ratios = [ours[c] / sk_sq[c] for c in sk_sq]
    scale = n_target / n_done
    print(f"[{name}] torch {solver}: {n_done} classes in {seconds:.1f} s ({seconds / n_done * 1e3:.0f} ms/class); "
          f"{'extrapolated' if scale != 1 else 'measured'} for {n_target}: {seconds * scale:.0f} s "
          f"(target {target_s:.0f} s)")
    print(f"[{name}] iterations: median {np.median(n_iter):.0f}, max {n_iter.max()}; converged "
          f"{converged.mean():.1%}; peak RSS {_peak_rss_gb():.2f} GB")
    print(f"[{name}] scikit-learn CD: median {sk_seconds * 1e3:.0f} ms/class on {len(sk_sq)} sampled classes "
          f"-> {sk_seconds * n_target:.0f} s for {n_target} (one process); torch/sklearn time "
          f"{seconds / n_done / sk_seconds:.2f}x")
    print(f"[{name}] objective / scikit-learn's on the sampled classes: min {min(ratios):.6f}, "
          f"max {max(ratios):.6f} (requirement <= 1.01)")


def _solver(args: argparse.Namespace, workload: str) -> str:
    """The solver a run would use: ``--solver auto`` is ``--nmf-solver auto`` (accelerated HALS
    for spatial fit samples, scikit-learn's iterates for pooled ones)."""
    from feature_complexity.config import RunConfig

    return RunConfig(fit_samples=workload, nmf_solver=args.solver).resolved_nmf_solver()


def _tol(args: argparse.Namespace, workload: str) -> float:
    """``--tol``, or the solver's default (its statistic differs)."""
    from feature_complexity.features.nmf import DEFAULT_TOL

    return args.tol if args.tol is not None else DEFAULT_TOL[_solver(args, workload)]


def bench_pooled(n_classes: int, args: argparse.Namespace) -> None:
    from feature_complexity.data.synthetic import class_structured
    from feature_complexity.features.nmf import nmf_per_class

    data = class_structured(50, n_classes=n_classes, d=2048, seed=0)
    t = time.perf_counter()
    fit = nmf_per_class(data.A, data.classes, 10, seed=0, max_iter=args.max_iter, tol=_tol(args, "pooled"),
                        device=args.device, max_batch_bytes=args.batch_mb * 2**20,
                        accelerated=_solver(args, "pooled") == "accelerated")
    seconds = time.perf_counter() - t
    sample = list(range(0, n_classes, max(1, n_classes // args.sample)))[:args.sample]
    sk_s, sk_sq = _sklearn_reference(data.A, data.classes, sample, 10, args.max_iter, SKLEARN_TOL)
    _report("pooled 50 x 2048", _solver(args, "pooled"), 1000, n_classes, seconds, [fit], sk_s, sk_sq, 60)


def bench_spatial(n_classes: int, args: argparse.Namespace) -> None:
    from feature_complexity.data.synthetic import class_structured
    from feature_complexity.features.nmf import nmf_per_class

    fits, seconds, sk_times, sk_sq = [], 0.0, [], {}
    for chunk, start in enumerate(range(0, n_classes, args.chunk_classes)):
        n = min(args.chunk_classes, n_classes - start)
        data = class_structured(50, n_classes=n, d=2048, spatial=49, seed=chunk)  # 20 MB a class
        classes = data.classes + start
        t = time.perf_counter()
        fits.append(nmf_per_class(data.A, classes, 10, seed=0, max_iter=args.max_iter, tol=_tol(args, "spatial"),
                                  device=args.device, max_batch_bytes=args.batch_mb * 2**20,
                                  accelerated=_solver(args, "spatial") == "accelerated"))
        seconds += time.perf_counter() - t
        if chunk < args.sample:  # one reference class per chunk
            s, sq = _sklearn_reference(data.A, classes, [start], 10, args.max_iter, SKLEARN_TOL)
            sk_times.append(s)
            sk_sq.update(sq)
        del data
        print(f"  spatial: {start + n}/{n_classes} classes, {seconds:.0f} s", flush=True)
    _report("spatial 2450 x 2048", _solver(args, "spatial"), 1000, n_classes, seconds, fits,
            float(np.median(sk_times)), sk_sq, 900)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--classes", type=int, default=1000, help="pooled classes to fit (0: skip)")
    parser.add_argument("--spatial-classes", type=int, default=1000, help="spatial classes to fit (0: skip)")
    parser.add_argument("--chunk-classes", type=int, default=8, help="spatial classes generated at once")
    parser.add_argument("--batch-mb", type=int, default=256, help="max_batch_bytes of the solver, MiB")
    parser.add_argument("--max-iter", type=int, default=500, help="iteration budget (fit_dictionary's default)")
    parser.add_argument("--tol", type=float, default=None,
                        help="stopping tolerance (default: the solver's; hals: scikit-learn's 1e-4)")
    parser.add_argument("--solver", choices=["auto", "hals", "accelerated"], default="auto",
                        help="the torch solver (auto: what --nmf-solver auto picks for each workload)")
    parser.add_argument("--sample", type=int, default=5, help="classes fitted by scikit-learn as reference")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    import threadpoolctl
    import torch

    torch.set_num_threads(args.threads)
    threadpoolctl.threadpool_limits(args.threads)
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs; {args.threads} thread(s); "
          f"device {args.device}; max_iter {args.max_iter}; solver pooled {_solver(args, 'pooled')} "
          f"(tol {_tol(args, 'pooled')}), spatial {_solver(args, 'spatial')} (tol {_tol(args, 'spatial')})")
    if args.classes:
        bench_pooled(args.classes, args)
    if args.spatial_classes:
        bench_spatial(args.spatial_classes, args)


if __name__ == "__main__":
    main()
