"""Benchmark: the closed-form complexity engine against per-feature scikit-learn ridge probes.

Issue 2: "The complexity engine against per-feature scikit-learn probes (RidgeCV per feature and
layer) on the same activations, at 1,000 features and 20,000 images with layer widths up to 512:
time ratio and the largest difference in I_V. Target: at least 500 times faster, same numbers to
1e-4."

The engine scores all features. The scikit-learn reference, per feature and layer, does what
``RidgeCV(cv=<our folds>)`` does inside (one ``Ridge`` fit per fold and penalty) with exactly the
engine's folds, relative penalty grid (``alpha * tr(Sxx_train) / p``) and selection rule
(smallest held-out SSE summed over folds), so its ``I_V`` is comparable number for number.
``RidgeCV`` itself cannot reproduce the relative penalty or the selection rule, and it adds a
refit on all images, so its per-feature time is at least as large; it is timed too
(``--ridgecv-features``) for the record. Running the reference on all 1,000 features would take
hours on a small machine, so it runs on a random subset of ``--ref-features`` features (all
layers), and its time per feature is extrapolated to the full feature count.

The synthetic activations have realistic structure: a chain of ReLU layers driven by a latent
signal, and features that are noisy linear or non-linear functions of a random layer.

    python benchmarks/bench_complexity.py                 # issue sizes (a few minutes on 2 cores)
    python benchmarks/bench_complexity.py --quick         # seconds
    python benchmarks/bench_complexity.py --ref-features 0 --device cuda \
        --n-images 50000 --n-features 10000 --widths 256x3,512x4,1024x6,2048x3   # ImageNet scale

Scale mode (``--scale``): 16 ResNet-50-width layers (``RESNET50_WIDTHS``, as
``feature_complexity.data.synthetic.probe_layers`` builds them) x ``--n-features`` sparse
non-negative codes x ``--n-images`` images, written chunk by chunk to ``.npy`` files and read as
memmaps by a fresh child process per run (with and without intervals), which reports wall and CPU
time, the peak of its anonymous memory (``RssAnon``: what the engine allocates; the memmaps'
clean page cache is not counted), and the flop count of the algorithm next to the arithmetic
floor (see :func:`flop_counts`) and the dense float64 GEMM rate measured in the same run:

    python benchmarks/bench_complexity.py --scale --n-images 50000 --n-features 10000 --threads 2
    python benchmarks/bench_complexity.py --scale --n-images 5000 --n-features 1000   # minutes
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np


def parse_widths(text: str) -> list[int]:
    """``"64,128,256,512"`` or ``"256x3,512x4"`` (width x repeats) -> list of widths."""
    widths: list[int] = []
    for part in text.split(","):
        if "x" in part:
            w, r = part.split("x")
            widths += [int(w)] * int(r)
        else:
            widths.append(int(part))
    return widths


def make_data(n: int, widths: list[int], k: int, seed: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Layers ``{name: (n, C_l)}`` float32 and features ``Z`` ``(n, k)`` float32."""
    rng = np.random.default_rng(seed)
    latent = rng.standard_normal((n, 32), dtype=np.float32)
    layers: dict[str, np.ndarray] = {}
    h = latent
    for i, w in enumerate(widths):
        R = rng.standard_normal((h.shape[1], w), dtype=np.float32) / np.sqrt(h.shape[1])
        h = np.maximum(h @ R + 0.5 * rng.standard_normal((n, w), dtype=np.float32), 0)
        h = h / (h.std(0, keepdims=True) + 1e-6)
        layers[f"block{i}"] = h
    names = list(layers)
    Z = np.empty((n, k), dtype=np.float32)
    which = rng.integers(0, len(names), size=k)
    kind = rng.integers(0, 4, size=k)
    noise = rng.uniform(0.1, 2.0, size=k).astype(np.float32)
    # features in groups that share a layer: one (C_l, group) projection per group
    for li, name in enumerate(names):
        cols = np.flatnonzero(which == li)
        if cols.size == 0:
            continue
        X = layers[name]
        U = rng.standard_normal((X.shape[1], cols.size), dtype=np.float32) / np.sqrt(X.shape[1])
        S = X @ U
        S = (S - S.mean(0)) / (S.std(0) + 1e-6)
        out = np.where(kind[cols] == 0, S, 0)
        out += np.where(kind[cols] == 1, np.tanh(S), 0)
        out += np.where(kind[cols] == 2, S * S, 0)
        out += np.where(kind[cols] == 3, np.abs(S), 0)
        Z[:, cols] = out + noise[cols] * rng.standard_normal((n, cols.size), dtype=np.float32)
    return layers, Z


