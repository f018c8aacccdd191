"""Wall time of one run with 1 and with 2 CPU processes (torchrun, gloo), one thread each.

    .venv/bin/python benchmarks/bench_distributed.py                 # ResNet-20, 10,000 CIFAR-10 JPEGs
    .venv/bin/python benchmarks/bench_distributed.py --limit 2000 --repeats 3

Each configuration runs into a fresh folder ``--repeats`` times, alternating (1, 2, 1, 2, …) so
that a drift of the shared machine's speed hits both; prints every time, the medians, the
speed-up (median of the per-pair ratios) and the load average. For a multi-GPU machine the same
command line runs with ``--nproc-per-node G`` and ``--device cuda`` (see docs/DISTRIBUTED.md).
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _command(n_proc: int, out: Path, args: argparse.Namespace) -> list[str]:
    run = ["run", "--model", "cifar-resnet20", "--checkpoint", str(SHARED / "models" / "resnet20-cifar10.th"),
           "--data", str(SHARED / "cifar10" / "test"), "--limit", str(args.limit), "--out", str(out), "--quiet",
           "--threads", "1", "--no-report", "--robustness-images", "0", "--evidence-features", "0"]
    if n_proc == 1:
        return [sys.executable, "-m", "feature_complexity", *run]
    return [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(n_proc), "--master-port",
            str(_port()), "-m", "feature_complexity", *run]


def _time(cmd: list[str]) -> float:
    started = time.perf_counter()
    proc = subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-2000:])
    return time.perf_counter() - started


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--limit", type=int, default=10000, help="CIFAR-10 test images")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    times: dict[int, list[float]] = {1: [], 2: []}
    tmp = Path(tempfile.mkdtemp(prefix="bench-dist-"))
    try:
        for r in range(args.repeats):
            for n in (1, 2):
                out = tmp / f"p{n}-r{r}"
                times[n].append(_time(_command(n, out, args)))
                shutil.rmtree(out)
                print(f"repeat {r}: {n} process(es) {times[n][-1]:.1f} s", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    ratios = [a / b for a, b in zip(times[1], times[2])]
    print(f"\nResNet-20, {args.limit} CIFAR-10 test JPEGs, one torch thread per process, {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"1 process : median {statistics.median(times[1]):.1f} s  {[round(t, 1) for t in times[1]]}")
    print(f"2 processes: median {statistics.median(times[2]):.1f} s  {[round(t, 1) for t in times[2]]}")
    print(f"speed-up (median of per-pair ratios): {statistics.median(ratios):.2f}x")


if __name__ == "__main__":
    main()
