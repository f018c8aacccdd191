"""Rerun the README's example runs and rewrite its "What it finds" table from their files.

    .venv/bin/python docs/make_results.py              # the demo and ResNet-20 (minutes), rewrites README.md
    .venv/bin/python docs/make_results.py --long       # also trains ResNet-20 and follows its training (an hour)
    .venv/bin/python docs/make_results.py --reuse      # only re-reads the run folders present and rewrites

The table lies between ``<!-- results:start -->`` and ``<!-- results:end -->`` in README.md; every
number in it comes from ``manifest.json``, ``fidelity.json``, ``features.parquet`` and
``findings.json`` of the runs below, and the block states the commands, the machine and its load.
The ResNet-20 run needs ``../shared/data`` (skipped, and its column left out, when absent).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
README = REPO / "README.md"
START, END = "<!-- results:start -->", "<!-- results:end -->"
#: row labels (a claim's id and its statistic, from the first run that has it)
LABELS: dict[str, str] = {}

#: each column's commands, run in order; the last one's --out is the column's run folder
RUNS: dict[str, list[list[str]]] = {
    "demo": [["demo", "--out", "runs/readme-demo", "--threads", "1", "--quiet"]],
    "resnet20": [["run", "--model", "cifar-resnet20", "--checkpoint", "../shared/data/models/resnet20-cifar10.th",
                  "--data", "../shared/data/cifar10/test", "--limit", "5000", "--controls", "random-init",
                  "--robustness-images", "200", "--robustness-draws", "20", "--threads", "1", "--quiet",
                  "--out", "runs/readme-r20"]],
    # docs/REPRODUCE.md, recipe 3: ResNet-20 trained here for 12 epochs, then its training followed
    "resnet20, trained 12 epochs here": [
        ["train", "--model", "cifar-resnet20", "--data", "../shared/data/cifar10/train", "--epochs", "12",
         "--eval-data", "../shared/data/cifar10/test", "--eval-limit", "1000", "--threads", "1", "--quiet",
         "--out", "runs/train-r20"],
        ["dynamics", "--checkpoints", "runs/train-r20/training/checkpoints", "--data", "../shared/data/cifar10/test",
         "--limit", "5000", "--controls", "random-init", "--robustness-images", "200", "--robustness-draws", "20",
         "--threads", "2", "--quiet", "--out", "runs/dyn-r20"]],
}
#: columns that need ../shared/data, and the ones only --long runs (--reuse reads them when present)
NEEDS_SHARED = ("resnet20", "resnet20, trained 12 epochs here")
LONG = ("resnet20, trained 12 epochs here",)
#: the claims of findings.json, in the paper's order (analyses/findings.py: CLAIMS)
CLAIMS = ["spectrum", "k_vs_importance", "k_vs_abs_importance", "skip_share_vs_k", "teleport_depth_vs_k",
          "redundancy_vs_k", "robustness_vs_k", "hoyer_vs_k", "purity_vs_k", "support_tail", "a_vs_k",
          "mean_k_rises", "sedimentation", "k_vs_importance_first_epoch"]


#: load averages measured around the runs (so that --reuse can still state them)
LOADS = REPO / "runs" / "make_results_load.json"


def run(name: str) -> float:
    """Run one example from the repository root; returns its wall seconds, and records the
    1-minute load average before and after it in :data:`LOADS`."""
    before = os.getloadavg()[0]
    start = time.perf_counter()
    for argv in RUNS[name]:
        subprocess.run([sys.executable, "-m", "feature_complexity", *argv], cwd=REPO, check=True)
    wall = time.perf_counter() - start
    loads = json.loads(LOADS.read_text()) if LOADS.exists() else {}
    loads[name] = [round(before, 2), round(os.getloadavg()[0], 2)]
    LOADS.write_text(json.dumps(loads))
    return wall


def _outs(name: str) -> list[Path]:
    """The run folder of each of a column's commands."""
    return [REPO / argv[argv.index("--out") + 1] for argv in RUNS[name]]


def _out(name: str) -> Path:
    return _outs(name)[-1]


def _cell(row: dict[str, Any] | None) -> str:
    """``value [lo, hi]; control value [lo, hi] → verdict`` of one findings row."""
    if row is None or row.get("value") is None:
        return "not computed"
    text = f"{row['value']:+.2f} {_interval(row['ci_low'], row['ci_high'])}"
    if row.get("control_value") is not None:
        text += f"; random init {row['control_value']:+.2f} {_interval(row['control_ci_low'], row['control_ci_high'])}"
    return text + f" → {row['verdict'].replace('_', ' ')}"


def _interval(low: float | None, high: float | None) -> str:
    return "[no interval]" if low is None or high is None else f"[{low:+.2f}, {high:+.2f}]"


def wall_seconds(name: str) -> float | None:
    """Wall time of a finished column from its folders' manifests: ``started`` to ``finished``
    of each, plus the training stage, which runs before the analysis starts its clock (the
    demo's)."""
    total = 0.0
    for out in _outs(name):
        seconds = _folder_seconds(out)
        if seconds is None:
            return None
        total += seconds
    return total


