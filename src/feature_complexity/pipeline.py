"""Run orchestration: model + images -> activations -> features -> scores -> run folder.

Each stage writes its output atomically in the run folder and records its wall time in
``manifest.json``; a rerun of the same command skips the stages whose output exists, so an
interrupted run resumes without losing finished work. A run folder made with a different
configuration is refused rather than silently mixed.

The scoring itself (:func:`score_features`) takes arrays and returns arrays, so the training
dynamics analysis reuses it on every checkpoint.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from .io import jsonable, package_versions, read_json, save_figure, save_npy, save_npz, write_json, write_parquet

if TYPE_CHECKING:
    import pandas as pd
    from torch.utils.data import Dataset

    from .activations import Activations
    from .complexity import ComplexityResult
    from .features import Dictionary
    from .models.spec import ModelSpec

__all__ = ["RunConfig", "Scores", "RunResult", "score_features", "run_analysis", "features_frame"]


@dataclass
class RunConfig:
    """Every choice of a run (the defaults follow ``paper-method.md`` section 9).

    Attributes:
        dictionary: ``"per_class"`` (paper, CRAFT: NMF per class, stacked) or ``"global"``.
        n_atoms_per_class: atoms per class for the per-class dictionary (paper: 10).
        n_atoms: atoms of the global dictionary.
        class_source: which images stand for a class: ``"label"``, ``"prediction"``, or
            ``"auto"`` (the label where known, else the prediction).
        n_folds: folds of the held-out V-information estimate.
        alphas: relative ridge penalties searched by cross-validation (``None``: the engine's grid).
        seed: one seed for NMF, folds and anything random.
        batch_size, device, num_workers: the forward pass and the batched NNLS.
        capture_branches: record skip/main branches for the flow analysis (when the model
            describes them).
        nnls_max_iter, nnls_tol: the batched NNLS solver.
        nmf_max_iter: iteration budget of each NMF (scikit-learn's coordinate descent).
    """

    dictionary: str = "per_class"
    n_atoms_per_class: int = 10
    n_atoms: int | None = None
    class_source: str = "auto"
    n_folds: int = 5
    alphas: tuple[float, ...] | None = None
    seed: int = 0
    batch_size: int = 256
    device: str = "cpu"
    num_workers: int = 0
    capture_branches: bool = True
    nnls_max_iter: int = 1000
    nnls_tol: float = 1e-6
    nmf_max_iter: int = 1000

    def scoring_key(self) -> dict[str, Any]:
        """The settings that change the numbers (a resumed run must match them)."""
        keys = ("dictionary", "n_atoms_per_class", "n_atoms", "class_source", "n_folds", "alphas",
                "seed", "nnls_max_iter", "nnls_tol", "nmf_max_iter")
        out = {k: getattr(self, k) for k in keys}
        out["alphas"] = list(out["alphas"]) if out["alphas"] is not None else None
        return out


@dataclass
class Scores:
    """Everything :func:`score_features` computes for one set of activations."""

    dictionary: "Dictionary"
    codes: np.ndarray  # Z (n_images, k)
    complexity: "ComplexityResult"
    importance: np.ndarray  # Γ (k,)
    fidelity: dict[str, Any]
    image_class: np.ndarray  # (n_images,)
    timings: dict[str, float] = field(default_factory=dict)


@dataclass
class RunResult:
    out_dir: Path
    scores: Scores
    features: "pd.DataFrame"
    manifest: dict[str, Any]


def _head(spec: "ModelSpec") -> Callable:
    return spec.get(spec.head)


class _Timer:
    def __init__(self, timings: dict[str, float], name: str):
        self.timings, self.name = timings, name

    def __enter__(self) -> None:
        self.start = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        self.timings[self.name] = round(time.perf_counter() - self.start, 3)


def fit_features(A: np.ndarray, image_class: np.ndarray, n_classes: int, config: RunConfig,
                 *, progress: bool = True) -> "Dictionary":
    """The dictionary stage: per-class (or global) NMF on the penultimate activations."""
    import warnings

    from .features import fit_dictionary

    present = np.unique(image_class)
    if config.dictionary == "per_class" and present.size < n_classes:
        # Common and legitimate: a probe set covering a subset of ImageNet's classes.
        warnings.warn(
            f"{present.size} of the model's {n_classes} classes have images; features are "
            "extracted for those classes only", stacklevel=2,
        )
    return fit_dictionary(
        np.asarray(A), image_class, method=config.dictionary,
        n_atoms_per_class=config.n_atoms_per_class, n_atoms=config.n_atoms,
        n_classes=n_classes, seed=config.seed, max_iter=config.nmf_max_iter,
        skip_empty_classes=True, progress=progress,
    )


def encode_features(A: np.ndarray, D: np.ndarray, config: RunConfig) -> np.ndarray:
    """The codes stage: NNLS of every penultimate vector against the whole ``D``, as float32
    ``(n_images, k)``: the precision the run folder stores, so that a resumed run and
    :func:`score_features` give the same numbers as a fresh run."""
    from .features import encode

    Z = encode(np.asarray(A), D, device=config.device, batch_size=4096,
               max_iter=config.nnls_max_iter, tol=config.nnls_tol)
    return np.asarray(Z, dtype=np.float32)


def score_complexity(layers: dict[str, np.ndarray], Z: np.ndarray, config: RunConfig) -> "ComplexityResult":
    """The complexity stage: ``I_V`` of every feature from every probe layer, and ``K``."""
    from .complexity import complexity

    kwargs = {} if config.alphas is None else {"alphas": config.alphas}
    return complexity(layers, Z, n_folds=config.n_folds, seed=config.seed, device=config.device, **kwargs)


def score_importance(Z: np.ndarray, dictionary: "Dictionary", spec: "ModelSpec", image_class: np.ndarray,
                     config: RunConfig) -> np.ndarray:
    """The importance stage: signed gradient x input ``Γ (k,)`` through the model's head."""
    from .importance import importance

    return importance(Z, dictionary.D, _head(spec), feature_class=dictionary.feature_class,
                      image_class=image_class, device=config.device)


def score_features(
    activations: "Activations",
    spec: "ModelSpec",
    config: RunConfig,
    *,
    progress: bool = True,
) -> Scores:
    """Dictionary, codes, fidelity, complexity and importance for one set of activations.

    Args:
        activations: one pass over the probe images (see :mod:`feature_complexity.activations`).
        spec: the model; its head is used for fidelity and importance.
        config: the run's choices.

    Returns:
        :class:`Scores`; ``timings`` holds seconds per stage.
    """
    from .features import fidelity

    timings: dict[str, float] = {}
    image_class = activations.image_classes(config.class_source)
    A = np.asarray(activations.penultimate)
    with _Timer(timings, "dictionary"):
        dictionary = fit_features(A, image_class, spec.num_classes, config, progress=progress)
    with _Timer(timings, "codes"):
        Z = encode_features(A, dictionary.D, config)
    head = _head(spec)
    with _Timer(timings, "fidelity"):
        fid = fidelity(A, Z, dictionary.D, head, labels=np.asarray(activations.labels))
    with _Timer(timings, "complexity"):
        result = score_complexity(activations.layers, Z, config)
    with _Timer(timings, "importance"):
        gamma = score_importance(Z, dictionary, spec, image_class, config)
    return Scores(dictionary, Z, result, gamma, fid, image_class, timings)


def features_frame(scores: Scores, class_names: list[str] | None = None) -> "pd.DataFrame":
    """One row per feature: feature, class, class_name, complexity, importance, abs_importance,
    inhibitor, mean_code, iv_<layer>…"""
    import pandas as pd

    res = scores.complexity
    fc = np.asarray(scores.dictionary.feature_class)
    frame = pd.DataFrame({
        "feature": np.arange(len(res.score)),
        "class": fc,
        "class_name": [class_names[c] if class_names is not None and 0 <= c < len(class_names)
                       else str(c) for c in fc],
        "complexity": res.score,
        "importance": scores.importance,
        "abs_importance": np.abs(scores.importance),
        "inhibitor": scores.importance < 0,
        "mean_code": np.asarray(scores.codes).mean(axis=0),
    })
    for name, row in zip(res.layer_names, res.per_layer):
        frame[f"iv_{name}"] = row
    return frame


def _write_figures(out: Path, scores: Scores) -> None:
    from .report import figures

    res = scores.complexity
    save_figure(out / "figures" / "complexity_hist.png", figures.complexity_histogram(res.score))
    save_figure(out / "figures" / "decodability.png",
                figures.decodability_curves(res.per_layer, res.score, res.layer_names))
    save_figure(out / "figures" / "complexity_importance.png",
                figures.complexity_vs_importance(res.score, scores.importance))


def _check_manifest(out: Path, config: RunConfig, model_info: dict, data_info: dict, n_images: int) -> dict:
    path = out / "manifest.json"
    if not path.exists():
        return {}
    old = read_json(path)
    new_key = config.scoring_key()
    diffs = [k for k in new_key if old.get("config", {}).get(k) != new_key[k]]
    old_model = old.get("model", {})
    for key in ("name", "weights", "checkpoint"):
        if old_model.get(key) != jsonable(model_info.get(key)):
            diffs.append(f"model {key}")
    # a checkpoint retrained into the same path keeps every name above; folders written before
    # the digest was recorded have none and are not checked
    if "weights_digest" in old_model and old_model["weights_digest"] != model_info.get("weights_digest"):
        diffs.append("model weights (the checkpoint's contents)")
    if old.get("data") not in (None, jsonable(data_info)) or old.get("n_images") not in (None, n_images):
        diffs.append("data")
    if diffs:
        raise ValueError(
            f"run folder {out} was made with a different configuration (differs in: "
            f"{', '.join(diffs)}); choose another --out, or delete the folder to start over"
        )
    return old


def run_analysis(
    spec: "ModelSpec",
    dataset: "Dataset",
    out_dir: str | Path,
    config: RunConfig | None = None,
    *,
    model_info: dict[str, Any] | None = None,
    data_info: dict[str, Any] | None = None,
    flow: bool = True,
    report: bool = True,
    progress: bool = True,
) -> RunResult:
    """Analyse ``spec`` on ``dataset`` and write the run folder ``out_dir``.

    Stages (each skipped when its output exists from an earlier, identical run): activations,
    dictionary, codes, fidelity, complexity, importance, the feature table, figures, then the
    residual-flow analysis (when the model describes its branches) and the HTML report.

    Args:
        spec: the model description.
        dataset: ``(image, label)`` pairs, preprocessed for the model.
        out_dir: the run folder (created).
        config: the run's choices; defaults follow the paper.
        model_info, data_info: how to rebuild the model and data (recorded in the manifest,
            used by ``feature-complexity report`` to render image evidence).
        flow, report: run these stages too.
    """
    from .activations import Activations, _weights_digest, extract_activations
    from .complexity import ComplexityResult
    from .features import Dictionary

    config = config or RunConfig()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model_info = {"name": spec.name, **(model_info or {})}
    model_info["weights_digest"] = _weights_digest(spec.module)
    # data_info is how to rebuild the data (ImageSource.describe()); n_images what was analysed
    data_info = dict(data_info or {})
    n_images = len(dataset)  # type: ignore[arg-type]
    previous = _check_manifest(out, config, model_info, data_info, n_images)
    timings: dict[str, float] = dict(previous.get("timings", {}))
    manifest: dict[str, Any] = {
        "tool": "feature-complexity",
        "config": {**dataclasses.asdict(config), **config.scoring_key()},
        "model": {**model_info, **spec.describe()},
        "data": data_info,
        "n_images": n_images,
        "versions": package_versions(),
        "timings": timings,
        "stages": dict(previous.get("stages", {})),
        "started": previous.get("started", time.strftime("%Y-%m-%dT%H:%M:%S%z")),
    }

    def stage_done(name: str, seconds: float | None = None) -> None:
        if seconds is not None:
            timings[name] = round(seconds, 3)
        manifest["stages"][name] = "done"
        write_json(out / "manifest.json", manifest)

    write_json(out / "manifest.json", manifest)
    # every stage that runs the model (activations, fidelity, importance, flow, report) runs it
    # on config.device, including the ones reached when earlier stages are resumed from disk
    spec.module.eval().to(config.device)
    capture_branches = config.capture_branches and bool(spec.branches)

    # --- activations (one streaming pass; resumable at batch granularity)
    t0 = time.perf_counter()
    # A stage is reused only if it and every stage before it are reused: once one is recomputed,
    # the outputs after it are stale even if they exist.
    recomputed = False

    def reusable(stage: str, path: Path | None = None) -> bool:
        return (not recomputed and manifest["stages"].get(stage) == "done"
                and (path is None or path.exists()))

    if reusable("activations"):
        acts = Activations.load(out / "activations")
    else:
        acts = extract_activations(spec, dataset, batch_size=config.batch_size, device=config.device,
                                   num_workers=config.num_workers, capture_branches=capture_branches,
                                   store=out / "activations", progress=progress)
        stage_done("activations", time.perf_counter() - t0)
        recomputed = True

    image_class = acts.image_classes(config.class_source)
    A = np.asarray(acts.penultimate)
    head = _head(spec)

    # --- dictionary
    dict_path = out / "dictionary.npz"
    if reusable("dictionary", dict_path):
        dictionary = Dictionary.load(dict_path)
    else:
        t0 = time.perf_counter()
        dictionary = fit_features(A, image_class, spec.num_classes, config, progress=progress)
        dictionary.save(dict_path)
        stage_done("dictionary", time.perf_counter() - t0)
        recomputed = True

    # --- codes
    codes_path = out / "codes.npy"
    if reusable("codes", codes_path):
        Z = np.load(codes_path)
    else:
        t0 = time.perf_counter()
        Z = encode_features(A, dictionary.D, config)
        save_npy(codes_path, Z)
        stage_done("codes", time.perf_counter() - t0)
        recomputed = True

    # --- fidelity
    from .features import fidelity

    t0 = time.perf_counter()
    fid = fidelity(A, Z, dictionary.D, head, labels=np.asarray(acts.labels))
    write_json(out / "fidelity.json", fid)
    stage_done("fidelity", time.perf_counter() - t0)

    # --- complexity
    cx_path = out / "complexity.npz"
    if reusable("complexity", cx_path):
        with np.load(cx_path) as f:
            result = ComplexityResult(score=f["score"], per_layer=f["per_layer"],
                                      layer_names=[str(s) for s in f["layer_names"]], alpha=f["alpha"],
                                      n_images=int(f["n_images"]), n_folds=int(f["n_folds"]))
    else:
        t0 = time.perf_counter()
        result = score_complexity(acts.layers, Z, config)
        save_npz(cx_path, score=result.score, per_layer=result.per_layer,
                 layer_names=np.array(result.layer_names), alpha=result.alpha,
                 n_images=result.n_images, n_folds=result.n_folds)
        stage_done("complexity", time.perf_counter() - t0)

    # --- importance (cheap: recomputed on every run)
    t0 = time.perf_counter()
    gamma = score_importance(Z, dictionary, spec, image_class, config)
    save_npy(out / "importance.npy", gamma)
    stage_done("importance", time.perf_counter() - t0)

    scores = Scores(dictionary, Z, result, gamma, fid, image_class)
    frame = features_frame(scores, spec.class_names)
    run_flow_stage = flow and capture_branches
    flow_reused = run_flow_stage and reusable("flow", out / "flow.json")
    if flow_reused and (out / "flow_features.parquet").exists():
        # the finished flow analysis's per-feature columns, which it added to features.parquet
        import pandas as pd

        flow_cols = pd.read_parquet(out / "flow_features.parquet").drop(columns="complexity", errors="ignore")
        frame = frame.merge(flow_cols, on="feature", how="left")
    write_parquet(out / "features.parquet", frame)
    if not reusable("figures"):
        t0 = time.perf_counter()
        _write_figures(out, scores)
        stage_done("figures", time.perf_counter() - t0)

    if run_flow_stage and not flow_reused:
        from .analyses.flow import run_flow

        t0 = time.perf_counter()
        run_flow(out, progress=progress)
        stage_done("flow", time.perf_counter() - t0)

    manifest["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    write_json(out / "manifest.json", manifest)
    if report:
        from .report.html import build_report

        t0 = time.perf_counter()
        build_report(out, spec=spec, dataset=dataset, device=config.device, progress=progress)
        stage_done("report", time.perf_counter() - t0)
    return RunResult(out, scores, frame, manifest)