def reference_iv(layers, z, folds, alphas) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature sklearn Ridge, per layer, fold and penalty: (n_layers,) I_V and alpha."""
    from sklearn.linear_model import Ridge

    ivs, chosen = [], []
    for X in layers.values():
        p = X.shape[1]
        sse = np.zeros(len(alphas))
        null = 0.0
        for f in range(int(folds.max()) + 1):
            tr, te = folds != f, folds == f
            Xtr = X[tr].astype(np.float64)
            trace = float(np.sum((Xtr - Xtr.mean(0)) ** 2))
            null += float(np.sum((z[te] - z[tr].mean()) ** 2))
            for i, a in enumerate(alphas):
                m = Ridge(alpha=a * trace / p, solver="cholesky").fit(Xtr, z[tr])
                sse[i] += float(np.sum((z[te] - m.predict(X[te].astype(np.float64))) ** 2))
        best = int(np.argmin(sse))
        ivs.append(np.clip(1 - sse[best] / null, 0, 1))
        chosen.append(alphas[best])
    return np.array(ivs), np.array(chosen)


def ridgecv_time(layers, z, folds, alphas) -> float:
    """Seconds for sklearn RidgeCV(cv=<same folds>) on one feature, all layers."""
    from sklearn.linear_model import RidgeCV
    from sklearn.model_selection import PredefinedSplit

    t0 = time.perf_counter()
    for X in layers.values():
        Xd = X.astype(np.float64)
        trace = float(np.sum((Xd - Xd.mean(0)) ** 2))  # whole-data trace: absolute grid
        RidgeCV(alphas=np.asarray(alphas) * trace / X.shape[1], cv=PredefinedSplit(folds),
                scoring="neg_mean_squared_error").fit(Xd, z)
    return time.perf_counter() - t0



# ---------------------------------------------------------------------- scale mode
def write_scale_data(folder: Path, n: int, widths: list[int], k: int, density: float, seed: int,
                     chunk: int = 5000) -> None:
    """``layer{i}.npy`` (n, C_i) and ``values.npy`` (n, k), float32, written chunk by chunk.

    Layers as ``synthetic.probe_layers``: ``relu(latent @ W_i + noise_i * eps)`` with noise
    shrinking with depth (one fixed ``W_i`` per layer, fresh noise per chunk). Codes: sparse
    non-negative, ``relu(a_j s_j + sqrt(1 - a_j^2) eps - t)`` with ``s = latent @ U`` standardised
    and ``t`` the normal quantile that leaves a fraction ``density`` of non-zeros.
    """
    from scipy.stats import norm

    rng = np.random.default_rng(seed)
    r = 32
    Ws = [rng.standard_normal((r, w)).astype(np.float32) / np.sqrt(r) for w in widths]
    noise = [1.5 * (1 - i / max(1, len(widths) - 1)) + 0.2 for i in range(len(widths))]
    U = rng.standard_normal((r, k)).astype(np.float32) / np.sqrt(r)
    a = rng.uniform(0.3, 0.95, size=k).astype(np.float32)
    t = np.float32(norm.ppf(1 - density))
    outs = [np.lib.format.open_memmap(folder / f"layer{i}.npy", mode="w+", dtype=np.float32,
                                      shape=(n, w)) for i, w in enumerate(widths)]
    vals = np.lib.format.open_memmap(folder / "values.npy", mode="w+", dtype=np.float32, shape=(n, k))
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        crng = np.random.default_rng([seed, start])
        latent = crng.gamma(0.5, 1.0, size=(stop - start, r)).astype(np.float32)
        for out, W, sd in zip(outs, Ws, noise):
            out[start:stop] = np.maximum(latent @ W + sd * crng.standard_normal((stop - start, W.shape[1]),
                                                                                dtype=np.float32), 0)
        s = ((latent - 0.5) / np.sqrt(0.5)) @ U
        eps = crng.standard_normal((stop - start, k), dtype=np.float32)
        vals[start:stop] = np.maximum(a * s + np.sqrt(1 - a * a) * eps - t, 0)
    for out in outs + [vals]:
        out.flush()
    del outs, vals


def flop_counts(widths: list[int], k: int, n: int, nnz: int, n_folds: int, cells_per_fold: int,
                n_alphas: int, sparse: bool) -> dict[str, float]:
    """Flops of the engine (model count) and the arithmetic floor of what must be computed.

    Floor, per layer of width ``p``: the sufficient statistics (``n p (p + 1)`` for the symmetric
    ``X^T X``, ``2 p nnz(Z)`` for ``Z^T X`` skipping the zeros) and, per fold, a factorisation of
    the training scatter (``p^3 / 3``), the solve for the ``k`` probes (``2 p^2 k``) and the test
    scatter applied to them, which scoring even ONE penalty needs (``2 p^2 k``). Engine: the same
    statistics (``X^T X`` on the upper blocks it really computes, ``Z^T X`` sparse or dense), and
    per fold ``(1 + 2 G) 2 p^2 k`` (the projection ``q`` and, for the fold and each of its first
    ``G - 1`` cells, ``c`` and ``r``), ``4 p^3`` per test side for ``M``, an eigendecomposition
    counted as ``4 p^3`` (tridiagonalisation and back-transformation), and the per-penalty sweep.
    """
    from feature_complexity.complexity import _sym_blocks

    G = cells_per_fold
    sides = 1 + (G - 1) if G > 1 else 1
    floor = dict(stats=0.0, solve=0.0)
    ours = dict(stats=0.0, solve=0.0)
    for p in widths:
        nb = len(_sym_blocks(p))
        floor["stats"] += n * p * (p + 1) + 2 * p * nnz
        floor["solve"] += n_folds * (p**3 / 3 + 4 * p * p * k)
        ours["stats"] += 2 * n * p * p * (nb * (nb + 1) / 2) / nb**2 + (2 * p * nnz if sparse else 2 * n * p * k)
        ours["solve"] += n_folds * ((1 + 2 * sides) * 2 * p * p * k + sides * 4 * p**3 + 4 * p**3
                                    + sides * n_alphas * 6 * p * k)
    return dict(floor=floor["stats"] + floor["solve"], floor_stats=floor["stats"], floor_solve=floor["solve"],
                engine=ours["stats"] + ours["solve"], engine_stats=ours["stats"], engine_solve=ours["solve"])


def gemm_rate(threads: int, device: str) -> float:
    """Measured float64 GEMM flop rate (median of 3 products 2048 x 2048 x 4096)."""
    import torch

    torch.set_num_threads(threads)
    A = torch.randn(2048, 2048, dtype=torch.float64, device=device)
    B = torch.randn(2048, 4096, dtype=torch.float64, device=device)
    times = []
    for _ in range(4):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        A @ B
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return 2 * 2048 * 2048 * 4096 / float(np.median(times[1:]))


def _rss_anon_kb() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("RssAnon:"):
                return int(line.split()[1])
    return -1


def engine_at_revision(rev: str):
    """The ``complexity`` function of ``src/feature_complexity/complexity.py`` at git revision
    ``rev`` (e.g. the engine before partial fractions, ``472a647``), loaded as its own module."""
    import types

    root = Path(__file__).resolve().parents[1]
    source = subprocess.run(["git", "show", f"{rev}:src/feature_complexity/complexity.py"], cwd=root,
                            capture_output=True, text=True, check=True).stdout
    module = types.ModuleType(f"complexity_at_{rev}")
    sys.modules[module.__name__] = module
    exec(compile(source, f"complexity.py@{rev}", "exec"), module.__dict__)
    return module.complexity


def scale_child(folder: Path, n_layers: int, threads: int, device: str, confidence: float | None,
                max_memory_gb: float, batch_size: int, rev: str | None = None) -> None:
    """Run the engine (or the one at git revision ``rev``) over the memmaps in ``folder``; print
    one JSON line."""
    import torch

    from feature_complexity.complexity import complexity

    if rev is not None:
        old = engine_at_revision(rev)

        def complexity(layers, values, *, device, batch_size, **_ignored):  # noqa: F811
            return old(layers, values, device=device, batch_size=batch_size)

    torch.set_num_threads(threads)
    layers = {f"block{i}": np.load(folder / f"layer{i}.npy", mmap_mode="r") for i in range(n_layers)}
    values = np.load(folder / "values.npy", mmap_mode="r")
    baseline = _rss_anon_kb()
    peak, done = [baseline], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _rss_anon_kb())
            time.sleep(0.01)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    t0, c0 = time.perf_counter(), time.process_time()
    res = complexity(layers, values, device=device, confidence=confidence, max_memory_gb=max_memory_gb,
                     batch_size=batch_size)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    done.set()
    sampler.join()
    out = dict(wall_s=wall, cpu_s=cpu, anon_peak_gb=max(peak[0], _rss_anon_kb()) / 2**20,
               anon_baseline_gb=baseline / 2**20, mean_K=float(res.score.mean()),
               K_range=[float(res.score.min()), float(res.score.max())])
    if res.score_lo is not None:
        out["mean_K_halfwidth"] = float(np.mean(res.score_hi - res.score_lo) / 2)
    if device.startswith("cuda"):
        out["cuda_peak_gb"] = torch.cuda.max_memory_allocated() / 2**30
    print(json.dumps(out))


def _loadavg() -> str:
    try:
        return " ".join(open("/proc/loadavg").read().split()[:3])
    except OSError:
        return "?"


def run_scale(args: argparse.Namespace) -> dict:
    """Generate the data once, then one child run per interval setting; print and return numbers."""
    widths = parse_widths(args.widths)
    k, n = args.n_features, args.n_images
    keep = args.data_dir is not None
    tmp = Path(args.data_dir) if keep else Path(tempfile.mkdtemp(dir=args.tmp))
    tmp.mkdir(parents=True, exist_ok=True)
    try:
        if not (tmp / "values.npy").exists():
            t0 = time.perf_counter()
            write_scale_data(tmp, n, widths, k, args.density, args.seed)
            print(f"data: {time.perf_counter() - t0:.0f} s to write to {tmp}")
        values = np.load(tmp / "values.npy", mmap_mode="r")
        nnz = int(sum(np.count_nonzero(values[s:s + 5000]) for s in range(0, n, 5000)))
        disk = sum(f.stat().st_size for f in tmp.iterdir()) / 2**30
        rate = gemm_rate(args.threads, args.device)
        print(f"scale: {len(widths)} layers (widths {widths[0]}..{widths[-1]}, sum {sum(widths)}), {k} features "
              f"(density {nnz / (n * k):.3f}), {n} images, {disk:.1f} GiB on disk; device {args.device}, "
              f"{args.threads} thread(s); float64 GEMM {rate / 1e9:.1f} GFLOP/s; load average {_loadavg()}")
        results = {}
        runs = [("without intervals", None, None), ("with intervals", 0.95, None)]
        if args.baseline_rev:
            runs.append((f"engine at {args.baseline_rev}", None, args.baseline_rev))
        for label, conf, rev in runs:
            cmd = [sys.executable, __file__, "--scale-child", str(tmp), "--n-layers", str(len(widths)),
                   "--threads", str(args.threads), "--device", args.device, "--max-memory-gb",
                   str(args.max_memory_gb), "--batch-size", str(args.batch_size)]
            if conf is not None:
                cmd += ["--confidence", str(conf)]
            if rev is not None:
                cmd += ["--engine-rev", rev]
            env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
            if proc.returncode != 0:
                sys.exit(f"child failed ({label}):\n{proc.stderr}")
            row = json.loads(proc.stdout.strip().splitlines()[-1])
            on_cpu = args.device == "cpu"
            G = 2 if conf is not None else 1
            fl = flop_counts(widths, k, n, nnz, 5, G, 9, sparse=on_cpu and nnz / (n * k) <= 0.1)
            if rev is not None:  # the previous engine: dense Z^T X and X^T X, 9 products per fold
                fl["engine"] = sum(2 * n * p * (p + k) + 5 * (2 * 2 * p * p * k + 9 * 2 * p * p * k
                                                              + 4 * p**3 + 4 * p**3) for p in widths)
            row.update(fl, floor_s=fl["floor"] / rate, load_after=_loadavg())
            row["ratio_time_to_floor"] = row["wall_s"] / row["floor_s"]
            row["ratio_flops_to_floor"] = fl["engine"] / fl["floor"]
            results[label] = row
            print(f"{label:>18}: {row['wall_s']:7.1f} s wall, {row['cpu_s']:7.1f} s CPU, peak RssAnon "
                  f"{row['anon_peak_gb']:.2f} GiB; flops: engine {fl['engine']:.3g} (stats {fl['engine_stats']:.3g}, "
                  f"solve {fl['engine_solve']:.3g}) vs floor {fl['floor']:.3g} = {row['ratio_flops_to_floor']:.2f}x; "
                  f"floor at the measured GEMM rate {row['floor_s']:.1f} s -> "
                  f"wall / floor {row['ratio_time_to_floor']:.2f}x; "
                  f"mean K {row['mean_K']:.3f}; load average after {row['load_after']}")
        a, b = results["without intervals"], results["with intervals"]
        print(f"intervals cost: x{b['wall_s'] / a['wall_s']:.2f} wall, x{b['cpu_s'] / a['cpu_s']:.2f} CPU")
        if args.baseline_rev:
            c = results[f"engine at {args.baseline_rev}"]
            print(f"speed-up over the engine at {args.baseline_rev}: x{c['wall_s'] / a['wall_s']:.1f} wall, "
                  f"x{c['cpu_s'] / a['cpu_s']:.1f} CPU (without intervals; |dK| is not compared here, see "
                  "tests/test_complexity.py)")
        return results
    finally:
        if not keep:
            for f in tmp.iterdir():
                f.unlink()
            tmp.rmdir()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-images", type=int, default=20_000)
    ap.add_argument("--n-features", type=int, default=1_000)
    ap.add_argument("--widths", default="64,128,256,512", help="layer widths, e.g. 64,128 or 256x3,512x4")
    ap.add_argument("--ref-features", type=int, default=2, help="features the sklearn reference scores")
    ap.add_argument("--ridgecv-features", type=int, default=1, help="features timed with RidgeCV(cv=folds)")
    ap.add_argument("--n-folds", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=4096)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1,
                    help="CPU threads for torch and for sklearn's BLAS (same for both; 1 on a shared machine)")
    ap.add_argument("--quick", action="store_true", help="small sizes (2,000 images, 100 features, widths to 128)")
    ap.add_argument("--json", help="also write the numbers to this JSON file")
    ap.add_argument("--scale", action="store_true",
                    help="ImageNet-scale run on synthetic memmapped data (defaults: ResNet-50 widths)")
    ap.add_argument("--density", type=float, default=0.02, help="--scale: fraction of non-zero codes")
    ap.add_argument("--max-memory-gb", type=float, default=6.0, help="--scale: the engine's memory budget")
    ap.add_argument("--data-dir", default=None, help="--scale: keep/reuse the generated data here")
    ap.add_argument("--tmp", default=None, help="--scale: folder for the temporary data")
    ap.add_argument("--scale-child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--n-layers", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--confidence", type=float, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--baseline-rev", default=None,
                    help="--scale: also time the engine at this git revision (e.g. 472a647, before partial fractions)")
    ap.add_argument("--engine-rev", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.scale_child:
        scale_child(Path(args.scale_child), args.n_layers, args.threads, args.device, args.confidence,
                    args.max_memory_gb, args.batch_size, args.engine_rev)
        return
    if args.scale:
        if args.widths == "64,128,256,512":
            args.widths = "256x3,512x4,1024x6,2048x3"  # feature_complexity.data.synthetic.RESNET50_WIDTHS
        out = run_scale(args)
        if args.json:
            with open(args.json, "w") as fh:
                json.dump(out, fh, indent=2)
        return
    if args.quick:
        args.n_images, args.n_features, args.widths = 2_000, 100, "16,32,64,128"

    import torch
    from threadpoolctl import threadpool_limits

    # both sides get the same CPU threads; on an oversubscribed machine, multi-threaded BLAS and
    # torch spin-wait and the timings mean nothing
    torch.set_num_threads(args.threads)
    threadpool_limits(args.threads)

    from feature_complexity.complexity import DEFAULT_ALPHAS, complexity, fold_assignment

    widths = parse_widths(args.widths)
    t0 = time.perf_counter()
    layers, Z = make_data(args.n_images, widths, args.n_features, args.seed)
    print(f"data: {args.n_images} images, {args.n_features} features, widths {widths} "
          f"({time.perf_counter() - t0:.1f} s to generate); {args.threads} CPU thread(s)")

    if args.device.startswith("cuda"):  # warm the context so its start-up is not billed to the engine
        torch.zeros(1, device=args.device)
        torch.cuda.synchronize()
    t0, c0 = time.perf_counter(), time.process_time()
    res = complexity(layers, Z, n_folds=args.n_folds, seed=args.seed, device=args.device,
                     batch_size=args.batch_size)
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    t_engine, c_engine = time.perf_counter() - t0, time.process_time() - c0
    print(f"engine ({args.device}): {t_engine:.2f} s for {args.n_features} features x {len(widths)} layers "
          f"({1e3 * t_engine / args.n_features:.2f} ms per feature; CPU time {c_engine:.2f} s); "
          f"mean K {res.score.mean():.3f}, "
          f"K range [{res.score.min():.3f}, {res.score.max():.3f}]")
    out = dict(n_images=args.n_images, n_features=args.n_features, widths=widths, device=args.device,
               engine_s=t_engine, engine_cpu_s=c_engine, mean_K=float(res.score.mean()))

    if args.ref_features > 0:
        folds = fold_assignment(args.n_images, args.n_folds, args.seed)
        subset = np.sort(np.random.default_rng(args.seed + 1).choice(
            args.n_features, size=min(args.ref_features, args.n_features), replace=False))
        t0, c0 = time.perf_counter(), time.process_time()
        diffs, alpha_agree = [], 0
        for j in subset:
            iv, alpha = reference_iv(layers, Z[:, j].astype(np.float64), folds, DEFAULT_ALPHAS)
            diffs.append(np.abs(iv - res.per_layer[:, j]).max())
            alpha_agree += int(np.sum(alpha == res.alpha[:, j]))
        t_ref, c_ref = time.perf_counter() - t0, time.process_time() - c0
        per_feature = t_ref / len(subset)
        extrapolated = per_feature * args.n_features
        print(f"sklearn Ridge per feature/layer/fold/alpha: {t_ref:.1f} s for {len(subset)} features "
              f"-> {per_feature:.1f} s per feature -> {extrapolated:.0f} s extrapolated to {args.n_features} "
              f"(CPU time {c_ref:.1f} s)")
        cpu_ratio = (c_ref / len(subset) * args.n_features) / max(c_engine, 1e-9)
        print(f"speed-up: {extrapolated / t_engine:.0f}x wall, {cpu_ratio:.0f}x CPU time   "
              f"max |dI_V| on the subset: {max(diffs):.2e}   "
              f"same alpha chosen: {alpha_agree}/{len(subset) * len(widths)}")
        out.update(ref_features=len(subset), ref_s=t_ref, ref_per_feature_s=per_feature,
                   ref_extrapolated_s=extrapolated, speedup=extrapolated / t_engine, speedup_cpu=cpu_ratio,
                   ref_cpu_s=c_ref,
                   max_abs_diff_iv=float(max(diffs)))
    if args.ridgecv_features > 0:
        t = sum(ridgecv_time(layers, Z[:, j].astype(np.float64),
                             fold_assignment(args.n_images, args.n_folds, args.seed), DEFAULT_ALPHAS)
                for j in range(args.ridgecv_features)) / args.ridgecv_features
        print(f"sklearn RidgeCV(cv=same folds): {t:.1f} s per feature (all layers) -> "
              f"{t * args.n_features:.0f} s extrapolated -> {t * args.n_features / t_engine:.0f}x")
        out.update(ridgecv_per_feature_s=t, ridgecv_speedup=t * args.n_features / t_engine)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=2)


if __name__ == "__main__":
    main()
