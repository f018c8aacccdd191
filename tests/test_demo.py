"""The built-in demo end to end (small sizes), and the planted ground truth it scores: with a
model trained to classify *shape*, the colour factor is simpler than the shape factor."""

from __future__ import annotations

import json

import pandas as pd
import pytest


@pytest.mark.slow
@pytest.mark.long
def test_demo_end_to_end_and_factor_ground_truth(tmp_path):
    from feature_complexity.cli.demo_cmd import run_demo

    # the smallest training that learns shape (about 80 % on 8 shapes; 15-20 s on 2 idle cores)
    result = run_demo(tmp_path / "demo", train_images=5000, probe_images=1000, epochs=5, seed=0,
                      progress=False)
    out = result.out_dir
    for name in ("manifest.json", "features.parquet", "fidelity.json", "factors.json", "report.html",
                 "training/train.json", "dynamics.json", "dynamics/features.parquet", "flow.json", "findings.json",
                 "controls/random-init/features.parquet",
                 "figures/complexity_hist.png", "figures/decodability.png",
                 "figures/complexity_importance.png", "figures/factors.png", "figures/flow.png"):
        assert (out / name).exists(), name
    checkpoints = sorted((out / "training" / "checkpoints").glob("*.pt"))
    assert len(checkpoints) >= 6  # start, early fractions of epoch 1, every epoch
    features = pd.read_parquet(out / "features.parquet")
    assert len(features) == 8 * 10 and features["complexity"].between(0, 1).all()

    training = json.loads((out / "training" / "train.json").read_text())["checkpoints"]
    assert training[-1]["eval_acc"] > 0.6, training[-1]  # the model did learn to classify shape
    factors = json.loads((out / "factors.json").read_text())["factors"]
    # With a model that has learned shape (not yet to convergence) colour is the simpler factor.
    # (Trained to convergence, a shape classifier discards colour in its last blocks and colour's
    # K rises towards shape's: see factor_complexity's docstring.)
    assert factors["color"]["complexity"] < factors["shape"]["complexity"] - 0.1, factors
    # colour is readable from the first block already; shape is not
    assert factors["color"]["per_layer"][0] > factors["shape"]["per_layer"][0] + 0.2
    assert 0 <= factors["shape"]["kept"] <= 1

    manifest = json.loads((out / "manifest.json").read_text())
    for stage in ("train", "activations", "dictionary", "codes", "complexity", "importance",
                  "control/random-init", "dynamics", "findings", "report"):
        assert manifest["stages"][stage]["status"] == "computed", stage
