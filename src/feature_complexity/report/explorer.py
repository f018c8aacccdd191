"""The feature explorer's data: one JSON document the page's script pages, sorts and filters.

Columns are sent column-wise (one array per column, numbers rounded to 4 decimals, ``null`` for
missing), so 10,000 features with 30 columns stay a few megabytes and the browser builds one page
of rows at a time. Evidence thumbnails travel in a second JSON document, keyed by feature, as
data URIs, in the priority order of the evidence stage until the size budget is spent; the
features whose thumbnails did not fit are listed with the file that holds them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .embed import Budget
from .labels import HIDDEN, explanation, label

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["explorer_data", "evidence_index", "embed_evidence", "json_for_script", "TABLE_COLUMNS"]

#: columns of the table, in order, when present (every numeric column is in the detail view)
TABLE_COLUMNS = ("feature", "class_name", "complexity", "importance", "cluster", "teleport_depth", "skip_share",
                 "A")
_PAGE = 50


def json_for_script(obj: Any) -> str:
    """JSON safe inside ``<script type="application/json">`` (no ``</script>`` or comment opener)."""
    text = json.dumps(obj, separators=(",", ":"), allow_nan=False, ensure_ascii=False)
    return text.replace("</", "<\\/").replace("<!--", "<\\!--")


def _values(series: "pd.Series") -> tuple[list[Any], str]:
    """A column as JSON values and its kind (``int``, ``number``, ``bool``, ``text``)."""
    kind = series.dtype.kind
    if kind == "b":
        return [bool(v) for v in series], "bool"
    if kind in "iu":
        return [int(v) for v in series], "int"
    if kind == "f":
        arr = np.round(series.to_numpy(dtype=np.float64), 4)
        finite = arr[np.isfinite(arr)]
        if finite.size and np.all(finite == np.round(finite)):  # ids and ranks stored as floats (NaN allowed)
            return [None if not np.isfinite(v) else int(v) for v in arr], "int"
        return [None if not np.isfinite(v) else float(v) for v in arr], "number"
    return [None if v is None else str(v) for v in series], "text"


def _shown_columns(frame: "pd.DataFrame") -> list[str]:
    """Columns the page carries: everything but the per-layer I_V (sent as curves) and layout-only ones."""
    return [c for c in frame.columns if not c.startswith("iv_") and c not in HIDDEN
            and (frame[c].dtype.kind in "biuf" or c in ("class_name",))]


def explorer_data(frame: "pd.DataFrame", *, teleport_never: int | None = None) -> dict[str, Any]:
    """The explorer's JSON document (see the module docstring).

    Args:
        frame: ``features.parquet``, sorted by feature.
        teleport_never: the number of blocks (a teleport depth equal to it means "never").
    """
    columns, meta = {}, {}
    for col in _shown_columns(frame):
        columns[col], kind = _values(frame[col])
        meta[col] = {"label": label(col), "tip": explanation(col), "kind": kind}
    iv_cols = [c for c in frame.columns if c.startswith("iv_")]
    iv = np.round(frame[iv_cols].to_numpy(dtype=np.float64), 4) if iv_cols else np.zeros((len(frame), 0))
    table = [c for c in TABLE_COLUMNS if c in columns]
    if "class_name" not in columns and "class" in columns:
        table.insert(1, "class")
    skip = {"feature", "class", "class_name", "complexity_lo", "complexity_hi"}
    return {
        "n": int(len(frame)),
        "page": _PAGE,
        "columns": columns,
        "meta": meta,
        "table": table,
        "detail": [c for c in columns if c not in skip],
        "layers": [c[3:] for c in iv_cols],
        "iv": [None if not np.isfinite(v) else float(v) for v in iv.ravel()],
        "interval": "complexity_lo" in columns and "complexity_hi" in columns,
        "teleport_never": teleport_never,
    }


def evidence_index(run_dir: Path) -> dict[str, Any] | None:
    """``evidence/index.json`` (written by the evidence stage), or ``None`` when absent."""
    path = run_dir / "evidence" / "index.json"
    if not path.exists():
        return None
    return dict(json.loads(path.read_text(encoding="utf-8")))


def embed_evidence(run_dir: Path, index: dict[str, Any] | None, budget: Budget, *,
                   first: Sequence[int] = ()) -> dict[str, Any]:
    """Data URIs of evidence thumbnails and visualisations, in priority order, within ``budget``.

    Args:
        run_dir: the run folder.
        index: :func:`evidence_index`.
        budget: what is left of the page's budget.
        first: features to embed before the stage's own priority order (the spectrum strip).

    Returns:
        ``{"images": {feature: uri}, "vis": {feature: uri}, "left_out": {feature: relative path},
        "n_rendered", "n_embedded"}``.
    """
    out: dict[str, Any] = {"images": {}, "vis": {}, "left_out": {}, "n_rendered": 0, "n_embedded": 0}
    if not index:
        return out
    files = {int(f): name for f, name in index.get("files", {}).items()}
    vis = {int(f): name for f, name in index.get("visualizations", {}).items()}
    order = list(dict.fromkeys([*first, *[int(f) for f in index.get("selected", [])], *files]))
    out["n_rendered"] = len(files)
    for f in order:
        if f in files:
            uri = budget.take(run_dir / "evidence" / files[f])
            if uri is None:
                out["left_out"][str(f)] = f"evidence/{files[f]}"
            else:
                out["images"][str(f)] = uri
        if f in vis:
            uri = budget.take(run_dir / "evidence" / vis[f])
            if uri is not None:
                out["vis"][str(f)] = uri
    out["n_embedded"] = len(out["images"])
    return out


def spectrum_strip(frame: "pd.DataFrame", rendered: set[int], n: int = 3) -> dict[str, list[dict[str, Any]]]:
    """The simplest and the most complex features that have thumbnails: both ends of the spectrum."""
    sub = frame[frame["feature"].astype(int).isin(rendered)].sort_values("complexity", kind="stable")
    pick = lambda rows: [{"feature": int(f), "K": float(k), "class_name": str(c)}  # noqa: E731
                         for f, k, c in zip(rows["feature"], rows["complexity"],
                                            rows["class_name"] if "class_name" in rows else rows["feature"])]
    return {"simplest": pick(sub.head(n)), "most_complex": pick(sub.iloc[::-1].head(n))}
