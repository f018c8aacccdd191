"""``feature-complexity report RUN_DIR``: the report stage on an existing run folder.

Without the model: the folder's configuration and input fingerprints (``manifest.json``) give
every stage its key, the finished stages are reused as they are, and only the report is rendered
again (seconds). No other stage is ever computed here: one whose record does not match (the
run had extra stages, such as the demo's dynamics, that this command cannot rebuild) is left as
it is, and the page is then rendered from the folder's files directly. With ``evidence_inputs``
(the model and the probe images, rebuilt from the manifest by the CLI and checked to be the
run's own), the evidence stage runs first.

A folder written before the stage loop (no ``.stages/`` records) is rendered from its files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .folder import check_run_dir

__all__ = ["rerender", "check_inputs_match"]


def rerender(run_dir: str | Path, *, evidence_inputs: dict[str, Any] | None = None,
             changes: dict[str, Any] | None = None, progress: bool = True) -> Path:
    """Render ``RUN_DIR/report.html`` again (and, with ``evidence_inputs``, the evidence first).

    Args:
        run_dir: a finished run folder.
        evidence_inputs: ``{"spec": ModelSpec, "probe": dataset}`` of the run, to (re)compute the
            evidence stage; ``None``: show the evidence the folder has.
        changes: settings to change (``report_mb``, ``evidence_features``, ``n_top``).
        progress: one line per stage, progress bars.

    Returns:
        the path of ``report.html``.
    """
    from ..stages import RECORDS_DIR

    path = check_run_dir(run_dir)
    if not (path / RECORDS_DIR).is_dir():
        if evidence_inputs is not None:
            raise ValueError(f"{path} was written by an older version of the tool (no {RECORDS_DIR}/ records): "
                             "its evidence cannot be rendered into it; rerun the analysis into a new folder")
        from .build import DEFAULT_REPORT_MB, render_report

        return render_report(path, report_mb=float((changes or {}).get("report_mb", DEFAULT_REPORT_MB)))
    # the report is rendered again even when nothing it shows changed (a newer template, say)
    (path / RECORDS_DIR / "report.json").unlink(missing_ok=True)
    ctx, status = _run_report_stage(path, evidence_inputs, changes or {}, progress)
    if evidence_inputs is not None and "evidence" not in status:
        raise ValueError(_why_no_evidence(ctx, path))
    if "report" not in status:
        # a stage the report reads was made by stages this list does not hold (a run's extra
        # stages, the demo's dynamics): render what the folder has, without touching the stages
        ctx.log(f"[report] {path} holds stages this command cannot rebuild (its run had extra stages); "
                "rendering the folder's files as they are")
        from .build import render_report

        return render_report(path, report_mb=float(ctx.config.report_mb))
    return path / "report.html"


def _why_no_evidence(ctx: Any, path: Path) -> str:
    """Why the evidence stage did not run on ``path``, and what to do."""
    from ..analyses.evidence import STAGE

    if ctx.config.evidence_features <= 0:
        return "no evidence: config.evidence_features is 0 (pass --evidence-features N)"
    missing = [n for n in STAGE.needs if not ctx.has(n)]
    return (f"no evidence for {path}: it needs the stages {', '.join(missing)}, which the folder holds from other "
            "settings or an older version of the tool (or not at all); rerun the same `feature-complexity run` "
            "command on it (with --overwrite) first")


def _run_report_stage(path: Path, evidence_inputs: dict[str, Any] | None, changes: dict[str, Any],
                      progress: bool) -> tuple[Any, dict[str, Any]]:
    """Run the report stage (and the evidence) on the folder; every other stage counts only if the
    folder holds it with the same key, so nothing else is ever recomputed (or overwritten)."""
    import sys
    from dataclasses import replace

    from ..pipeline import folder_stages, open_run, run_stages_of
    from ..stages import Context

    config, prints, manifest = open_run(path)
    config = replace(config, **changes).validate()
    manifest["config"] = config.to_dict()
    inputs = {"class_names": (manifest.get("model") or {}).get("class_names"), **(evidence_inputs or {})}
    log = (lambda m: print(m, file=sys.stderr)) if progress else (lambda m: None)
    ctx = Context(config=config, out=path, fingerprints=prints, inputs=inputs, overwrite=True, progress=progress,
                  log=log)
    targets = ["evidence", "report"] if evidence_inputs is not None else ["report"]
    status = run_stages_of(folder_stages(manifest), ctx, manifest, targets, computable=set(targets))
    return ctx, status


def check_inputs_match(spec: Any, probe: Any, manifest: dict[str, Any]) -> str | None:
    """Whether a rebuilt model and probe set are the run's own, by their fingerprints.

    Returns:
        ``None`` when both match the manifest's (or it records none), else the reason.
    """
    from ..pipeline import fingerprints_of

    recorded = manifest.get("fingerprints") or {}
    got = fingerprints_of(spec, probe)
    for name, what, flag in (("model", "model weights", "--checkpoint"), ("probe", "probe images", "--data")):
        if recorded.get(name) and recorded[name] != got.get(name):
            return (f"the {what} rebuilt from manifest.json are not the run's (fingerprint {got.get(name)} != "
                    f"{recorded[name]}); pass {flag} with the run's own")
    return None
