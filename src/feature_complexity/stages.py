"""The one loop over stages: what is done, what is stale, what runs (after Make, DVC, Snakemake).

A run is an ordered list of :class:`Stage`. Each stage names the results it needs (earlier
stages), the settings that change its result (fields of the run's configuration), the inputs it
reads (``"model"`` weights, ``"probe"`` and ``"fit"`` images, by their fingerprints), and how to
save and load its result. Its **key** is a digest of all of that, including the keys of the
stages it needs, so a changed setting or input changes the key of every stage it affects and of
every stage downstream of those, and nothing else.

:func:`run_stages` is the only place that decides what to compute:

- with a run folder, a stage whose record (``.stages/<name>.json``, written after its outputs)
  holds the current key is reused, loaded lazily when a later stage needs it; a stage without a
  record is computed; a stage whose record holds another key is *stale*: the run is refused
  before any work, naming what differs, unless ``overwrite`` (then exactly the stale stages are
  recomputed);
- without a run folder everything is computed in memory (the dynamics analysis scores every
  checkpoint this way).

A result that was saved is always handed on as loaded back from disk, so a resumed run and a
fresh one give downstream stages the same values, to the byte. The loop also takes the run
folder's lock, removes temporary files an interrupted run left, records timings, and keeps the
one manifest (``manifest.json``). Work inside a long stage that must survive an interruption
goes in :meth:`Context.workdir`, which is wiped when its stage's key changes.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .distributed import Comm, SingleProcess
from .io import jsonable, read_json, write_json

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["Stage", "FigureSpec", "Context", "StaleRunError", "RunLock", "run_stages", "stage_keys",
           "RECORDS_DIR"]

RECORDS_DIR = ".stages"
_WORK_DIR = ".work"


class StaleRunError(ValueError):
    """A run folder holds results computed from other inputs or settings."""


@dataclass(frozen=True)
class FigureSpec:
    """A figure a stage draws: saved as ``figures/<name>.png`` with its title and caption in
    ``figures/index.json``, where the report reads them."""

    figure: "Figure"
    title: str
    caption: str


@dataclass(frozen=True)
class Stage:
    """One step of a run.

    Attributes:
        name: unique in the run; also the record's file name.
        compute: ``Context -> result`` (arrays and small dataclasses).
        needs: stages whose results ``compute`` reads (``ctx[name]``); a stage whose needs do not
            all apply does not apply either.
        optional: stages read when they apply (``ctx.get(name)``), part of the key when they do.
        settings: configuration fields that change the result.
        inputs: fingerprints the result depends on: ``"model"``, ``"probe"``, ``"fit"``, ….
        save: ``(result, run_dir) -> None``, writing atomically; ``None``: kept in memory only
            (recomputed on every run; for cheap stages).
        load: ``run_dir -> result``, required with ``save``.
        outputs: files or folders (relative to the run folder) that must exist for a record to
            count; default none checked.
        applies: ``Context -> bool``; default always.
        version: bump when the code changes the numbers (old records become stale).
        collective: every rank takes part in ``compute`` (sums over images); else only rank 0
            computes and saves, and the other ranks load the result when they need it.
        spread: independent stages of this kind (the dynamics checkpoints) are dealt round-robin
            to the ranks, each computing and saving its own; a later stage that needs them waits
            for all. Must save.
        section: the report section the stage's figures and tables belong to, or ``None``.
        figures: ``(result, ctx) -> {name: FigureSpec}``, drawn after ``compute`` (rank 0).
        columns: ``result -> {column: (k,) array}``, per-feature columns of ``features.parquet``.
    """

    name: str
    compute: Callable[["Context"], Any]
    needs: tuple[str, ...] = ()
    optional: tuple[str, ...] = ()
    settings: tuple[str, ...] = ()
    inputs: tuple[str, ...] = ()
    save: Callable[[Any, Path], None] | None = None
    load: Callable[[Path], Any] | None = None
    outputs: tuple[str, ...] = ()
    applies: Callable[["Context"], bool] | None = None
    version: int = 1
    collective: bool = False
    spread: bool = False
    section: str | None = None
    figures: Callable[[Any, "Context"], dict[str, FigureSpec]] | None = None
    columns: Callable[[Any], dict[str, Any]] | None = None


@dataclass
class Context:
    """What stages see: the configuration, the inputs, the results so far.

    Attributes:
        config: the run's configuration (a dataclass; stages read ``config.<setting>``).
        out: the run folder, or ``None`` to compute in memory.
        fingerprints: digests of the inputs (``"model"``, ``"probe"``, …) for the stage keys.
        inputs: the objects behind them (``"spec"``, ``"probe"``, ``"fit"`` datasets …).
        comm: the processes taking part (:mod:`feature_complexity.distributed`).
        progress: show progress bars.
        overwrite: recompute stale stages instead of refusing the run.
        log: where one-line messages go (stderr by default).
    """

    config: Any
    out: Path | None = None
    fingerprints: dict[str, str] = field(default_factory=dict)
    inputs: dict[str, Any] = field(default_factory=dict)
    comm: Comm = field(default_factory=SingleProcess)
    progress: bool = False
    overwrite: bool = False
    log: Callable[[str], None] = field(default=lambda msg: print(msg, file=sys.stderr))
    results: dict[str, Any] = field(default_factory=dict)
    keys: dict[str, str] = field(default_factory=dict)
    _stages: dict[str, Stage] = field(default_factory=dict)

    def __getitem__(self, name: str) -> Any:
        """The result of stage ``name`` (loaded from the run folder on first use)."""
        if name not in self.results:
            stage = self._stages.get(name)
            if stage is None or name not in self.keys:
                raise KeyError(f"stage '{name}' has no result in this run (it does not apply or has not run)")
            if stage.load is None or self.out is None:
                raise KeyError(f"stage '{name}' has not run yet")
            self.results[name] = stage.load(self.out)
        return self.results[name]

    def get(self, name: str, default: Any = None) -> Any:
        """The result of ``name``, or ``default`` when that stage does not apply."""
        return self[name] if name in self.keys else default

    def has(self, name: str) -> bool:
        """Whether stage ``name`` applies in this run."""
        return name in self.keys

    def workdir(self, name: str, folder: Path | None = None) -> Path | None:
        """A folder for stage ``name``'s partial work (default ``.work/<name>``), tagged with the
        stage's key: a resumed run of the same stage finds it as it was left; a different key
        (other inputs or settings) wipes it first. ``None`` in memory."""
        if self.out is None:
            return None
        import shutil

        folder = folder if folder is not None else self.out / _WORK_DIR / _file_name(name)
        tag = folder / ".key"
        # rank 0 prepares it (no barrier here: a stage computed on rank 0 alone calls this alone;
        # collective stages synchronise after allocating their stores in it)
        if self.comm.is_main:
            if folder.exists() and (not tag.exists() or tag.read_text() != self.keys[name]):
                shutil.rmtree(folder)
            folder.mkdir(parents=True, exist_ok=True)
            tag.write_text(self.keys[name])
        return folder


# ---------------------------------------------------------------------------------- keys
def _digest(material: Any) -> str:
    return hashlib.sha256(json.dumps(jsonable(material), sort_keys=True).encode()).hexdigest()[:20]


def _setting(config: Any, name: str) -> Any:
    if not hasattr(config, name):
        raise AttributeError(f"stage setting '{name}' is not a field of {type(config).__name__}")
    return getattr(config, name)


def stage_keys(stages: Sequence[Stage], ctx: Context, *, computable: set[str] | None = None
               ) -> tuple[dict[str, str], dict[str, dict[str, Any]]]:
    """The key and key material of every stage that applies, in order.

    Args:
        computable: when given, only these stages may be computed; any other stage counts only if
            the run folder holds it already with the same key (else it is left out, as if it did
            not apply): ``report RUN_DIR`` re-renders with what the folder has.

    Returns:
        ``(keys, materials)``: ``{name: key}`` and ``{name: what the key digests}``.
    """
    keys: dict[str, str] = {}
    materials: dict[str, dict[str, Any]] = {}
    ctx._stages = {s.name: s for s in stages}
    for stage in stages:
        if any(n not in keys for n in stage.needs):
            continue
        ctx.keys = keys  # applies() may ask ctx.has()
        if stage.applies is not None and not stage.applies(ctx):
            continue
        missing = [i for i in stage.inputs if i not in ctx.fingerprints]
        if missing:
            raise ValueError(f"stage '{stage.name}' reads {missing} but the run has no such input")
        material = {
            "stage": stage.name,
            "version": stage.version,
            "settings": {s: _setting(ctx.config, s) for s in stage.settings},
            "inputs": {i: ctx.fingerprints[i] for i in stage.inputs},
            "needs": {n: keys[n] for n in (*stage.needs, *stage.optional) if n in keys},
        }
        key = _digest(material)
        if computable is not None and stage.name not in computable and not _done_with(ctx, stage, key):
            continue
        materials[stage.name] = jsonable(material)
        keys[stage.name] = key
    ctx.keys = keys
    return keys, materials


def _done_with(ctx: Context, stage: Stage, key: str) -> bool:
    """Whether the run folder holds ``stage`` computed with ``key``."""
    if ctx.out is None:
        return False
    record = _read_record(ctx.out, stage.name)
    return record is not None and record.get("key") == key and all((ctx.out / o).exists() for o in stage.outputs)


def _file_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "__", name)


def _record_path(out: Path, name: str) -> Path:
    return out / RECORDS_DIR / f"{_file_name(name)}.json"


def _read_record(out: Path, name: str) -> dict[str, Any] | None:
    path = _record_path(out, name)
    if not path.exists():
        return None
    try:
        return dict(read_json(path))
    except (ValueError, OSError):
        return None  # an unreadable record counts as not done


def _explain(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """What differs between two key materials, in the user's terms."""
    diffs = []
    for part in ("settings", "inputs"):
        a, b = old.get(part, {}), new.get(part, {})
        for k in sorted(set(a) | set(b)):
            if a.get(k) != b.get(k):
                diffs.append(f"{k} ({a.get(k)!r} -> {b.get(k)!r})" if part == "settings" else f"the {k} input")
    if old.get("version") != new.get("version"):
        diffs.append("the stage's code version")
    return diffs or ["an earlier stage it depends on"]


