"""The run orchestration: every stage's output, resume without recomputation, config guard."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from feature_complexity.pipeline import RunConfig, run_analysis, score_features


def _config(**kw) -> RunConfig:
    return RunConfig(n_atoms_per_class=3, n_folds=3, batch_size=16, **kw)


def test_run_folder_has_every_output(tiny_spec, tiny_images, tmp_path):
    out = tmp_path / "run"
    result = run_analysis(tiny_spec, tiny_images, out, _config(), flow=False, report=False, progress=False)
    for name in ("manifest.json", "dictionary.npz", "codes.npy", "fidelity.json", "complexity.npz",
                 "features.parquet", "figures/complexity_hist.png", "figures/decodability.png",
                 "figures/complexity_importance.png", "activations/progress.json"):
        assert (out / name).exists(), name
    frame = pd.read_parquet(out / "features.parquet")
    assert len(frame) == 4 * 3
    for col in ("feature", "class", "complexity", "importance", "iv_layer1.0", "iv_layer1.1"):
        assert col in frame.columns
    assert frame["complexity"].between(0, 1).all()
    np.testing.assert_array_equal(frame["class"], np.repeat(np.arange(4), 3))
    # K is 1 - the mean of the stored per-layer I_V
    iv = frame[["iv_layer1.0", "iv_layer1.1"]].to_numpy()
    np.testing.assert_allclose(frame["complexity"], 1 - iv.mean(axis=1), atol=1e-12)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["seed"] == 0 and "torch" in manifest["versions"]
    assert manifest["n_images"] == len(tiny_images)
    for stage in ("activations", "dictionary", "codes", "complexity", "importance"):
        assert stage in manifest["timings"]
    assert result.scores.codes.shape == (len(tiny_images), 12)


def test_same_seed_same_numbers_and_resume_skips_work(tiny_spec, tiny_images, tmp_path, monkeypatch):
    a = run_analysis(tiny_spec, tiny_images, tmp_path / "a", _config(), flow=False, report=False, progress=False)
    # a second run in the same folder must not redo the finished stages
    import feature_complexity.pipeline as pipeline

    def fail(*args, **kwargs):
        raise AssertionError("a finished stage was recomputed")

    monkeypatch.setattr(pipeline, "fit_features", fail)
    monkeypatch.setattr(pipeline, "encode_features", fail)
    b = run_analysis(tiny_spec, tiny_images, tmp_path / "a", _config(), flow=False, report=False, progress=False)
    np.testing.assert_array_equal(a.features["complexity"], b.features["complexity"])
    monkeypatch.undo()
    c = run_analysis(tiny_spec, tiny_images, tmp_path / "c", _config(), flow=False, report=False, progress=False)
    np.testing.assert_array_equal(a.features["complexity"], c.features["complexity"])
    np.testing.assert_array_equal(a.features["importance"], c.features["importance"])


def test_changed_config_is_refused(tiny_spec, tiny_images, tmp_path):
    run_analysis(tiny_spec, tiny_images, tmp_path / "r", _config(), flow=False, report=False, progress=False)
    with pytest.raises(ValueError, match="different configuration.*seed"):
        run_analysis(tiny_spec, tiny_images, tmp_path / "r", _config(seed=1), flow=False, report=False,
                     progress=False)


def test_score_features_matches_run(tiny_spec, tiny_images, tmp_path):
    from feature_complexity.activations import extract_activations

    acts = extract_activations(tiny_spec, tiny_images, progress=False)
    scores = score_features(acts, tiny_spec, _config(), progress=False)
    run = run_analysis(tiny_spec, tiny_images, tmp_path / "r", _config(), flow=False, report=False, progress=False)
    np.testing.assert_allclose(scores.complexity.score, run.features["complexity"], atol=1e-6)
    np.testing.assert_allclose(scores.importance, run.features["importance"], rtol=1e-4, atol=1e-7)
    assert set(scores.timings) == {"dictionary", "codes", "fidelity", "complexity", "importance"}


def test_class_with_too_few_images_is_a_clear_error(tiny_spec, tiny_images, tmp_path):
    with pytest.raises(ValueError, match="class"):
        run_analysis(tiny_spec, tiny_images, tmp_path / "r", RunConfig(n_atoms_per_class=40, n_folds=3),
                     flow=False, report=False, progress=False)


def test_probe_set_covering_some_classes(tiny_spec, tiny_images, tmp_path):
    """A probe set with images of only some classes (a slice of ImageNet, say) gives features
    for those classes, with a warning, not an error."""
    tiny_images.labels_[tiny_images.labels_ == 3] = 0
    tiny_images.labels = tiny_images.labels_.numpy().astype(np.int64)
    with pytest.warns(UserWarning, match="3 of the model's 4 classes"):
        result = run_analysis(tiny_spec, tiny_images, tmp_path / "r", _config(class_source="label"),
                              flow=False, report=False, progress=False)
    assert sorted(set(result.features["class"])) == [0, 1, 2]
    assert len(result.features) == 9


def test_rerun_with_another_checkpoint_is_refused(tiny_spec, tiny_images, tmp_path):
    run_analysis(tiny_spec, tiny_images, tmp_path / "r", _config(), model_info={"checkpoint": "a.pt"},
                 flow=False, report=False, progress=False)
    with pytest.raises(ValueError, match="model checkpoint"):
        run_analysis(tiny_spec, tiny_images, tmp_path / "r", _config(), model_info={"checkpoint": "b.pt"},
                     flow=False, report=False, progress=False)


def test_rerun_with_other_weights_under_the_same_name_is_refused(tiny_spec, tiny_images, tmp_path):
    """A checkpoint file overwritten in place (retrained into the same path) keeps every recorded
    name: resuming would load the old model's activations, codes and K and score them with the
    new model's head."""
    import torch

    run_analysis(tiny_spec, tiny_images, tmp_path / "r", _config(), model_info={"checkpoint": "a.pt"},
                 flow=False, report=False, progress=False)
    with torch.no_grad():
        for p in tiny_spec.module.parameters():
            p.mul_(1.5)
    with pytest.raises(ValueError, match="different configuration.*weights"):
        run_analysis(tiny_spec, tiny_images, tmp_path / "r", _config(), model_info={"checkpoint": "a.pt"},
                     flow=False, report=False, progress=False)


