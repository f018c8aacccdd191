"""The question sections (what / when / where / importance): figures and readable tables.

Figures come from ``figures/index.json`` (written by the stage that drew each one, with its
title, caption and section); a PNG without an entry goes to "Other figures" and says it has no
caption. The analyses' JSON summaries (``flow.json``, ``dynamics.json``, ``factors.json``) become
sentences and small tables, never key/value dumps. A section with nothing says why.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from .embed import Budget
from .folder import RunFolder
from .labels import SECTIONS
from .summary import fmt_number, fmt_p, fmt_percent

__all__ = ["figures_by_section", "sections_context", "flow_tables", "dynamics_tables", "factor_tables",
           "SECTION_ORDER"]

SECTION_ORDER = ("what", "when", "where", "importance", "findings", "other")

#: why a section can be empty, and how to fill it
_ABSENT = {
    "what": "No complexity figure in this run folder: the complexity stage has not finished.",
    "when": "No training-dynamics results in this run: they need the model's training checkpoints "
            "(`feature-complexity dynamics`, or the demo).",
    "where": "No residual-flow results in this run: the model's residual branches were not captured "
             "(a model family without branch descriptions, or capture_branches off).",
    "importance": "No importance results: the model has no classification head.",
}


def _figure(path: Path, title: str, caption: str, budget: Budget) -> dict[str, Any]:
    """One embedded figure (figures are always embedded: they are the report)."""
    from .embed import data_uri

    uri = data_uri(path)
    budget.spend(len(uri))
    return {"name": path.stem, "title": title, "caption": caption, "uri": uri, "width": _png_width(path)}


def _png_width(path: Path) -> int | None:
    """The PNG's width in pixels (its IHDR chunk): figures are shown at their own size, so a wide
    figure's fonts are as large as a narrow one's (the page scales down only what does not fit)."""
    head = path.read_bytes()[:24]
    if head[:8] != b"\x89PNG\r\n\x1a\n":
        return None
    return int.from_bytes(head[16:20], "big")


def figures_by_section(folder: RunFolder, budget: Budget) -> dict[str, list[dict[str, Any]]]:
    """``{section: [figure]}`` in the index's order; unindexed PNGs under ``"other"``."""
    out: dict[str, list[dict[str, Any]]] = {key: [] for key in SECTION_ORDER}
    index = folder.figure_index()
    files = {p.stem: p for p in folder.figure_files()}
    for name, info in index.items():
        path = files.pop(name, None)
        if path is None:
            continue  # listed but not drawn (an interrupted stage): nothing to show
        section = info["section"] if info.get("section") in out else "other"
        out[section].append(_figure(path, str(info.get("title") or name), str(info.get("caption") or ""), budget))
    for name, path in files.items():
        out["other"].append(_figure(path, name.replace("_", " ").capitalize(),
                                    "No caption was recorded for this figure (it is not in figures/index.json; "
                                    "an older version of the tool drew it).", budget))
    legacy = folder.path / "dynamics" / "figures"  # the demo's old layout
    for path in sorted(legacy.glob("*.png")) if legacy.is_dir() else []:
        out["when"].append(_figure(path, path.stem.replace("_", " ").capitalize(),
                                   "Drawn by the training-dynamics analysis (older layout: no caption recorded).",
                                   budget))
    return out


def _table(title: str, header: list[str], rows: list[list[str]], note: str | None = None,
           tips: list[str] | None = None) -> dict[str, Any]:
    return {"title": title, "header": header, "rows": rows, "note": note, "tips": tips or [""] * len(header)}


def _spearman_sentence(stat: Any, what: str, expectation: str, constant_reason: str | None) -> str:
    rho = stat.get("rho") if isinstance(stat, dict) else None
    if rho is not None and math.isfinite(float(rho)):
        p = fmt_p(stat.get("p_value"))
        p = p if p.startswith("<") else f"= {p}"
        return f"Spearman({what}, K) = {float(rho):.2f} (p {p}); {expectation}"
    return f"Spearman({what}, K) is undefined: {constant_reason or 'too few features with a value'}."


