"""Dynamics: temporal decoding score on planted checkpoints, top features, end-to-end run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from feature_complexity.analyses.dynamics import (  # noqa: I001
    decodability_over_checkpoints,
    first_decodable,
    spearman,
    temporal_decoding_score,
    top_features,
)


@pytest.fixture(autouse=True)
def one_torch_thread():
    """On a shared 2-core machine, torch's two spinning threads run 10-20x slower than one."""
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def planted_checkpoints(T: int = 5, k_late: int = 3, n: int = 1500, d: int = 8, seed: int = 0):
    """A sequence of fixed linear "models": checkpoint t (1-indexed) maps latent factors to its
    penultimate layer with a random invertible matrix. ``z_early`` (factor 1) is present from
    checkpoint 1; ``z_late`` (factor 0) only from checkpoint ``k_late``; before that its slot
    holds independent noise."""
    rng = np.random.default_rng(seed)
    u = rng.standard_normal((n, 2))
    Z = np.column_stack([u[:, 0], u[:, 1]])  # (n, 2): z_late, z_early
    penultimates = {}
    for t in range(1, T + 1):
        slot0 = u[:, 0] if t >= k_late else rng.standard_normal(n)
        H = np.column_stack([slot0, u[:, 1], rng.standard_normal((n, d - 2))])
        M = rng.standard_normal((d, d)) + 3 * np.eye(d)  # well conditioned, so invertible
        penultimates[f"ckpt{t}"] = H @ M
    return penultimates, Z


@pytest.mark.parametrize("T,k_late", [(5, 3), (4, 1), (6, 6)])
def test_planted_temporal_decoding_score(T: int, k_late: int):
    penultimates, Z = planted_checkpoints(T, k_late)
    res = decodability_over_checkpoints(penultimates, Z, n_folds=5, seed=0)
    iv = res.per_layer  # (T, 2)
    expected_late = np.array([1.0 if t >= k_late else 0.0 for t in range(1, T + 1)])
    np.testing.assert_allclose(iv[:, 0], expected_late, atol=0.02)
    np.testing.assert_allclose(iv[:, 1], 1.0, atol=0.02)
    A = temporal_decoding_score(iv)
    assert A[0] == pytest.approx(1 - (T - k_late + 1) / T, abs=0.02)
    assert A[1] == pytest.approx(0.0, abs=0.02)
    np.testing.assert_allclose(A, res.score)  # the engine's 1 - mean over "layers" is A
    times = np.linspace(0.0, 3.0, T)
    first = first_decodable(iv, times, threshold=0.5)
    assert first[0] == pytest.approx(times[k_late - 1]) and first[1] == pytest.approx(times[0])


def test_per_checkpoint_passes_give_the_joint_result():
    """run_dynamics scores each checkpoint in its own pass; that must equal one joint call."""
    penultimates, Z = planted_checkpoints(4, 2, n=600)
    joint = decodability_over_checkpoints(penultimates, Z).per_layer
    single = np.stack([decodability_over_checkpoints({k: v}, Z).per_layer[0] for k, v in penultimates.items()])
    np.testing.assert_allclose(single, joint, atol=1e-10)


def test_first_decodable_never_and_shapes():
    iv = np.array([[0.1, 0.6], [0.2, 0.4], [0.3, 0.9]])
    out = first_decodable(iv, [0.0, 0.5, 1.0], threshold=0.5)
    assert np.isnan(out[0]) and out[1] == 0.0
    with pytest.raises(ValueError, match="T = len"):
        first_decodable(iv, [0.0, 1.0])
    with pytest.raises(ValueError):
        temporal_decoding_score(np.zeros(3))


def test_top_features_fraction_minimum_and_ranking():
    gamma = np.array([0.1, -5.0, 3.0, 0.2, -0.3, 1.0, 0.0, 2.0, -1.5, 0.05])
    # 1 % of 10 features is less than the minimum of 5
    assert list(top_features(gamma, fraction=0.01, min_top=5, rank_by="abs")) == [1, 2, 7, 8, 5]
    assert list(top_features(gamma, fraction=0.01, min_top=5, rank_by="signed")) == [2, 7, 5, 3, 0]
    assert len(top_features(gamma, fraction=0.5, min_top=1)) == 5
    big = np.arange(1000.0)
    assert list(top_features(big, fraction=0.01, min_top=5)) == list(range(999, 989, -1))
    assert len(top_features(gamma, fraction=0.01, min_top=50)) == 10  # capped at k


