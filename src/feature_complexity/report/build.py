"""Render ``report.html`` from a run folder: read the files, build a context dict, render templates.

:func:`report_context` is the only place that decides what the page says; :func:`render_html`
fills the Jinja2 templates of ``report/templates`` (package data, loaded with
``importlib.resources``) with it, inlining ``report/static/report.css`` and ``explorer.js``;
:func:`render_report` writes the page atomically. No HTML is written in Python.
"""

from __future__ import annotations

import time
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from .embed import Budget
from .explorer import embed_evidence, evidence_index, explorer_data, json_for_script, spectrum_strip
from .findings_view import findings_context
from .folder import RunFolder, check_run_dir
from .sections import sections_context
from .summary import fmt_number, summary_context

__all__ = ["report_context", "render_html", "render_page", "render_report", "DEFAULT_REPORT_MB"]

DEFAULT_REPORT_MB = 25.0
#: what the page's own markup (everything but the data and the images) costs, generously
_MARKUP_BYTES = 60_000


@cache
def _static(name: str) -> str:
    text = resources.files(__package__).joinpath("static", name).read_text(encoding="utf-8")
    if "</script" in text.lower():
        raise ValueError(f"report/static/{name} contains '</script', which would end its inline element")
    return text


def _environment() -> Any:
    """A Jinja2 environment over the package's templates (autoescaped: every value is text)."""
    import jinja2

    root = resources.files(__package__).joinpath("templates")

    def load(name: str) -> str:
        return root.joinpath(*name.split("/")).read_text(encoding="utf-8")

    env = jinja2.Environment(loader=jinja2.FunctionLoader(load), autoescape=True, undefined=jinja2.StrictUndefined,
                             trim_blocks=True, lstrip_blocks=True)
    env.filters["num"] = fmt_number
    return env


def render_html(context: dict[str, Any]) -> str:
    """The page for ``context`` (from :func:`report_context`)."""
    return _environment().get_template("report.html.j2").render(**context)


def _notes(index: dict[str, Any] | None, evidence: dict[str, Any], n_features: int) -> list[str]:
    """What the page lacks and why (evidence not rendered, rendered for a subset, no heatmaps)."""
    if index is None:
        return ["No evidence thumbnails (top images and concept heatmaps): the evidence stage has not run. It needs "
                "the model and the probe images: `feature-complexity report RUN_DIR --evidence` rebuilds them from "
                "the manifest and renders them."]
    notes = []
    if evidence["n_rendered"] < n_features:
        notes.append(f"Evidence thumbnails were rendered for {evidence['n_rendered']:,} of {n_features:,} features "
                     "(the simplest, the most complex, the most important and a seeded sample; the budget is "
                     "config.evidence_features). Every feature's top images are listed in evidence/top_images.npy.")
    if index.get("heatmap_note"):
        notes.append(str(index["heatmap_note"]))
    return notes


def report_context(run_dir: str | Path, *, report_mb: float = DEFAULT_REPORT_MB, reserve: int = 0) -> dict[str, Any]:
    """Everything the templates show, read from the run folder ``run_dir``.

    ``reserve``: bytes of the budget not to spend on thumbnails (see :func:`render_page`).

    Raises:
        FileNotFoundError, ValueError: ``run_dir`` is not a finished run folder (the message says
            what to do).
    """
    folder = RunFolder(check_run_dir(run_dir))
    manifest, frame = folder.manifest(), folder.features()
    flow = folder.json("flow.json")
    never = len(flow["blocks"]) if isinstance(flow, dict) and flow.get("blocks") else None
    data = explorer_data(frame, teleport_never=never)
    data_json = json_for_script(data)
    budget = Budget.of_megabytes(report_mb)
    budget.spend(len(data_json.encode()) + len(_static("report.css").encode()) + len(_static("explorer.js").encode())
                 + _MARKUP_BYTES + reserve)
    sections, finding_figures = sections_context(folder, budget)
    must_fit = budget.used
    index = evidence_index(folder.path)
    rendered = {int(f) for f in (index or {}).get("files", {})}
    strip = spectrum_strip(frame, rendered)
    first = [s["feature"] for s in strip["simplest"] + strip["most_complex"]]
    for f in first:  # the strip's thumbnails are in the page twice: in the markup and in the explorer's data
        assert index is not None  # the strip only shows features with files in the index
        budget.spend(4 * ((folder.path / "evidence" / index["files"][str(f)]).stat().st_size + 2) // 3)
    evidence = embed_evidence(folder.path, index, budget, first=first)
    model = m if isinstance(m := manifest.get("model"), dict) else {}
    findings = findings_context(folder.json("findings.json"))
    findings["figures"] = finding_figures
    return {
        "title": f"Feature complexity report — {model.get('name') or folder.path.name}",
        "run_name": folder.path.name,
        "generated": time.strftime("%Y-%m-%d %H:%M"),
        "summary": summary_context(manifest, frame, folder.json("fidelity.json")),
        "notes": _notes(index, evidence, len(frame)),
        "sections": sections,
        "findings": findings,
        "strip": strip if evidence["images"] else None,
        "strip_images": {k: evidence["images"][str(k)] for k in first if str(k) in evidence["images"]},
        "n_features": len(frame),
        "data_json": data_json,
        "evidence_json": json_for_script({"images": evidence["images"], "vis": evidence["vis"],
                                          "left_out": evidence["left_out"]}),
        "footer": _footer(budget, evidence, must_fit, report_mb),
        "css": _static("report.css"),
        "js": _static("explorer.js"),
    }


def _footer(budget: Budget, evidence: dict[str, Any], must_fit: int, report_mb: float) -> dict[str, Any]:
    left = sorted(int(f) for f in evidence["left_out"])
    return {"budget_mb": fmt_number(report_mb, 3), "size_mb": f"{budget.used / 1e6:.1f}",
            "n_embedded": evidence["n_embedded"], "n_rendered": evidence["n_rendered"],
            "n_left_out": len(left), "left_out_sample": left[:30],
            "over": must_fit > budget.limit, "must_fit_mb": f"{must_fit / 1e6:.1f}"}


def render_page(run_dir: str | Path, *, report_mb: float = DEFAULT_REPORT_MB) -> str:
    """The page of ``run_dir`` within ``report_mb``: the budget is planned from the parts' sizes,
    then checked on the rendered text; an overshoot (markup larger than planned) is taken off the
    thumbnails and the page rendered again."""
    limit, reserve = int(report_mb * 1_000_000), 0
    for _ in range(4):
        context = report_context(run_dir, report_mb=report_mb, reserve=reserve)
        page = render_html(context)
        over = len(page.encode("utf-8")) - limit
        if over <= 0 or context["footer"]["n_embedded"] == 0:
            return page
        reserve += over + 20_000
    return page


def render_report(run_dir: str | Path, *, report_mb: float = DEFAULT_REPORT_MB, out: Path | None = None) -> Path:
    """Write ``run_dir/report.html`` (or ``out``) atomically; returns its path.

    This renders what the folder holds, without the stage loop (a folder from an older version
    of the tool, a test). ``feature-complexity report RUN_DIR`` goes through the loop
    (:func:`feature_complexity.report.rerender`).
    """
    from ..io import atomic_path

    page = render_page(run_dir, report_mb=report_mb)
    path = Path(out) if out is not None else Path(run_dir) / "report.html"
    with atomic_path(path) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return path