# ---------------------------------------------------------------------------------- the lock
class RunLock:
    """An exclusive lock on a run folder (``flock`` on ``.lock``: released when the process dies).

    A second run into the same folder fails at once, saying who holds it.
    """

    def __init__(self, out: Path) -> None:
        self.path = out / ".lock"
        self._fh: Any = None

    def __enter__(self) -> "RunLock":
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(self.path, "a+")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            fh.close()
            raise ValueError(f"run folder {self.path.parent} is in use by {holder}; wait for that run to "
                             "finish (or stop it), or choose another --out") from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}")
        fh.flush()
        self._fh = fh
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def remove_temporary_files(out: Path) -> int:
    """Delete the ``.<name>.<random>.tmp`` files that an interrupted atomic write left behind."""
    count = 0
    for tmp in out.rglob(".*.tmp"):
        if tmp.is_file():
            tmp.unlink(missing_ok=True)
            count += 1
    return count


# ---------------------------------------------------------------------------------- the loop
def run_stages(stages: Sequence[Stage], ctx: Context, *, manifest: dict[str, Any] | None = None,
               computable: set[str] | None = None) -> dict[str, Any]:
    """Run ``stages`` in order on ``ctx`` (see the module docstring); returns the run's record
    ``{name: {"status": "computed"|"reused", "seconds": …}}``. With ``computable``, only those
    stages may be computed (see :func:`stage_keys`).

    Raises:
        StaleRunError: a finished stage was computed from other settings or inputs and
            ``ctx.overwrite`` is false; nothing was computed.
    """
    keys, materials = stage_keys(stages, ctx, computable=computable)
    plan = _plan(stages, ctx, keys, materials)
    reused = [name for name, reuse in plan if reuse]
    if reused and ctx.comm.is_main:
        ctx.log(f"reusing {len(reused)} finished stage(s) of {ctx.out}: {', '.join(reused)}")
    by_name = {s.name: s for s in stages}
    status: dict[str, dict[str, Any]] = {}
    manifest = manifest if manifest is not None else {}
    # stages of an earlier phase of the same run (the demo's training) stay in the record
    recorded = manifest.setdefault("stages", {})
    pending: set[str] = set()  # spread stages computed since the last barrier, maybe elsewhere
    dealt = 0
    for name, reuse in plan:
        stage = by_name[name]
        if reuse:
            record = _read_record(ctx.out, name) if ctx.out is not None else None
            status[name] = recorded[name] = {"status": "reused", "seconds": (record or {}).get("seconds")}
            continue
        if pending and not (stage.spread and ctx.out is not None):
            ctx.comm.barrier()  # every rank reaches this point: the plan is the same everywhere
            pending.clear()
        if stage.spread and ctx.out is not None and ctx.comm.world > 1:
            owner, dealt = dealt % ctx.comm.world, dealt + 1
            status[name] = recorded[name] = _compute_spread(stage, ctx, materials[name], owner)
            pending.add(name)
            continue
        status[name] = recorded[name] = _compute(stage, ctx, materials[name])
        if ctx.comm.is_main:
            ctx.log(f"[{name}] done in {status[name]['seconds']:.1f} s")
            if ctx.out is not None:  # the manifest says what is done after every stage
                write_json(ctx.out / "manifest.json", manifest)
    if pending:
        ctx.comm.barrier()
    return status


