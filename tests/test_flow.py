"""Residual flow: exact branch capture on every supported block type, planted teleport depths,
tables, summary, figure, run folder outputs and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from feature_complexity.analyses.cka import cka_with_features
from feature_complexity.analyses.flow import (
    complexity_groups,
    flow_scores,
    flow_summary,
    flow_table,
    plot_flow,
    skip_share,
    teleport_correlation,
    teleport_depth,
)


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """Tiny tensors on a shared 2-core machine: torch's thread pool costs 10-50x more than the
    arithmetic under contention. Restored afterwards so other test modules are unaffected."""
    torch = pytest.importorskip("torch")
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


# ---------------------------------------------------------------------- branch capture is exact
@pytest.mark.parametrize(
    "name,size",
    [
        ("resnet18", 64),  # torchvision BasicBlock, with 1x1-conv downsample in layer2..4.0
        ("resnet50", 64),  # torchvision Bottleneck, downsample in every layerX.0
        ("cifar-resnet20", 32),  # option-A shortcut (subsample and zero-pad) in layer2.0, layer3.0
        ("small-resnet", 32),  # the project's own demo ResNet
    ],
)
def test_branch_capture_reproduces_block_output(name: str, size: int) -> None:
    torch = pytest.importorskip("torch")
    try:
        from feature_complexity.models.hooks import capture
        from feature_complexity.models.registry import build_model
    except ImportError as err:  # pragma: no cover - only while the modules are being written
        pytest.skip(f"activations/models not importable yet: {err}")
    spec = build_model(name, seed=0)
    assert spec.branches, f"{name} should describe its residual branches"
    assert list(spec.branches) == list(spec.probe_layers)
    # random BN statistics so that every branch does something non-trivial in eval mode
    g = torch.Generator().manual_seed(1)
    for m in spec.module.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(0.1 * torch.randn(m.num_features, generator=g))
            m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=g))
    x = torch.randn(2, 3, size, size, generator=g)
    with capture(spec, branches=True, pool=False) as rec, torch.no_grad():
        spec.module.eval()(x)
    for block, br in spec.branches.items():
        post = br.post if br.post is not None else (lambda t: t)
        rebuilt = post(rec["skip"][block] + rec["main"][block])
        out = rec["layers"][block]
        assert rebuilt.shape == out.shape
        torch.testing.assert_close(rebuilt, out, atol=1e-5, rtol=0)
        # the main branch is a different tensor from the output (not a trivial capture)
        assert (rec["main"][block] - out).abs().max() > 1e-3
    # the blocks checked include the shape-changing ones (downsample / option-A shortcuts)
    first, last = spec.probe_layers[0], spec.probe_layers[-1]
    assert rec["layers"][first].shape != rec["layers"][last].shape


# ---------------------------------------------------------------------- teleport depth (pure)
def test_teleport_depth_rules() -> None:
    # blocks 0..3; columns: teleported from 2, never, always, nothing anywhere, dip at the end
    iv_out = np.array([
        [0.1, 0.1, 0.9, 0.0, 0.5],
        [0.8, 0.2, 0.9, 0.0, 0.5],
        [0.8, 0.3, 0.9, 0.0, 0.5],
        [0.8, 0.9, 0.9, 0.0, 0.9],
    ])
    iv_skip = np.array([
        [0.0, 0.0, 0.9, 0.0, 0.5],
        [0.1, 0.1, 0.9, 0.0, 0.5],
        [0.8, 0.2, 0.9, 0.0, 0.5],
        [0.75, 0.3, 0.85, 0.0, 0.5],
    ])
    depth = teleport_depth(iv_skip, iv_out, threshold=0.9)
    np.testing.assert_array_equal(depth, [2, 4, 0, 0, 4])
    assert depth.dtype == np.int64
    # a stricter threshold pushes the teleported feature to "never" (0.75 < 0.95 * 0.8)
    np.testing.assert_array_equal(teleport_depth(iv_skip, iv_out, threshold=0.95)[:3], [4, 4, 4])
    with pytest.raises(ValueError, match="threshold"):
        teleport_depth(iv_skip, iv_out, threshold=1.5)
    with pytest.raises(ValueError, match="n_blocks, k"):
        teleport_depth(iv_skip[:2], iv_out)


def test_skip_share_closed_form() -> None:
    iv_out = np.array([[0.2, 0.0, 0.5], [0.6, 0.0, 0.5]])
    iv_skip = np.array([[0.1, 0.0, 0.0], [0.5, 0.0, 0.25]])
    got = skip_share(iv_skip, iv_out)
    np.testing.assert_allclose(got[[0, 2]], [0.6 / 0.8, 0.25 / 1.0])
    assert np.isnan(got[1])  # nothing in any block output: no share to speak of


def test_teleport_depth_matches_brute_force() -> None:
    rng = np.random.default_rng(0)
    iv_out = rng.uniform(0, 1, size=(7, 200)) * (rng.uniform(size=(7, 200)) > 0.1)
    iv_skip = iv_out * rng.uniform(0.6, 1.2, size=(7, 200))
    got = teleport_depth(iv_skip, iv_out, threshold=0.9, eps=1e-3)
    for j in range(200):
        ok = [(iv_out[b, j] < 1e-3) or (iv_skip[b, j] >= 0.9 * iv_out[b, j]) for b in range(7)]
        want = 7
        for b in range(7):
            if all(ok[b:]):
                want = b
                break
        assert got[j] == want


# ---------------------------------------------------------------------- planted flow
def _planted(n: int = 600, n_blocks: int = 5, width: int = 6, seed: int = 0):
    """Identity-skip residual stack: skip_l = out_{l-1}, out_l = skip_l + main_l.

    z0 is written by the main branch of block 1 and then carried by the skip path (teleported
    from block 2); z1 is written only by the last block's main branch (never teleported).
    """
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 2))
    prev = 0.3 * rng.normal(size=(n, width))  # stem output
    layers, skip, main = {}, {}, {}
    for b in range(n_blocks):
        m = 0.3 * rng.normal(size=(n, width))
        if b == 1:
            m[:, 0] += z[:, 0]
        if b == n_blocks - 1:
            m[:, 1] += z[:, 1]
        name = f"block{b}"
        skip[name], main[name] = prev, m
        layers[name] = prev + m
        prev = layers[name]
    return layers, skip, main, z


def test_planted_teleport_depth_and_cka() -> None:
    layers, skip, main, z = _planted()
    res = flow_scores(layers, skip, main, z, measure="both", n_folds=5, seed=0)
    assert res.blocks == [f"block{b}" for b in range(5)]
    assert res.iv_skip.shape == res.cka_main.shape == (5, 2)
    np.testing.assert_array_equal(res.teleport_depth, [2, 5])
    # the skip path carries z0 from block 2 on, the main branches do not
    assert res.iv_skip[2:, 0].min() > 0.6 and res.iv_main[2:, 0].max() < 0.05
    assert res.cka_skip[2:, 0].min() > res.cka_main[2:, 0].max() + 0.3
    # z1 lives only in the last main branch and output
    assert res.iv_main[4, 1] > 0.6 and res.iv_skip[:, 1].max() < 0.05
    # the teleported feature is mostly skip-carried, the late one mostly not
    assert res.skip_share[0] > 0.7 and res.skip_share[1] < 0.1
    # CKA columns are exactly the batched CKA of the inputs
    np.testing.assert_allclose(res.cka_out[3], cka_with_features(layers["block3"], z))


def test_measure_selection_and_validation() -> None:
    layers, skip, main, z = _planted(n=60, n_blocks=3)
    only_cka = flow_scores(layers, skip, main, z, measure="cka")
    assert np.isnan(only_cka.iv_skip).all() and np.isfinite(only_cka.cka_skip).all()
    assert only_cka.teleport_depth is None
    with pytest.raises(ValueError, match="unknown measure"):
        flow_scores(layers, skip, main, z, measure="mi")
    with pytest.raises(ValueError, match="only one of the skip/main"):
        flow_scores(layers, skip, {"block0": main["block0"]}, z, measure="cka")
    with pytest.raises(ValueError, match="not among the layers"):
        flow_scores(layers, {**skip, "x": skip["block0"]}, {**main, "x": main["block0"]}, z)
    with pytest.raises(ValueError, match="capture_branches=True"):
        flow_scores(layers, {}, {}, z)
    with pytest.raises(ValueError, match="rows but Z has"):
        flow_scores(layers, skip, main, z[:10], measure="cka")


def test_table_summary_and_groups() -> None:
    layers, skip, main, z = _planted(n=200, n_blocks=4)
    Z = np.column_stack([z, z[:, :1] + 0.1 * z[:, 1:]])  # k = 3
    res = flow_scores(layers, skip, main, Z, measure="both", features=np.array([10, 11, 12]))
    table = flow_table(res)
    assert list(table.columns) == ["feature", "block", "block_index", "cka_skip", "cka_main", "cka_out",
                                   "iv_skip", "iv_main", "iv_out"]
    assert len(table) == 4 * 3
    row = table[(table.feature == 11) & (table.block == "block2")].iloc[0]
    assert row.block_index == 2 and row.iv_skip == res.iv_skip[2, 1] and row.cka_main == res.cka_main[2, 1]

    K = np.array([0.2, 0.9, 0.5])
    groups = complexity_groups(K)
    assert groups["simple"].tolist() == [0] and groups["complex"].tolist() == [1]
    summary = flow_summary(res, K)
    assert summary["groups"]["simple"]["cka_skip"] == pytest.approx(res.cka_skip[:, 0].tolist())
    assert summary["groups"]["complex"]["mean_teleport_depth"] == res.teleport_depth[1]
    rho, p = teleport_correlation(res.teleport_depth, K)
    assert summary["teleport_spearman"]["rho"] == pytest.approx(rho)
    json.dumps(summary)  # JSON-able as is


def test_teleport_correlation_against_scipy_and_constant() -> None:
    from scipy.stats import spearmanr

    rng = np.random.default_rng(3)
    depth = rng.integers(0, 6, 50)
    K = depth + rng.normal(scale=2.0, size=50)
    rho, p = teleport_correlation(depth, K)
    ref = spearmanr(depth, K)
    assert rho == pytest.approx(ref[0]) and p == pytest.approx(ref[1])
    assert np.isnan(teleport_correlation(np.zeros(10), K[:10])[0])


def test_plot_flow_returns_a_2x2_figure() -> None:
    layers, skip, main, z = _planted(n=100, n_blocks=3)
    res = flow_scores(layers, skip, main, np.column_stack([z, z[:, ::-1]]), measure="cka")
    fig = plot_flow(res, np.array([0.1, 0.9, 0.2, 0.8]))
    assert len(fig.axes) == 4
    # the CKA row draws skip, main and output for each group; the I_V row says "not computed"
    assert len(fig.axes[0].lines) == 3
    assert any("not computed" in t.get_text() for t in fig.axes[2].texts)
    # each plotted curve is the group mean: 4 features split 2/1/1, the simplest = K 0.1 and 0.2
    np.testing.assert_allclose(fig.axes[0].lines[0].get_ydata(), res.cka_skip[:, [0, 2]].mean(axis=1))
    np.testing.assert_allclose(fig.axes[1].lines[1].get_ydata(), res.cka_main[:, 1])  # K = 0.9


# ---------------------------------------------------------------------- the stage and the CLI
def test_flow_stage_writes_outputs_and_iv_out_is_the_engine_on_the_block_outputs(tmp_path: Path, tiny_spec,
                                                                                tiny_images) -> None:
    """The stage's ``iv_out`` must equal an independent engine call on the stored block outputs
    and codes with the run's folds (not the stage's own numbers read back)."""
    import pandas as pd

    from feature_complexity.complexity import complexity
    from feature_complexity.pipeline import RunConfig, run_analysis

    cfg = RunConfig(n_atoms_per_class=2, n_folds=3, seed=4, robustness_images=0, evidence_features=0, ci_groups=0)
    result = run_analysis(tiny_spec, tiny_images, tmp_path / "run", cfg, report=False, progress=False)
    res = result["flow"]
    acts, Z = result["activations"], np.asarray(result["codes"])
    ref = complexity({n: np.asarray(acts.layers[n]) for n in tiny_spec.probe_layers}, Z, n_folds=3, seed=4,
                     confidence=None)
    np.testing.assert_allclose(res.iv_out, ref.per_layer, atol=1e-9)
    skip_ref = complexity({n: np.asarray(acts.skip[n]) for n in tiny_spec.probe_layers}, Z, n_folds=3, seed=4,
                          confidence=None)
    np.testing.assert_allclose(res.iv_skip, skip_ref.per_layer, atol=1e-9)
    table = pd.read_parquet(tmp_path / "run" / "flow.parquet")
    assert len(table) == res.n_blocks * res.n_features
    feats = pd.read_parquet(tmp_path / "run" / "features.parquet")
    np.testing.assert_array_equal(feats["teleport_depth"], res.teleport_depth)
    summary = json.loads((tmp_path / "run" / "flow.json").read_text())
    assert sum(summary["teleport_depth_counts"]) == res.n_features


def test_flow_summary_group_curves_against_a_loop() -> None:
    """Each group's per-block curve is the mean over the group's features, ignoring NaN (a sum,
    a plain mean or the wrong group would differ)."""
    rng = np.random.default_rng(5)
    nb, k = 4, 9
    M = {name: rng.uniform(size=(nb, k)) for name in ("cka_skip", "cka_main", "cka_out", "iv_skip", "iv_main",
                                                      "iv_out")}
    M["cka_skip"][1, 0] = np.nan
    from feature_complexity.analyses.flow import FlowResult

    res = FlowResult(blocks=[f"b{i}" for i in range(nb)], teleport_depth=rng.integers(0, nb + 1, k), measure="both",
                     threshold=0.9, debiased=False, features=np.arange(k), skip_share=rng.uniform(size=k), **M)
    K = rng.uniform(size=k)
    summary = flow_summary(res, K)
    order = np.argsort(K, kind="stable")
    thirds = {"simple": order[:3], "middle": order[3:6], "complex": order[6:]}
    for group, idx in thirds.items():
        for name, mat in M.items():
            want = [float(np.mean([mat[b, i] for i in idx if np.isfinite(mat[b, i])])) for b in range(nb)]
            np.testing.assert_allclose(summary["groups"][group][name], want, rtol=1e-12, err_msg=f"{group} {name}")
        assert summary["groups"][group]["mean_teleport_depth"] == pytest.approx(res.teleport_depth[idx].mean())
        assert summary["groups"][group]["mean_skip_share"] == pytest.approx(res.skip_share[idx].mean())


def test_cli_flow_reruns_the_stage_with_another_threshold(tmp_path: Path, tiny_spec, tiny_images, capsys) -> None:
    from feature_complexity.cli import main
    from feature_complexity.pipeline import RunConfig, run_analysis

    cfg = RunConfig(n_atoms_per_class=2, n_folds=3, robustness_images=0, evidence_features=0, ci_groups=0)
    run_analysis(tiny_spec, tiny_images, tmp_path / "run", cfg, report=False, progress=False)
    assert main(["flow", str(tmp_path / "run"), "--threshold", "0.5", "--quiet"]) == 0
    assert json.loads((tmp_path / "run" / "flow.json").read_text())["threshold"] == 0.5
    assert "teleport depth vs complexity" in capsys.readouterr().out
    assert main(["flow", str(tmp_path / "missing")]) == 2
    assert "manifest.json not found" in capsys.readouterr().err


def test_teleport_depth_refuses_nan_in_either_input() -> None:
    """NaN in only one of the two inputs (I_V not computed for a branch) is an error too."""
    ok = np.full((3, 2), 0.5)
    bad = ok.copy()
    bad[1, 0] = np.nan
    for iv_skip, iv_out in ((bad, ok), (ok, bad)):
        with pytest.raises(ValueError, match="contain NaN"):
            teleport_depth(iv_skip, iv_out)
