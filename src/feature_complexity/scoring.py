"""The core stages of a run: activations -> dictionary -> codes -> fidelity, complexity, importance.

Each is a :class:`~feature_complexity.stages.Stage` (what it needs, the settings that change it,
how it is saved); :mod:`feature_complexity.pipeline` puts them in order with the analyses. The
compute functions read ``ctx.inputs["spec"]`` (the :class:`ModelSpec`), ``ctx.inputs["probe"]``
(the probe images) and earlier results; they never read the command line or the report.

Notation: ``A`` penultimate activations ``(n_images, d)``, ``D`` dictionary ``(k, d)``, ``Z`` codes
``(n_images, k)``, ``K`` complexity ``(k,)``, ``Γ`` importance ``(k,)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .io import load_dataclass, read_json, save_dataclass, save_npy, write_json
from .stages import Context, FigureSpec, Stage, run_stages
from .store import RowStore

if TYPE_CHECKING:
    from .activations import Activations
    from .complexity import ComplexityResult
    from .config import RunConfig
    from .features.base import Dictionary
    from .models.spec import ModelSpec

__all__ = ["CORE_STAGES", "has_head", "image_classes", "head_of", "rows_of", "shard"]


# ---------------------------------------------------------------------------------- helpers
def has_head(ctx: Context) -> bool:
    """Whether the model has a classification head (importance and fidelity need one)."""
    spec = ctx.inputs.get("spec")
    return spec is None or spec.head is not None


def head_of(ctx: Context) -> Any:
    spec = ctx.inputs["spec"]
    return spec.get(spec.head)


def image_classes(ctx: Context) -> np.ndarray:
    """The class each probe image stands for (``config.class_source``), ``(n_images,)``."""
    return ctx["activations"].image_classes(ctx.config.class_source)


def rows_of(ctx: Context, n: int) -> np.ndarray:
    """This process's images among ``n``: contiguous chunks of 1024 dealt round-robin."""
    starts = np.arange(0, n, 1024)[ctx.comm.rank::ctx.comm.world]
    return np.concatenate([np.arange(a, min(a + 1024, n)) for a in starts]) if starts.size else np.zeros(0, int)


def shard(ctx: Context, *arrays: Any) -> list[Any]:
    """This process's rows of ``arrays`` (one row per image): all of them in one process (memory
    maps stay maps); with several, :func:`rows_of`."""
    if ctx.comm.world == 1:
        return list(arrays)
    rows = rows_of(ctx, arrays[0].shape[0])
    return [np.asarray(a[rows]) for a in arrays]


# ---------------------------------------------------------------------------------- activations
def _activations(ctx: Context) -> Any:
    from .activations import extract_activations

    cfg, spec = ctx.config, ctx.inputs["spec"]
    store = None if ctx.out is None else ctx.workdir("activations", ctx.out / "activations")
    return extract_activations(spec, ctx.inputs["probe"], batch_size=cfg.batch_size, device=cfg.device,
                               num_workers=cfg.num_workers, capture_branches=_branches(ctx), store=store,
                               comm=ctx.comm, progress=ctx.progress)


def _branches(ctx: Context) -> bool:
    spec = ctx.inputs.get("spec")
    return bool(ctx.config.capture_branches and spec is not None and spec.branches)


def _load_activations(out: Path) -> Any:
    from .activations import Activations

    return Activations.load(out / "activations")


ACTIVATIONS = Stage(
    "activations", _activations, settings=("capture_branches",), inputs=("model", "probe"),
    save=lambda result, out: None,  # written chunk by chunk during the pass
    load=_load_activations, outputs=("activations/layout.json",), collective=True)


# ---------------------------------------------------------------------------------- dictionary
def _fit_rows(ctx: Context) -> tuple[np.ndarray, np.ndarray]:
    """The samples the dictionary is fitted on and their classes: the fit-sample stage's when it
    ran (another image set, spatial positions, crops), else the probe images' pooled vectors."""
    samples = ctx.get("fit_samples")
    if samples is not None:
        return np.asarray(samples.A), np.asarray(samples.classes)
    return np.asarray(ctx["activations"].penultimate), image_classes(ctx)


