"""A run: the stage list (core scoring, analyses, feature table, findings, report) on one loop.

:func:`run_analysis` analyses a model on images into a run folder; :func:`score_in_memory` runs
the same scoring stages on activations already in memory (the dynamics analysis does it for
every checkpoint). Both go through :func:`feature_complexity.stages.run_stages`: one resume
mechanism, one manifest, one atomic writer. The stages themselves live beside their code
(:mod:`.scoring` for the core, :mod:`.analyses` for the analyses); this module only puts them
in order and supplies the inputs and their fingerprints.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .config import RunConfig
from .io import package_versions, write_json, write_parquet
from .scoring import Scores, score_in_memory
from .stages import Context, RunLock, Stage, remove_temporary_files, run_stages

if TYPE_CHECKING:
    import pandas as pd
    from torch.utils.data import Dataset

    from .data import ImageSource
    from .distributed import Comm
    from .models.spec import ModelSpec

__all__ = ["RunConfig", "RunResult", "Scores", "run_stages_of", "run_analysis", "score_in_memory",
           "build_stages", "folder_stages", "run_folder", "open_run", "features_frame"]


# ---------------------------------------------------------------------------------- the table
def features_frame(ctx: Context, stages: Sequence[Stage]) -> "pd.DataFrame":
    """One row per feature: ``feature``, ``class``, ``class_name`` and the per-feature columns of
    every stage that applied (complexity, importance, flow, clusters, …), in stage order."""
    import pandas as pd

    K = ctx["complexity"].score
    data: dict[str, Any] = {"feature": np.arange(len(K))}
    for stage in stages:
        if stage.columns is not None and ctx.has(stage.name):
            data.update(stage.columns(ctx[stage.name]))
    names = ctx.inputs.get("class_names")
    fc = np.asarray(data.get("class", np.full(len(K), -1)))
    data["class_name"] = [names[c] if names is not None and 0 <= c < len(names) else str(c) for c in fc]
    first = ["feature", "class", "class_name", "complexity"]
    frame = pd.DataFrame(data)
    return frame[[c for c in first if c in frame] + [c for c in frame if c not in first]]


def _features_stage(stages: Sequence[Stage]) -> Stage:
    with_columns = tuple(s.name for s in stages if s.columns is not None and s.name not in ("complexity",))
    return Stage("features", lambda ctx: features_frame(ctx, stages), needs=("complexity",), optional=with_columns,
                 inputs=("classes",), save=lambda f, out: write_parquet(out / "features.parquet", f),
                 load=_load_features, outputs=("features.parquet",))


def _load_features(out: Path) -> "pd.DataFrame":
    import pandas as pd

    return pd.read_parquet(out / "features.parquet")


def build_stages(*, report: bool = True, extra: Sequence[Stage] = ()) -> list[Stage]:
    """The stages of a run, in order: core scoring, analyses, ``extra`` (e.g. dynamics), the
    feature table, and (``report``) the findings and the report."""
    from .analyses import analysis_stages
    from .scoring import CORE_STAGES

    stages: list[Stage] = [*CORE_STAGES, *analysis_stages(), *extra]
    stages.append(_features_stage(stages))
    if report:
        from .analyses.findings import findings_stage
        from .report.stage import report_stage

        stages.append(findings_stage(stages))
        stages.append(report_stage(stages))
    return stages


# ---------------------------------------------------------------------------------- running
@dataclass
class RunResult:
    """A finished run: its folder, feature table, manifest and what each stage did."""

    out_dir: Path | None
    features: "pd.DataFrame"
    manifest: dict[str, Any]
    status: dict[str, Any]
    context: Context = field(repr=False)

    def __getitem__(self, stage: str) -> Any:
        """The result of a stage (``result["complexity"]`` …)."""
        return self.context[stage]


def fingerprints_of(spec: "ModelSpec | None", probe: Any, fit: Any = None) -> dict[str, str]:
    """The inputs' fingerprints (:mod:`feature_complexity.fingerprints`) the stage keys digest."""
    from .activations import weights_digest
    from .fingerprints import dataset_fingerprint, digest_of

    out = {"probe": dataset_fingerprint(probe),
           "classes": digest_of(list(spec.class_names) if spec is not None and spec.class_names else None)}
    if spec is not None:
        out["model"] = digest_of([spec.name, weights_digest(spec.module)])
        # the architecture without its weights: what a random-init control of it depends on
        out["architecture"] = digest_of([spec.name, spec.num_classes, {k: [list(v.shape), str(v.dtype)]
                                         for k, v in spec.module.state_dict().items()}])
    out["fit_or_probe"] = dataset_fingerprint(fit) if fit is not None else out["probe"]
    return out