def _depth_reason(counts: list[int], blocks: list[str], threshold: float) -> str | None:
    """Why the teleport-depth correlation is undefined, from the histogram of depths."""
    total = sum(counts)
    for depth, count in enumerate(counts):
        if total and count == total:
            if depth == len(blocks):
                return ("constant: every feature has the same teleport depth, 'never' (for every feature the "
                        f"last block's residual branch adds more than {fmt_percent(1 - threshold)} of its I_V)")
            return f"constant: every feature has the same teleport depth (from block {blocks[depth]})"
    return None


def flow_tables(flow: dict[str, Any]) -> dict[str, Any]:
    """``flow.json`` as sentences and two tables (depth histogram, per-third summary)."""
    blocks = [str(b) for b in flow.get("blocks", [])]
    threshold = float(flow.get("threshold") or 0.9)
    counts = [int(c) for c in flow.get("teleport_depth_counts", [])]
    sentences = [
        _spearman_sentence(flow.get("teleport_spearman"), "teleport depth",
                           "the paper expects a positive value (complex features are teleported later, or never).",
                           _depth_reason(counts, blocks, threshold) if counts else None),
        _spearman_sentence(flow.get("skip_share_spearman"), "skip share",
                           "the paper expects a negative value (simple features ride the skip connections).",
                           "constant: every feature has the same skip share"),
    ]
    tables = []
    if counts:
        names = [f"from {b}" for b in blocks] + ["never"]
        tables.append(_table(
            "Teleport depth: the first block from which the skip branch alone carries the feature",
            ["teleported", "features"], [[n, f"{c:,}"] for n, c in zip(names, counts) if c],
            f"Threshold: the skip branch carries ≥ {fmt_percent(threshold)} of the block output's I_V at that "
            f"block and every later one. 'never' means depth = {len(blocks)} (the number of blocks)."))
    groups = flow.get("groups") or {}
    rows = []
    for key, name in (("simple", "simplest third"), ("middle", "middle third"), ("complex", "most complex third")):
        g = groups.get(key)
        if not isinstance(g, dict):
            continue
        rows.append([name, fmt_number(g.get("n")),
                     f"{fmt_number(g.get('complexity_min'))} – {fmt_number(g.get('complexity_max'))}",
                     _mean_depth(g.get("mean_teleport_depth"), len(blocks)), fmt_percent(g.get("never_teleported")),
                     fmt_number(g.get("mean_skip_share"))])
    if rows:
        tables.append(_table("The three complexity thirds", ["features", "n", "K range", "mean teleport depth",
                                                             "never teleported", "mean skip share"], rows))
    return {"sentences": sentences, "tables": tables}


def _mean_depth(value: Any, n_blocks: int) -> str:
    """A mean teleport depth; the number of blocks itself means that no feature is teleported."""
    if value is not None and n_blocks and float(value) >= n_blocks:
        return f"never ({n_blocks} = the number of blocks)"
    return fmt_number(value, 2)


_CHECKPOINT_COLUMNS = (("checkpoint", "checkpoint", None), ("epoch", "epoch", None), ("step", "step", None),
                       ("time", "training time", None), ("n_features", "features", None),
                       ("accuracy", "accuracy", "percent"), ("mean_complexity", "mean K", None),
                       ("top_mean_complexity", "mean K of the most important", None),
                       ("spearman_k_importance", "Spearman(K, Γ)", None))