def _dictionary(ctx: Context) -> "Dictionary":
    """The dictionary; with several processes each fits its share of the classes (a class's
    atoms do not depend on which other classes are fitted beside it) and the blocks are merged
    in class order, so the result is the one-process dictionary."""
    from .features import fit_dictionary

    cfg, comm = ctx.config, ctx.comm
    A, classes = _fit_rows(ctx)
    spec = ctx.inputs.get("spec")
    n_classes = spec.num_classes if spec is not None and spec.num_classes else None

    def fit(rows: np.ndarray | slice) -> "Dictionary":
        return fit_dictionary(np.asarray(A[rows]), classes[rows], cfg.n_atoms_per_class, method=cfg.dictionary,
                              learner=cfg.learner, n_atoms=cfg.n_atoms, n_classes=n_classes, seed=cfg.seed,
                              max_iter=cfg.nmf_max_iter, device=cfg.device, progress=ctx.progress and comm.is_main,
                              nmf_solver=cfg.resolved_nmf_solver())

    if comm.world == 1:
        return fit(slice(None))
    if cfg.dictionary != "per_class":  # one problem: one process fits it
        return comm.broadcast_object(fit(slice(None)) if comm.is_main else None)
    mine = np.unique(classes)[comm.rank::comm.world]
    rows = np.flatnonzero(np.isin(classes, mine))
    part = (fit(rows), float(np.sum(np.square(A[rows], dtype=np.float64)))) if rows.size else None
    return _merge_dictionaries([p for p in comm.all_gather_object(part) if p is not None])


def _merge_dictionaries(parts: list[tuple["Dictionary", float]]) -> "Dictionary":
    """Per-class dictionaries of disjoint classes as one, in class order."""
    from dataclasses import replace

    D = np.concatenate([p.D for p, _ in parts])
    fc = np.concatenate([p.feature_class for p, _ in parts])
    order = np.argsort(fc, kind="stable")
    norm2 = sum(n for _, n in parts)
    sq = sum((p.reconstruction_error ** 2) * n for p, n in parts)
    return replace(parts[0][0], D=D[order], feature_class=fc[order],
                   reconstruction_error=float(np.sqrt(sq / norm2)) if norm2 > 0 else 0.0)


def _load_dictionary(out: Path) -> "Dictionary":
    from .features import Dictionary

    return Dictionary.load(out / "dictionary.npz")


def _dictionary_columns(d: "Dictionary") -> dict[str, Any]:
    return {"class": np.asarray(d.feature_class)}


DICTIONARY = Stage(
    "dictionary", _dictionary, needs=("activations",), optional=("fit_samples",),
    settings=("dictionary", "learner", "n_atoms_per_class", "n_atoms", "class_source", "seed", "nmf_max_iter",
              "nmf_solver"),
    save=lambda d, out: d.save(out / "dictionary.npz"), load=_load_dictionary, outputs=("dictionary.npz",),
    collective=True, columns=_dictionary_columns)


# ---------------------------------------------------------------------------------- codes
def _codes(ctx: Context) -> np.ndarray:
    """``Z (n_images, k)`` float32, encoded chunk by chunk (each process its share of the chunks;
    an interrupted encoding resumes from its finished chunks)."""
    from tqdm.auto import tqdm

    cfg, d = ctx.config, ctx["dictionary"]
    A = ctx["activations"].penultimate
    options: dict[str, Any] = {"device": cfg.device, "tol": cfg.nnls_tol, "max_iter": cfg.nnls_max_iter}
    if cfg.codes == "per_class":
        options["blocks"] = d.feature_class
    if ctx.out is None:
        return np.asarray(d.encode(np.asarray(A), **options), dtype=np.float32)
    store = RowStore(ctx.workdir("codes", ctx.out / "codes"))  # type: ignore[arg-type]
    if ctx.comm.is_main:
        store.allocate(A.shape[0], {"Z": (d.n_atoms, "float32")})
    ctx.comm.barrier()
    Z = store.open("r+")["Z"]
    todo = store.todo(ctx.comm.rank, ctx.comm.world)
    for c in tqdm(todo, desc="codes", unit="chunk", disable=not (ctx.progress and ctx.comm.is_main)):
        a, b = store.chunk_rows(c)
        Z[a:b] = d.encode(np.asarray(A[a:b]), **options)
        store.mark_done(c, [Z])
    ctx.comm.barrier()
    return store.open("r")["Z"]


