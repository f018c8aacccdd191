"""Findings: the paper's checkable claims, each with an interval, a control and a verdict.

A run's correlations alone cannot tell a property the model *learned* from a property of the
*measurement*: on a randomly initialised CIFAR ResNet-20 the skip share correlates with ``K``
as strongly as in the trained network, while Spearman(``K``, ``Γ``) is about zero at random
initialisation and strongly negative after training. This module states each claim of the paper
(``paper-method.md`` §8) once, in :data:`CLAIMS`, and turns a run's columns into one
:class:`Finding` per claim:

- the statistic on the trained network's units (features, meta-feature clusters, images, or
  each checkpoint's features) and its percentile-bootstrap interval (units resampled with
  replacement; seeded; vectorised);
- the same statistic and interval on a **control** (the same architecture at random
  initialisation, passed in as a second set of columns), and the interval of the difference
  trained − control (the two bootstraps are independent);
- where it applies, a **permutation null** (the second column shuffled across units, the two
  conditions of an image swapped, the checkpoint labels shuffled): its central range at the same
  level and a two-sided p-value ``(1 + #{|null| >= |observed|}) / (n_permutations + 1)``;
- a **verdict** (:func:`verdict`):

  1. *inconclusive* when the statistic cannot be computed (a missing or constant column, fewer
     than 5 units, a degenerate bootstrap); the ``reason`` says which.
  2. Directional claims (``expected`` positive or negative; "no effect" value 0):
     the interval contains 0 → *inconclusive*; it lies wholly on the wrong side →
     *not_reproduced*; it lies wholly on the expected side → for a claim that is itself a
     contrast over training (``mean_k_rises``, ``sedimentation``: the same measurement at two
     training times) *reproduced*; otherwise the control decides: the interval of trained −
     control lies wholly on the expected side → *reproduced*, else (it contains 0, or the
     control shows the effect more strongly) → *not_specific_to_training*; without a control,
     or with a control on which the statistic cannot be computed → *inconclusive* (an effect
     that is not compared with an untrained network cannot be told from the measurement's own).
  3. "No relation" claims (``hoyer_vs_k``, ``k_vs_importance_first_epoch``): the interval lies
     inside the equivalence band ``(-band, band)`` (default 0.2) → *reproduced*; it lies wholly
     outside (``ci_low >= band`` or ``ci_high <= -band``) → *not_reproduced*; otherwise
     *inconclusive*. The control is reported but does not enter: it guards against an effect the
     measurement creates, and a "no relation" claim asserts no effect; a measurement too noisy
     to see one gives a wide interval, which is *inconclusive*, not *reproduced*.

Notation: ``K`` complexity, ``Γ`` signed importance, ``A`` temporal decoding score. Claims that
need a column the run did not compute come back *inconclusive* with a reason, so a report always
lists every claim.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from .dynamics import top_features

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "VERDICTS",
    "Claim",
    "CLAIMS",
    "FeatureColumns",
    "CheckpointColumns",
    "Finding",
    "findings",
    "verdict",
    "percentile_interval",
    "permutation_p_value",
    "bootstrap_spearman",
    "permutation_spearman",
    "bootstrap_iqr",
    "bootstrap_paired_difference",
    "signflip_paired_difference",
    "bootstrap_mean_difference",
    "permutation_mean_difference",
    "bootstrap_trend",
    "trend_slope",
    "plot_findings",
]

VERDICTS = ("reproduced", "not_reproduced", "not_specific_to_training", "inconclusive")
#: fewer units than this: a rank correlation or its bootstrap means nothing
MIN_UNITS = 5
#: elements per vectorised block (bounds the memory of a bootstrap at ~10 arrays of 8 MB)
_BLOCK = 1 << 20
#: at least this share of bootstrap replicates must be finite for an interval to be reported
_MIN_VALID = 0.9


# ---------------------------------------------------------------------------------- the catalogue
@dataclass(frozen=True)
class Claim:
    """One checkable claim of the paper.

    Attributes:
        id: stable identifier (the JSON ``claim``).
        statistic: what is computed, in words.
        paper: what the paper says (``paper-method.md`` §8).
        direction: ``+1`` expected positive, ``-1`` expected negative, ``0`` "no relation".
        unit: what the bootstrap resamples.
        source: ``"run"`` (a :class:`FeatureColumns`) or ``"dynamics"`` (a
            :class:`CheckpointColumns`).
        self_controlled: the statistic is itself a contrast over training, so it needs no
            untrained control to be specific to training.
        permutation: what the permutation null shuffles, or ``None`` when none applies.
    """

    id: str
    statistic: str
    paper: str
    direction: int
    unit: str
    source: str = "run"
    self_controlled: bool = False
    permutation: str | None = None

    @property
    def expected(self) -> str:
        """The expectation in words (``"positive"``, ``"negative"``, ``"none"``)."""
        return {1: "positive", -1: "negative", 0: "none"}[self.direction]


_C = Claim
CLAIMS: dict[str, Claim] = {c.id: c for c in (
    _C("spectrum", "interquartile range of K", "features span a spectrum from simple to complex "
       "(K generally in [0, 1])", +1, "features"),
    _C("k_vs_importance", "Spearman(K, Γ)", "important features are simple (clear negative "
       "relation at the end of training)", -1, "features", permutation="Γ across features"),
    _C("k_vs_abs_importance", "Spearman(K, |Γ|)", "features with a large |Γ| are simple", -1,
       "features", permutation="|Γ| across features"),
    _C("skip_share_vs_k", "Spearman(skip share, K)", "simple features are carried by the skip "
       "branches (teleported)", -1, "features", permutation="skip share across features"),
    _C("teleport_depth_vs_k", "Spearman(teleport depth, K)", "complex features are teleported "
       "later, or never", +1, "features", permutation="teleport depth across features"),
    _C("redundancy_vs_k", "Spearman(redundancy, K)", "complex features are less redundant", -1,
       "features", permutation="redundancy across features"),
    _C("robustness_vs_k", "Spearman(noise sensitivity, K)", "complex features are more "
       "sensitive to input noise", +1, "features", permutation="sensitivity across features"),
    _C("hoyer_vs_k", "Spearman(Hoyer sparsity of the atom, K)", "no clear relation between "
       "complexity and how distributed a feature is", 0, "features",
       permutation="Hoyer score across features"),
    _C("purity_vs_k", "Spearman(super-class purity, mean K) over meta-features", "impure "
       "meta-features are low- and mid-complexity generic ones", +1, "meta-features",
       permutation="purity across meta-features"),
    _C("support_tail", "top-1 accuracy with all features − with the head only", "the long tail "
       "of low-importance features collectively adds accuracy", +1, "images",
       permutation="the two conditions swapped within images"),
    _C("a_vs_k", "Spearman(A, K) over the final checkpoint's features", "strong positive "
       "relation between complexity and the temporal decoding score", +1, "features",
       source="dynamics", permutation="A across features"),
    _C("mean_k_rises", "mean K at the last checkpoint − at the first", "mean K of all features "
       "rises early in training, then plateaus", +1, "each checkpoint's features",
       source="dynamics", self_controlled=True,
       permutation="features between the first and last checkpoints"),
    _C("sedimentation", "least-squares slope of the top group's mean K on training time "
       "scaled to [0, 1]", "the mean K of the top 1 % by importance falls over training", -1,
       "each checkpoint's features", source="dynamics", self_controlled=True,
       permutation="the checkpoints' order"),
    _C("k_vs_importance_first_epoch", "Spearman(K, Γ) at the first epoch", "no relation at "
       "epoch 1 (important features are not necessarily simple)", 0, "features",
       source="dynamics", permutation="Γ across features"),
)}
del _C


# ---------------------------------------------------------------------------------- inputs
def _vector(value: Any, name: str) -> np.ndarray | None:
    if value is None:
        return None
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array (one value per unit), got shape {arr.shape}")
    return arr


_FEATURE_COLUMNS = ("complexity", "importance", "skip_share", "teleport_depth", "redundancy",
                    "sensitivity", "hoyer")


@dataclass
class FeatureColumns:
    """The columns of one network (the trained one, or a control) that the findings read.

    Per-feature columns are ``(k,)``, aligned with ``complexity``; ``nan`` marks a value that
    was not computed for that feature (the pair is dropped). Every column is optional: a claim
    whose column is missing is reported *inconclusive*, with the reason.

    Attributes:
        name: how the report names this network (``"trained"``, ``"random-init"``).
        complexity: ``(k,)`` ``K``.
        importance: ``(k,)`` signed ``Γ``.
        skip_share, teleport_depth: ``(k,)`` from :mod:`~feature_complexity.analyses.flow`.
        redundancy, sensitivity, hoyer: ``(k,)`` appendix measures (one noise level for the
            sensitivity, the caller's choice).
        cluster_purity, cluster_complexity: ``(m,)`` per meta-feature: super-class purity and
            mean ``K`` of its members.
        support_correct_all, support_correct_head: ``(n_images,)`` 0/1, top-1 correct with
            logits from all features / from the head only (the most important features, the
            caller's choice of cut); their mean difference is what the tail adds.
        n_blocks, teleport_threshold: for the reason when the teleport depth is constant.
    """

    name: str = "trained"
    complexity: Any = None
    importance: Any = None
    skip_share: Any = None
    teleport_depth: Any = None
    redundancy: Any = None
    sensitivity: Any = None
    hoyer: Any = None
    cluster_purity: Any = None
    cluster_complexity: Any = None
    support_correct_all: Any = None
    support_correct_head: Any = None
    n_blocks: int | None = None
    teleport_threshold: float | None = None

    def __post_init__(self) -> None:
        groups = (_FEATURE_COLUMNS, ("cluster_purity", "cluster_complexity"),
                  ("support_correct_all", "support_correct_head"))
        for group in groups:
            lengths = {}
            for col in group:
                arr = _vector(getattr(self, col), f"{self.name}: {col}")
                setattr(self, col, arr)
                if arr is not None:
                    lengths[col] = len(arr)
            if len(set(lengths.values())) > 1:
                raise ValueError(f"{self.name}: columns {lengths} must have one length (one value "
                                 "per unit, in the same order)")
        for col in ("support_correct_all", "support_correct_head"):
            arr = getattr(self, col)
            if arr is not None and not np.isin(arr, (0.0, 1.0)).all():
                raise ValueError(f"{self.name}: {col} must be 0/1 per image (correct or not)")

    @classmethod
    def from_columns(cls, columns: Mapping[str, Any], name: str = "trained", **extra: Any
                     ) -> "FeatureColumns":
        """From a table of per-feature columns (a DataFrame, a dict): takes the columns named
        like the fields (``complexity``, ``importance``, ``skip_share``, …) and ignores the
        others; ``extra`` sets the remaining fields (cluster and support columns …)."""
        cols: dict[str, Any] = {c: np.asarray(columns[c]) for c in _FEATURE_COLUMNS if c in columns}
        return cls(name=name, **cols, **extra)


@dataclass
class CheckpointColumns:
    """The columns of one training run's dynamics analysis.

    Attributes:
        name: how the report names the run.
        times: ``(T,)`` training time of each checkpoint, increasing.
        complexity, importance: ``T`` arrays ``(k_t,)``: each checkpoint's own features' ``K``
            and signed ``Γ``.
        temporal_score: ``(k_T,)`` ``A`` of the final checkpoint's features (aligned with
            ``complexity[-1]``), or ``None``.
        first_epoch_index: the checkpoint standing for the paper's "epoch 1" (Fig. 6).
    """

    name: str = "trained"
    times: Any = None
    complexity: Sequence[Any] = field(default_factory=list)
    importance: Sequence[Any] = field(default_factory=list)
    temporal_score: Any = None
    first_epoch_index: int = 0

    def __post_init__(self) -> None:
        self.times = _vector(self.times, f"{self.name}: times")
        T = 0 if self.times is None else len(self.times)
        if T and np.any(np.diff(self.times) <= 0):
            raise ValueError(f"{self.name}: times must increase (checkpoints in training order)")
        self.complexity = [_vector(k, f"{self.name}: complexity[{t}]") for t, k in enumerate(self.complexity)]
        self.importance = [_vector(g, f"{self.name}: importance[{t}]") for t, g in enumerate(self.importance)]
        if len(self.complexity) != T or len(self.importance) != T:
            raise ValueError(f"{self.name}: {T} times but {len(self.complexity)} complexity and "
                             f"{len(self.importance)} importance arrays; give one per checkpoint")
        for t, (k, g) in enumerate(zip(self.complexity, self.importance)):
            if len(k) != len(g):
                raise ValueError(f"{self.name}: checkpoint {t} has {len(k)} K but {len(g)} Γ values")
        self.temporal_score = _vector(self.temporal_score, f"{self.name}: temporal_score")
        A = self.temporal_score
        if A is not None and (not T or len(A) != len(self.complexity[-1])):
            raise ValueError(f"{self.name}: temporal_score must have one value per feature of the "
                             "final checkpoint (aligned with complexity[-1])")
        if T and not -T <= self.first_epoch_index < T:
            raise ValueError(f"{self.name}: first_epoch_index {self.first_epoch_index} is not a "
                             f"checkpoint index (0..{T - 1})")


# ---------------------------------------------------------------------------------- output
def _num(x: Any) -> float | None:
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


@dataclass(frozen=True)
class Finding:
    """One claim's statistic, interval, control, permutation null and verdict.

    ``None`` stands for "not computed" everywhere (never ``nan``), so :meth:`to_dict` is JSON.
    ``difference_*`` is trained − control; ``null_low``/``null_high`` the central range of the
    permutation null at the same level as the intervals.
    """

    claim: str
    statistic: str
    expected: str
    paper: str
    unit: str
    verdict: str
    reason: str | None = None
    n: int | None = None
    value: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    control: str | None = None
    control_n: int | None = None
    control_value: float | None = None
    control_ci_low: float | None = None
    control_ci_high: float | None = None
    difference: float | None = None
    difference_ci_low: float | None = None
    difference_ci_high: float | None = None
    p_value: float | None = None
    null_low: float | None = None
    null_high: float | None = None
    confidence: float = 0.95
    n_bootstrap: int = 0
    n_permutations: int = 0
    band: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict (floats finite or ``None``; ints and strings as they are)."""
        out: dict[str, Any] = {}
        for key, value in self.__dict__.items():
            if isinstance(value, (float, np.floating)):
                value = _num(value)
            elif isinstance(value, np.integer):
                value = int(value)
            out[key] = value
        return out


# ---------------------------------------------------------------------------------- intervals
def _blocks(n_rows: int, n_cols: int) -> Iterator[slice]:
    """Row blocks of a (n_rows, n_cols) computation small enough to vectorise."""
    step = max(1, _BLOCK // max(n_cols, 1))
    for start in range(0, n_rows, step):
        yield slice(start, min(n_rows, start + step))


def percentile_interval(replicates: Any, confidence: float = 0.95) -> tuple[float, float]:
    """Percentile interval: the ``(1 - c)/2`` and ``(1 + c)/2`` quantiles (NumPy's linear
    rule) of the finite replicates; ``(nan, nan)`` when fewer than 90 % are finite."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    reps = np.asarray(replicates, dtype=np.float64).ravel()
    ok = reps[np.isfinite(reps)]
    if len(reps) == 0 or len(ok) < _MIN_VALID * len(reps):
        return float("nan"), float("nan")
    alpha = 1.0 - confidence
    lo, hi = np.quantile(ok, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def permutation_p_value(observed: float, null: Any) -> float:
    """Two-sided permutation p-value ``(1 + #{|null| >= |observed|}) / (len(null) + 1)``
    (the +1 counts the observed arrangement, so p is never 0)."""
    null = np.asarray(null, dtype=np.float64)
    null = null[np.isfinite(null)]
    if not math.isfinite(observed) or len(null) == 0:
        return float("nan")
    # a relative tolerance: the observed arrangement recomputed in floating point may differ
    hits = np.abs(null) >= abs(observed) * (1 - 1e-9) - 1e-12
    return float((1 + hits.sum()) / (len(null) + 1))


def _resample_counts(n: int, m: int, rng: np.random.Generator) -> np.ndarray:
    """``(m, n)`` how often each unit is drawn in each of ``m`` bootstrap resamples of size n."""
    idx = rng.integers(0, n, size=(m, n))
    flat = (idx + (np.arange(m) * n)[:, None]).ravel()
    return np.bincount(flat, minlength=m * n).reshape(m, n).astype(np.float64)


def _tie_groups(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sort order, start of each group of equal values in it, and each unit's group."""
    order = np.argsort(x, kind="stable")
    xs = x[order]
    new = np.r_[True, xs[1:] != xs[:-1]]
    group = np.empty(len(x), dtype=np.int64)
    group[order] = np.cumsum(new) - 1
    return order, np.flatnonzero(new), group


def _weighted_ranks(C: np.ndarray, groups: tuple[np.ndarray, np.ndarray, np.ndarray]) -> np.ndarray:
    """Mid-ranks of every unit in each resample given by the counts ``C`` (m, n): the copies of
    a unit, and units of equal value, tie. Avoids sorting each resample (6x faster)."""
    order, starts, group = groups
    per_group = np.add.reduceat(C[:, order], starts, axis=1)
    upto = np.cumsum(per_group, axis=1)
    return (upto - (per_group - 1) / 2.0)[:, group]


def _finite_pairs(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ok = np.isfinite(x) & np.isfinite(y)
    return x[ok], y[ok]


def bootstrap_spearman(x: Any, y: Any, n_bootstrap: int, rng: np.random.Generator) -> np.ndarray:
    """``(n_bootstrap,)`` Spearman ρ of ``x``, ``y`` (n,) on resamples of the units (pairs).

    Each resample's ρ is the weighted Pearson correlation of its mid-ranks (weights: how often
    each unit was drawn), which equals SciPy's ``spearmanr`` on the expanded resample; ``nan``
    for a resample in which one side is constant.
    """
    x, y = _finite_pairs(np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64))
    n = len(x)
    gx, gy = _tie_groups(x), _tie_groups(y)
    out = np.empty(n_bootstrap)
    centre = (n + 1) / 2.0  # the weighted mean of the mid-ranks of any resample of size n
    for rows in _blocks(n_bootstrap, 10 * n):
        C = _resample_counts(n, rows.stop - rows.start, rng)
        dx = _weighted_ranks(C, gx) - centre
        dy = _weighted_ranks(C, gy) - centre
        sxy = np.einsum("ij,ij->i", C * dx, dy)
        sxx, syy = np.einsum("ij,ij->i", C * dx, dx), np.einsum("ij,ij->i", C * dy, dy)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[rows] = np.where((sxx > 1e-12) & (syy > 1e-12), sxy / np.sqrt(sxx * syy), np.nan)
    return out


def _standard_ranks(x: np.ndarray) -> np.ndarray:
    from scipy.stats import rankdata

    r = rankdata(x)
    return (r - r.mean()) / r.std()


def permutation_spearman(x: Any, y: Any, n_permutations: int, rng: np.random.Generator) -> np.ndarray:
    """``(n_permutations,)`` Spearman ρ with ``y`` shuffled across units (the null of no
    association); ranks are computed once since shuffling only reorders them."""
    x, y = _finite_pairs(np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64))
    zx, zy = _standard_ranks(x), _standard_ranks(y)
    n = len(x)
    out = np.empty(n_permutations)
    for rows in _blocks(n_permutations, 2 * n):
        perm = rng.permuted(np.tile(np.arange(n), (rows.stop - rows.start, 1)), axis=1)
        out[rows] = zy[perm] @ zx / n
    return out


def _iqr(a: np.ndarray, axis: int | None = None) -> Any:
    q1, q3 = np.quantile(a, [0.25, 0.75], axis=axis)
    return q3 - q1


def bootstrap_iqr(x: Any, n_bootstrap: int, rng: np.random.Generator) -> np.ndarray:
    """``(n_bootstrap,)`` interquartile range (NumPy's linear quantiles) of resampled ``x``."""
    x = np.asarray(x, dtype=np.float64)
    x = x[np.isfinite(x)]
    out = np.empty(n_bootstrap)
    for rows in _blocks(n_bootstrap, 2 * len(x)):
        out[rows] = _iqr(x[rng.integers(0, len(x), size=(rows.stop - rows.start, len(x)))], axis=1)
    return out


def bootstrap_paired_difference(a: Any, b: Any, n_bootstrap: int, rng: np.random.Generator
                                ) -> np.ndarray:
    """``(n_bootstrap,)`` ``mean(a - b)`` over resampled units (pairs kept together; see
    :func:`_resampled_means`)."""
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    out = np.empty(n_bootstrap)
    for rows in _blocks(n_bootstrap, len(d)):
        out[rows] = _resampled_means(d, rows.stop - rows.start, rng)
    return out


def signflip_paired_difference(a: Any, b: Any, n_permutations: int, rng: np.random.Generator
                               ) -> np.ndarray:
    """``(n_permutations,)`` ``mean(a - b)`` with ``a`` and ``b`` swapped in a random half of
    the units: the permutation null of "the two conditions do not differ"."""
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    out = np.empty(n_permutations)
    for rows in _blocks(n_permutations, len(d)):
        signs = rng.integers(0, 2, size=(rows.stop - rows.start, len(d))) * 2.0 - 1.0
        out[rows] = signs @ d / len(d)
    return out


def bootstrap_mean_difference(first: Any, last: Any, n_bootstrap: int, rng: np.random.Generator
                              ) -> np.ndarray:
    """``(n_bootstrap,)`` ``mean(last) - mean(first)`` of two independent samples, each
    resampled on its own (different features at different checkpoints; see
    :func:`_resampled_means`)."""
    first, last = np.asarray(first, dtype=np.float64), np.asarray(last, dtype=np.float64)
    out = np.empty(n_bootstrap)
    for rows in _blocks(n_bootstrap, len(first) + len(last)):
        m = rows.stop - rows.start
        out[rows] = _resampled_means(last, m, rng) - _resampled_means(first, m, rng)
    return out


def permutation_mean_difference(first: Any, last: Any, n_permutations: int,
                                rng: np.random.Generator) -> np.ndarray:
    """``(n_permutations,)`` ``mean(last) - mean(first)`` with the pooled values dealt at random
    to the two samples (sizes kept): the null of "the checkpoint does not matter"."""
    first, last = np.asarray(first, dtype=np.float64), np.asarray(last, dtype=np.float64)
    pooled, n1 = np.concatenate([first, last]), len(first)
    out = np.empty(n_permutations)
    for rows in _blocks(n_permutations, len(pooled)):
        perm = pooled[rng.permuted(np.tile(np.arange(len(pooled)), (rows.stop - rows.start, 1)), axis=1)]
        out[rows] = perm[:, n1:].mean(axis=1) - perm[:, :n1].mean(axis=1)
    return out


def trend_slope(times: Any, values: Any) -> np.ndarray | float:
    """Least-squares slope of ``values`` on ``times`` rescaled to [0, 1] (the change over the
    whole run); ``values`` (T,) or (m, T) for one slope per row."""
    t = np.asarray(times, dtype=np.float64)
    s = (t - t[0]) / (t[-1] - t[0])
    s = s - s.mean()
    v = np.asarray(values, dtype=np.float64)
    slope = (v - v.mean(axis=-1, keepdims=True)) @ s / (s @ s)
    return float(slope) if v.ndim == 1 else slope


def _resampled_means(x: np.ndarray, m: int, rng: np.random.Generator) -> np.ndarray:
    """``(m,)`` bootstrap means of ``x``, spread by ``sqrt(n / (n - 1))`` about ``mean(x)``:
    the plain bootstrap's variance is ``(n - 1) / n`` of the mean's, which matters for the top
    group of a small run (5 features: intervals 10 % too narrow)."""
    n = len(x)
    means = x[rng.integers(0, n, size=(m, n))].mean(axis=1)
    return x.mean() + math.sqrt(n / (n - 1)) * (means - x.mean()) if n > 1 else means


def bootstrap_trend(times: Any, groups: Sequence[Any], n_bootstrap: int, rng: np.random.Generator
                    ) -> np.ndarray:
    """``(n_bootstrap,)`` :func:`trend_slope` of the groups' means over ``times`` (T,), the
    members of each group ``groups[t]`` (n_t,) resampled on their own (see
    :func:`_resampled_means`)."""
    if len(groups) != len(times):
        raise ValueError(f"{len(groups)} groups for {len(times)} times; give one group per checkpoint")
    means = np.empty((n_bootstrap, len(groups)))
    for t, group in enumerate(groups):
        group = np.asarray(group, dtype=np.float64)
        for rows in _blocks(n_bootstrap, len(group)):
            means[rows, t] = _resampled_means(group, rows.stop - rows.start, rng)
    return cast(np.ndarray, trend_slope(times, means))  # (m, T) values: one slope per row


# ---------------------------------------------------------------------------------- the claims' statistics
_LABELS = {"complexity": "K", "importance": "Γ", "abs_importance": "|Γ|", "skip_share": "skip share",
           "teleport_depth": "teleport depth", "redundancy": "redundancy",
           "sensitivity": "noise sensitivity", "hoyer": "Hoyer score",
           "cluster_purity": "super-class purity", "cluster_complexity": "meta-feature mean K",
           "temporal_score": "A", "support_correct_all": "accuracy with all features"}
#: what produces a column, for the reason when it is missing
_SOURCES = {"complexity": "the complexity stage", "importance": "the importance stage",
            "abs_importance": "the importance stage", "skip_share": "the flow analysis (branch capture)",
            "teleport_depth": "the flow analysis (branch capture)", "redundancy": "the redundancy analysis",
            "sensitivity": "the robustness analysis", "hoyer": "the Hoyer scores of the atoms",
            "cluster_purity": "meta-features with a super-class table (--superclasses)",
            "cluster_complexity": "the meta-features", "temporal_score": "the dynamics analysis",
            "support_correct_all": "the support-features ablation"}
#: per claim: the two columns whose Spearman ρ is the statistic
_PAIRS = {"k_vs_importance": ("complexity", "importance"),
          "k_vs_abs_importance": ("complexity", "abs_importance"),
          "skip_share_vs_k": ("skip_share", "complexity"),
          "teleport_depth_vs_k": ("teleport_depth", "complexity"),
          "redundancy_vs_k": ("redundancy", "complexity"),
          "robustness_vs_k": ("sensitivity", "complexity"),
          "hoyer_vs_k": ("hoyer", "complexity"),
          "purity_vs_k": ("cluster_purity", "cluster_complexity")}


@dataclass
class _Estimate:
    """A statistic with its bootstrap replicates and permutation null, or why it is missing."""

    value: float = float("nan")
    boot: np.ndarray | None = None
    null: np.ndarray | None = None
    n: int | None = None
    reason: str | None = None


@dataclass(frozen=True)
class _Options:
    n_bootstrap: int
    n_permutations: int
    top_fraction: float
    min_top: int
    rank_by: str


def _rng(seed: int, claim: str, stream: int) -> np.random.Generator:
    # one stream per (claim, use): a claim's numbers do not depend on which other claims ran
    return np.random.default_rng([seed, zlib.crc32(claim.encode()), stream])


def _constant_reason(label: str, values: np.ndarray, n: int, unit: str,
                     data: FeatureColumns | CheckpointColumns) -> str:
    if label == "teleport depth" and isinstance(data, FeatureColumns) and data.n_blocks is not None \
            and values[0] == data.n_blocks:
        at = f" at threshold {data.teleport_threshold:g}" if data.teleport_threshold is not None else ""
        return (f"teleport depth is constant: every feature is 'never' (depth {data.n_blocks}, "
                f"the number of blocks){at}")
    return f"{label} is constant ({values[0]:.4g}) across the {n} {unit}"


def _correlation(x: np.ndarray | None, y: np.ndarray | None, cols: tuple[str, str], unit: str,
                 data: FeatureColumns | CheckpointColumns, opts: _Options,
                 rngs: tuple[np.random.Generator, np.random.Generator]) -> _Estimate:
    """Spearman ρ of two columns with its bootstrap and (``opts.n_permutations > 0``) null."""
    from .dynamics import spearman

    for arr, col in ((x, cols[0]), (y, cols[1])):
        if arr is None:
            return _Estimate(reason=f"not computed: {data.name} has no {_LABELS[col]} column "
                             f"({_SOURCES[col]} did not run)")
    assert x is not None and y is not None  # returned above otherwise
    x, y = _finite_pairs(x, y)
    if len(x) < MIN_UNITS:
        return _Estimate(n=len(x), reason=f"only {len(x)} {unit} have both {_LABELS[cols[0]]} and "
                         f"{_LABELS[cols[1]]}; at least {MIN_UNITS} are needed")
    for arr, col in ((x, cols[0]), (y, cols[1])):
        if np.ptp(arr) == 0:
            return _Estimate(n=len(x), reason=_constant_reason(_LABELS[col], arr, len(x), unit, data))
    null = permutation_spearman(x, y, opts.n_permutations, rngs[1]) if opts.n_permutations else None
    return _Estimate(spearman(x, y), bootstrap_spearman(x, y, opts.n_bootstrap, rngs[0]), null, len(x))


def _feature_column(data: FeatureColumns, col: str) -> np.ndarray | None:
    if col == "abs_importance":
        return None if data.importance is None else np.abs(data.importance)
    return getattr(data, col)


def _spectrum(data: FeatureColumns, opts: _Options, rng: np.random.Generator) -> _Estimate:
    if data.complexity is None:
        return _Estimate(reason=f"not computed: {data.name} has no K column")
    K = data.complexity[np.isfinite(data.complexity)]
    if len(K) < MIN_UNITS:
        return _Estimate(n=len(K), reason=f"only {len(K)} features have a K; at least {MIN_UNITS} are needed")
    return _Estimate(float(_iqr(K)), bootstrap_iqr(K, opts.n_bootstrap, rng), None, len(K))


def _support(data: FeatureColumns, opts: _Options,
             rngs: tuple[np.random.Generator, np.random.Generator]) -> _Estimate:
    a, b = data.support_correct_all, data.support_correct_head
    if a is None or b is None:
        return _Estimate(reason=f"not computed: {data.name} has no per-image accuracy with all "
                         "features and with the head (the support-features ablation did not run)")
    if len(a) < MIN_UNITS:
        return _Estimate(n=len(a), reason=f"only {len(a)} images; at least {MIN_UNITS} are needed")
    null = signflip_paired_difference(a, b, opts.n_permutations, rngs[1]) if opts.n_permutations else None
    return _Estimate(float(np.mean(a - b)), bootstrap_paired_difference(a, b, opts.n_bootstrap, rngs[0]),
                     null, len(a))


def _run_estimate(claim: Claim, data: FeatureColumns, opts: _Options,
                  rngs: tuple[np.random.Generator, np.random.Generator]) -> _Estimate:
    """The statistic of a claim on a run's (or a control's) :class:`FeatureColumns`."""
    if claim.id == "spectrum":
        return _spectrum(data, opts, rngs[0])
    if claim.id == "support_tail":
        return _support(data, opts, rngs)
    a, b = _PAIRS[claim.id]
    return _correlation(_feature_column(data, a), _feature_column(data, b), (a, b), claim.unit,
                        data, opts, rngs)


def _mean_k_rises(data: CheckpointColumns, opts: _Options,
                  rngs: tuple[np.random.Generator, np.random.Generator]) -> _Estimate:
    first, last = (k[np.isfinite(k)] for k in (data.complexity[0], data.complexity[-1]))
    if min(len(first), len(last)) < MIN_UNITS:
        return _Estimate(reason=f"the first and last checkpoints have {len(first)} and {len(last)} "
                         f"features with a K; at least {MIN_UNITS} each are needed")
    null = (permutation_mean_difference(first, last, opts.n_permutations, rngs[1])
            if opts.n_permutations else None)
    return _Estimate(float(last.mean() - first.mean()),
                     bootstrap_mean_difference(first, last, opts.n_bootstrap, rngs[0]), null,
                     len(first) + len(last))


def _sedimentation(data: CheckpointColumns, opts: _Options,
                   rngs: tuple[np.random.Generator, np.random.Generator]) -> _Estimate:
    T = len(data.times)
    if T < 3:
        return _Estimate(n=T, reason=f"a trend needs at least 3 checkpoints, got {T}")
    groups = []
    for t, (K, gamma) in enumerate(zip(data.complexity, data.importance)):
        K, gamma = _finite_pairs(K, gamma)
        if len(K) < MIN_UNITS:
            return _Estimate(n=T, reason=f"checkpoint {t} has {len(K)} features with K and Γ; at "
                             f"least {MIN_UNITS} are needed")
        top = top_features(gamma, fraction=opts.top_fraction, min_top=opts.min_top, rank_by=opts.rank_by)
        groups.append(K[top])
    means = np.array([g.mean() for g in groups])
    null = None
    if opts.n_permutations:
        # the null of "no trend": the checkpoints' top-group means in a random order
        perm = rngs[1].permuted(np.tile(np.arange(T), (opts.n_permutations, 1)), axis=1)
        null = cast(np.ndarray, trend_slope(data.times, means[perm]))  # (m, T): one slope per permutation
    # the top group as selected on the full sample, its members resampled: re-selecting in each
    # resample pulls features from below the cut into the group, which biases the interval
    # towards the population whenever the top group differs sharply from the rest
    boot = bootstrap_trend(data.times, groups, opts.n_bootstrap, rngs[0])
    return _Estimate(cast(float, trend_slope(data.times, means)), boot, null, T)  # (T,) values: one slope


def _dynamics_estimate(claim: Claim, data: CheckpointColumns, opts: _Options,
                       rngs: tuple[np.random.Generator, np.random.Generator]) -> _Estimate:
    """The statistic of a dynamics claim on one training run's :class:`CheckpointColumns`."""
    T = 0 if data.times is None else len(data.times)
    if T == 0:
        return _Estimate(reason=f"not computed: {data.name} has no checkpoints (the dynamics "
                         "analysis did not run)")
    if claim.id == "a_vs_k":
        return _correlation(data.temporal_score, data.complexity[-1], ("temporal_score", "complexity"),
                            "features", data, opts, rngs)
    if claim.id == "k_vs_importance_first_epoch":
        i = data.first_epoch_index
        return _correlation(data.complexity[i], data.importance[i], ("complexity", "importance"),
                            "features", data, opts, rngs)
    if T < 2:
        return _Estimate(n=T, reason=f"a change over training needs at least 2 checkpoints, got {T}")
    if claim.id == "mean_k_rises":
        return _mean_k_rises(data, opts, rngs)
    return _sedimentation(data, opts, rngs)


# ---------------------------------------------------------------------------------- the verdict
def _fmt(ci: tuple[float, float]) -> str:
    return f"[{ci[0]:.3g}, {ci[1]:.3g}]"


def _finite_ci(ci: tuple[Any, Any] | None) -> tuple[float, float] | None:
    if ci is None or ci[0] is None or ci[1] is None:
        return None
    lo, hi = float(ci[0]), float(ci[1])
    return (lo, hi) if math.isfinite(lo) and math.isfinite(hi) else None


def _side(ci: tuple[float, float], null: float = 0.0) -> int:
    """+1 when the interval lies wholly above ``null``, -1 wholly below, 0 when it contains it."""
    return 1 if ci[0] > null else -1 if ci[1] < null else 0


def _equivalence_verdict(ci: tuple[float, float], band: float) -> tuple[str, str]:
    if -band < ci[0] and ci[1] < band:
        return "reproduced", f"interval {_fmt(ci)} lies inside the equivalence band (−{band:g}, {band:g})"
    if ci[0] >= band or ci[1] <= -band:
        return "not_reproduced", (f"interval {_fmt(ci)} lies outside the equivalence band "
                                  f"(−{band:g}, {band:g}): there is a relation")
    return "inconclusive", (f"interval {_fmt(ci)} is neither inside nor outside the equivalence "
                            f"band (−{band:g}, {band:g})")


def verdict(claim: Claim | str, ci: tuple[Any, Any] | None, *,
            difference_ci: tuple[Any, Any] | None = None, control: str | None = None,
            band: float = 0.2, reason: str | None = None, control_reason: str | None = None
            ) -> tuple[str, str]:
    """The verdict of one claim, and the reason in words (the rule: module docstring).

    Args:
        claim: a :class:`Claim` or its id.
        ci: the trained statistic's interval; ``None`` (or non-finite) when not computable.
        difference_ci: the interval of trained − control; ``None`` without one.
        control: the control's name; ``None`` when no control was run for this claim.
        band: half-width of the equivalence band of the "no relation" claims.
        reason: why the trained statistic is not computable (with ``ci`` ``None``).
        control_reason: why the control's statistic is not computable.

    Returns:
        ``(verdict, reason)`` with ``verdict`` one of :data:`VERDICTS`.
    """
    claim = CLAIMS[claim] if isinstance(claim, str) else claim
    ci = _finite_ci(ci)
    if ci is None:
        return "inconclusive", reason or "the statistic could not be computed"
    if claim.direction == 0:
        return _equivalence_verdict(ci, band)
    side, want = _side(ci), claim.expected
    if side == 0:
        return "inconclusive", f"interval {_fmt(ci)} contains 0 (no effect)"
    if side != claim.direction:
        return "not_reproduced", f"interval {_fmt(ci)} excludes 0 on the wrong side (expected {want})"
    if claim.self_controlled:
        return "reproduced", (f"interval {_fmt(ci)} excludes 0 on the expected ({want}) side; the "
                              "statistic compares the same measurement at two training times")
    if control is None:
        return "inconclusive", (f"interval {_fmt(ci)} excludes 0 on the expected ({want}) side, but no "
                                "control was run, so the effect cannot be told from a property of "
                                "the measurement")
    diff = _finite_ci(difference_ci)
    if diff is None:
        return "inconclusive", (f"interval {_fmt(ci)} is on the expected side, but the {control} "
                                f"control could not be computed: {control_reason or 'unknown reason'}")
    if _side(diff) == claim.direction:
        return "reproduced", (f"interval {_fmt(ci)} excludes 0 on the expected ({want}) side and "
                              f"trained − {control} {_fmt(diff)} does too")
    return "not_specific_to_training", (f"the effect is on the expected side, but {control} shows it "
                                        f"as strongly: trained − {control} {_fmt(diff)} does not "
                                        f"exclude 0 on the {want} side")


# ---------------------------------------------------------------------------------- findings
def _check_settings(n_bootstrap: int, n_permutations: int, confidence: float, band: float,
                    top_fraction: float, min_top: int, rank_by: str) -> None:
    if n_bootstrap < 100:
        raise ValueError(f"n_bootstrap must be >= 100 for a 95 % interval to mean much, got {n_bootstrap}")
    if n_permutations < 0:
        raise ValueError(f"n_permutations must be >= 0 (0: no permutation null), got {n_permutations}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if not 0 < band < 1:
        raise ValueError(f"band (the equivalence band of 'no relation' claims) must be in (0, 1), got {band}")
    if not 0 < top_fraction <= 1 or min_top < 1:
        raise ValueError(f"top_fraction must be in (0, 1] and min_top >= 1, got {top_fraction}, {min_top}")
    if rank_by not in ("abs", "signed"):
        raise ValueError(f"rank_by must be 'abs' (|Γ|) or 'signed' (Γ), got {rank_by!r}")


def _estimate(claim: Claim, data: FeatureColumns | CheckpointColumns | None, opts: _Options,
              rngs: tuple[np.random.Generator, np.random.Generator]) -> _Estimate:
    if data is None:
        what = "run" if claim.source == "run" else "dynamics analysis"
        return _Estimate(reason=f"not computed: no {what} columns were given")
    if claim.source == "run":
        return _run_estimate(claim, data, opts, rngs)  # type: ignore[arg-type]
    return _dynamics_estimate(claim, data, opts, rngs)  # type: ignore[arg-type]


def _finding(claim: Claim, est: _Estimate, ctrl: _Estimate | None, control: str | None,
             opts: _Options, confidence: float, band: float) -> Finding:
    """Intervals, the difference, the null and the verdict of one claim."""
    ci = percentile_interval(est.boot, confidence) if est.boot is not None else (math.nan, math.nan)
    if est.reason is None and _finite_ci(ci) is None:
        est.reason = "the bootstrap degenerates: over 10 % of the resamples have a constant column"
    cci, diff, dci = (math.nan, math.nan), math.nan, (math.nan, math.nan)
    if ctrl is not None and ctrl.boot is not None:
        cci = percentile_interval(ctrl.boot, confidence)
        if ctrl.reason is None and _finite_ci(cci) is None:
            ctrl.reason = "its bootstrap degenerates (over 10 % of the resamples have a constant column)"
        if est.boot is not None:
            # independent bootstraps of independent networks: replicate-wise differences
            diff, dci = est.value - ctrl.value, percentile_interval(est.boot - ctrl.boot, confidence)
    null_lo = null_hi = p = math.nan
    if est.null is not None and est.reason is None:
        null_lo, null_hi = percentile_interval(est.null, confidence)
        p = permutation_p_value(est.value, est.null)
    label, why = verdict(claim, ci, difference_ci=dci if ctrl is not None else None,
                         control=control if ctrl is not None else None, band=band,
                         reason=est.reason, control_reason=None if ctrl is None else ctrl.reason)
    return Finding(
        claim=claim.id, statistic=claim.statistic, expected=claim.expected, paper=claim.paper,
        unit=claim.unit, verdict=label, reason=why, n=est.n, value=_num(est.value),
        ci_low=_num(ci[0]), ci_high=_num(ci[1]), control=control if ctrl is not None else None,
        control_n=None if ctrl is None else ctrl.n, control_value=None if ctrl is None else _num(ctrl.value),
        control_ci_low=_num(cci[0]), control_ci_high=_num(cci[1]), difference=_num(diff),
        difference_ci_low=_num(dci[0]), difference_ci_high=_num(dci[1]), p_value=_num(p),
        null_low=_num(null_lo), null_high=_num(null_hi), confidence=confidence,
        n_bootstrap=opts.n_bootstrap, n_permutations=opts.n_permutations if est.null is not None else 0,
        band=band if claim.direction == 0 else None,
    )


def findings(
    trained: FeatureColumns | None = None,
    control: FeatureColumns | None = None,
    *,
    checkpoints: CheckpointColumns | None = None,
    control_checkpoints: CheckpointColumns | None = None,
    claims: Sequence[str] | None = None,
    n_bootstrap: int = 1000,
    n_permutations: int = 1000,
    confidence: float = 0.95,
    band: float = 0.2,
    top_fraction: float = 0.01,
    min_top: int = 5,
    rank_by: str = "abs",
    seed: int = 0,
) -> list[Finding]:
    """One :class:`Finding` per claim of :data:`CLAIMS` (or of ``claims``, in that order).

    Args:
        trained: the trained network's columns (claims with ``source == "run"``).
        control: the same columns of the control network (the same architecture at random
            initialisation); its ``name`` labels it in the findings.
        checkpoints: the dynamics analysis of the training run (``source == "dynamics"``).
        control_checkpoints: the dynamics analysis of a control training (e.g. shuffled labels),
            the only control ``a_vs_k`` can have; optional.
        claims: claim ids to evaluate (default: all, in catalogue order).
        n_bootstrap: bootstrap replicates per interval.
        n_permutations: permutation-null draws (0: no null).
        confidence: level of every interval and of the null's central range.
        band: equivalence band of the "no relation" claims (|ρ| < band).
        top_fraction, min_top, rank_by: the top group of ``sedimentation``, as in
            :func:`~feature_complexity.analyses.dynamics.top_features`.
        seed: the seed of every bootstrap and permutation (one stream per claim and use).

    Returns:
        ``list[Finding]``; ``[f.to_dict() for f in ...]`` is JSON.
    """
    _check_settings(n_bootstrap, n_permutations, confidence, band, top_fraction, min_top, rank_by)
    ids = list(CLAIMS) if claims is None else list(claims)
    unknown = [c for c in ids if c not in CLAIMS]
    if unknown:
        raise ValueError(f"unknown claims {unknown}; the catalogue has {list(CLAIMS)}")
    opts = _Options(n_bootstrap, n_permutations, top_fraction, min_top, rank_by)
    no_null = _Options(n_bootstrap, 0, top_fraction, min_top, rank_by)
    out = []
    for cid in ids:
        claim = CLAIMS[cid]
        data, ctrl = (trained, control) if claim.source == "run" else (checkpoints, control_checkpoints)
        est = _estimate(claim, data, opts, (_rng(seed, cid, 0), _rng(seed, cid, 2)))
        cest = (None if ctrl is None
                else _estimate(claim, ctrl, no_null, (_rng(seed, cid, 1), _rng(seed, cid, 3))))
        out.append(_finding(claim, est, cest, None if ctrl is None else ctrl.name, opts, confidence, band))
    return out


# ---------------------------------------------------------------------------------- figure
_VERDICT_COLOURS = {"reproduced": "#1a7f37", "not_reproduced": "#cf222e",
                    "not_specific_to_training": "#9a6700", "inconclusive": "#57606a"}


def _errorbar(ax: Any, value: Any, lo: Any, hi: Any, y: float, **style: Any) -> None:
    if value is None:
        return
    err = None if lo is None or hi is None else [[value - lo], [hi - value]]
    ax.errorbar([value], [y], xerr=err, capsize=3, linestyle="none", **style)


def _draw_row(ax: Any, r: Mapping[str, Any], y: float, xmax: float) -> None:
    """One claim's row: expected side, permutation null, trained and control intervals."""
    direction = {"positive": 1, "negative": -1}.get(r["expected"], 0)
    band = r.get("band") or 0.2
    span = (0, direction * xmax) if direction else (-band, band)
    ax.fill_betweenx([y - 0.42, y + 0.42], *span, color="#dafbe1", zorder=0)
    if r.get("null_low") is not None and r.get("null_high") is not None:
        ax.plot([r["null_low"], r["null_high"]], [y, y], color="#afb8c1", lw=7, alpha=0.8,
                solid_capstyle="butt", zorder=1)
    _errorbar(ax, r.get("value"), r.get("ci_low"), r.get("ci_high"), y + 0.13, color="black",
              marker="o", ms=5, zorder=3)
    _errorbar(ax, r.get("control_value"), r.get("control_ci_low"), r.get("control_ci_high"),
              y - 0.13, color="#d9730d", marker="s", ms=4, zorder=3)
    if r.get("value") is None:
        ax.text(0.03 * xmax, y, "not computed", va="center", fontsize=8, color="#57606a")


def plot_findings(results: Sequence[Finding | Mapping[str, Any]], *, title: str | None = None
                  ) -> "Figure":
    """Forest plot: one row per claim, the trained statistic with its interval (black), the
    control's below it (orange), the permutation null's central range (grey bar), the expected
    side shaded green (the equivalence band for "no relation" claims), the verdict in the label.

    Args:
        results: :func:`findings` output, or its ``to_dict()`` rows (as read back from JSON).
        title: the figure title (default: names the interval level).
    """
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    rows = [r.to_dict() if isinstance(r, Finding) else dict(r) for r in results]
    if not rows:
        raise ValueError("no findings to plot; pass the list that findings() returned")
    keys = ("value", "ci_low", "ci_high", "control_value", "control_ci_low", "control_ci_high",
            "null_low", "null_high")
    xmax = max([1.05] + [1.05 * abs(r[k]) for r in rows for k in keys if r.get(k) is not None])
    fig, ax = plt.subplots(figsize=(9.5, 0.55 * len(rows) + 1.8), facecolor="white")
    for i, r in enumerate(rows):
        _draw_row(ax, r, len(rows) - 1 - i, xmax)
    ax.axvline(0, color="#57606a", lw=0.8)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([f"{r['claim']}  ({r['verdict'].replace('_', ' ')})" for r in reversed(rows)],
                       fontsize=8)
    for tick, r in zip(ax.get_yticklabels(), reversed(rows)):
        tick.set_color(_VERDICT_COLOURS.get(r["verdict"], "black"))
    ax.set_xlim(-xmax, xmax)
    ax.set_ylim(-0.6, len(rows) - 0.4)
    ax.set_xlabel("statistic: Spearman ρ, except spectrum (IQR of K), support_tail (accuracy "
                  "gain),\nmean_k_rises (ΔK, last − first) and sedimentation (slope of the top "
                  "group's mean K)", fontsize=8)
    ax.set_ylabel("claim (verdict)")
    control = next((r["control"] for r in rows if r.get("control")), None)
    handles = [Line2D([], [], color="black", marker="o", label="trained"),
               Patch(color="#dafbe1", label="expected side / equivalence band"),
               Line2D([], [], color="#afb8c1", lw=7, label="permutation null")]
    if control:
        handles.insert(1, Line2D([], [], color="#d9730d", marker="s", label=str(control)))
    fig.legend(handles=handles, fontsize=9, loc="lower center", ncol=len(handles), frameon=False)
    conf = rows[0].get("confidence") or 0.95
    ax.set_title(title or f"The paper's claims: each statistic with its {conf:.0%} bootstrap interval",
                 fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout(rect=(0, 0.6 / fig.get_figheight(), 1, 1))  # room for the legend below
    return fig


# ---------------------------------------------------------------------------------- the stage
def _sensitivity_column(table: Any, sigmas: Sequence[float]) -> np.ndarray | None:
    """The noise sensitivity at the middle σ of the run (the paper's 0.1 by default)."""
    names = [f"noise_sensitivity_{s:g}" for s in sigmas]
    present = [n for n in names if n in table]
    return None if not present else np.asarray(table[present[len(present) // 2]])


def feature_columns(table: Any, name: str, results: Mapping[str, Any], config: Any) -> FeatureColumns:
    """The findings' view of one network: its feature table plus the purity and support results."""
    purity, support, flow = results.get("purity"), results.get("support"), results.get("flow")
    extra: dict[str, Any] = {"sensitivity": _sensitivity_column(table, config.robustness_sigmas),
                             "teleport_threshold": config.teleport_threshold,
                             "n_blocks": None if flow is None else flow.n_blocks}
    if purity is not None:
        extra.update(cluster_purity=purity.purity, cluster_complexity=purity.mean_complexity)
    if support is not None and support.correct_all is not None:
        extra.update(support_correct_all=support.correct_all, support_correct_head=support.correct_head)
    cols = {c: table[c] for c in _FEATURE_COLUMNS if c in table and c != "sensitivity"}
    arrays: dict[str, Any] = {k: np.asarray(v, dtype=np.float64) for k, v in cols.items()}
    return FeatureColumns(name=name, **arrays, **extra)


def _checkpoint_columns(ctx: Any) -> CheckpointColumns | None:
    """The dynamics of the run, when it has them (``checkpoint/*`` stages and ``dynamics``)."""
    if not ctx.has("dynamics"):
        return None
    dyn = ctx["dynamics"]
    scores = [ctx[f"checkpoint/{n}"] for n in dyn.checkpoints["checkpoint"]]
    times = np.asarray(dyn.times, dtype=np.float64)
    # the paper's Fig. 6 compares epoch 1 with the end: the first checkpoint at one epoch or later
    first = int(np.argmax(times >= 1)) if dyn.time_unit == "epoch" and (times >= 1).any() else 0
    return CheckpointColumns(name="trained", times=times, complexity=[s.complexity for s in scores],
                             importance=[s.importance for s in scores],
                             temporal_score=dyn.features["A"].to_numpy(), first_epoch_index=first)


def _control_results(ctx: Any) -> tuple[Any, dict[str, Any]] | None:
    """The random-init control's feature table and its purity/support/flow results."""
    if not ctx.has("control/random-init"):
        return None
    from pathlib import Path

    from . import analysis_stages

    run = ctx["control/random-init"]
    results: dict[str, Any] = {}
    if run.folder is not None:
        by_name = {s.name: s for s in analysis_stages()}
        for name in ("purity", "support", "flow"):
            if (Path(run.folder) / by_name[name].outputs[0]).exists():
                load = by_name[name].load
                assert load is not None  # these stages save their results
                results[name] = load(Path(run.folder))
    return run.features, results


def _compute(ctx: Any) -> list[dict[str, Any]]:
    cfg = ctx.config
    ours = {n: ctx[n] for n in ("purity", "support", "flow") if ctx.has(n)}
    trained = feature_columns(ctx["features"], "trained", ours, cfg)
    control = _control_results(ctx)
    control_cols = None if control is None else feature_columns(control[0], "random-init", control[1], cfg)
    found = findings(trained, control_cols, checkpoints=_checkpoint_columns(ctx), n_bootstrap=cfg.n_bootstrap,
                     confidence=cfg.confidence, top_fraction=cfg.top_fraction, min_top=cfg.min_top,
                     rank_by=cfg.rank_by, seed=cfg.seed)
    return [f.to_dict() for f in found]


def _figures(rows: list[dict[str, Any]], ctx: Any) -> dict[str, Any]:
    from ..stages import FigureSpec

    return {"findings": FigureSpec(
        plot_findings(rows), "The paper's claims on this model",
        "Each row is a claim: this model's statistic with its 95 % bootstrap interval, the random-init control's "
        "beside it, and the paper's expected direction. A claim the untrained network shows as strongly is not "
        "a finding about what the network learned.")}


def findings_stage(stages: Sequence[Any]) -> Any:
    """The findings stage over ``stages`` (it reads every result a claim uses, when present)."""
    from ..io import read_json, write_json
    from ..stages import Stage

    wanted = ("purity", "support", "flow", "control/random-init", "dynamics", "redundancy", "robustness", "locality")
    names = {s.name for s in stages}
    optional = tuple(n for n in wanted if n in names) + tuple(n for n in names if n.startswith("checkpoint/"))
    return Stage("findings", _compute, needs=("features",), optional=optional,
                 settings=("n_bootstrap", "confidence", "seed", "top_fraction", "min_top", "rank_by",
                           "robustness_sigmas", "teleport_threshold"),
                 save=lambda rows, out: write_json(out / "findings.json", rows),
                 load=lambda out: read_json(out / "findings.json"), outputs=("findings.json",), section="findings",
                 figures=_figures)