def test_a_recomputed_stage_invalidates_the_later_ones(tiny_spec, tiny_images, tmp_path, monkeypatch):
    """Deleting dictionary.npz recomputes it, and then the codes and K too, even though
    codes.npy and complexity.npz still exist."""
    import feature_complexity.pipeline as pipeline

    run_analysis(tiny_spec, tiny_images, tmp_path / "r", _config(), flow=False, report=False, progress=False)
    (tmp_path / "r" / "dictionary.npz").unlink()
    calls = []
    original = pipeline.encode_features
    monkeypatch.setattr(pipeline, "encode_features", lambda *a, **k: calls.append(1) or original(*a, **k))
    run_analysis(tiny_spec, tiny_images, tmp_path / "r", _config(), flow=False, report=False, progress=False)
    assert calls == [1]


def test_resumed_run_keeps_flow_columns_without_redoing_flow(tiny_spec, tiny_images, tmp_path, monkeypatch):
    import feature_complexity.analyses.flow as flow_mod

    run_analysis(tiny_spec, tiny_images, tmp_path / "r", _config(), flow=True, report=False, progress=False)
    first = pd.read_parquet(tmp_path / "r" / "features.parquet")
    assert "teleport_depth" in first.columns

    def fail(*args, **kwargs):
        raise AssertionError("the finished flow analysis was redone")

    monkeypatch.setattr(flow_mod, "run_flow", fail)
    run_analysis(tiny_spec, tiny_images, tmp_path / "r", _config(), flow=True, report=False, progress=False)
    again = pd.read_parquet(tmp_path / "r" / "features.parquet")
    pd.testing.assert_frame_equal(first, again)