def test_spearman_matches_scipy_and_handles_constants():
    from scipy.stats import spearmanr

    rng = np.random.default_rng(0)
    a, b = rng.random(50), rng.random(50)
    assert spearman(a, b) == pytest.approx(spearmanr(a, b).statistic)
    assert spearman(a, a ** 3) == pytest.approx(1.0)
    assert np.isnan(spearman(a, np.ones(50)))


def test_bad_input(tmp_path: Path):
    from feature_complexity.analyses.dynamics import dynamics_stages
    from feature_complexity.config import RunConfig

    with pytest.raises(ValueError, match="--rank-by"):
        RunConfig(rank_by="relative").validate()
    with pytest.raises(ValueError, match="--top-fraction"):
        RunConfig(top_fraction=0).validate()
    with pytest.raises(FileNotFoundError, match="does not exist"):
        dynamics_stages(tmp_path / "nowhere", "small-resnet")
    torch = pytest.importorskip("torch")
    torch.save({"state_dict": {}, "step": 0}, tmp_path / "only.pt")
    with pytest.raises(ValueError, match="at least 2 checkpoints"):
        dynamics_stages(tmp_path, "small-resnet")


def test_figures_are_figures_with_the_correlations():
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure

    from feature_complexity.analyses.dynamics import (
        plot_complexity_importance_over_training,
        plot_mean_complexity,
        plot_temporal_decoding,
    )

    rng = np.random.default_rng(0)
    K = rng.random(40)
    fig = plot_mean_complexity([0, 0.1, 0.5, 1, 2, 15], [0.3, 0.5, 0.6, 0.6, 0.6, 0.6], [0.5, 0.4, 0.3, 0.3, 0.2, 0.2])
    assert isinstance(fig, Figure) and fig.axes[0].get_xscale() == "symlog"
    assert len(fig.axes[0].lines) == 2
    # labelled ticks never crowd (1, 2, 5 x 10^j, and the last epoch when far from them), every
    # checkpoint is a minor tick
    labels = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert labels == ["0", "0.1", "1", "2", "5", "10"]
    from feature_complexity.analyses.dynamics import _nice_ticks

    assert _nice_ticks(1, 40) == [1, 2, 5, 10, 20, 40] and _nice_ticks(1, 0.5) == [0.5]
    ticks = {*fig.axes[0].get_xticks(), *fig.axes[0].get_xticks(minor=True)}
    assert {0.1, 0.5, 1, 2, 15} <= ticks
    fig = plot_temporal_decoding(K ** 2, K)  # monotone: Spearman exactly 1
    assert isinstance(fig, Figure) and "= 1.00" in fig.axes[0].get_title()
    fig = plot_complexity_importance_over_training(K, K, K, -K, signed=True)
    assert [ax.get_title().split("= ")[-1] for ax in fig.axes] == ["1.00", "-1.00"]


# ------------------------------------------------------------------------------ end to end
def _small_run_config(**kw):
    from feature_complexity.config import RunConfig

    return RunConfig(**{"n_atoms_per_class": 2, "n_folds": 3, "batch_size": 160, "robustness_images": 0,
                        "evidence_features": 0, "ci_groups": 0, **kw})


