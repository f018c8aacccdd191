"""The command users will type for the paper's experiment, on a random-init ResNet-50.

    feature-complexity run --model resnet50 --weights IMAGENET1K_V2 --fit-data /imagenet/train \
        --data /imagenet/val --device cuda

Here: ``--weights random`` (no download), a small ImageFolder of generated 224-px JPEGs as the fit
set, generated probe images, spatial fit samples, on the CPU.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest


def _image_folder(root, n_classes: int = 4, per_class: int = 6, size: int = 224) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in range(n_classes):
        (root / f"class{c}").mkdir(parents=True)
        for j in range(per_class):
            pixels = (rng.random((size, size, 3)) * 255).astype(np.uint8)
            pixels[: size // 2, :, c % 3] = 255  # a class-dependent colour band
            Image.fromarray(pixels).save(root / f"class{c}" / f"{j}.jpg")


@pytest.mark.slow
@pytest.mark.long
def test_resnet50_run_with_a_separate_fit_set(tmp_path):
    fit = tmp_path / "fit"
    _image_folder(fit)
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "feature_complexity", "run", "--model", "resnet50", "--weights", "random",
           "--fit-data", str(fit), "--fit-samples", "spatial", "--data", "trifeature", "--limit", "32",
           "--atoms-per-class", "2", "--folds", "3", "--ci-groups", "0", "--robustness-images", "0",
           "--evidence-features", "0",
           "--no-report", "--quiet", "--threads", "1", "--batch-size", "16", "--device", "cpu", "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = pd.read_parquet(out / "features.parquet")
    assert len(table) > 0 and table["complexity"].between(0, 1).all()
    assert len([c for c in table.columns if c.startswith("iv_") and not c.endswith(("_lo", "_hi"))]) == 16
    layout = (out / "fit_samples").is_dir()
    assert layout, "the spatial fit samples are gathered into their own store"
    D = np.load(out / "dictionary.npz")["D"]
    assert D.shape[1] == 2048