def _folder_seconds(out: Path) -> float | None:
    from datetime import datetime

    path = out / "manifest.json"
    if not path.exists():
        return None
    manifest = json.loads(path.read_text())
    try:
        start, end = (datetime.fromisoformat(manifest[k]) for k in ("started", "finished"))
    except (KeyError, TypeError, ValueError):
        return None
    train = manifest.get("stages", {}).get("train", {})
    return (end - start).total_seconds() + (train.get("seconds", 0.0) if train.get("status") == "computed" else 0.0)


def column(name: str) -> dict[str, str]:
    """The table cells of one run, read from its folder."""
    import pandas as pd

    out = _out(name)
    fid = json.loads((out / "fidelity.json").read_text())
    findings = {r["claim"]: r for r in json.loads((out / "findings.json").read_text())}
    K = pd.read_parquet(out / "features.parquet")["complexity"]
    acc = fid.get("accuracy_original")
    cells = {
        "features": f"{len(K):,}",
        "model accuracy / kept by `Z @ D`": ("no labels" if acc is None else f"{100 * acc:.1f} %")
        + (f" / {100 * fid['accuracy_kept']:.1f} %" if fid.get("accuracy_kept") is not None else ""),
        "complexity K, median [range]": f"{K.median():.2f} [{K.min():.2f}, {K.max():.2f}]",
    }
    for claim in CLAIMS:
        row = findings.get(claim)
        statistic = str(row["statistic"]).replace("|", "\\|") if row and row.get("statistic") else ""
        label = f"`{claim}`" + (f": {statistic}" if statistic else "")  # "|" would end a table cell
        cells[claim] = _cell(row)
        LABELS.setdefault(claim, label)
    return cells


def table(columns: dict[str, dict[str, str]], walls: dict[str, float]) -> str:
    names = list(columns)
    head = "| | " + " | ".join(names) + " |\n|---|" + "---|" * len(names) + "\n"
    keys = list(dict.fromkeys(k for n in names for k in columns[n]))
    rows = [f"| {LABELS.get(key, key)} | " + " | ".join(columns[n].get(key, "not computed") for n in names) + " |"
            for key in keys]
    cmds = "\n".join(f"    feature-complexity {' '.join(argv)}" for n in names for argv in RUNS[n])
    timing = ", ".join(f"{n} {walls[n]:.0f} s" if n in walls else f"{n} not recorded in its folders (the training "
                       "folder keeps no clock; see docs/REPRODUCE.md)" for n in names)
    loads = json.loads(LOADS.read_text()) if LOADS.exists() else {}
    # "runs": one reading before the first run and one after the last (an older record's form)
    load = ", ".join(f"{n} {loads[n][0]:g} → {loads[n][1]:g}" for n in [*names, "runs"] if n in loads)
    load = load.replace("runs ", "first run to last ") or "not recorded"
    where = (f"Measured by `docs/make_results.py` on {time.strftime('%Y-%m-%d')}, {platform.machine()}, "
             f"{os.cpu_count()} cores (this project's shared CPU VM), 1-minute load average (before → after): "
             f"{load}" + (f"; wall times {timing}" if timing else "") + ". Commands:")
    return f"{START}\n{head}" + "\n".join(rows) + f"\n\n{where}\n\n{cmds}\n{END}"


#: where the long column's dynamics figures are written (linked from docs/REPRODUCE.md)
FIGURES = REPO / "docs" / "figures"


def dynamics_figures(name: str) -> list[Path]:
    """The dynamics figures of a column that followed a training: mean K across training drawn
    again from its ``checkpoints.parquet`` (with the current tick rule), and K against Γ at the
    first and last checkpoints as the run drew it."""
    import shutil

    import pandas as pd

    from feature_complexity.analyses.dynamics import plot_mean_complexity, top_label
    from feature_complexity.config import RunConfig

    out = _out(name)
    table = out / "dynamics" / "checkpoints.parquet"
    if not table.exists():
        return []
    FIGURES.mkdir(parents=True, exist_ok=True)
    c = pd.read_parquet(table)
    config = RunConfig(**json.loads((out / "manifest.json").read_text())["config"])
    fig = plot_mean_complexity(c["time"], c["mean_complexity"], c["top_mean_complexity"], top_label=top_label(config))
    written = [FIGURES / "r20-dynamics-mean-complexity.png", FIGURES / "r20-dynamics-complexity-importance.png"]
    fig.savefig(written[0], dpi=110)
    shutil.copyfile(out / "figures" / "dynamics_complexity_importance.png", written[1])
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reuse", action="store_true", help="read the existing run folders, run nothing")
    parser.add_argument("--long", action="store_true", help="also the ResNet-20 training and dynamics (an hour)")
    args = parser.parse_args()
    names = [n for n in RUNS if (n not in NEEDS_SHARED or SHARED.is_dir())
             and (n not in LONG or args.long or (args.reuse and (_out(n) / "findings.json").exists()))]
    walls = {n: run(n) for n in names} if not args.reuse else \
        {n: w for n in names if (w := wall_seconds(n)) is not None}
    columns = {n: column(n) for n in names}
    text = README.read_text()
    if START not in text or END not in text:
        sys.exit(f"error: {README} has no {START} ... {END} block")
    before, rest = text.split(START, 1)
    README.write_text(before + table(columns, walls) + rest.split(END, 1)[1])
    print(table(columns, walls))
    for name in names:
        if name in LONG:
            for path in dynamics_figures(name):
                print(f"wrote {path.relative_to(REPO)}")


if __name__ == "__main__":
    main()