@pytest.mark.slow
def test_end_to_end_on_generated_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """CLI train on the generated dataset, then the dynamics command: every output, A joined to
    the final features by id, and a rerun that recomputes no checkpoint."""
    pytest.importorskip("torch")
    import pandas as pd

    from feature_complexity.cli import main

    train_dir = tmp_path / "train"
    assert main(["train", "--model", "small-resnet", "--data", "trifeature", "--limit", "480", "--epochs", "2",
                 "--batch-size", "32", "--lr", "0.05", "--early-fractions", "0,0.5", "--out", str(train_dir),
                 "--quiet"]) == 0
    ckpts = sorted((train_dir / "training" / "checkpoints").glob("*.pt"))
    assert [p.name for p in ckpts] == ["step_0000000.pt", "step_0000008.pt", "step_0000015.pt", "step_0000030.pt"]
    out = tmp_path / "dyn"
    argv = ["dynamics", "--checkpoints", str(train_dir), "--data", "trifeature", "--limit", "320", "--data-seed",
            "1", "--atoms-per-class", "2", "--folds", "3", "--ci-groups", "0", "--robustness-images", "0",
            "--evidence-features", "0", "--no-report", "--out", str(out), "--quiet"]
    assert main(argv) == 0
    for name in ("dynamics.json", "dynamics/checkpoints.parquet", "dynamics/features.parquet",
                 "figures/dynamics_mean_complexity.png", "figures/dynamics_temporal_decoding.png",
                 "figures/dynamics_complexity_importance.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    ck = pd.read_parquet(out / "dynamics" / "checkpoints.parquet")
    np.testing.assert_allclose(ck["time"], [0, 8 / 15, 1, 2])
    assert ck["mean_complexity"].between(0, 1).all() and (ck["n_top"] == 5).all()
    assert ck["accuracy"].iloc[-1] > ck["accuracy"].iloc[0]  # the model learned something
    iv = np.load(out / "dynamics" / "iv.npy")
    feats = pd.read_parquet(out / "features.parquet")
    np.testing.assert_allclose(feats["A"], 1 - iv.mean(axis=0))  # A of the run's own features, by id
    np.testing.assert_allclose(ck["mean_complexity"].iloc[-1], feats["complexity"].mean())  # final = the run
    summary = json.loads((out / "dynamics.json").read_text())["summary"]
    assert summary["spearman_A_K"] == pytest.approx(spearman(feats["A"], feats["complexity"]))

    def no_pass(*a, **kw):
        raise AssertionError("a finished checkpoint was recomputed")

    monkeypatch.setattr("feature_complexity.activations.extract_activations", no_pass)
    assert main(argv) == 0
    pd.testing.assert_frame_equal(pd.read_parquet(out / "features.parquet"), feats)


def test_a_replaced_checkpoint_file_is_rescored(tmp_path: Path):
    """Checkpoints whose names collide are named by position (``ckpt_001``); replacing the middle
    file must rescore that position (its fingerprint is in the key), giving the fresh result."""
    torch = pytest.importorskip("torch")

    from feature_complexity.analyses.dynamics import dynamics_stages
    from feature_complexity.data import trifeature
    from feature_complexity.models.small_resnet import SmallResNet, small_spec
    from feature_complexity.pipeline import run_analysis
    from feature_complexity.stages import StaleRunError
    from feature_complexity.train import CheckpointInfo, load_weights

    def build():
        return small_spec(SmallResNet(widths=(8, 16), blocks_per_stage=1, num_classes=8))

    def save(path: Path, seed: int) -> Path:
        torch.manual_seed(seed)
        net = build().module
        with torch.no_grad():  # non-trivial blocks (bn2 starts at zero)
            for m in net.modules():
                if isinstance(m, torch.nn.BatchNorm2d):
                    m.weight.uniform_(0.5, 1.5)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(net.state_dict(), path)
        return path

    a, b, c = save(tmp_path / "a" / "w.pt", 1), save(tmp_path / "b" / "w.pt", 2), save(tmp_path / "c" / "w.pt", 3)
    final = save(tmp_path / "final.pt", 4)
    probe = trifeature(96, seed=1)
    spec = build()
    load_weights(spec, final)

    def run(middle: Path, out: Path, overwrite: bool = False):
        infos = [CheckpointInfo(a, 0.0, None), CheckpointInfo(middle, 1.0, None), CheckpointInfo(final, 2.0, None)]
        stages, prints = dynamics_stages(infos, build)
        return run_analysis(spec, probe, out, _small_run_config(n_atoms_per_class=1, batch_size=96, min_top=2),
                            extra_stages=stages, extra_fingerprints=prints, report=False, overwrite=overwrite,
                            progress=False)

    run(b, tmp_path / "dyn")
    with pytest.raises(StaleRunError, match="checkpoint/ckpt_001"):
        run(c, tmp_path / "dyn")
    replaced = run(c, tmp_path / "dyn", overwrite=True)
    assert replaced.status["checkpoint/ckpt_001"]["status"] == "computed"
    assert replaced.status["checkpoint/ckpt_000"]["status"] == "reused"
    fresh = run(c, tmp_path / "fresh")
    np.testing.assert_allclose(replaced["dynamics"].checkpoints["mean_complexity"],
                               fresh["dynamics"].checkpoints["mean_complexity"])
    np.testing.assert_allclose(replaced.features["A"], fresh.features["A"])
