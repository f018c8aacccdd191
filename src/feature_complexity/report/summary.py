"""The summary section: the model, the data, the features, what the dictionary keeps, the stages.

Every value is a formatted string; the template only lays them out. The model's own accuracy is
shown beside what the dictionary keeps, because "the reconstruction keeps 100 % of the accuracy"
says nothing about a model that is at chance level (an untrained one), and the page must say so.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["summary_context", "fmt_number", "fmt_percent", "fmt_p"]

#: configuration fields worth showing in the summary, with their labels
_SETTINGS = (("dictionary", "dictionary"), ("learner", "learner"), ("n_atoms_per_class", "atoms per class"),
             ("codes", "codes"), ("class_source", "class of an image"), ("n_folds", "folds of I_V"),
             ("ci_groups", "interval cells per fold"), ("teleport_threshold", "teleport threshold"),
             ("controls", "controls"), ("evidence_features", "features with thumbnails"),
             ("report_mb", "page size budget (MB)"), ("seed", "seed"))


def fmt_number(value: Any, digits: int = 3) -> str:
    """A number for people: ``—`` for missing or non-finite, thousands separators for integers."""
    if value is None or isinstance(value, bool):
        return "—" if value is None else ("yes" if value else "no")
    if isinstance(value, int):
        return f"{value:,}"
    try:
        x = float(value)
    except (TypeError, ValueError):
        return str(value)
    if not math.isfinite(x):
        return "—"
    if abs(x) < 1e-12:  # floating-point dust around zero (an interval's bound, say)
        return "0"
    if x.is_integer() and abs(x) < 1e15:
        return f"{int(x):,}"
    return f"{x:.{digits}g}" if abs(x) < 1e-3 or abs(x) >= 1e4 else f"{x:.{digits}f}"


def fmt_p(value: Any) -> str:
    """A p-value: two significant digits, ``< 0.001`` below that."""
    if value is None or not math.isfinite(float(value)):
        return "—"
    return "< 0.001" if float(value) < 0.001 else f"{float(value):.2g}"


def fmt_percent(value: Any) -> str:
    """A fraction in [0, 1] as a percentage (``—`` when missing)."""
    if value is None:
        return "—"
    x = float(value)
    return f"{100 * x:.1f} %" if math.isfinite(x) else "—"


def _model_rows(manifest: dict[str, Any]) -> list[tuple[str, str]]:
    model = m if isinstance(m := manifest.get("model"), dict) else {}
    rows = [("model", str(model.get("name") or "(not recorded)"))]
    name: str | None
    for key, name in (("checkpoint", "checkpoint"), ("weights", "weights")):
        if model.get(key):
            rows.append((name, str(model[key])))
    if model.get("n_parameters"):
        rows.append(("parameters", fmt_number(int(model["n_parameters"]))))
    if model.get("probe_layers"):
        layers = list(model["probe_layers"])
        rows.append(("probe blocks", f"{len(layers)} ({layers[0]} … {layers[-1]})"))
    data = m if isinstance(m := manifest.get("data"), dict) else {}
    name = data.get("description") or data.get("name") or data.get("kind") or data.get("root")
    rows.append(("probe images", f"{fmt_number(manifest.get('n_images'))} ({name})" if name
                 else fmt_number(manifest.get("n_images"))))
    return rows


def _feature_rows(frame: "pd.DataFrame") -> list[tuple[str, str]]:
    K = frame["complexity"]
    rows = [("features", fmt_number(len(frame)))]
    if "class" in frame:
        rows.append(("classes with features", fmt_number(int(frame["class"].nunique()))))
    rows.append(("complexity K", f"median {fmt_number(K.median())}, range {fmt_number(K.min())} – "
                                 f"{fmt_number(K.max())}"))
    if "importance" in frame:
        n_neg = int((frame["importance"] < 0).sum())
        rows.append(("inhibiting features (Γ < 0)", f"{n_neg:,} of {len(frame):,}"))
    return rows


def accuracy_context(fidelity: dict[str, Any] | None, n_classes: int | None) -> dict[str, Any]:
    """What the dictionary keeps, beside the model's own accuracy (and a warning near chance)."""
    if not isinstance(fidelity, dict):
        return {"rows": [], "warning": None,
                "absent": "No fidelity.json: the model has no classification head, or the fidelity stage has "
                          "not run; what the dictionary keeps of the model's decisions is unknown."}
    acc = fidelity.get("accuracy_original")
    chance = 1.0 / n_classes if n_classes else None
    rows = [("model's own top-1 accuracy", fmt_percent(acc) + (f" (chance {fmt_percent(chance)})" if chance else "")),
            ("accuracy from the reconstruction Z·D", fmt_percent(fidelity.get("accuracy_reconstructed"))),
            ("predictions unchanged by the reconstruction", fmt_percent(fidelity.get("agreement"))),
            ("relative reconstruction error ‖A − Z·D‖ / ‖A‖", fmt_number(fidelity.get("relative_error")))]
    warning = None
    if acc is None:
        warning = ("The probe images have no labels, so the model's accuracy is unknown: the agreement above "
                   "says what the dictionary keeps of its decisions, not whether they are right.")
    elif chance is not None and acc < min(1.0, 2 * chance):
        warning = (f"The model is near chance level on these images ({fmt_percent(acc)}, chance "
                   f"{fmt_percent(chance)}): it is untrained, or these are not its classes. The dictionary "
                   "keeping its decisions then says nothing about learned features.")
    return {"rows": rows, "warning": warning, "absent": None}