def _plan(stages: Sequence[Stage], ctx: Context, keys: dict[str, str],
          materials: dict[str, dict[str, Any]]) -> list[tuple[str, bool]]:
    """``[(stage, reuse?)]`` for the stages that apply; refuses stale ones without overwrite."""
    plan, stale = [], []
    for stage in stages:
        if stage.name not in keys:
            continue
        reuse = False
        if ctx.out is not None and stage.save is not None:
            record = _read_record(ctx.out, stage.name)
            done = record is not None and all((ctx.out / o).exists() for o in stage.outputs)
            if done and record is not None and record["key"] == keys[stage.name]:
                reuse = True
            elif done and record is not None:
                stale.append((stage.name, _explain(record.get("material", {}), materials[stage.name])))
        plan.append((stage.name, reuse))
    if stale and not ctx.overwrite:
        first = "; ".join(f"{n}: {', '.join(d)}" for n, d in stale[:3])
        raise StaleRunError(
            f"run folder {ctx.out} holds results made from other inputs or settings ({first}"
            f"{'; …' if len(stale) > 3 else ''}); pass --overwrite to recompute them, or choose another --out")
    for name, _ in stale:  # overwrite: forget them before anything is recomputed
        _record_path(ctx.out, name).unlink(missing_ok=True)  # type: ignore[arg-type]
    return plan


