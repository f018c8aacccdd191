"""When are features learned: complexity across training checkpoints (paper section 6, Fig. 5, 6).

Over an ordered list of checkpoints ``t = 1..T`` of one training run, whose LAST checkpoint is the
run's model:

1. **Per-checkpoint features** (Fig. 5B, Fig. 6). At each checkpoint the features are extracted
   independently (the run's dictionary recipe on that checkpoint's penultimate layer ``A_t``),
   their complexity ``K`` is scored with that checkpoint's own blocks and their importance ``Γ``
   with its own head. Summaries per checkpoint: mean ``K`` of all features, mean ``K`` of the most
   important ones (top fraction by ``|Γ|`` or ``Γ``), Spearman(``K``, ``Γ``).
2. **Temporal decoding score** (Fig. 5A). For every feature ``z`` of the final model (codes
   ``Z_final``, ``(n_images, k)``) and every checkpoint ``t``, ``I_V(A_t -> z)``, and

       A(z) = 1 - (1/T) sum_t I_V(A_t -> z)

   low: ``z`` was linearly available early in training; high: late. Also, per feature, the first
   checkpoint at which ``I_V`` reaches a threshold (default one half).

Each checkpoint is a stage of the run (``checkpoint/<name>``, scored in memory: one forward pass,
nothing kept but its summary), and ``dynamics`` gathers them: ``dynamics.json``,
``dynamics/checkpoints.parquet``, ``dynamics/features.parquet`` (``A`` per final feature, also a
column of ``features.parquet``), ``dynamics/iv.npy`` and the figures. A rerun skips the
checkpoints already scored; a replaced checkpoint file is rescored (its fingerprint is in the key).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

    from ..complexity import ComplexityResult
    from ..models.spec import ModelSpec
    from ..train import CheckpointInfo

__all__ = [
    "CheckpointScores",
    "DynamicsResult",
    "dynamics_stages",
    "spec_loader",
    "decodability_over_checkpoints",
    "temporal_decoding_score",
    "first_decodable",
    "top_features",
    "spearman",
    "plot_mean_complexity",
    "plot_temporal_decoding",
    "plot_complexity_importance_over_training",
]


# ---------------------------------------------------------------------------------- pure functions
def decodability_over_checkpoints(
    penultimates: Mapping[str, Any] | Sequence[Any],
    Z: Any,
    *,
    n_folds: int = 5,
    seed: int = 0,
    device: str = "cpu",
) -> "ComplexityResult":
    """``I_V(A_t -> z)`` for every checkpoint ``t`` and every feature: the complexity engine
    with one "layer" per checkpoint.

    Args:
        penultimates: ``{checkpoint name: (n_images, d_t)}`` in training order, or a sequence.
        Z: ``(n_images, k)`` the features (usually the final checkpoint's codes).

    Returns:
        A :class:`ComplexityResult` whose ``per_layer`` is ``(T, k)`` and whose ``score`` is the
        temporal decoding score ``A`` (the engine's ``1 - mean_t I_V``).
    """
    from ..complexity import complexity

    return complexity(penultimates, Z, n_folds=n_folds, seed=seed, device=device)


def temporal_decoding_score(iv: np.ndarray) -> np.ndarray:
    """``A(z) = 1 - mean_t I_V(A_t -> z)`` from ``iv`` of shape ``(T, k)``; returns ``(k,)``."""
    iv = np.asarray(iv, dtype=np.float64)
    if iv.ndim != 2 or iv.shape[0] == 0:
        raise ValueError(f"iv must have shape (n_checkpoints, n_features), got {iv.shape}")
    return 1.0 - iv.mean(axis=0)


def first_decodable(iv: np.ndarray, times: ArrayLike, threshold: float = 0.5) -> np.ndarray:
    """Per feature, the training time of the first checkpoint with ``I_V >= threshold``.

    Args:
        iv: ``(T, k)``, checkpoints in training order.
        times: ``(T,)`` training time of each checkpoint (epochs).

    Returns:
        ``(k,)`` float, ``nan`` for features never decodable at the threshold.
    """
    iv = np.asarray(iv)
    times = np.asarray(times, dtype=np.float64)
    if iv.ndim != 2 or len(times) != iv.shape[0]:
        raise ValueError(f"iv {iv.shape} must be (T, k) with T = len(times) = {len(times)}")
    reached = iv >= threshold
    first = reached.argmax(axis=0)
    return np.where(reached.any(axis=0), times[first], np.nan)


def top_features(importance: np.ndarray, *, fraction: float = 0.01, min_top: int = 5,
                 rank_by: str = "abs") -> np.ndarray:
    """Indices of the most important features, most important first.

    ``max(min_top, ceil(fraction * k))`` features (capped at ``k``), ranked by ``|Γ|``
    (``rank_by="abs"``) or by ``Γ`` (``"signed"``); ties keep the lower index first.
    """
    gamma = np.asarray(importance, dtype=np.float64)
    if rank_by not in ("abs", "signed"):
        raise ValueError(f"rank_by must be 'abs' or 'signed', got {rank_by!r}")
    key = np.abs(gamma) if rank_by == "abs" else gamma
    n_top = min(len(gamma), max(int(min_top), int(np.ceil(fraction * len(gamma) - 1e-9))))
    return np.argsort(-key, kind="stable")[:n_top]


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation (``nan`` when either side is constant or too short)."""
    from scipy.stats import spearmanr

    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 3 or np.ptp(a[ok]) == 0 or np.ptp(b[ok]) == 0:
        return float("nan")
    return float(spearmanr(a[ok], b[ok]).statistic)


# ---------------------------------------------------------------------------------- the stages
def _resolve_checkpoints(checkpoints: Any, trust: bool = False) -> list["CheckpointInfo"]:
    from ..train import CheckpointInfo, list_checkpoints

    given = isinstance(checkpoints, (list, tuple)) and len(checkpoints) > 0
    if given and all(isinstance(c, CheckpointInfo) for c in checkpoints):
        infos = list(checkpoints)
    else:
        infos = list_checkpoints(checkpoints, trust=trust)
    if len(infos) < 2:
        raise ValueError(f"the dynamics analysis needs at least 2 checkpoints of one training run, got {len(infos)}; "
                         "point --checkpoints at the run's checkpoints/ folder")
    return infos


def _checkpoint_names(infos: Sequence["CheckpointInfo"]) -> list[str]:
    # foreign files from different folders may share a stem: then name them by order
    names = [c.name for c in infos]
    return names if len(set(names)) == len(names) else [f"ckpt_{i:03d}" for i in range(len(infos))]


def _training_times(infos: Sequence["CheckpointInfo"]) -> tuple[np.ndarray, str]:
    """Training time of each checkpoint: epochs when all record one, else steps, else order."""
    if all(c.epoch is not None for c in infos):
        return np.array([float(c.epoch) for c in infos if c.epoch is not None]), "epoch"  # (all are)
    if all(c.step is not None for c in infos):
        return np.array([float(c.step) for c in infos if c.step is not None]), "step"
    return np.arange(len(infos), dtype=np.float64), "checkpoint"


def spec_loader(build_spec: Callable[[], "ModelSpec"] | str | None, *, trust: bool = False
                ) -> Callable[[Path], "ModelSpec"]:
    """A function checkpoint path -> ModelSpec with that checkpoint's weights: ``build_spec()``
    then the weights, or the model name (given, or recorded in the checkpoint) rebuilt."""
    from ..train import load_weights, read_checkpoint

    def load(path: Path) -> "ModelSpec":
        if callable(build_spec):
            spec = build_spec()
        else:
            from ..models.registry import build_model

            meta = read_checkpoint(path, trust=trust)
            name = build_spec if isinstance(build_spec, str) else meta.get("model_name")
            if not name:
                raise ValueError(f"checkpoint '{path}' does not record its model; pass the model name "
                                 "(--model cifar-resnet20, small-resnet …)")
            args = dict(meta.get("build_args") or {}) if meta.get("model_name") == name else {}
            for key in ("weights", "checkpoint", "seed", "class_names"):  # the architecture only
                args.pop(key, None)
            spec = build_model(name, **args)
        load_weights(spec, path, trust=trust)
        return spec

    return load


@dataclass
class CheckpointScores:
    """One checkpoint's own features and the final features' decodability from it.

    Attributes:
        complexity, importance: ``(k_t,)`` K and Γ of this checkpoint's own features.
        iv_final: ``(k_final,)`` ``I_V(A_t -> z)`` for every feature of the final model.
        top: indices of this checkpoint's most important features.
        accuracy, accuracy_kept: the checkpoint's top-1 on the probe images; what its dictionary keeps.
    """

    complexity: np.ndarray
    importance: np.ndarray
    iv_final: np.ndarray
    top: np.ndarray
    accuracy: float
    accuracy_kept: float | None


def _score_checkpoint(ctx: Any, path: Path, load_spec: Callable[[Path], "ModelSpec"], name: str) -> CheckpointScores:
    """Extract, score and probe one checkpoint in memory (no activations are kept)."""
    from ..activations import extract_activations
    from ..complexity import complexity
    from ..scoring import score_in_memory

    cfg = ctx.config
    spec = load_spec(path)
    acts = extract_activations(spec, ctx.inputs["probe"], batch_size=cfg.batch_size, device=cfg.device,
                               num_workers=cfg.num_workers, progress=ctx.progress)
    scores = score_in_memory(acts, spec, replace(cfg, ci_groups=0), progress=False)
    iv = complexity({name: acts.penultimate}, ctx["codes"], n_folds=cfg.n_folds, seed=cfg.seed,
                    device=cfg.device).per_layer[0]
    assert scores.importance is not None  # checkpoints have a head, as the final model (the analysis needs Γ)
    return _checkpoint_scores(scores.complexity.score, scores.importance, iv, acts, scores.fidelity, cfg)


def _checkpoint_scores(K: np.ndarray, gamma: np.ndarray, iv: np.ndarray, acts: Any, fid: Any, cfg: Any
                       ) -> CheckpointScores:
    labels = np.asarray(acts.labels)
    known = labels >= 0
    accuracy = float((acts.predictions[known] == labels[known]).mean()) if known.any() else float("nan")
    top = top_features(gamma, fraction=cfg.top_fraction, min_top=cfg.min_top, rank_by=cfg.rank_by)
    return CheckpointScores(np.asarray(K), np.asarray(gamma), np.asarray(iv), top, accuracy,
                            (fid or {}).get("accuracy_kept"))


def _final_scores(ctx: Any) -> CheckpointScores:
    """The final checkpoint is the run's own model: its scores are the run's."""
    from ..complexity import complexity

    cfg, acts = ctx.config, ctx["activations"]
    iv = complexity({"final": acts.penultimate}, ctx["codes"], n_folds=cfg.n_folds, seed=cfg.seed,
                    device=cfg.device).per_layer[0]
    return _checkpoint_scores(ctx["complexity"].score, ctx["importance"], iv, acts, ctx.get("fidelity"), cfg)


_SETTINGS = ("dictionary", "learner", "n_atoms_per_class", "n_atoms", "class_source", "codes", "nnls_tol",
             "nnls_max_iter", "nmf_max_iter", "nmf_solver", "n_folds", "alphas", "seed", "top_fraction", "min_top",
             "rank_by")


def dynamics_stages(checkpoints: Any, build_spec: Callable[[], "ModelSpec"] | str | None = None, *,
                    trust: bool = False) -> tuple[list[Any], dict[str, str]]:
    """The stages of the dynamics analysis and the fingerprints of the checkpoint files.

    The run's model must be the LAST checkpoint (its features are the "final" features whose
    decodability every checkpoint is probed for). One stage per earlier checkpoint scores it in
    memory (``checkpoint/<name>``); ``dynamics`` gathers them (tables, figures, per-feature ``A``).

    Returns:
        ``(stages, fingerprints)``: pass them as ``extra_stages`` / ``extra_fingerprints`` of
        :func:`~feature_complexity.pipeline.run_analysis`.
    """
    from ..fingerprints import file_fingerprint
    from ..io import load_dataclass, save_dataclass
    from ..stages import Stage

    infos = _resolve_checkpoints(checkpoints, trust)
    names = _checkpoint_names(infos)
    load_spec = spec_loader(build_spec, trust=trust)
    stages, prints = [], {}
    for i, (info, name) in enumerate(zip(infos, names)):
        key, file = f"checkpoint/{name}", f"dynamics/checkpoints/{name}.npz"
        last = i == len(infos) - 1
        prints[key] = file_fingerprint(info.path)
        compute: Callable[..., CheckpointScores]  # (the lambda binds extra parameters by default)
        compute = _final_scores if last else (lambda ctx, p=info.path, n=name: _score_checkpoint(ctx, p, load_spec, n))
        stages.append(Stage(
            key, compute, needs=("activations", "codes", "complexity") + (("importance",) if last else ()),
            optional=("fidelity",), settings=_SETTINGS, inputs=(key, "probe"),
            # mypy cannot infer a lambda with more (default-bound) parameters than the Callable it is given for
            save=lambda r, out, f=file: save_dataclass(out / f, r),  # type: ignore[misc]
            load=lambda out, f=file: load_dataclass(out / f, CheckpointScores),  # type: ignore[misc]
            outputs=(file,), spread=not last))
    stages.append(_summary_stage(infos, names, [s.name for s in stages]))
    return stages, prints


@dataclass
class DynamicsResult:
    """The dynamics summary: per-checkpoint rows, per-final-feature values and headline numbers."""

    checkpoints: "pd.DataFrame"
    features: "pd.DataFrame"
    iv: np.ndarray  # (T, k_final)
    summary: dict[str, Any]
    times: np.ndarray
    time_unit: str


def _summarise(ctx: Any, infos: Sequence["CheckpointInfo"], names: list[str], stage_names: list[str]) -> DynamicsResult:
    import pandas as pd

    cfg = ctx.config
    results = [ctx[n] for n in stage_names]
    times, unit = _training_times(infos)
    rank_key = np.abs if cfg.rank_by == "abs" else (lambda g: g)
    rows = [{"checkpoint": n, "path": str(c.path), "time": t, "n_features": len(r.complexity),
             "mean_complexity": float(np.mean(r.complexity)),
             "top_mean_complexity": float(np.mean(r.complexity[r.top])),
             "n_top": len(r.top), "spearman_k_importance": spearman(r.complexity, rank_key(r.importance)),
             "spearman_k_signed_importance": spearman(r.complexity, r.importance),
             "spearman_k_abs_importance": spearman(r.complexity, np.abs(r.importance)),
             "accuracy": r.accuracy, "accuracy_kept": r.accuracy_kept,
             "mean_iv_final_features": float(np.mean(r.iv_final))}
            for n, c, t, r in zip(names, infos, times, results)]
    iv = np.stack([r.iv_final for r in results])
    A = temporal_decoding_score(iv)
    final_K = results[-1].complexity
    first = first_decodable(iv, times, cfg.decodable_threshold)
    feats = pd.DataFrame({"feature": np.arange(len(A)), "A": A, "first_decodable": first})
    for n, row in zip(names, iv):
        feats[f"iv_{n}"] = row
    summary = {"n_checkpoints": len(infos), "time_unit": unit, "spearman_A_K": spearman(A, final_K),
               "mean_A": float(np.mean(A)), "fraction_never_decodable": float(np.mean(~np.isfinite(first))),
               "first": rows[0], "last": rows[-1], "rank_by": cfg.rank_by}
    return DynamicsResult(pd.DataFrame(rows), feats, iv, summary, times, unit)


def _save_summary(res: DynamicsResult, out: Path) -> None:
    from ..io import save_npy, write_json, write_parquet

    write_parquet(out / "dynamics" / "checkpoints.parquet", res.checkpoints)
    write_parquet(out / "dynamics" / "features.parquet", res.features)
    save_npy(out / "dynamics" / "iv.npy", res.iv)
    write_json(out / "dynamics.json", {"summary": res.summary, "times": res.times, "time_unit": res.time_unit})


def _load_summary(out: Path) -> DynamicsResult:
    import pandas as pd

    from ..io import read_json

    info = read_json(out / "dynamics.json")
    return DynamicsResult(pd.read_parquet(out / "dynamics" / "checkpoints.parquet"),
                          pd.read_parquet(out / "dynamics" / "features.parquet"), np.load(out / "dynamics" / "iv.npy"),
                          info["summary"], np.asarray(info["times"], dtype=np.float64), info["time_unit"])


def _summary_figures(res: DynamicsResult, ctx: Any) -> dict[str, Any]:
    from ..stages import FigureSpec

    c, final = res.checkpoints, ctx[f"checkpoint/{res.checkpoints['checkpoint'].iloc[-1]}"]
    first = ctx[f"checkpoint/{c['checkpoint'].iloc[0]}"]
    label = top_label(ctx.config)
    return {
        "dynamics_mean_complexity": FigureSpec(
            plot_mean_complexity(res.times, c["mean_complexity"], c["top_mean_complexity"], time_unit=res.time_unit,
                                 top_label=label), "Complexity across training (paper Fig. 5B)",
            "Mean K of each checkpoint's own features (black) and of its most important ones (red). The paper finds "
            "the mean rising then plateauing, and the important features getting simpler ('sedimentation')."),
        "dynamics_temporal_decoding": FigureSpec(
            plot_temporal_decoding(res.features["A"].to_numpy(), final.complexity),
            "When the final features become decodable (paper Fig. 5A)",
            "Temporal decoding score A = 1 − mean over checkpoints of I_V(penultimate_t → z) against K: complex "
            "features should become available later in training (positive correlation)."),
        "dynamics_complexity_importance": FigureSpec(
            plot_complexity_importance_over_training(first.complexity, first.importance, final.complexity,
                                                     final.importance, signed=ctx.config.rank_by == "signed",
                                                     labels=(f"first checkpoint ({c['checkpoint'].iloc[0]})",
                                                             f"last checkpoint ({c['checkpoint'].iloc[-1]})")),
            "Complexity against importance, first and last checkpoint (paper Fig. 6)",
            "No relation at the start of training; by the end, important features are simple."),
    }


def _summary_stage(infos: Sequence["CheckpointInfo"], names: list[str], stage_names: list[str]) -> Any:
    from ..stages import Stage

    return Stage("dynamics", lambda ctx: _summarise(ctx, infos, names, stage_names), needs=tuple(stage_names),
                 settings=("decodable_threshold", "rank_by"), save=_save_summary, load=_load_summary,
                 outputs=("dynamics.json",), section="when", figures=_summary_figures,
                 columns=lambda r: {"A": r.features["A"].to_numpy(),
                                    "first_decodable": r.features["first_decodable"].to_numpy()})


def top_label(config: Any) -> str:
    """The legend of the most important features' curve, e.g. "top 1% by |Γ| (≥ 5)"."""
    by = "|Γ|" if config.rank_by == "abs" else "Γ"
    return f"top {config.top_fraction:.0%} by {by} (≥ {config.min_top})"


# ---------------------------------------------------------------------------------- figures
def new_figure(width: float = 5.0, height: float = 3.6) -> "Figure":
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _time_axis(ax: Any, times: np.ndarray, time_unit: str) -> None:
    """Symmetric-log time axis: the early checkpoints inside epoch 1 stay readable."""
    positive = times[times > 0]
    if len(positive) and positive.max() / positive.min() > 20:
        # linear below the first checkpoint, wide enough that "0" and the first tick do not touch
        ax.set_xscale("symlog", linthresh=float(positive.min()), linscale=1.5)
        major = [0.0, float(positive.min()), *_nice_ticks(1.0, float(positive.max()))]
        ax.set_xticks(major, [f"{t:g}" for t in major])
        ax.set_xticks(positive, minor=True)  # every checkpoint, unlabelled: labels would overlap
    ax.set_xlabel(f"training time ({time_unit}s)")


def _nice_ticks(low: float, high: float) -> list[float]:
    """1, 2, 5 x 10^j between ``low`` and ``high`` (a log axis' labels that never crowd), and
    ``high`` itself when the last of them is well below it."""
    ticks = [m * 10.0**j for j in range(int(np.floor(np.log10(low))), int(np.ceil(np.log10(high))) + 1)
             for m in (1, 2, 5) if low <= m * 10.0**j <= high]
    if not ticks or high / ticks[-1] > 1.5:
        ticks.append(high)
    return ticks


def plot_mean_complexity(
    times: ArrayLike,
    mean_complexity: ArrayLike,
    top_mean_complexity: ArrayLike,
    *,
    time_unit: str = "epoch",
    top_label: str = "most important features",
) -> "Figure":
    """Mean complexity of all features and of the most important ones against training time
    (paper Fig. 5B). All arguments ``(T,)``."""
    times = np.asarray(times, dtype=np.float64)
    fig = new_figure()
    ax = fig.add_subplot()
    ax.plot(times, np.asarray(mean_complexity), "o-", color="black", label="all features")
    ax.plot(times, np.asarray(top_mean_complexity), "s--", color="#C44E52", label=top_label)
    _time_axis(ax, times, time_unit)
    ax.set_ylabel("mean complexity K")
    ax.set_title("complexity across training")
    ax.legend(frameon=False)
    return fig


def plot_temporal_decoding(A: np.ndarray, complexity: np.ndarray) -> "Figure":
    """Temporal decoding score ``A`` against complexity ``K`` of the final features, with
    their Spearman correlation (paper Fig. 5A). Both ``(k,)``."""
    A, K = np.asarray(A), np.asarray(complexity)
    fig = new_figure()
    ax = fig.add_subplot()
    ax.scatter(K, A, s=10, alpha=0.6, color="#4C72B0", edgecolors="none")
    ax.set_xlabel("complexity K (final model)")
    ax.set_ylabel("temporal decoding score A")
    ax.set_title(f"Spearman(A, K) = {spearman(A, K):.2f}  (n = {len(A)})")
    return fig


def plot_complexity_importance_over_training(
    complexity_first: np.ndarray,
    importance_first: np.ndarray,
    complexity_last: np.ndarray,
    importance_last: np.ndarray,
    *,
    labels: tuple[str, str] = ("first checkpoint", "last checkpoint"),
    signed: bool = False,
) -> "Figure":
    """Complexity against importance at the first and the last checkpoint, each panel with its
    Spearman correlation (paper Fig. 6). Each array ``(k_t,)`` (the two checkpoints have their
    own features). ``signed``: plot ``Γ``; else ``|Γ|``."""
    fig = new_figure(9.0, 3.6)
    axes = fig.subplots(1, 2)
    for ax, K, gamma, label in zip(axes, (complexity_first, complexity_last),
                                   (importance_first, importance_last), labels):
        K, gamma = np.asarray(K), np.asarray(gamma)
        y = gamma if signed else np.abs(gamma)
        ax.scatter(K, y, s=10, alpha=0.6, color="#55A868", edgecolors="none")
        ax.set_xlabel("complexity K")
        ax.set_ylabel("importance Γ" if signed else "importance |Γ|")
        ax.set_title(f"{label}\nSpearman = {spearman(K, y):.2f}")
    return fig
