"""The report: ``report.html``, one self-contained page rendered from a run folder.

The report only renders. It reads the run folder's files (``manifest.json``, ``features.parquet``,
``figures/index.json`` …), builds a context dict (:func:`report_context`) and fills Jinja2
templates that are package data (``report/templates/*.j2``, ``report/static/*``). Layout:

- ``folder.py``    reading the run folder, with messages for a bad ``RUN_DIR``;
- ``summary.py``, ``sections.py``, ``findings_view.py``, ``explorer.py``: one part of the page each;
- ``labels.py``    human names and explanations of the raw field names;
- ``embed.py``     data URIs and the page's size budget (``config.report_mb``);
- ``build.py``     the context dict and the rendering; ``stage.py`` the report as a stage;
- ``rerun.py``     ``feature-complexity report RUN_DIR``: the report stage on an existing folder;
- ``heatmaps.py``, ``visualize.py``: pure image code used by the evidence analysis
  (:mod:`feature_complexity.analyses.evidence`), kept here for now.

Imports are lazy: ``import feature_complexity.report`` loads neither Jinja2 nor pandas.
"""

from __future__ import annotations

from typing import Any

__all__ = ["report_stage", "report_context", "render_html", "render_page", "render_report", "rerender"]


def __getattr__(name: str) -> Any:
    if name == "report_stage":
        from .stage import report_stage

        return report_stage
    if name in ("report_context", "render_html", "render_page", "render_report"):
        from . import build

        return getattr(build, name)
    if name == "rerender":
        from .rerun import rerender

        return rerender
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