def _code_columns(Z: np.ndarray) -> dict[str, Any]:
    return {"mean_code": np.asarray(Z).mean(axis=0, dtype=np.float64)}


CODES = Stage(
    "codes", _codes, needs=("activations", "dictionary"), settings=("codes", "nnls_tol", "nnls_max_iter"),
    save=lambda Z, out: None, load=lambda out: RowStore(out / "codes").open("r")["Z"],
    outputs=("codes/layout.json",), collective=True, columns=_code_columns)


# ---------------------------------------------------------------------------------- fidelity
def _fidelity(ctx: Context) -> dict[str, Any]:
    from .features import fidelity

    acts, d = ctx["activations"], ctx["dictionary"]
    A, Z, labels = shard(ctx, acts.penultimate, ctx["codes"], acts.labels)
    return fidelity(A, Z, d.D, head_of(ctx), labels=np.asarray(labels), decode=d.decode,
                    comm=ctx.comm if ctx.comm.world > 1 else None)


FIDELITY = Stage(
    "fidelity", _fidelity, needs=("activations", "dictionary", "codes"), inputs=("model",), applies=has_head,
    save=lambda f, out: write_json(out / "fidelity.json", f), load=lambda out: read_json(out / "fidelity.json"),
    outputs=("fidelity.json",), collective=True)


# ---------------------------------------------------------------------------------- complexity
def _complexity(ctx: Context) -> "ComplexityResult":
    """``K`` and ``I_V`` with their intervals; with several processes each accumulates the
    statistics of its chunks of images and the sums are all-reduced before the solve."""
    from .complexity import complexity

    cfg, comm = ctx.config, ctx.comm
    acts = ctx["activations"]
    kwargs: dict[str, Any] = {} if cfg.alphas is None else {"alphas": cfg.alphas}
    if comm.world > 1:
        kwargs.update(rows=rows_of(ctx, acts.n_images), reduce=comm.all_reduce_)
    return complexity(acts.layers, ctx["codes"], n_folds=cfg.n_folds, seed=cfg.seed, device=cfg.device,
                      progress=ctx.progress, confidence=cfg.confidence if cfg.ci_groups > 0 else None,
                      cells_per_fold=max(cfg.ci_groups, 1), max_memory_gb=cfg.memory_gb, **kwargs)


def _load_complexity(out: Path) -> "ComplexityResult":
    from .complexity import ComplexityResult

    return load_dataclass(out / "complexity.npz", ComplexityResult)


def _complexity_columns(res: "ComplexityResult") -> dict[str, Any]:
    cols: dict[str, Any] = {"complexity": res.score}
    for extra in ("score_lo", "score_hi"):
        if getattr(res, extra, None) is not None:
            cols[extra.replace("score", "complexity")] = getattr(res, extra)
    for name, row in zip(res.layer_names, res.per_layer):
        cols[f"iv_{name}"] = row
    return cols


