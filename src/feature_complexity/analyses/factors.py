"""Planted ground truth: the complexity of the factors that generated the images (demo data).

For a generated source (:func:`feature_complexity.data.trifeature`) every image carries its
factors (shape, texture, colour, position, scale, …). Scoring them with the same engine as the
model's features gives a ground truth the features can be read against: for each factor (its
one-hot columns for a categorical factor), ``complexity`` = the mean ``K`` over its columns from
the blocks, its mean decodability curve, and ``kept`` = its ``I_V`` from the penultimate layer
(how much of it the model still holds at the end). ``K`` mixes how *early* a factor is decodable
with whether the model *keeps* it: a shape classifier trained to convergence discards colour in
its last blocks, which raises colour's ``K`` although colour is best decodable at the first block.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["factor_complexity", "STAGE"]


def factor_complexity(layers: dict[str, Any], penultimate: Any, source: Any, *, n_folds: int = 5,
                      seed: int = 0) -> dict[str, dict[str, Any]]:
    """``{factor: {"complexity", "per_layer", "kept", "layer_names"}}`` of a generated source.

    Args:
        layers: ``{block: (n_images, C_l)}`` pooled block outputs.
        penultimate: ``(n_images, d)`` penultimate activations.
        source: a generated :class:`~feature_complexity.data.ImageSource` (with ``factors``).
    """
    from ..complexity import complexity
    from ..data import factor_values

    # one engine call for every factor's columns: the per-fold solves are shared, which is most
    # of the cost on wide layers (a call per factor repeated them ~10 times)
    columns, owner = [], []
    for name, values in factor_values(source).items():
        values = np.asarray(values, dtype=np.float64)
        values = values[:, None] if values.ndim == 1 else values
        values = values[:, values.std(axis=0) > 0]
        columns.append(values)
        owner.extend([name] * values.shape[1])
    if not owner:
        return {}
    res = complexity({**layers, "penultimate": penultimate}, np.hstack(columns), n_folds=n_folds, seed=seed)
    owner_arr = np.asarray(owner)
    out = {}
    for name in dict.fromkeys(owner):
        iv = res.per_layer[:, owner_arr == name]
        per_layer = iv[:-1].mean(axis=1)  # the blocks only, as for the model's features
        out[name] = {"complexity": float(1.0 - per_layer.mean()), "per_layer": per_layer.tolist(),
                     "kept": float(iv[-1].mean()), "layer_names": res.layer_names[:-1]}
    return out


def _compute(ctx: Any) -> dict[str, dict[str, Any]]:
    acts = ctx["activations"]
    return factor_complexity(acts.layers, acts.penultimate, ctx.inputs["probe"], n_folds=ctx.config.n_folds,
                             seed=ctx.config.seed)


def _figures(factors: dict[str, dict[str, Any]], ctx: Any) -> dict[str, Any]:
    from ..figures import factor_complexity_figure
    from ..stages import FigureSpec

    return {"factors": FigureSpec(
        factor_complexity_figure(factors), "Ground truth: how complex are the generating factors?",
        "Complexity K of each factor that generated the images (left, blue) and how much of it the model "
        "keeps at its penultimate layer (orange), with each factor's decodability curve (right). Colour is "
        "decodable from the first block; the shape a model is trained on is built up over the blocks.")}


def _stage() -> Any:
    from ..io import read_json, write_json
    from ..stages import Stage

    def save(factors: dict[str, Any], out: Path) -> None:
        write_json(out / "factors.json", {"factors": factors})

    return Stage("factors", _compute, needs=("activations",), settings=("n_folds", "seed"), inputs=("probe",),
                 applies=lambda ctx: getattr(ctx.inputs.get("probe"), "factors", None) is not None,
                 save=save, load=lambda out: read_json(out / "factors.json")["factors"], outputs=("factors.json",),
                 section="what", figures=_figures)


STAGE = _stage()
