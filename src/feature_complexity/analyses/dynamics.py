"""When are features learned: complexity across training checkpoints (paper section 6, Fig. 5, 6).

Two analyses over an ordered list of checkpoints ``t = 1..T`` of one training run:

1. **Per-checkpoint features** (Fig. 5B, Fig. 6). At each checkpoint the features are extracted
   independently (the same per-class dictionary recipe on that checkpoint's penultimate layer
   ``A_t``), their complexity ``K`` is scored with that checkpoint's own probe layers and their
   importance ``Γ`` with its own head. Summaries per checkpoint: mean ``K`` of all features, mean
   ``K`` of the most important ones (top fraction by ``|Γ|`` or ``Γ``), Spearman(``K``, ``Γ``).
2. **Temporal decoding score** (Fig. 5A). For every feature ``z`` of the *final* checkpoint
   (codes ``Z_final``, shape ``(n_images, k)``) and every checkpoint ``t``,
   ``I_V(A_t -> z)`` with the linear-Gaussian family (the complexity engine with one "layer" per
   checkpoint), and

       A(z) = 1 - (1/T) sum_t I_V(A_t -> z)

   low: ``z`` was linearly available early in training; high: late. Also, per feature, the first
   checkpoint at which ``I_V`` reaches a threshold (default one half).

Cost: one streaming pass over the probe images per checkpoint. The final checkpoint is analysed
first so that ``Z_final`` is known and ``I_V(A_t -> Z_final)`` is computed from the same pass as
checkpoint ``t``'s own features; the pooled activations are never stored across checkpoints.
Each checkpoint's results are cached in ``dynamics_cache/<checkpoint>.npz``: a rerun skips the
checkpoints already done.

Output folder::

    out_dir/
      dynamics.json                 summary, configuration, versions, checkpoints, timings
      dynamics_checkpoints.parquet  one row per checkpoint (step, epoch, mean_complexity, …)
      dynamics_features.parquet     one row per final feature (complexity, importance, A, iv_<t>…)
      dynamics_cache/<name>.npz     per-checkpoint results (resume)
      figures/mean_complexity.png, temporal_decoding.png, complexity_importance_training.png
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from ..io import package_versions, save_figure, save_npz, write_json, write_parquet

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure
    from torch.utils.data import Dataset

    from ..complexity import ComplexityResult
    from ..models.spec import ModelSpec
    from ..train import CheckpointInfo

__all__ = [
    "DynamicsConfig",
    "DynamicsResult",
    "run_dynamics",
    "decodability_over_checkpoints",
    "temporal_decoding_score",
    "first_decodable",
    "top_features",
    "spearman",
    "plot_mean_complexity",
    "plot_temporal_decoding",
    "plot_complexity_importance_over_training",
]

_CACHE_VERSION = 1


@dataclass
class DynamicsConfig:
    """Choices of the dynamics analysis.

    Attributes:
        n_atoms_per_class: atoms of each checkpoint's per-class dictionary (paper: 10).
        class_source: which images stand for a class: ``"auto"`` (label where known, else the
            prediction), ``"label"`` or ``"prediction"``. Labels are the sensible choice: early
            checkpoints predict almost one class.
        top_fraction: fraction of the most important features whose mean ``K`` is tracked
            (paper: 1 %).
        min_top: at least this many features in the top group (few features: 1 % is too few).
        rank_by: ``"abs"`` ranks by ``|Γ|`` (excitatory and inhibitory alike) or ``"signed"``
            by ``Γ``. The same choice is the importance axis of Spearman(``K``, importance).
        decodable_threshold: ``I_V`` at which a final feature counts as decodable from a
            checkpoint (``first_decodable_epoch``).
        n_folds, seed: the held-out V-information estimate (same folds for every checkpoint).
        batch_size, device, num_workers: the forward passes (and the engine's device).
        nnls_max_iter, nnls_tol: the codes' NNLS solver.
    """

    n_atoms_per_class: int = 10
    class_source: str = "auto"
    top_fraction: float = 0.01
    min_top: int = 5
    rank_by: str = "abs"
    decodable_threshold: float = 0.5
    n_folds: int = 5
    seed: int = 0
    batch_size: int = 256
    device: str = "cpu"
    num_workers: int = 0
    nnls_max_iter: int = 1000
    nnls_tol: float = 1e-6

    def validate(self) -> None:
        """Raise ``ValueError`` naming the bad field."""
        if self.n_atoms_per_class < 1:
            raise ValueError(f"n_atoms_per_class must be >= 1, got {self.n_atoms_per_class}")
        if not 0 < self.top_fraction <= 1:
            raise ValueError(f"top_fraction must be in (0, 1], got {self.top_fraction}")
        if self.min_top < 1:
            raise ValueError(f"min_top must be >= 1, got {self.min_top}")
        if self.rank_by not in ("abs", "signed"):
            raise ValueError(f"rank_by must be 'abs' (|Γ|) or 'signed' (Γ), got {self.rank_by!r}")
        if not 0 < self.decodable_threshold <= 1:
            raise ValueError(f"decodable_threshold must be in (0, 1], got {self.decodable_threshold}")
        if self.class_source not in ("auto", "label", "prediction"):
            raise ValueError(f"class_source must be 'auto', 'label' or 'prediction', got {self.class_source!r}")

    def run_config(self) -> Any:
        """The pipeline's :class:`~feature_complexity.pipeline.RunConfig` for one checkpoint."""
        from ..pipeline import RunConfig

        return RunConfig(
            dictionary="per_class", n_atoms_per_class=self.n_atoms_per_class,
            class_source=self.class_source, n_folds=self.n_folds, seed=self.seed,
            batch_size=self.batch_size, device=self.device, num_workers=self.num_workers,
            capture_branches=False, nnls_max_iter=self.nnls_max_iter, nnls_tol=self.nnls_tol,
        )


@dataclass
class DynamicsResult:
    """What :func:`run_dynamics` computed.

    Attributes:
        out_dir: the output folder.
        checkpoints: one row per checkpoint (see the module docstring).
        features: one row per feature of the final checkpoint.
        iv: ``(T, k_final)`` ``I_V(A_t -> z)`` for every checkpoint ``t`` and final feature.
        summary: the headline numbers (also in ``dynamics.json``).
    """

    out_dir: Path
    checkpoints: "pd.DataFrame"
    features: "pd.DataFrame"
    iv: np.ndarray
    summary: dict[str, Any]


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


def first_decodable(iv: np.ndarray, times: Sequence[float], threshold: float = 0.5) -> np.ndarray:
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


# ---------------------------------------------------------------------------------- the run
def _resolve_checkpoints(checkpoints: Any) -> list["CheckpointInfo"]:
    from ..train import CheckpointInfo, list_checkpoints

    if isinstance(checkpoints, (list, tuple)) and checkpoints and all(
        isinstance(c, CheckpointInfo) for c in checkpoints
    ):
        infos = list(checkpoints)
    else:
        infos = list_checkpoints(checkpoints)
    if len(infos) < 2:
        raise ValueError(
            f"the dynamics analysis needs at least 2 checkpoints of one training run, got {len(infos)}; "
            "point --checkpoints at the run's checkpoints/ folder"
        )
    return infos


def _checkpoint_names(infos: Sequence["CheckpointInfo"]) -> list[str]:
    # foreign files from different folders may share a stem: then name them by order
    names = [c.name for c in infos]
    if len(set(names)) != len(names):
        names = [f"ckpt_{i:03d}" for i in range(len(infos))]
    return names


def _training_times(infos: Sequence["CheckpointInfo"]) -> tuple[np.ndarray, str]:
    """Training time of each checkpoint: epochs when all record one, else steps, else order."""
    if all(c.epoch is not None for c in infos):
        return np.array([float(c.epoch) for c in infos]), "epoch"
    if all(c.step is not None for c in infos):
        return np.array([float(c.step) for c in infos]), "step"
    return np.arange(len(infos), dtype=np.float64), "checkpoint"


def _spec_loader(build_spec: Callable[[], "ModelSpec"] | str | None) -> Callable[[Path], "ModelSpec"]:
    """A function checkpoint path -> ModelSpec with that checkpoint's weights."""
    from ..train import load_weights, read_checkpoint

    if callable(build_spec):
        def load(path: Path) -> "ModelSpec":
            spec = build_spec()
            load_weights(spec, path)
            return spec
        return load

    def load_named(path: Path) -> "ModelSpec":
        from ..models.registry import build_model

        meta = read_checkpoint(path)
        name = build_spec if isinstance(build_spec, str) else meta.get("model_name")
        if not name:
            raise ValueError(
                f"checkpoint '{path}' does not record its model; pass the model name "
                "(--model cifar-resnet20, small-resnet …) or a build_spec function"
            )
        args = dict(meta.get("build_args") or {}) if meta.get("model_name") == name else {}
        # rebuild the architecture only; the weights come from this checkpoint
        for key in ("weights", "checkpoint", "seed", "class_names"):
            args.pop(key, None)
        spec = build_model(name, **args)
        load_weights(spec, path)
        return spec
    return load_named


def _fingerprint(config: DynamicsConfig, probe_set: Any, infos: Sequence["CheckpointInfo"]) -> str:
    """What a cached checkpoint result depends on: the scoring choices, the probe images, and the
    final checkpoint (whose codes every ``I_V`` targets)."""
    final = infos[-1].path
    stat = final.stat()
    describe = getattr(probe_set, "describe", None)
    key = {
        "cache_version": _CACHE_VERSION,
        "config": {k: v for k, v in asdict(config).items() if k not in ("batch_size", "device", "num_workers")},
        "n_probe": len(probe_set),
        "probe": describe() if callable(describe) else None,
        "final": [str(final.resolve()), stat.st_size, int(stat.st_mtime_ns)],
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _checkpoint_fingerprint(fingerprint: str, info: "CheckpointInfo") -> str:
    """The cache key of one checkpoint: the run's fingerprint and this checkpoint's own file.
    The cache file is named by the checkpoint's name (or, when names collide, its position),
    which alone does not identify the weights it was computed from."""
    stat = info.path.stat()
    key = [fingerprint, str(info.path.resolve()), stat.st_size, int(stat.st_mtime_ns)]
    return hashlib.sha256(json.dumps(key).encode()).hexdigest()[:16]


def _load_cache(path: Path, fingerprint: str) -> dict[str, np.ndarray] | None:
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            cached = {k: data[k] for k in data.files}
    except (OSError, ValueError):  # unreadable (should not happen: writes are atomic): recompute
        return None
    if str(cached.get("fingerprint")) != fingerprint:
        return None
    return cached


def run_dynamics(
    checkpoints: str | os.PathLike | Iterable[str | os.PathLike] | Sequence["CheckpointInfo"],
    build_spec: Callable[[], "ModelSpec"] | str | None,
    probe_set: "Dataset",
    out_dir: str | os.PathLike,
    config: DynamicsConfig | None = None,
    *,
    progress: bool = True,
) -> DynamicsResult:
    """Complexity across training: per-checkpoint features and the temporal decoding score.

    Args:
        checkpoints: a folder, a list of files, or :func:`~feature_complexity.train.list_checkpoints`
            output; ordered by the training time they record.
        build_spec: a function returning a fresh :class:`ModelSpec` of the architecture (each
            checkpoint's weights are loaded into it), or a model name for
            :func:`~feature_complexity.models.registry.build_model`, or ``None`` to use the model
            name and build arguments the checkpoints record (checkpoints made by :func:`train`).
        probe_set: the images (``(x, label)`` dataset in the model's preprocessing).
        out_dir: output folder (created); see the module docstring.
        config: :class:`DynamicsConfig`.
        progress: progress bars.

    Returns:
        :class:`DynamicsResult`.
    """
    import pandas as pd

    from ..activations import extract_activations
    from ..complexity import complexity
    from ..pipeline import score_features

    config = config or DynamicsConfig()
    config.validate()
    infos = _resolve_checkpoints(checkpoints)
    names = _checkpoint_names(infos)
    times, time_unit = _training_times(infos)
    if len(probe_set) == 0:
        raise ValueError("the probe set is empty; point --data at a folder with images")
    out = Path(out_dir)
    cache_dir = out / "dynamics_cache"
    cache_dir.mkdir(parents=True, exist_ok=True)
    fingerprint = _fingerprint(config, probe_set, infos)
    load_spec = _spec_loader(build_spec)
    run_config = config.run_config()
    class_names = getattr(probe_set, "classes", None)

    T = len(infos)
    # the final checkpoint first: its codes Z_final are the targets of every other checkpoint's I_V
    order = [T - 1] + list(range(T - 1))
    results: dict[int, dict[str, np.ndarray]] = {}
    Z_final: np.ndarray | None = None
    timings: dict[str, float] = {}
    stages: dict[str, dict[str, float]] = {}
    for count, t in enumerate(order):
        info, name = infos[t], names[t]
        cache_path = cache_dir / f"{name}.npz"
        key = _checkpoint_fingerprint(fingerprint, info)
        cached = _load_cache(cache_path, key)
        if cached is not None:
            results[t] = cached
            timings[name] = float(cached["seconds"])
            stages[name] = json.loads(str(cached["stage_seconds"])) if "stage_seconds" in cached else {}
            if t == T - 1:
                Z_final = cached["codes"]
            if progress:
                print(f"[{count + 1}/{T}] {name}: cached")
            continue
        if progress:
            print(f"[{count + 1}/{T}] {name} ({time_unit} {times[t]:g}): {info.path}")
        start = time.perf_counter()
        spec = load_spec(info.path)
        acts = extract_activations(spec, probe_set, batch_size=config.batch_size, device=config.device,
                                   num_workers=config.num_workers, progress=progress)
        stage_seconds = {"load_and_activations": time.perf_counter() - start}
        scores = score_features(acts, spec, run_config, progress=False)
        stage_seconds.update(scores.timings)
        t_iv = time.perf_counter()
        K = np.asarray(scores.complexity.score)
        gamma = np.asarray(scores.importance)
        if t == T - 1:
            Z_final = np.asarray(scores.codes, dtype=np.float32)
        assert Z_final is not None
        iv = complexity({name: acts.penultimate}, Z_final, n_folds=config.n_folds, seed=config.seed,
                        device=config.device).per_layer[0]
        stage_seconds["temporal_decoding"] = time.perf_counter() - t_iv
        labels = np.asarray(acts.labels)
        known = labels >= 0
        top = top_features(gamma, fraction=config.top_fraction, min_top=config.min_top, rank_by=config.rank_by)
        entry: dict[str, Any] = {
            "fingerprint": np.array(key),
            "complexity": K,
            "importance": gamma,
            "feature_class": np.asarray(scores.dictionary.feature_class),
            "per_layer": np.asarray(scores.complexity.per_layer),
            "layer_names": np.array(scores.complexity.layer_names),
            "iv_final": np.asarray(iv),
            "top": top,
            "accuracy": np.array(float((acts.predictions[known] == labels[known]).mean()) if known.any() else np.nan),
            "accuracy_kept": np.array(float(scores.fidelity.get("accuracy_kept", np.nan))),
            "seconds": np.array(time.perf_counter() - start),
            "stage_seconds": np.array(json.dumps({k: round(v, 3) for k, v in stage_seconds.items()})),
        }
        if t == T - 1:
            entry["codes"] = Z_final
        save_npz(cache_path, **entry)
        results[t] = entry
        timings[name] = float(entry["seconds"])
        stages[name] = json.loads(str(entry["stage_seconds"]))
        del spec, acts, scores

    # ---- per-checkpoint table
    rank_key = (lambda g: np.abs(g)) if config.rank_by == "abs" else (lambda g: g)
    rows = []
    for t, (info, name) in enumerate(zip(infos, names)):
        r = results[t]
        K, gamma, top = r["complexity"], r["importance"], r["top"]
        rows.append({
            "checkpoint": name,
            "path": str(info.path),
            "step": info.step if info.step is not None else -1,
            "epoch": info.epoch if info.epoch is not None else np.nan,
            "time": times[t],
            "n_features": len(K),
            "mean_complexity": float(np.mean(K)),
            "top_mean_complexity": float(np.mean(K[top])),
            "n_top": len(top),
            "spearman_k_importance": spearman(K, rank_key(gamma)),
            "spearman_k_signed_importance": spearman(K, gamma),
            "spearman_k_abs_importance": spearman(K, np.abs(gamma)),
            "accuracy": float(r["accuracy"]),
            "accuracy_kept": float(r["accuracy_kept"]),
            "mean_iv_final_features": float(np.mean(r["iv_final"])),
            "seconds": float(r["seconds"]),
        })
    ckpt_frame = pd.DataFrame(rows)

    # ---- per-final-feature table
    final = results[T - 1]
    iv = np.stack([results[t]["iv_final"] for t in range(T)])  # (T, k_final)
    A = temporal_decoding_score(iv)
    first_time = first_decodable(iv, times, config.decodable_threshold)
    first_index = first_decodable(iv, np.arange(T, dtype=np.float64), config.decodable_threshold)
    fc = np.asarray(final["feature_class"])
    feat = pd.DataFrame({
        "feature": np.arange(len(A)),
        "class": fc,
        "class_name": [class_names[c] if class_names is not None and 0 <= c < len(class_names) else str(c)
                       for c in fc],
        "complexity": final["complexity"],
        "importance": final["importance"],
        "abs_importance": np.abs(final["importance"]),
        "A": A,
        f"first_decodable_{time_unit}": first_time,
        "first_decodable_checkpoint": [names[int(i)] if np.isfinite(i) else None for i in first_index],
    })
    if time_unit != "epoch":  # the documented column name exists whatever the time unit
        feat["first_decodable_epoch"] = np.nan
    for name, row in zip(names, iv):
        feat[f"iv_{name}"] = row

    first, last = rows[0], rows[-1]
    summary = {
        "n_checkpoints": T,
        "n_probe_images": len(probe_set),
        "n_final_features": int(len(A)),
        "time_unit": time_unit,
        "spearman_A_K": spearman(A, final["complexity"]),
        "mean_A": float(np.mean(A)),
        "fraction_never_decodable": float(np.mean(~np.isfinite(first_time))),
        "first": {k: first[k] for k in ("checkpoint", "time", "mean_complexity", "top_mean_complexity",
                                         "spearman_k_importance", "accuracy")},
        "last": {k: last[k] for k in ("checkpoint", "time", "mean_complexity", "top_mean_complexity",
                                       "spearman_k_importance", "accuracy")},
        "rank_by": config.rank_by,
        "seconds_per_checkpoint": float(np.mean(list(timings.values()))),
    }

    # ---- outputs (each atomic)
    write_parquet(out / "dynamics_checkpoints.parquet", ckpt_frame)
    write_parquet(out / "dynamics_features.parquet", feat)
    figs = out / "figures"
    save_figure(figs / "mean_complexity.png",
                plot_mean_complexity(times, ckpt_frame["mean_complexity"], ckpt_frame["top_mean_complexity"],
                                     time_unit=time_unit, top_label=_top_label(config)))
    save_figure(figs / "temporal_decoding.png", plot_temporal_decoding(A, final["complexity"]))
    save_figure(figs / "complexity_importance_training.png",
                plot_complexity_importance_over_training(
                    results[0]["complexity"], results[0]["importance"],
                    final["complexity"], final["importance"],
                    labels=(f"{names[0]} ({time_unit} {times[0]:g})", f"{names[-1]} ({time_unit} {times[-1]:g})"),
                    signed=config.rank_by == "signed"))
    write_json(out / "dynamics.json", {
        "summary": summary,
        "config": asdict(config),
        "versions": package_versions(),
        "probe": probe_set.describe() if callable(getattr(probe_set, "describe", None)) else {"n_images": len(probe_set)},
        "checkpoints": [{"name": n, "path": str(c.path), "step": c.step, "epoch": c.epoch,
                         "order_source": c.order_source} for n, c in zip(names, infos)],
        "seconds_per_checkpoint": timings,
        "seconds_per_stage": stages,
        "fingerprint": fingerprint,
    })
    return DynamicsResult(out_dir=out, checkpoints=ckpt_frame, features=feat, iv=iv, summary=summary)


def _top_label(config: DynamicsConfig) -> str:
    by = "|Γ|" if config.rank_by == "abs" else "Γ"
    return f"top {config.top_fraction:.0%} by {by} (≥ {config.min_top})"


# ---------------------------------------------------------------------------------- figures
def _new_figure(width: float = 5.0, height: float = 3.6) -> "Figure":
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _time_axis(ax: Any, times: np.ndarray, time_unit: str) -> None:
    """Symmetric-log time axis: the early checkpoints inside epoch 1 stay readable."""
    positive = times[times > 0]
    if len(positive) and positive.max() / positive.min() > 20:
        ax.set_xscale("symlog", linthresh=float(positive.min()))
    ax.set_xlabel(f"training time ({time_unit}s)")


def plot_mean_complexity(
    times: Sequence[float],
    mean_complexity: Sequence[float],
    top_mean_complexity: Sequence[float],
    *,
    time_unit: str = "epoch",
    top_label: str = "most important features",
) -> "Figure":
    """Mean complexity of all features and of the most important ones against training time
    (paper Fig. 5B). All arguments ``(T,)``."""
    times = np.asarray(times, dtype=np.float64)
    fig = _new_figure()
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
    fig = _new_figure()
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
    fig = _new_figure(9.0, 3.6)
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