def _complexity_figures(res: "ComplexityResult", ctx: Context) -> dict[str, FigureSpec]:
    from . import figures

    return {
        "complexity_hist": FigureSpec(
            figures.complexity_histogram(res.score), "The complexity spectrum",
            "Distribution of K = 1 − mean over blocks of I_V(block → z) over all features. The paper "
            "finds a spread from simple (low K) to complex (high K) features."),
        "decodability": FigureSpec(
            figures.decodability_curves(res.per_layer, res.score, res.layer_names),
            "Decodability curves",
            "Held-out I_V of each feature from every block (0 = not linearly decodable, 1 = fully). "
            "Simple features are decodable early; complex ones only near the end."),
    }


COMPLEXITY = Stage(
    "complexity", _complexity, needs=("activations", "codes"),
    settings=("n_folds", "alphas", "seed", "ci_groups", "confidence"),
    save=lambda res, out: save_dataclass(out / "complexity.npz", res), load=_load_complexity,
    outputs=("complexity.npz",), collective=True, section="what", figures=_complexity_figures,
    columns=_complexity_columns)


# ---------------------------------------------------------------------------------- importance
def _importance(ctx: Context) -> np.ndarray:
    from .importance import importance

    d = ctx["dictionary"]
    Z, classes = shard(ctx, ctx["codes"], image_classes(ctx))
    return importance(np.asarray(Z), d.D, head_of(ctx), feature_class=d.feature_class, image_class=classes,
                      device=ctx.config.device, decode=d.decode,
                      reduce=ctx.comm.sum_array if ctx.comm.world > 1 else None)


def _importance_columns(gamma: np.ndarray) -> dict[str, Any]:
    return {"importance": gamma, "abs_importance": np.abs(gamma), "inhibitor": gamma < 0}


def _importance_figures(gamma: np.ndarray, ctx: Context) -> dict[str, FigureSpec]:
    from . import figures

    return {"complexity_importance": FigureSpec(
        figures.complexity_vs_importance(ctx["complexity"].score, gamma), "Complexity against importance",
        "Each point is a feature: its complexity K and its signed importance Γ for its class "
        "(gradient × input on the codes). The paper finds that important features are simple.")}


IMPORTANCE = Stage(
    "importance", _importance, needs=("activations", "dictionary", "codes"), optional=("complexity",),
    settings=("class_source",), inputs=("model",), applies=has_head,
    save=lambda g, out: save_npy(out / "importance.npy", g), load=lambda out: np.load(out / "importance.npy"),
    outputs=("importance.npy",), collective=True, section="importance", figures=_importance_figures,
    columns=_importance_columns)

def _core() -> tuple[Stage, ...]:
    from .fitset import FIT_SAMPLES

    return (ACTIVATIONS, FIT_SAMPLES, DICTIONARY, CODES, FIDELITY, COMPLEXITY, IMPORTANCE)


CORE_STAGES: tuple[Stage, ...] = _core()


# ---------------------------------------------------------------------------------- in memory
@dataclass
class Scores:
    """The core scores of one set of activations (see :func:`score_in_memory`)."""

    dictionary: "Dictionary"
    codes: np.ndarray
    complexity: "ComplexityResult"
    importance: np.ndarray | None
    fidelity: dict[str, Any] | None
    image_class: np.ndarray
    timings: dict[str, float] = field(default_factory=dict)


def score_in_memory(activations: "Activations", spec: "ModelSpec", config: RunConfig, *,
                    progress: bool = False) -> Scores:
    """Dictionary, codes, fidelity, complexity and importance of activations already in memory:
    the core stages on the same loop, without a run folder."""
    ctx = Context(config=config.validate(), inputs={"spec": spec}, progress=progress, log=lambda msg: None,
                  fingerprints={"model": "", "probe": ""}, results={"activations": activations})
    stages = [s for s in CORE_STAGES if s.name != "activations"]
    placeholder = Stage("activations", lambda c: activations)
    status = run_stages([placeholder, *stages], ctx)
    timings = {k: v["seconds"] for k, v in status.items() if k != "activations"}
    return Scores(ctx["dictionary"], ctx["codes"], ctx["complexity"], ctx.get("importance"),
                  ctx.get("fidelity"), image_classes(ctx), timings)
