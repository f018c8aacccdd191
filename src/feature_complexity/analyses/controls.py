"""Control runs: the same analysis of the same architecture at random initialisation.

A property of the measurement shows up in an untrained network too; a property the network
learned does not. ``--controls random-init`` analyses a randomly initialised copy of the model
(same architecture, same probe images, same settings, seeded) as a run of its own in
``<run>/controls/random-init/`` — the same stage loop, so it is cached and resumed like any run —
and hands its feature table (and the other per-run results the findings compare) to the
findings stage.

The random copy is the model family's own initialisation when the model was built by name
(``build_model(name, weights="random")``), else a deep copy of the module with every
``reset_parameters()`` called (batch-norm statistics included) under the run's seed.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

    from ..models.spec import ModelSpec

__all__ = ["ControlRun", "random_init_copy", "STAGE"]

_FOLDER = Path("controls") / "random-init"


@dataclass
class ControlRun:
    """A control's results: its feature table and the folder (or ``None`` in memory) they are in."""

    features: "pd.DataFrame"
    folder: str | None
    fidelity: dict[str, Any] | None


def random_init_copy(spec: "ModelSpec", seed: int) -> "ModelSpec":
    """``spec`` with randomly initialised weights (see the module docstring); ``spec`` is untouched."""
    import torch

    from ..models.registry import RANDOM, build_model, known_models

    if spec.name in known_models() and spec.build_args:
        args = {k: v for k, v in spec.build_args.items() if k not in ("weights", "checkpoint", "seed")}
        rand = build_model(spec.name, weights=RANDOM, seed=seed, **args)
        rand.class_names = spec.class_names
        return rand
    rand = copy.deepcopy(spec)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for module in rand.module.modules():
            reset = getattr(module, "reset_parameters", None)
            if callable(reset):
                reset()
    return rand


def control_seed(seed: int) -> int:
    """The control's initialisation seed: derived from the run's, never equal to it (a model
    that was itself built from the run's seed would otherwise be its own control)."""
    import numpy as np

    return int(np.random.SeedSequence([seed, 0xC047]).generate_state(1)[0])


def _compute(ctx: Any) -> ControlRun:
    from ..pipeline import run_analysis

    spec = random_init_copy(ctx.inputs["spec"], control_seed(ctx.config.seed))
    out = None if ctx.out is None else ctx.out / _FOLDER
    # a control has no control of its own, and no evidence images (nobody looks at them)
    config = replace(ctx.config, controls=(), evidence_features=0)
    if ctx.comm.is_main:
        ctx.log("control: the same analysis at random initialisation -> " + str(out or "memory"))
    result = run_analysis(spec, ctx.inputs["probe"], out, config, fit_dataset=ctx.inputs.get("fit"), report=False,
                          comm=ctx.comm, progress=ctx.progress, model_info={"control": "random-init"})
    return ControlRun(result.features, None if out is None else str(out), result.context.get("fidelity"))


def _load(out: Path) -> ControlRun:
    import pandas as pd

    from ..io import read_json

    folder = out / _FOLDER
    fid = folder / "fidelity.json"
    return ControlRun(pd.read_parquet(folder / "features.parquet"), str(folder),
                      read_json(fid) if fid.exists() else None)


def _stage() -> Any:
    from ..stages import Stage

    # the control's own stages record their keys in its folder; this record ties it to the run
    return Stage("control/random-init", _compute, settings=("dictionary", "learner", "n_atoms_per_class", "n_atoms",
                 "class_source", "codes", "fit_samples", "fit_per_class", "n_folds", "alphas", "seed", "ci_groups",
                 "capture_branches", "teleport_threshold", "nnls_tol", "nmf_max_iter", "nmf_solver"),
                 inputs=("probe", "fit_or_probe", "architecture"),
                 applies=lambda ctx: "random-init" in ctx.config.controls,
                 save=lambda r, out: None, load=_load, outputs=(str(_FOLDER / "features.parquet"),), collective=True)


STAGE = _stage()
