"""The built-in demo end to end (small sizes), and the planted ground truth it scores: with a
model trained to classify *shape*, the colour factor is simpler than the shape factor."""

from __future__ import annotations

import json

import pandas as pd
import pytest


@pytest.mark.slow
def test_demo_end_to_end_and_factor_ground_truth(tmp_path):
    from feature_complexity.cli.demo_cmd import run_demo

    out = run_demo(tmp_path / "demo", train_images=1600, probe_images=640, epochs=2, seed=0,
                   progress=False)
    for name in ("manifest.json", "features.parquet", "fidelity.json", "factors.json", "report.html",
                 "training/train.json", "dynamics/dynamics.json", "flow.json",
                 "figures/complexity_hist.png", "figures/decodability.png",
                 "figures/complexity_importance.png", "figures/factors.png", "figures/flow.png"):
        assert (out / name).exists(), name
    checkpoints = sorted((out / "training" / "checkpoints").glob("*.pt"))
    assert len(checkpoints) >= 6  # start, early fractions of epoch 1, every epoch
    features = pd.read_parquet(out / "features.parquet")
    assert len(features) == 8 * 10 and features["complexity"].between(0, 1).all()

    factors = json.loads((out / "factors.json").read_text())["factors"]
    assert factors["color"]["complexity"] < factors["shape"]["complexity"] - 0.1, factors
    # colour is readable from the first block already; shape is not
    assert factors["color"]["per_layer"][0] > factors["shape"]["per_layer"][0]

    manifest = json.loads((out / "manifest.json").read_text())
    for stage in ("train", "activations", "dictionary", "codes", "complexity", "importance",
                  "dynamics", "report", "demo_total"):
        assert stage in manifest["timings"], stage