def stages_context(manifest: dict[str, Any]) -> dict[str, Any]:
    """The stages of the last build: which were computed, which reused, and how long they took."""
    stages = manifest.get("stages")
    if not isinstance(stages, dict) or not stages:
        timings = manifest.get("timings")
        rows = [(k, "computed", fmt_number(v, 2) + " s") for k, v in (timings or {}).items()
                if isinstance(v, (int, float))]
        return {"rows": rows, "sentence": "Stage timings as recorded by an older version of the tool." if rows
                else "The manifest records no stages."}
    rows, computed, reused, seconds = [], 0, 0, 0.0
    for name, info in stages.items():
        status = str(info.get("status", "?")) if isinstance(info, dict) else str(info)
        secs = info.get("seconds") if isinstance(info, dict) else None
        rows.append((name, status, "—" if secs is None else f"{float(secs):.1f} s"))
        if status == "computed":
            computed += 1
            seconds += float(secs or 0.0)
        elif status == "reused":
            reused += 1
    sentence = (f"The last build computed {computed} stage{'s' * (computed != 1)} ({seconds:.1f} s) and reused "
                f"{reused} finished one{'s' * (reused != 1)} from this folder.")
    return {"rows": rows, "sentence": sentence}


def _setting(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)):
        return ", ".join(map(str, value)) if value else "none"
    return fmt_number(value)


def summary_context(manifest: dict[str, Any], frame: "pd.DataFrame", fidelity: Any) -> dict[str, Any]:
    """Everything the summary section shows, as strings."""
    model = m if isinstance(m := manifest.get("model"), dict) else {}
    config = m if isinstance(m := manifest.get("config"), dict) else {}
    settings = [(label, _setting(config[key])) for key, label in _SETTINGS if key in config and config[key] is not None]
    versions = m if isinstance(m := manifest.get("versions"), dict) else {}
    return {
        "model": _model_rows(manifest),
        "features": _feature_rows(frame),
        "accuracy": accuracy_context(fidelity, model.get("num_classes")),
        "stages": stages_context(manifest),
        "settings": settings,
        "versions": sorted((str(k), str(v)) for k, v in versions.items()),
        "started": manifest.get("started"),
        "finished": manifest.get("finished"),
    }
