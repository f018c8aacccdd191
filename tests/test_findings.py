"""Findings: statistics against SciPy, interval coverage on planted cases, the verdict rule,
permutation nulls under the null, JSON output and the forest plot."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats

from feature_complexity.analyses import findings as fd
from feature_complexity.analyses.findings import (
    CLAIMS,
    CheckpointColumns,
    FeatureColumns,
    findings,
    percentile_interval,
    verdict,
)

CLAIM_IDS = ["spectrum", "k_vs_importance", "k_vs_abs_importance", "skip_share_vs_k",
             "teleport_depth_vs_k", "redundancy_vs_k", "robustness_vs_k", "hoyer_vs_k",
             "purity_vs_k", "support_tail", "a_vs_k", "mean_k_rises", "sedimentation",
             "k_vs_importance_first_epoch"]
REQUIRED_KEYS = {"claim", "statistic", "value", "ci_low", "ci_high", "control", "control_value",
                 "control_ci_low", "control_ci_high", "verdict", "expected", "n", "p_value",
                 "null_low", "null_high", "reason"}


def planted_pair(rng: np.random.Generator, n: int, r: float) -> tuple[np.ndarray, np.ndarray]:
    """A bivariate normal sample with Pearson correlation ``r``."""
    x = rng.normal(size=n)
    return x, r * x + math.sqrt(1 - r * r) * rng.normal(size=n)


def true_spearman(r: float) -> float:
    """Population Spearman ρ of a bivariate normal with Pearson ``r`` (Pearson 1907)."""
    return 6 / math.pi * math.asin(r / 2)


def feature_columns(rng: np.random.Generator, name: str, k: int = 400, r_importance: float = -0.6,
                    r_skip: float = -0.6) -> FeatureColumns:
    K = rng.uniform(size=k)
    z = stats.norm.ppf(stats.rankdata(K) / (k + 1))
    noise = lambda r: r * z + math.sqrt(1 - r * r) * rng.normal(size=k)  # noqa: E731
    return FeatureColumns(
        name=name, complexity=K, importance=noise(r_importance), skip_share=noise(r_skip),
        teleport_depth=rng.integers(0, 9, size=k), redundancy=noise(-0.3), sensitivity=noise(0.3),
        hoyer=rng.uniform(size=k), cluster_purity=rng.uniform(size=30),
        cluster_complexity=rng.uniform(size=30),
        support_correct_all=(rng.uniform(size=300) < 0.9).astype(float),
        support_correct_head=(rng.uniform(size=300) < 0.7).astype(float),
        n_blocks=9, teleport_threshold=0.9,
    )


def checkpoint_columns(rng: np.random.Generator, T: int = 6, k: int = 120,
                       top_drift: float = -0.1) -> CheckpointColumns:
    """Mean K rises by 0.05 per checkpoint; the most important features' K drifts by
    ``top_drift`` per checkpoint relative to the rest."""
    Ks, gammas = [], []
    for t in range(T):
        gamma = rng.normal(size=k)
        K = rng.normal(0.3 + 0.05 * t, 0.1, size=k)
        top = np.argsort(-np.abs(gamma))[:10]
        K[top] += top_drift * t
        Ks.append(K), gammas.append(gamma)
    A, _ = planted_pair(rng, k, 0.0)
    return CheckpointColumns(times=np.arange(1.0, T + 1), complexity=Ks, importance=gammas,
                             temporal_score=Ks[-1] + 0.1 * A)


@pytest.fixture(scope="module")
def run_findings() -> dict[str, fd.Finding]:
    rng = np.random.default_rng(0)
    trained = feature_columns(rng, "trained")
    control = feature_columns(rng, "random-init", r_importance=0.0, r_skip=-0.6)
    out = findings(trained, control, checkpoints=checkpoint_columns(rng), n_bootstrap=400,
                   n_permutations=400, seed=3, top_fraction=0.05)
    return {f.claim: f for f in out} | {"_inputs": (trained, control)}  # type: ignore[dict-item]


# ------------------------------------------------------------------------------ catalogue, output
def test_catalogue_names_are_stable():
    assert list(CLAIMS) == CLAIM_IDS
    assert {c.direction for c in CLAIMS.values()} == {-1, 0, 1}
    assert CLAIMS["hoyer_vs_k"].direction == 0 and CLAIMS["k_vs_importance_first_epoch"].direction == 0
    assert CLAIMS["sedimentation"].direction == -1 and CLAIMS["a_vs_k"].direction == 1


def test_every_claim_reported_json_safe(run_findings):
    rows = [run_findings[c].to_dict() for c in CLAIM_IDS]
    for row in rows:
        assert REQUIRED_KEYS <= set(row)
        assert row["verdict"] in fd.VERDICTS
    text = json.dumps(rows, allow_nan=False)  # raises on NaN
    assert json.loads(text)[0]["claim"] == "spectrum"


def test_missing_column_gives_reason_and_null_fields():
    f = findings(FeatureColumns(complexity=np.linspace(0, 1, 50)), claims=["redundancy_vs_k"],
                 n_bootstrap=100)[0].to_dict()
    assert f["verdict"] == "inconclusive"
    assert "redundancy" in f["reason"] and "did not run" in f["reason"]
    assert f["value"] is None and f["ci_low"] is None and f["p_value"] is None


def test_constant_teleport_depth_reason():
    k = 60
    cols = FeatureColumns(complexity=np.linspace(0, 1, k), teleport_depth=np.full(k, 9), n_blocks=9,
                          teleport_threshold=0.9)
    f = findings(cols, claims=["teleport_depth_vs_k"], n_bootstrap=100)[0]
    assert f.verdict == "inconclusive"
    assert f.reason == ("teleport depth is constant: every feature is 'never' (depth 9, the number "
                        "of blocks) at threshold 0.9")


# ------------------------------------------------------------------------------ statistics vs SciPy
def test_statistics_match_scipy(run_findings):
    trained, _ = run_findings["_inputs"]
    K, G = trained.complexity, trained.importance
    close = lambda claim, ref: pytest.approx(ref, abs=1e-12) == run_findings[claim].value  # noqa: E731
    assert close("k_vs_importance", stats.spearmanr(K, G).statistic)
    assert close("k_vs_abs_importance", stats.spearmanr(K, np.abs(G)).statistic)
    assert close("skip_share_vs_k", stats.spearmanr(trained.skip_share, K).statistic)
    assert close("teleport_depth_vs_k", stats.spearmanr(trained.teleport_depth, K).statistic)
    assert close("robustness_vs_k", stats.spearmanr(trained.sensitivity, K).statistic)
    assert close("purity_vs_k", stats.spearmanr(trained.cluster_purity, trained.cluster_complexity).statistic)
    assert close("spectrum", stats.iqr(K))
    assert close("support_tail", trained.support_correct_all.mean() - trained.support_correct_head.mean())
    assert run_findings["k_vs_importance"].n == len(K)


def test_nan_pairs_are_dropped():
    rng = np.random.default_rng(1)
    x, y = planted_pair(rng, 80, 0.5)
    x[:7] = np.nan
    f = findings(FeatureColumns(complexity=y, skip_share=x), claims=["skip_share_vs_k"], n_bootstrap=100)[0]
    assert f.n == 73
    assert f.value == pytest.approx(stats.spearmanr(x[7:], y[7:]).statistic, abs=1e-12)


def test_dynamics_statistics_match_reference():
    rng = np.random.default_rng(2)
    ck = checkpoint_columns(rng, T=5, k=200)
    out = {f.claim: f for f in findings(checkpoints=ck, n_bootstrap=100, top_fraction=0.05, min_top=5)}
    assert out["mean_k_rises"].value == pytest.approx(ck.complexity[-1].mean() - ck.complexity[0].mean())
    top_means = [K[np.argsort(-np.abs(G))[:10]].mean() for K, G in zip(ck.complexity, ck.importance)]
    s = (ck.times - ck.times[0]) / (ck.times[-1] - ck.times[0])
    assert out["sedimentation"].value == pytest.approx(stats.linregress(s, top_means).slope, abs=1e-12)
    assert out["a_vs_k"].value == pytest.approx(
        stats.spearmanr(ck.temporal_score, ck.complexity[-1]).statistic, abs=1e-12)
    assert out["k_vs_importance_first_epoch"].value == pytest.approx(
        stats.spearmanr(ck.complexity[0], ck.importance[0]).statistic, abs=1e-12)


@pytest.mark.parametrize("ties", [False, True])
def test_bootstrap_spearman_equals_scipy_on_each_resample(ties):
    rng = np.random.default_rng(4)
    x, y = planted_pair(rng, 40, 0.4)
    if ties:  # ties within the sample as well as the resample's copies
        x, y = np.round(x), np.round(y * 2) / 2
    reps = fd.bootstrap_spearman(x, y, 50, np.random.default_rng(9))
    idx = np.random.default_rng(9).integers(0, 40, size=(50, 40))  # the same draws (one block)
    ref = [stats.spearmanr(x[i], y[i]).statistic for i in idx]
    np.testing.assert_allclose(reps, ref, atol=1e-12)


def test_permutation_spearman_and_iqr_equal_scipy_on_each_draw():
    rng = np.random.default_rng(5)
    x, y = planted_pair(rng, 30, 0.3)
    null = fd.permutation_spearman(x, y, 20, np.random.default_rng(1))
    perms = np.random.default_rng(1).permuted(np.tile(np.arange(30), (20, 1)), axis=1)
    np.testing.assert_allclose(null, [stats.spearmanr(x, y[p]).statistic for p in perms], atol=1e-12)
    reps = fd.bootstrap_iqr(x, 20, np.random.default_rng(2))
    idx = np.random.default_rng(2).integers(0, 30, size=(20, 30))
    np.testing.assert_allclose(reps, [stats.iqr(x[i]) for i in idx], atol=1e-12)


def test_percentile_interval_quantiles():
    reps = np.arange(1, 1001, dtype=float)
    lo, hi = percentile_interval(reps, 0.95)
    assert (lo, hi) == pytest.approx(tuple(np.percentile(reps, [2.5, 97.5])))
    assert (lo, hi) == pytest.approx((25.975, 975.025))
    assert percentile_interval(reps, 0.9) == pytest.approx((50.95, 950.05))
    with_nan = np.r_[reps, [np.nan] * 200]  # 17 % invalid: no interval
    assert all(math.isnan(v) for v in percentile_interval(with_nan))


# ------------------------------------------------------------------------------ coverage
def coverage(intervals: list[tuple[float, float]], truth: float) -> float:
    lo, hi = np.array(intervals).T
    assert np.all(lo <= hi)
    return float(np.mean((lo <= truth) & (truth <= hi)))


def test_spearman_interval_coverage():
    rng, truth = np.random.default_rng(10), true_spearman(-0.6)
    cis = []
    for _ in range(300):
        x, y = planted_pair(rng, 80, -0.6)
        cis.append(percentile_interval(fd.bootstrap_spearman(x, y, 400, rng)))
    cov = coverage(cis, truth)
    print(f"Spearman coverage {cov:.3f}")
    assert 0.9 <= cov <= 0.99


def test_difference_interval_coverage():
    """trained − control for two independent planted correlations (what decides 'reproduced')."""
    rng = np.random.default_rng(11)
    truth = true_spearman(-0.5) - true_spearman(0.2)
    cis = []
    for _ in range(250):
        a = fd.bootstrap_spearman(*planted_pair(rng, 60, -0.5), 400, rng)
        b = fd.bootstrap_spearman(*planted_pair(rng, 60, 0.2), 400, rng)
        cis.append(percentile_interval(a - b))
    cov = coverage(cis, truth)
    print(f"difference coverage {cov:.3f}")
    assert 0.9 <= cov <= 0.99


def test_iqr_and_mean_difference_coverage():
    rng = np.random.default_rng(12)
    iqr_truth = stats.norm.ppf(0.75) - stats.norm.ppf(0.25)
    iqr_cis, pair_cis, two_cis = [], [], []
    for _ in range(200):
        iqr_cis.append(percentile_interval(fd.bootstrap_iqr(rng.normal(size=200), 300, rng)))
        a, b = (rng.uniform(size=200) < 0.8).astype(float), (rng.uniform(size=200) < 0.7).astype(float)
        pair_cis.append(percentile_interval(fd.bootstrap_paired_difference(a, b, 300, rng)))
        first, last = rng.normal(0.3, 0.1, 80), rng.normal(0.35, 0.1, 100)
        two_cis.append(percentile_interval(fd.bootstrap_mean_difference(first, last, 300, rng)))
    covs = coverage(iqr_cis, iqr_truth), coverage(pair_cis, 0.1), coverage(two_cis, 0.05)
    print("IQR, paired, two-sample coverage", covs)
    assert all(0.9 <= c <= 0.99 for c in covs)


@pytest.mark.parametrize("n_top", [5, 20])
def test_top_trend_interval_coverage(n_top):
    """The top group's mean K over 5 checkpoints with a planted slope; 5 members is the top
    group of a 100-feature run (the n/(n-1) spread keeps the interval from being too narrow)."""
    rng = np.random.default_rng(13 + n_top)
    times, mu = np.arange(5.0), 0.5 - 0.05 * np.arange(5.0)
    truth = fd.trend_slope(times, mu)
    cis = [percentile_interval(fd.bootstrap_trend(times, [rng.normal(m, 0.1, n_top) for m in mu], 400, rng))
           for _ in range(400)]
    cov = coverage(cis, truth)
    print(f"top-group trend coverage (n_top={n_top}) {cov:.3f}")
    assert 0.9 <= cov <= 0.99


# ------------------------------------------------------------------------------ permutation nulls
def test_permutation_p_values_uniform_under_null():
    rng = np.random.default_rng(14)
    p_rho, p_flip, p_two = [], [], []
    for _ in range(300):
        x, y = planted_pair(rng, 30, 0.0)
        p_rho.append(fd.permutation_p_value(stats.spearmanr(x, y).statistic,
                                            fd.permutation_spearman(x, y, 199, rng)))
        a, b = rng.exponential(size=40), rng.exponential(size=40)
        p_flip.append(fd.permutation_p_value(np.mean(a - b), fd.signflip_paired_difference(a, b, 199, rng)))
        f, g = rng.normal(size=25), rng.normal(size=35)
        p_two.append(fd.permutation_p_value(g.mean() - f.mean(),
                                            fd.permutation_mean_difference(f, g, 199, rng)))
    for name, p in (("spearman", p_rho), ("sign flip", p_flip), ("two-sample", p_two)):
        p = np.asarray(p)
        print(name, "P(p<=0.05) =", np.mean(p <= 0.05), "KS p =", stats.kstest(p, "uniform").pvalue)
        assert 0.015 <= np.mean(p <= 0.05) <= 0.09
        assert 0.4 <= np.mean(p <= 0.5) <= 0.6
    # on 0/1 data (the support claim) the sign-flip p-value is discrete: valid, i.e. conservative
    p01 = []
    for _ in range(300):
        a, b = (rng.uniform(size=60) < 0.7).astype(float), (rng.uniform(size=60) < 0.7).astype(float)
        p01.append(fd.permutation_p_value(np.mean(a - b), fd.signflip_paired_difference(a, b, 199, rng)))
    assert np.mean(np.asarray(p01) <= 0.05) <= 0.07
    # under a real effect the p-value is small
    x, y = planted_pair(rng, 100, 0.6)
    null = fd.permutation_spearman(x, y, 199, rng)
    assert fd.permutation_p_value(stats.spearmanr(x, y).statistic, null) == 1 / 200


def test_spearman_p_value_ks_uniform():
    rng = np.random.default_rng(15)
    ps = [fd.permutation_p_value(stats.spearmanr(*xy).statistic, fd.permutation_spearman(*xy, 299, rng))
          for xy in (planted_pair(rng, 25, 0.0) for _ in range(250))]
    assert stats.kstest(ps, "uniform").pvalue > 0.01


# ------------------------------------------------------------------------------ the verdict rule
@pytest.mark.parametrize("claim, ci, diff, control, expected", [
    ("k_vs_importance", (-0.8, -0.7), (-0.9, -0.8), "random-init", "reproduced"),
    ("k_vs_importance", (-0.8, -0.7), (-0.1, 0.05), "random-init", "not_specific_to_training"),
    ("skip_share_vs_k", (-0.6, -0.5), (0.1, 0.2), "random-init", "not_specific_to_training"),
    ("k_vs_importance", (0.2, 0.4), (0.3, 0.5), "random-init", "not_reproduced"),
    ("k_vs_importance", (-0.1, 0.05), (-0.2, 0.1), "random-init", "inconclusive"),
    ("k_vs_importance", (-0.8, -0.7), None, None, "inconclusive"),
    ("k_vs_importance", (-0.8, -0.7), (math.nan, math.nan), "random-init", "inconclusive"),
    ("k_vs_importance", (math.nan, math.nan), None, None, "inconclusive"),
    ("teleport_depth_vs_k", (0.2, 0.3), (0.1, 0.2), "random-init", "reproduced"),
    ("mean_k_rises", (0.01, 0.05), None, None, "reproduced"),
    ("sedimentation", (0.01, 0.05), None, None, "not_reproduced"),
    ("sedimentation", (-0.05, 0.01), None, None, "inconclusive"),
    ("hoyer_vs_k", (-0.1, 0.15), None, None, "reproduced"),
    ("hoyer_vs_k", (0.25, 0.4), None, None, "not_reproduced"),
    ("hoyer_vs_k", (0.1, 0.3), None, None, "inconclusive"),
    ("hoyer_vs_k", (-0.4, -0.25), None, None, "not_reproduced"),
    ("hoyer_vs_k", (-0.3, 0.1), None, None, "inconclusive"),
    ("k_vs_importance_first_epoch", (-0.19, 0.19), (-0.9, -0.5), "random-init", "reproduced"),
])
def test_verdict_rule(claim, ci, diff, control, expected):
    label, reason = verdict(claim, ci, difference_ci=diff, control=control, band=0.2)
    assert label == expected
    assert reason


def test_no_control_reason_says_why():
    label, reason = verdict("k_vs_importance", (-0.8, -0.7))
    assert label == "inconclusive" and "no control" in reason


def test_verdicts_end_to_end_on_planted_runs():
    """The motivating case: Spearman(K, Γ) strong only after training, the skip share equally
    strong at random initialisation; with no effect and with the wrong sign."""
    rng = np.random.default_rng(16)
    trained = feature_columns(rng, "trained", k=400, r_importance=-0.7, r_skip=-0.5)
    control = feature_columns(rng, "random-init", k=400, r_importance=0.0, r_skip=-0.6)
    wrong = feature_columns(rng, "trained", k=400, r_importance=0.5, r_skip=0.0)
    kw = dict(claims=["k_vs_importance", "skip_share_vs_k"], n_bootstrap=300, n_permutations=200)
    got = {f.claim: f for f in findings(trained, control, **kw)}
    assert got["k_vs_importance"].verdict == "reproduced"
    assert got["skip_share_vs_k"].verdict == "not_specific_to_training"
    assert got["k_vs_importance"].control == "random-init"
    assert got["k_vs_importance"].difference_ci_high < 0
    bad = {f.claim: f for f in findings(wrong, control, **kw)}
    assert bad["k_vs_importance"].verdict == "not_reproduced"
    assert bad["skip_share_vs_k"].verdict == "inconclusive"
    alone = {f.claim: f for f in findings(trained, **kw)}
    assert alone["k_vs_importance"].verdict == "inconclusive"
    assert alone["k_vs_importance"].control is None and alone["k_vs_importance"].p_value == 1 / 201


def test_planted_dynamics_verdicts():
    rng = np.random.default_rng(17)
    out = {f.claim: f for f in findings(checkpoints=checkpoint_columns(rng, T=6, k=300),
                                        n_bootstrap=300, n_permutations=300, top_fraction=10 / 300)}
    assert out["mean_k_rises"].verdict == "reproduced"
    assert out["sedimentation"].verdict == "reproduced"  # top group drifts −0.1 + 0.05 per step
    assert out["k_vs_importance_first_epoch"].verdict in ("reproduced", "inconclusive")
    assert out["a_vs_k"].verdict == "inconclusive" and "no control" in out["a_vs_k"].reason


# ------------------------------------------------------------------------------ seeds, validation
def test_seeded_and_independent_of_other_claims():
    rng = np.random.default_rng(18)
    cols = feature_columns(rng, "trained", k=100)
    one = findings(cols, claims=["k_vs_importance"], n_bootstrap=200, seed=5)[0]
    again = [f for f in findings(cols, n_bootstrap=200, seed=5) if f.claim == "k_vs_importance"][0]
    other = findings(cols, claims=["k_vs_importance"], n_bootstrap=200, seed=6)[0]
    assert one == again
    assert (one.ci_low, one.ci_high) != (other.ci_low, other.ci_high)


def test_clear_errors():
    with pytest.raises(ValueError, match="one length"):
        FeatureColumns(complexity=np.zeros(5), importance=np.zeros(4))
    with pytest.raises(ValueError, match="0/1"):
        FeatureColumns(support_correct_all=[0, 1, 2], support_correct_head=[0, 1, 1])
    with pytest.raises(ValueError, match="increase"):
        CheckpointColumns(times=[2, 1], complexity=[[0.1], [0.2]], importance=[[1.0], [1.0]])
    with pytest.raises(ValueError, match="unknown claims"):
        findings(FeatureColumns(), claims=["k_vs_gamma"])
    with pytest.raises(ValueError, match="n_bootstrap"):
        findings(FeatureColumns(), n_bootstrap=10)
    with pytest.raises(ValueError, match="1-D"):
        FeatureColumns(complexity=np.zeros((3, 2)))


def test_from_columns_takes_named_columns():
    table = {"complexity": np.linspace(0, 1, 10), "importance": np.arange(10.0), "feature": np.arange(10)}
    cols = FeatureColumns.from_columns(table, name="trained", n_blocks=9)
    assert cols.importance is not None and cols.skip_share is None and cols.n_blocks == 9


# ------------------------------------------------------------------------------ figure
def test_forest_plot(run_findings):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.figure import Figure

    rows = [json.loads(json.dumps(run_findings[c].to_dict())) for c in CLAIM_IDS]  # as read back
    fig = fd.plot_findings(rows, title="findings")
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    assert ax.get_title() == "findings" and ax.get_xlabel() and ax.get_ylabel()
    assert [t.get_text().split()[0] for t in ax.get_yticklabels()] == CLAIM_IDS[::-1]
    plt.close(fig)
    with pytest.raises(ValueError, match="no findings"):
        fd.plot_findings([])
