"""The CUDA paths against the CPU on the same inputs (skipped without a CUDA device).

Every torch routine is device-agnostic and tested on the CPU elsewhere; these tests check that a
GPU gives the same numbers. ``benchmarks/gpu_check.sh`` runs them (``pytest -m cuda``).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import feature_complexity as fc

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def _class_structured(n_classes: int = 6, per_class: int = 40, d: int = 48, seed: int = 0):
    from feature_complexity.data.synthetic import class_structured

    return class_structured(per_class, n_classes, d, seed=seed, n_shared=8)


def test_complexity_on_cuda_matches_cpu() -> None:
    rng = np.random.default_rng(0)
    layers = [rng.normal(size=(300, w)) for w in (8, 16, 32)]
    Z = np.abs(layers[1][:, :5] @ rng.normal(size=(5, 7))) + 0.1 * rng.normal(size=(300, 7))
    cpu = fc.complexity(layers, Z, device="cpu")
    gpu = fc.complexity(layers, Z, device="cuda")
    np.testing.assert_allclose(gpu.per_layer, cpu.per_layer, atol=1e-9)
    np.testing.assert_allclose(gpu.score, cpu.score, atol=1e-9)


def test_nmf_on_cuda_reaches_the_cpu_objective() -> None:
    data = _class_structured()
    cpu = fc.fit_dictionary(data.A, data.classes, 4, device="cpu", seed=0)
    gpu = fc.fit_dictionary(data.A, data.classes, 4, device="cuda", seed=0)
    err = {}
    for name, dic in (("cpu", cpu), ("gpu", gpu)):
        Z = fc.encode(data.A, dic.D, device="cpu")
        err[name] = float(((data.A - Z @ dic.D) ** 2).sum())
    assert err["gpu"] <= 1.01 * err["cpu"]


def test_codes_and_importance_on_cuda_match_cpu() -> None:
    data = _class_structured()
    dic = fc.fit_dictionary(data.A, data.classes, 4, device="cpu", seed=0)
    Z_cpu = fc.encode(data.A, dic.D, device="cpu", dtype=torch.float64)
    Z_gpu = fc.encode(data.A, dic.D, device="cuda", dtype=torch.float64)
    np.testing.assert_allclose(Z_gpu, Z_cpu, atol=1e-8)
    head = torch.nn.Linear(data.A.shape[1], 6).double().eval()
    g_cpu = fc.importance(Z_cpu, dic.D, head, feature_class=dic.feature_class, image_class=data.classes,
                          device="cpu")
    g_gpu = fc.importance(Z_cpu, dic.D, head.cuda(), feature_class=dic.feature_class,
                          image_class=data.classes, device="cuda")
    np.testing.assert_allclose(g_gpu, g_cpu, rtol=1e-6, atol=1e-9)


def test_cli_run_on_cuda(tmp_path) -> None:
    """The whole run on the GPU (a random-init small ResNet on generated images) finishes."""
    import subprocess
    import sys

    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "feature_complexity", "run", "--model", "small-resnet", "--weights", "random",
           "--data", "trifeature", "--limit", "400", "--atoms-per-class", "3", "--device", "cuda",
           "--robustness-images", "0", "--controls", "--quiet", "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    import pandas as pd

    table = pd.read_parquet(out / "features.parquet")
    assert table["complexity"].between(0, 1).all()
