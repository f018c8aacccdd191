"""Wall time of the whole pipeline, split by stage (issue 2's third benchmark).

Runs, each in a fresh run folder and a fresh process:

1. ``feature-complexity demo`` (generate data, train the small ResNet, analyse, dynamics, report);
2. ``feature-complexity run`` with the pretrained CIFAR ResNet-20 on the 10,000 CIFAR-10 test
   JPEGs in ``../shared/data`` (skipped with a message when absent);

then prints each run's per-stage seconds from its ``manifest.json``.

    .venv/bin/python benchmarks/bench_pipeline.py [--skip-demo] [--skip-r20] [--out /tmp/bench-runs]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
CLI = [sys.executable, "-m", "feature_complexity"]


def timed(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True, cwd=REPO)
    return time.perf_counter() - start


def table(name: str, run_dir: Path, wall: float) -> None:
    timings = json.loads((run_dir / "manifest.json").read_text())["timings"]
    print(f"\n{name}: {wall:.1f} s wall (process, incl. imports)")
    for stage, seconds in timings.items():
        print(f"  {stage:<14} {seconds:8.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/bench-runs"))
    parser.add_argument("--skip-demo", action="store_true")
    parser.add_argument("--skip-r20", action="store_true")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if not args.skip_demo:
        out = args.out / "demo"
        shutil.rmtree(out, ignore_errors=True)
        wall = timed(CLI + ["demo", "--out", str(out), "--device", args.device, "--quiet"])
        table("feature-complexity demo", out, wall)
    if not args.skip_r20:
        if not (SHARED / "cifar10" / "test").is_dir():
            print(f"\nResNet-20 run skipped: {SHARED} not found")
            return
        out = args.out / "r20"
        shutil.rmtree(out, ignore_errors=True)
        wall = timed(CLI + ["run", "--model", "cifar-resnet20",
                            "--checkpoint", str(SHARED / "models" / "resnet20-cifar10.th"),
                            "--data", str(SHARED / "cifar10" / "test"), "--out", str(out),
                            "--device", args.device, "--quiet"])
        table("ResNet-20 on the 10,000 CIFAR-10 test images", out, wall)


if __name__ == "__main__":
    main()