def run_stages_of(stages: Sequence[Stage], ctx: Context, manifest: dict[str, Any],
                  targets: Sequence[str] | None = None, *, computable: set[str] | None = None) -> dict[str, Any]:
    """Run ``stages`` (or only ``targets`` and what they need) on ``ctx`` under the run folder's
    lock, keeping ``manifest.json``; returns the per-stage status. ``computable``: see
    :func:`~feature_complexity.stages.stage_keys`."""
    selected = _closure(stages, targets) if targets is not None else list(stages)
    if ctx.out is None:
        return run_stages(selected, ctx, manifest=manifest, computable=computable)
    ctx.out.mkdir(parents=True, exist_ok=True)
    lock = RunLock(ctx.out) if ctx.comm.is_main else None
    try:
        if lock is not None:
            lock.__enter__()
            remove_temporary_files(ctx.out)
        ctx.comm.barrier()
        status = run_stages(selected, ctx, manifest=manifest, computable=computable)
        manifest["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        if ctx.comm.is_main:
            write_json(ctx.out / "manifest.json", manifest)
        return status
    finally:
        if lock is not None:
            lock.__exit__(None, None, None)


def _closure(stages: Sequence[Stage], targets: Sequence[str]) -> list[Stage]:
    """``targets`` and every stage they need or optionally read, in the original order."""
    by_name = {s.name: s for s in stages}
    unknown = [t for t in targets if t not in by_name]
    if unknown:
        raise ValueError(f"unknown stage(s) {unknown}; the run's stages are: {', '.join(by_name)}")
    wanted: set[str] = set()
    todo = list(targets)
    while todo:
        name = todo.pop()
        if name in wanted:
            continue
        wanted.add(name)
        todo.extend(n for n in (*by_name[name].needs, *by_name[name].optional) if n in by_name)
    return [s for s in stages if s.name in wanted]


def run_analysis(
    spec: "ModelSpec",
    dataset: "Dataset | ImageSource",
    out_dir: str | Path | None,
    config: RunConfig | None = None,
    *,
    fit_dataset: "Dataset | ImageSource | None" = None,
    model_info: dict[str, Any] | None = None,
    data_info: dict[str, Any] | None = None,
    extra_stages: Sequence[Stage] = (),
    extra_inputs: dict[str, Any] | None = None,
    extra_fingerprints: dict[str, str] | None = None,
    report: bool = True,
    overwrite: bool = False,
    targets: Sequence[str] | None = None,
    manifest_extra: dict[str, Any] | None = None,
    comm: "Comm | None" = None,
    progress: bool = True,
) -> RunResult:
    """Analyse ``spec`` on ``dataset`` into the run folder ``out_dir`` (``None``: in memory).

    Every stage is computed once: a rerun skips what is done, resumes what was interrupted, and
    refuses (or, with ``overwrite``, recomputes) what was made from other inputs or settings.

    Args:
        spec: the model description.
        dataset: ``(image, label)`` pairs, preprocessed for the model (the probe images).
        out_dir: the run folder (created), or ``None`` to compute in memory.
        config: the run's choices (validated first); defaults follow the paper.
        fit_dataset: images the dictionary is fitted on (default: the probe images).
        model_info, data_info: how to rebuild the model and data (recorded in the manifest).
        extra_stages, extra_inputs, extra_fingerprints: more stages (e.g. dynamics) and what they read.
        report: also write the findings and ``report.html``.
        overwrite: recompute stages made from other inputs or settings instead of refusing.
        targets: run only these stages and what they need.
        manifest_extra: more entries for ``manifest.json`` (e.g. an earlier phase's stages).
        comm: the processes sharing the run (default: this process, or torchrun's).
        progress: progress bars and one line per stage.
    """
    from .distributed import current

    config = (config or RunConfig()).validate()
    comm = comm or current()
    progress = progress and comm.is_main  # one set of bars and messages, from rank 0
    out = Path(out_dir) if out_dir is not None else None
    inputs = {"spec": spec, "probe": dataset, "fit": fit_dataset, "class_names": spec.class_names,
              **(extra_inputs or {})}
    prints = {**fingerprints_of(spec, dataset, fit_dataset), **(extra_fingerprints or {})}
    ctx = Context(config=config, out=out, fingerprints=prints, inputs=inputs, comm=comm, progress=progress,
                  overwrite=overwrite, log=_log if progress else lambda msg: None)
    manifest = _manifest(config, spec, model_info, data_info, prints, len(dataset))  # type: ignore[arg-type]
    manifest.update(manifest_extra or {})
    stages = build_stages(report=report, extra=extra_stages)
    spec.module.eval().to(config.device)
    status = run_stages_of(stages, ctx, manifest, targets)
    features = ctx["features"] if ctx.has("features") and "features" in status else None
    return RunResult(out, features, manifest, status, ctx)


def _manifest(config: RunConfig, spec: "ModelSpec", model_info: dict[str, Any] | None,
              data_info: dict[str, Any] | None, fingerprints: dict[str, str], n_images: int) -> dict[str, Any]:
    return {
        "tool": "feature-complexity",
        "command": sys.argv,
        "config": config.to_dict(),
        "model": {**spec.describe(), "class_names": spec.class_names, **(model_info or {})},
        "data": dict(data_info or {}),
        "n_images": n_images,
        "fingerprints": fingerprints,
        "versions": package_versions(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _log(message: str) -> None:
    print(message, file=sys.stderr)


# ---------------------------------------------------------------------------------- a finished folder
def open_run(run_dir: str | Path) -> tuple[RunConfig, dict[str, str], dict[str, Any]]:
    """The configuration, input fingerprints and manifest of a run folder."""
    from .io import read_json

    path = Path(run_dir) / "manifest.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: RUN_DIR must be the --out folder of `feature-complexity run` "
                                "(or demo, dynamics)")
    manifest = dict(read_json(path))
    fields = RunConfig.__dataclass_fields__
    config = RunConfig(**{k: v for k, v in manifest.get("config", {}).items() if k in fields})
    return config, dict(manifest.get("fingerprints", {})), manifest


def folder_stages(manifest: dict[str, Any], *, report: bool = True) -> list[Stage]:
    """The stage list of a finished run, its extra stages included: the dynamics stages are
    rebuilt from the checkpoints the manifest records (``dynamics_checkpoints``), so that a rerun
    on the folder sees the same stages (and keys) as the command that made it."""
    recorded = manifest.get("dynamics_checkpoints")
    extra: list[Stage] = []
    if recorded and all(Path(p).is_file() for p in recorded["paths"]):
        from .analyses.dynamics import dynamics_stages

        extra, _ = dynamics_stages(recorded["paths"], recorded.get("model"), trust=bool(recorded.get("trust")))
    return build_stages(report=report, extra=extra)


def run_folder(run_dir: str | Path, targets: Sequence[str], *, changes: dict[str, Any] | None = None,
               inputs: dict[str, Any] | None = None, progress: bool = True) -> RunResult:
    """Compute ``targets`` of a finished run folder from what it holds (no model needed unless a
    target reads it: pass it in ``inputs``). ``changes`` alters settings (e.g. the flow threshold):
    the targets are then recomputed, with the stages after them that the folder has."""
    from dataclasses import replace

    config, prints, manifest = open_run(run_dir)
    config = replace(config, **(changes or {})).validate()
    manifest["config"] = config.to_dict()
    class_names = manifest.get("model", {}).get("class_names")
    ctx = Context(config=config, out=Path(run_dir), fingerprints=prints, overwrite=True, progress=progress,
                  inputs={"class_names": class_names, **(inputs or {})}, log=_log if progress else lambda m: None)
    # re-render the report too when the folder has one (it shows what the targets change)
    stages = folder_stages(manifest, report="report" in targets or (Path(run_dir) / "report.html").exists())
    if "report" in {s.name for s in stages} and "report" not in targets:
        targets = [*targets, "report"]
    wanted = {s.name for s in _closure(stages, targets)}
    status = run_stages_of(stages, ctx, manifest, computable=set(targets) | {"features", "report"} & wanted)
    return RunResult(ctx.out, ctx.get("features"), manifest, status, ctx)
