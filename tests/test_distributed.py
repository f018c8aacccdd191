"""torchrun with 2 CPU processes (gloo) gives the run of one process; a killed worker resumes.

Each test launches ``python -m torch.distributed.run --nproc-per-node 2 -m feature_complexity run``
in a subprocess, exactly as a user would, and compares the run folder with a one-process run.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.distributed]

FAST = ["--folds", "3", "--robustness-images", "0", "--evidence-features", "0", "--no-report", "--quiet",
        "--threads", "1", "--batch-size", "64"]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


def _torchrun(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", str(_port()),
            "-m", "feature_complexity", *args]


def _one(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "feature_complexity", *args]


def _check(cmd: list[str]) -> None:
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]


def _same_tables(a: Path, b: Path) -> None:
    fa, fb = pd.read_parquet(a / "features.parquet"), pd.read_parquet(b / "features.parquet")
    assert list(fa.columns) == list(fb.columns)
    np.testing.assert_array_equal(fa["feature"], fb["feature"])
    np.testing.assert_array_equal(fa["class"], fb["class"])
    cols = ["complexity", *[c for c in fa if c.startswith("iv_")]]
    np.testing.assert_allclose(fa[cols].to_numpy(), fb[cols].to_numpy(), rtol=0, atol=1e-9)
    np.testing.assert_allclose(fa["importance"], fb["importance"], rtol=1e-6, atol=1e-9)
    da, db = np.load(a / "dictionary.npz")["D"], np.load(b / "dictionary.npz")["D"]
    np.testing.assert_array_equal(da, db)
    np.testing.assert_array_equal(np.load(a / "codes" / "Z.npy"), np.load(b / "codes" / "Z.npy"))


def test_two_processes_give_the_one_process_run_on_resnet20(tmp_path, shared_data):
    args = ["run", "--model", "cifar-resnet20", "--checkpoint", str(shared_data / "models" / "resnet20-cifar10.th"),
            "--data", str(shared_data / "cifar10" / "test"), "--limit", "2000", *FAST]
    _check(_one([*args, "--out", str(tmp_path / "one")]))
    _check(_torchrun([*args, "--out", str(tmp_path / "two")]))
    _same_tables(tmp_path / "one", tmp_path / "two")


@pytest.fixture(scope="module")
def demo_checkpoint(tmp_path_factory) -> Path:
    """The demo's small ResNet trained for one epoch on generated shapes."""
    from feature_complexity.data import trifeature
    from feature_complexity.models.registry import build_model
    from feature_complexity.train import TrainConfig, train

    out = tmp_path_factory.mktemp("train")
    spec = build_model("small-resnet", num_classes=8, stem_stride=2, seed=0)
    paths = train(spec, trifeature(1500, seed=0), out, TrainConfig(epochs=1, batch_size=64, early_fractions=()),
                  progress=False)
    return Path(paths[-1])


def test_two_processes_give_the_one_process_run_on_the_demo_model(tmp_path, demo_checkpoint):
    args = ["run", "--model", "small-resnet", "--checkpoint", str(demo_checkpoint), "--data", "trifeature",
            "--limit", "2500", "--data-seed", "1", *FAST]
    _check(_one([*args, "--out", str(tmp_path / "one")]))
    _check(_torchrun([*args, "--out", str(tmp_path / "two")]))
    _same_tables(tmp_path / "one", tmp_path / "two")


def _workers(launcher: int) -> list[int]:
    kids = Path(f"/proc/{launcher}/task/{launcher}/children")
    return [int(p) for p in kids.read_text().split()] if kids.exists() else []


def test_a_killed_worker_resumes_to_the_same_numbers(tmp_path, demo_checkpoint):
    args = ["run", "--model", "small-resnet", "--checkpoint", str(demo_checkpoint), "--data", "trifeature",
            "--limit", "6000", "--data-seed", "1", *FAST, "--batch-size", "16"]
    out = tmp_path / "killed"
    launcher = subprocess.Popen(_torchrun([*args, "--out", str(out)]), env=_env(), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
    done = out / "activations" / "done"
    deadline = time.time() + 600
    while time.time() < deadline and not (done.is_dir() and any(done.iterdir())):
        time.sleep(0.05)
    assert done.is_dir() and any(done.iterdir()), "the forward pass never finished a chunk"
    finished = len(list(done.iterdir()))
    workers = _workers(launcher.pid)
    assert len(workers) == 2 and finished < 6, "the pass finished before the kill"
    os.kill(workers[1], signal.SIGKILL)  # one worker dies in the middle of the forward pass
    assert launcher.wait(timeout=300) != 0
    _check(_torchrun([*args, "--out", str(out)]))  # the same command resumes
    _check(_one([*args, "--out", str(tmp_path / "clean")]))
    _same_tables(tmp_path / "clean", out)
