"""Benchmark: peak memory of the streaming complexity engine does not grow with the images.

Issue 2: "Peak memory of the streaming engine at 5,000 and 50,000 images: it should not grow with
the number of images."

For each size, activations and feature values are written to ``.npy`` files on disk and opened as
``np.memmap`` in a FRESH subprocess (so one size's peak cannot hide in another's), which runs
``feature_complexity.complexity`` over them and reports:

- ``anon_peak``: the peak of ``RssAnon`` (memory the process allocated: arrays, torch tensors,
  the sufficient statistics), sampled every 5 ms from ``/proc/self/status``, and its rise over
  the baseline taken after the imports. This is the number that must not grow with ``n``.
- ``tracemalloc``: peak of numpy/Python allocations (torch's own allocator is not traced).
- ``VmHWM``: the kernel's high-water mark of the whole resident set. It also counts the
  *file-backed* pages of the memmaps that were read, which the kernel can drop at any time
  (clean page cache, not allocations); it therefore grows with the data read and is reported
  for completeness only.

    python benchmarks/bench_memory.py                      # 5,000 and 50,000 images
    python benchmarks/bench_memory.py --sizes 2000,20000   # other sizes
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


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return -1


def write_data(folder: Path, n: int, widths: list[int], k: int, seed: int, chunk: int = 5000) -> None:
    """Write ``layer{i}.npy`` ``(n, C_i)`` and ``values.npy`` ``(n, k)`` (float32) chunk by chunk."""
    rng = np.random.default_rng(seed)
    Rs = [rng.standard_normal((32, w), dtype=np.float32) / np.sqrt(32) for w in widths]
    U = rng.standard_normal((32, k), dtype=np.float32) / np.sqrt(32)
    outs = [np.lib.format.open_memmap(folder / f"layer{i}.npy", mode="w+", dtype=np.float32,
                                      shape=(n, w)) for i, w in enumerate(widths)]
    vals = np.lib.format.open_memmap(folder / "values.npy", mode="w+", dtype=np.float32, shape=(n, k))
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        latent = rng.standard_normal((stop - start, 32), dtype=np.float32)
        for out, R in zip(outs, Rs):
            out[start:stop] = np.maximum(latent @ R + rng.standard_normal((stop - start, R.shape[1]),
                                                                          dtype=np.float32), 0)
        vals[start:stop] = np.tanh(latent @ U) + 0.5 * rng.standard_normal((stop - start, k),
                                                                           dtype=np.float32)
    for out in outs + [vals]:
        out.flush()
    del outs, vals


def child(folder: Path, n_layers: int, batch_size: int, threads: int) -> None:
    """Run the engine over the memmaps in ``folder``; print one JSON line of measurements."""
    import tracemalloc

    import torch

    from feature_complexity.complexity import complexity

    torch.set_num_threads(threads)
    layers = {f"layer{i}": np.load(folder / f"layer{i}.npy", mmap_mode="r") for i in range(n_layers)}
    values = np.load(folder / "values.npy", mmap_mode="r")
    baseline = _status_kb("RssAnon")
    peak = [baseline]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _status_kb("RssAnon"))
            time.sleep(0.005)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    tracemalloc.start()
    t0 = time.perf_counter()
    res = complexity(layers, values, batch_size=batch_size)
    wall = time.perf_counter() - t0
    _, traced_peak = tracemalloc.get_traced_memory()
    done.set()
    sampler.join()
    peak[0] = max(peak[0], _status_kb("RssAnon"))
    print(json.dumps(dict(
        n_images=int(values.shape[0]), wall_s=wall, anon_baseline_mb=baseline / 1024,
        anon_peak_mb=peak[0] / 1024, anon_rise_mb=(peak[0] - baseline) / 1024,
        tracemalloc_peak_mb=traced_peak / 2**20, vmhwm_mb=_status_kb("VmHWM") / 1024,
        mean_K=float(res.score.mean()),
    )))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="5000,50000", help="numbers of images, comma-separated")
    ap.add_argument("--widths", default="64,128,256,512")
    ap.add_argument("--n-features", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=4096)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tmp", default=None, help="folder for the temporary .npy files")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--n-layers", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(Path(args.child), args.n_layers, args.batch_size, args.threads)
        return

    widths = [int(w) for w in args.widths.split(",")]
    rows = []
    for n in (int(s) for s in args.sizes.split(",")):
        with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
            write_data(Path(tmp), n, widths, args.n_features, args.seed)
            disk_mb = sum(f.stat().st_size for f in Path(tmp).iterdir()) / 2**20
            proc = subprocess.run(
                [sys.executable, __file__, "--child", tmp, "--n-layers", str(len(widths)),
                 "--batch-size", str(args.batch_size), "--threads", str(args.threads)],
                capture_output=True, text=True, check=False, env=dict(os.environ, OMP_NUM_THREADS=str(args.threads)),
            )
            if proc.returncode != 0:
                sys.exit(f"child failed for n={n}:\n{proc.stderr}")
            row = json.loads(proc.stdout.strip().splitlines()[-1])
            row["data_on_disk_mb"] = disk_mb
            rows.append(row)
            print(f"n={n:>7}: data {disk_mb:7.1f} MB on disk | RssAnon peak {row['anon_peak_mb']:7.1f} MB "
                  f"(+{row['anon_rise_mb']:6.1f} MB over {row['anon_baseline_mb']:.0f} MB after imports) | "
                  f"tracemalloc peak {row['tracemalloc_peak_mb']:6.1f} MB | VmHWM {row['vmhwm_mb']:7.1f} MB "
                  f"(incl. memmap page cache) | {row['wall_s']:.1f} s")
    if len(rows) >= 2:
        a, b = rows[0], rows[-1]
        print(f"{b['n_images'] / a['n_images']:.0f}x the images: "
              f"RssAnon peak x{b['anon_peak_mb'] / a['anon_peak_mb']:.2f}, "
              f"tracemalloc peak x{b['tracemalloc_peak_mb'] / a['tracemalloc_peak_mb']:.2f}")


if __name__ == "__main__":
    main()