def _compute(stage: Stage, ctx: Context, material: dict[str, Any]) -> dict[str, Any]:
    """Compute one stage, save it (rank 0 unless collective saves), record it, hand it on."""
    comm = ctx.comm
    started = time.perf_counter()
    runs_here = stage.collective or comm.is_main
    result = stage.compute(ctx) if runs_here else None
    if ctx.out is not None and stage.save is not None:
        if comm.is_main:
            stage.save(result, ctx.out)
            if stage.figures is not None:
                _save_figures(stage, stage.figures(result, ctx), ctx.out)
        comm.barrier()
        ctx.results.pop(stage.name, None)  # downstream reads what is on disk
        assert stage.load is not None, f"stage '{stage.name}' saves but cannot load"
        ctx.results[stage.name] = stage.load(ctx.out)
    else:
        if comm.world > 1 and not stage.collective:
            result = comm.broadcast_object(result)
        ctx.results[stage.name] = result
        if ctx.out is not None and stage.figures is not None and comm.is_main:
            _save_figures(stage, stage.figures(result, ctx), ctx.out)
    seconds = round(time.perf_counter() - started, 3)
    if ctx.out is not None and stage.save is not None and comm.is_main:
        write_json(_record_path(ctx.out, stage.name), {
            "key": ctx.keys[stage.name], "material": material, "seconds": seconds,
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "processes": comm.world})
    return {"status": "computed", "seconds": seconds}


def _compute_spread(stage: Stage, ctx: Context, material: dict[str, Any], owner: int) -> dict[str, Any]:
    """One of a run of independent stages: rank ``owner`` computes, saves and records it."""
    if ctx.comm.rank != owner:
        return {"status": "computed", "rank": owner}
    started = time.perf_counter()
    assert ctx.out is not None and stage.save is not None, f"spread stage '{stage.name}' must save"
    stage.save(stage.compute(ctx), ctx.out)
    seconds = round(time.perf_counter() - started, 3)
    write_json(_record_path(ctx.out, stage.name), {
        "key": ctx.keys[stage.name], "material": material, "seconds": seconds,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "processes": ctx.comm.world, "rank": owner})
    ctx.log(f"[{stage.name}] done in {seconds:.1f} s (rank {owner})")
    return {"status": "computed", "seconds": seconds, "rank": owner}


def _save_figures(stage: Stage, figures: dict[str, FigureSpec], out: Path) -> None:
    """Save a stage's figures and their captions in ``figures/index.json``."""
    from .io import save_figure

    index_path = out / "figures" / "index.json"
    index = dict(read_json(index_path)) if index_path.exists() else {}
    for name, spec in figures.items():
        save_figure(out / "figures" / f"{name}.png", spec.figure)
        index[name] = {"title": spec.title, "caption": spec.caption, "section": stage.section,
                       "stage": stage.name}
    write_json(index_path, index)
