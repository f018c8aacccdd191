"""A run on the stage loop: outputs, resume after an interruption anywhere, exactly the affected
stages recomputed, the scores against independent calls of the engines."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

import feature_complexity.stages as stages_module
from feature_complexity.pipeline import RunConfig, run_analysis, score_in_memory
from feature_complexity.stages import StaleRunError

CORE = ["activations", "dictionary", "codes", "fidelity", "complexity", "importance"]
# the paper's appendix analyses: each reads the features' K, so a new K recomputes them
APPENDIX = ["locality", "redundancy", "robustness", "support", "hierarchy"]


def _config(**kw) -> RunConfig:
    # every stage runs, the noise-robustness one on a few images and draws (seconds, not minutes)
    return RunConfig(**{"n_atoms_per_class": 3, "n_folds": 3, "batch_size": 16, "robustness_images": 8,
                        "robustness_draws": 4, **kw})


def _run(spec, images, out, **kw):
    return run_analysis(spec, images, out, kw.pop("config", _config()), report=False, progress=False, **kw)


def test_run_folder_has_every_output(tiny_spec, tiny_images, tmp_path):
    out = tmp_path / "run"
    result = _run(tiny_spec, tiny_images, out)
    for name in ("manifest.json", "dictionary.npz", "codes/Z.npy", "fidelity.json", "complexity.npz",
                 "importance.npy", "features.parquet", "flow.json", "metafeatures.parquet",
                 "figures/complexity_hist.png", "figures/decodability.png", "figures/complexity_importance.png",
                 "figures/flow.png", "figures/index.json", "activations/layout.json", "evidence/index.json"):
        assert (out / name).exists(), name
    frame = pd.read_parquet(out / "features.parquet")
    assert len(frame) == 4 * 3
    for col in ("feature", "class", "class_name", "complexity", "importance", "iv_layer1.0", "teleport_depth",
                "skip_share", "cluster", "mean_code"):
        assert col in frame.columns, col
    np.testing.assert_array_equal(frame["class"], np.repeat(np.arange(4), 3))
    iv = frame[["iv_layer1.0", "iv_layer1.1"]].to_numpy()
    np.testing.assert_allclose(frame["complexity"], 1 - iv.mean(axis=1), atol=1e-12)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["seed"] == 0 and "torch" in manifest["versions"]
    assert set(manifest["fingerprints"]) >= {"model", "probe"} and manifest["n_images"] == len(tiny_images)
    assert all(manifest["stages"][s]["status"] == "computed" for s in CORE)
    index = json.loads((out / "figures" / "index.json").read_text())
    assert index["flow"]["section"] == "where" and index["flow"]["caption"]
    assert result["codes"].shape == (len(tiny_images), 12)


def test_rerun_reuses_every_stage_and_gives_the_same_numbers(tiny_spec, tiny_images, tmp_path):
    a = _run(tiny_spec, tiny_images, tmp_path / "a")
    b = _run(tiny_spec, tiny_images, tmp_path / "a")
    assert {v["status"] for v in b.status.values()} == {"reused"}
    c = _run(tiny_spec, tiny_images, tmp_path / "c")  # a fresh folder: same seed, same numbers
    pd.testing.assert_frame_equal(a.features, c.features)


@pytest.fixture(scope="module")
def clean_table(tmp_path_factory) -> bytes:
    """``features.parquet`` of an uninterrupted run (made once for the module)."""
    from conftest import TinyImages, make_tiny_spec

    clean = tmp_path_factory.mktemp("clean") / "run"
    _run(make_tiny_spec(), TinyImages(), clean)
    return (clean / "features.parquet").read_bytes()


@pytest.mark.parametrize("stage", [*CORE, "flow", "metafeatures", "evidence", *APPENDIX, "features"])
def test_interrupted_at_any_stage_resumes_to_a_byte_identical_table(tiny_spec, tiny_images, tmp_path, monkeypatch,
                                                                     stage, clean_table):
    real = stages_module._compute

    def interrupt(s, ctx, material):
        if s.name == stage:
            raise KeyboardInterrupt
        return real(s, ctx, material)

    monkeypatch.setattr(stages_module, "_compute", interrupt)
    with pytest.raises(KeyboardInterrupt):
        _run(tiny_spec, tiny_images, tmp_path / "cut")
    monkeypatch.undo()
    resumed = _run(tiny_spec, tiny_images, tmp_path / "cut")
    assert resumed.status[stage]["status"] == "computed"
    assert (tmp_path / "cut" / "features.parquet").read_bytes() == clean_table


@pytest.mark.parametrize("change, recomputed", [
    ({"teleport_threshold": 0.5}, {"flow", "features"}),
    ({"n_folds": 4}, {"complexity", "flow", "metafeatures", "evidence", "features", "importance", *APPENDIX}),
    ({"n_atoms_per_class": 2}, {"dictionary", "codes", "fidelity", "complexity", "importance", "flow",
                                "metafeatures", "evidence", "features", *APPENDIX}),
])
def test_a_changed_setting_recomputes_exactly_what_it_affects(tiny_spec, tiny_images, tmp_path, change, recomputed):
    _run(tiny_spec, tiny_images, tmp_path / "r")
    with pytest.raises(StaleRunError, match="--overwrite"):
        _run(tiny_spec, tiny_images, tmp_path / "r", config=_config(**change))
    result = _run(tiny_spec, tiny_images, tmp_path / "r", config=_config(**change), overwrite=True)
    got = {k for k, v in result.status.items() if v["status"] == "computed"}
    assert got == recomputed


def test_a_changed_execution_setting_is_accepted(tiny_spec, tiny_images, tmp_path):
    _run(tiny_spec, tiny_images, tmp_path / "r")
    result = _run(tiny_spec, tiny_images, tmp_path / "r", config=_config(batch_size=7))
    assert {v["status"] for v in result.status.values()} == {"reused"}


def test_other_images_are_refused(tiny_spec, tiny_images, tmp_path):
    _run(tiny_spec, tiny_images, tmp_path / "r")
    # same count, other pixels in an item the fingerprint samples (any dataset without files is
    # fingerprinted by its length and a hash of 16 items spread over it: item 0 is one of them)
    tiny_images.images[0] += 1.0
    with pytest.raises(StaleRunError, match="the probe input"):
        _run(tiny_spec, tiny_images, tmp_path / "r")


def test_complexity_stage_equals_the_engine_with_the_runs_folds_and_seed(tiny_spec, tiny_images, tmp_path):
    """The stage must pass n_folds and seed through: an independent call with the same ones
    reproduces K, and one with other folds does not."""
    from feature_complexity.complexity import complexity

    result = _run(tiny_spec, tiny_images, tmp_path / "r", config=_config(n_folds=4, seed=7))
    acts, Z = result["activations"], np.asarray(result["codes"])
    ref = complexity(acts.layers, Z, n_folds=4, seed=7)
    np.testing.assert_allclose(result.features["complexity"], ref.score, atol=1e-12)
    other = complexity(acts.layers, Z, n_folds=3, seed=0)
    assert np.abs(other.score - ref.score).max() > 1e-6


def test_score_in_memory_equals_the_run(tiny_spec, tiny_images, tmp_path):
    from feature_complexity.activations import extract_activations

    run = _run(tiny_spec, tiny_images, tmp_path / "r", config=_config(seed=3))
    scores = score_in_memory(extract_activations(tiny_spec, tiny_images, progress=False), tiny_spec,
                             _config(seed=3))
    np.testing.assert_allclose(scores.complexity.score, run.features["complexity"], atol=1e-6)
    np.testing.assert_allclose(scores.importance, run.features["importance"], rtol=1e-4, atol=1e-7)


def test_classes_with_too_few_images_are_skipped_with_a_warning(tiny_spec, tiny_images, tmp_path):
    labels = tiny_images.labels_
    labels[labels == 3] = 0
    labels[:2] = 3  # class 3 keeps 2 images: fewer than 3 atoms
    tiny_images.labels = labels.numpy().astype(np.int64)
    with pytest.warns(UserWarning, match="fewer images than --atoms-per-class 3"):
        result = _run(tiny_spec, tiny_images, tmp_path / "r", config=_config(class_source="label"))
    assert sorted(set(result.features["class"])) == [0, 1, 2]


def test_no_class_large_enough_names_the_flag(tiny_spec, tiny_images, tmp_path):
    with pytest.raises(ValueError, match="--atoms-per-class"):
        _run(tiny_spec, tiny_images, tmp_path / "r", config=RunConfig(n_atoms_per_class=40, n_folds=3))