def dynamics_tables(dynamics: dict[str, Any], checkpoints: Any = None) -> dict[str, Any]:
    """``dynamics.json`` (and the per-checkpoint table when present) as sentences and a table."""
    s = dynamics.get("summary", dynamics)
    unit = str(s.get("time_unit") or dynamics.get("time_unit") or "epoch")
    n_final = s.get("n_final_features")
    if n_final is None and checkpoints is not None and "n_features" in getattr(checkpoints, "columns", ()):
        n_final = int(checkpoints["n_features"].iloc[-1])
    sentences = []
    rho = s.get("spearman_A_K")
    if rho is not None:
        over = f" over the final checkpoint's {fmt_number(n_final)} features" if n_final is not None else ""
        sentences.append(f"Spearman(A, K) = {fmt_number(rho, 2)}{over}; the paper expects a strong positive "
                         "relation (complex features are learned late).")
    if s.get("mean_A") is not None:
        sentences.append(f"Mean temporal decoding score A = {fmt_number(s['mean_A'])}; "
                         f"{fmt_percent(s.get('fraction_never_decodable'))} of the features never reach I_V ≥ ½ "
                         "from a checkpoint's penultimate layer.")
    if s.get("n_checkpoints"):
        images = f", {fmt_number(s['n_probe_images'])} probe images" if s.get("n_probe_images") else ""
        sentences.append(f"{fmt_number(s['n_checkpoints'])} checkpoints{images}; training time in {unit}s.")
    tables = []
    if checkpoints is not None and len(checkpoints):
        cols = [(c, label, kind) for c, label, kind in _CHECKPOINT_COLUMNS if c in checkpoints.columns]
        rows = [[fmt_percent(r[c]) if kind == "percent" else fmt_number(r[c]) for c, _, kind in cols]
                for _, r in checkpoints.iterrows()]
        header = [f"training time ({unit}s)" if c == "time" else label for c, label, _ in cols]
        tables.append(_table("Every checkpoint", header, rows))
    elif isinstance(s.get("first"), dict) and isinstance(s.get("last"), dict):
        cols = [(c, label, kind) for c, label, kind in _CHECKPOINT_COLUMNS if c in s["first"]]
        rows = [[fmt_percent(r.get(c)) if kind == "percent" else fmt_number(r.get(c)) for c, _, kind in cols]
                for r in (s["first"], s["last"])]
        tables.append(_table("First and last checkpoint", [label for _, label, _ in cols], rows))
    return {"sentences": sentences, "tables": tables}


def factor_tables(factors: dict[str, Any]) -> dict[str, Any]:
    """``factors.json`` (planted ground truth of generated data) as a table."""
    factors = factors.get("factors", factors)
    rows = [[name, fmt_number(f.get("complexity")), fmt_number(f.get("kept"))]
            for name, f in factors.items() if isinstance(f, dict)]
    return {"sentences": [], "tables": [_table(
        "Generating factors (ground truth of the generated images)", ["factor", "complexity K",
                                                                       "kept at the penultimate layer (I_V)"],
        rows, "A factor the model discards in its last blocks gets a high K although it is decodable early.")]}


def sections_context(folder: RunFolder, budget: Budget) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The four question sections and "other", each with figures, sentences and tables; and the
    figures of the findings section (drawn by the findings stage)."""
    figures = figures_by_section(folder, budget)
    extras: dict[str, list[dict[str, Any]]] = {key: [] for key in SECTION_ORDER}
    flow = folder.json("flow.json")
    if isinstance(flow, dict):
        extras["where"].append(flow_tables(flow))
    dynamics = folder.json("dynamics.json") or folder.json("dynamics/dynamics.json")
    if isinstance(dynamics, dict):
        extras["when"].append(dynamics_tables(dynamics, _checkpoint_table(folder.path)))
    factors = folder.json("factors.json")
    if isinstance(factors, dict):
        extras["what"].append(factor_tables(factors))
    out = []
    for key in ("what", "when", "where", "importance", "other"):
        if key == "other" and not figures[key]:
            continue
        title, blurb = SECTIONS.get(key, ("Other figures", "Figures without a section."))
        empty = None if figures[key] or extras[key] else _ABSENT.get(key)
        out.append({"key": key, "title": title, "blurb": blurb, "figures": figures[key], "extras": extras[key],
                    "empty": empty})
    return out, figures["findings"]


def _checkpoint_table(run_dir: Path) -> Any:
    import pandas as pd

    for path in (run_dir / "dynamics" / "checkpoints.parquet", run_dir / "dynamics_checkpoints.parquet",
                 run_dir / "dynamics" / "dynamics_checkpoints.parquet"):
        if path.exists():
            return pd.read_parquet(path)
    return None
