"""timm models by name through the CLI, and a planted complexity check on a Vision Transformer.

The CLI runs build the full-size timm models at random initialisation (``--weights random``: no
download) on generated 224-px images; the planted check uses a tiny ViT (as in
``test_model_families.py``) so it runs in seconds.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("timm")


@pytest.mark.slow
@pytest.mark.parametrize("name, learner", [("timm:resnet18", "nmf"), ("timm:convnext_atto", "semi_nmf"),
                                           ("timm:vit_tiny_patch16_224", "semi_nmf")])
def test_timm_model_runs_end_to_end_from_the_cli(tmp_path, name, learner):
    """A ResNet, a ConvNeXt and a ViT by name: every feature gets K in [0, 1], one I_V column per
    block in the model's own block order, and the learner follows the sign of the activations."""
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "feature_complexity", "run", "--model", name, "--weights", "random",
           "--data", "trifeature", "--limit", "96", "--atoms-per-class", "2", "--folds", "3",
           "--robustness-images", "0", "--evidence-features", "0", "--no-report", "--quiet", "--threads", "1",
           "--batch-size", "32", "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = pd.read_parquet(out / "features.parquet")
    assert len(table) > 0 and table["complexity"].between(0, 1).all()
    from feature_complexity.models.registry import build_model

    spec = build_model(name, weights="random", seed=0)
    blocks = [c[len("iv_"):] for c in table.columns if c.startswith("iv_") and not c.endswith(("_lo", "_hi"))]
    assert blocks == list(spec.probe_layers)
    from feature_complexity.features import Dictionary

    dictionary = Dictionary.load(out / "dictionary.npz")
    assert dictionary.method == learner  # auto: NMF on the ResNet's ReLU outputs, Semi-NMF on signed ones
    assert dictionary.D.shape[1] == np.load(out / "activations" / "penultimate.npy", mmap_mode="r").shape[1]


def test_planted_mean_colour_is_simpler_than_the_top_logit_on_a_vit():
    """The mean pixel colour is a linear function of the patch embedding, which every block's
    residual stream carries (the mean of the patch tokens, this ViT's pooling), so it must score
    lower K than the model's own top logit, which only the last blocks compute."""
    import torch

    import feature_complexity as fc
    from feature_complexity.activations import extract_activations
    from feature_complexity.data import trifeature
    from test_model_families import _make_timm

    spec, size = _make_timm("vit-avg")
    data = trifeature(400, size=size, seed=3, mean=spec.mean, std=spec.std)
    acts = extract_activations(spec, data, batch_size=100, progress=False)
    pixels = torch.stack([data[i][0] for i in range(len(data))]).double()
    pixels = pixels * torch.tensor(spec.std).view(1, 3, 1, 1) + torch.tensor(spec.mean).view(1, 3, 1, 1)
    mean_colour = pixels.mean(dim=(2, 3)).numpy() @ np.array([0.5, -1.0, 0.8])
    top_logit = np.asarray(acts.logits).max(axis=1)
    res = fc.complexity(acts.layers, np.column_stack([mean_colour, top_logit]), n_folds=5)
    assert res.per_layer[0, 0] > 0.8  # the first block already decodes the mean colour
    assert res.score[0] < res.score[1] - 0.3  # measured: 0.07 against 0.75


@pytest.mark.slow
def test_headless_backbone_runs_without_importance(tmp_path):
    """A DINOv2-style backbone (no head): dictionary per label class, K for every feature,
    importance and fidelity skipped (and the run says which stages did not apply)."""
    from feature_complexity.data import trifeature
    from feature_complexity.pipeline import RunConfig, run_analysis
    from test_model_families import _make_timm

    spec, size = _make_timm("dinov2-reg")
    assert spec.head is None
    data = trifeature(240, size=size, seed=4, mean=spec.mean, std=spec.std)
    config = RunConfig(n_atoms_per_class=2, n_folds=3, batch_size=60, robustness_images=0, evidence_features=0)
    result = run_analysis(spec, data, tmp_path / "run", config, report=False, progress=False)
    table = result.features
    assert table["complexity"].between(0, 1).all()
    assert sorted(set(table["class"])) == sorted(set(data.labels.tolist()))
    assert "importance" not in table.columns or table["importance"].isna().all()
    assert not (tmp_path / "run" / "importance.npy").exists()
