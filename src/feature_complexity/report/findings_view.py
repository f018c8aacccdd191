"""The findings section: one row per claim of the paper, from ``findings.json``.

Each row: the statistic and what the paper says, the expected sign, this model's value with its
interval, the control's value with its interval, and the verdict with its reason. The verdicts
are the findings stage's (:mod:`feature_complexity.analyses.findings`); the report only words them.
"""

from __future__ import annotations

from typing import Any

from .summary import fmt_number, fmt_p

__all__ = ["findings_context", "VERDICT_LABELS"]

VERDICT_LABELS = {
    "reproduced": "reproduced",
    "not_reproduced": "not reproduced",
    "not_specific_to_training": "not specific to training",
    "inconclusive": "inconclusive",
}

_EXPECTED = {"positive": "positive (> 0)", "negative": "negative (< 0)", "none": "no relation (≈ 0)"}


def _interval(value: Any, lo: Any, hi: Any, digits: int = 2, missing: str = "—") -> str:
    if value is None:
        return missing
    text = fmt_number(value, digits)
    if lo is not None and hi is not None:
        text += f" [{fmt_number(lo, digits)}, {fmt_number(hi, digits)}]"
    return text


def _row(f: dict[str, Any]) -> dict[str, Any]:
    verdict = str(f.get("verdict") or "inconclusive")
    expected = _EXPECTED.get(str(f.get("expected")), str(f.get("expected") or "—"))
    if f.get("expected") == "none" and f.get("band") is not None:
        expected = f"no relation (|value| < {fmt_number(f['band'], 2)})"
    control = None
    if f.get("control"):
        control = {"name": str(f["control"]),
                   "value": _interval(f.get("control_value"), f.get("control_ci_low"), f.get("control_ci_high"),
                                      missing="not computed"),
                   "difference": None if f.get("difference") is None else
                   _interval(f.get("difference"), f.get("difference_ci_low"), f.get("difference_ci_high"))}
    return {
        "claim": str(f.get("claim", "")),
        "statistic": str(f.get("statistic") or f.get("claim", "")),
        "paper": str(f.get("paper") or ""),
        "unit": str(f.get("unit") or ""),
        "n": fmt_number(f.get("n")) if f.get("n") is not None else None,
        "expected": expected,
        "value": _interval(f.get("value"), f.get("ci_low"), f.get("ci_high")),
        "p_value": fmt_p(f.get("p_value")) if f.get("p_value") is not None else None,
        "control": control,
        "verdict": verdict,
        "verdict_label": VERDICT_LABELS.get(verdict, verdict.replace("_", " ")),
        "reason": str(f.get("reason") or ""),
    }


def findings_context(data: Any) -> dict[str, Any]:
    """Rows, counts per verdict and the notes of the findings section.

    Args:
        data: the parsed ``findings.json`` (a list of findings, or ``{"findings": [...]}``), or
            ``None`` when the run has none.
    """
    if data is None:
        return {"rows": [], "counts": [], "note": None,
                "absent": "No findings.json in this run folder: the findings stage has not run (it runs with "
                          "the report in `feature-complexity run`; a run with --no-report skips it)."}
    items = data.get("findings", []) if isinstance(data, dict) else data
    if not isinstance(items, list):
        raise ValueError("findings.json must hold a list of findings (or {'findings': [...]}); rerun the "
                         "findings stage to rewrite it")
    rows = [_row(f) for f in items if isinstance(f, dict)]
    counts = [(VERDICT_LABELS[v], v, sum(r["verdict"] == v for r in rows)) for v in VERDICT_LABELS]
    note = None
    if rows and not any(r["control"] for r in rows):
        note = ("No control was run: a correlation seen here could come from the measurement itself (a randomly "
                "initialised network shows some of them too), so no directional claim can be called reproduced. "
                "Rerun with `--controls random-init` to compare with the same architecture at random "
                "initialisation.")
    return {"rows": rows, "counts": [c for c in counts if c[2]], "note": note, "absent": None}
