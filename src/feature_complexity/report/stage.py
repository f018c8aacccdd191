"""The report as a stage of the run: it renders the run folder once everything it shows is done.

:func:`report_stage` makes the stage from the run's stage list: it needs the feature table and
optionally reads every other stage, so its key changes (and the page is rendered again) whenever
anything it shows changed. It applies only with a run folder; ``compute`` renders the page from
the folder's files, ``save`` writes ``report.html`` atomically, ``load`` returns its path.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..stages import Context, Stage

__all__ = ["report_stage", "REPORT_FILE"]

REPORT_FILE = "report.html"


def _compute(ctx: "Context") -> str:
    from .build import render_page

    assert ctx.out is not None  # applies() guarantees a run folder
    return render_page(ctx.out, report_mb=float(ctx.config.report_mb))


def _save(page: str, out: Path) -> None:
    from ..io import atomic_path

    with atomic_path(out / REPORT_FILE) as tmp:
        tmp.write_text(page, encoding="utf-8")


def report_stage(stages: Sequence["Stage"]) -> "Stage":
    """The report stage for a run made of ``stages`` (the report itself excluded or not).

    Returns:
        ``Stage("report", needs=("features",), optional=<every other stage>, settings=("report_mb",))``.
    """
    from ..stages import Stage

    others = tuple(s.name for s in stages if s.name not in ("report", "features"))
    return Stage("report", _compute, needs=("features",), optional=others, settings=("report_mb",),
                 save=_save, load=lambda out: out / REPORT_FILE, outputs=(REPORT_FILE,),
                 applies=lambda ctx: ctx.out is not None)
