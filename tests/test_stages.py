"""The one stage loop (stages.py): reuse, staleness, overwrite, work folders, lock, in memory.

Toy stages count their computations, so every test checks exactly which stages ran.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from feature_complexity.io import read_json, save_npy
from feature_complexity.stages import Context, RunLock, Stage, StaleRunError, remove_temporary_files, run_stages


@dataclass
class Cfg:
    a: int = 1
    b: int = 2
    speed: int = 0  # an execution setting: in no stage's key


def _toy_stages(calls: Counter) -> list[Stage]:
    """x = a (reads input "data"), y = x + b, z = 10 * x (independent of b), w = y + z."""

    def stage(name: str, fn, needs=(), settings=(), inputs=()):
        def compute(ctx):
            calls[name] += 1
            return fn(ctx)

        return Stage(name, compute, needs=needs, settings=settings, inputs=inputs,
                     save=lambda r, out, n=name: save_npy(out / f"{n}.npy", np.asarray(r)),
                     load=lambda out, n=name: float(np.load(out / f"{n}.npy")), outputs=(f"{name}.npy",))

    return [
        stage("x", lambda c: c.config.a + len(c.fingerprints["data"]), settings=("a",), inputs=("data",)),
        stage("y", lambda c: c["x"] + c.config.b, needs=("x",), settings=("b",)),
        stage("z", lambda c: 10 * c["x"], needs=("x",)),
        stage("w", lambda c: c["y"] + c["z"], needs=("y", "z")),
    ]


def _run(tmp: Path | None, cfg: Cfg, calls: Counter, *, data: str = "abc", overwrite: bool = False):
    ctx = Context(config=cfg, out=tmp, fingerprints={"data": data}, overwrite=overwrite, log=lambda m: None)
    status = run_stages(_toy_stages(calls), ctx)
    return ctx, status


def test_values_and_records(tmp_path):
    calls: Counter = Counter()
    ctx, status = _run(tmp_path, Cfg(), calls)
    assert ctx["w"] == (1 + 3 + 2) + 10 * (1 + 3)  # y = x + b, z = 10 x
    assert all(v["status"] == "computed" for v in status.values())
    record = read_json(tmp_path / ".stages" / "y.json")
    assert record["material"]["settings"] == {"b": 2} and record["material"]["needs"] == {"x": ctx.keys["x"]}


def test_rerun_reuses_everything_and_loads_lazily(tmp_path):
    calls: Counter = Counter()
    _run(tmp_path, Cfg(), calls)
    calls.clear()
    ctx, status = _run(tmp_path, Cfg(speed=9), calls)  # an execution setting changes no key
    assert not calls and {v["status"] for v in status.values()} == {"reused"}
    assert "w" not in ctx.results  # nothing loaded until asked
    assert ctx["w"] == 46.0


def test_changed_setting_is_refused_before_any_work(tmp_path):
    calls: Counter = Counter()
    _run(tmp_path, Cfg(), calls)
    calls.clear()
    with pytest.raises(StaleRunError, match=r"y: b \(2 -> 5\).*--overwrite"):
        _run(tmp_path, Cfg(b=5), calls)
    assert not calls


def test_overwrite_recomputes_exactly_the_affected_stages_and_those_after_them(tmp_path):
    calls: Counter = Counter()
    _run(tmp_path, Cfg(), calls)
    calls.clear()
    ctx, _ = _run(tmp_path, Cfg(b=5), calls, overwrite=True)
    assert calls == Counter({"y": 1, "w": 1})  # x and z do not depend on b
    assert ctx["w"] == (1 + 3 + 5) + 40
    calls.clear()
    _run(tmp_path, Cfg(b=5), calls, data="abcd", overwrite=True)  # another input: everything
    assert calls == Counter({"x": 1, "y": 1, "z": 1, "w": 1})


def test_changed_input_is_refused(tmp_path):
    calls: Counter = Counter()
    _run(tmp_path, Cfg(), calls)
    with pytest.raises(StaleRunError, match="the data input"):
        _run(tmp_path, Cfg(), calls, data="xyz")


def test_unfinished_stages_are_computed_and_finished_ones_kept(tmp_path):
    """An interruption leaves records only for finished stages; the rerun does the rest."""
    calls: Counter = Counter()
    stages = _toy_stages(calls)
    boom = Stage("z", lambda c: (_ for _ in ()).throw(KeyboardInterrupt()), needs=("x",), save=stages[2].save,
                 load=stages[2].load, outputs=stages[2].outputs)
    ctx = Context(config=Cfg(), out=tmp_path, fingerprints={"data": "abc"}, log=lambda m: None)
    with pytest.raises(KeyboardInterrupt):
        run_stages([stages[0], stages[1], boom, stages[3]], ctx)
    calls.clear()
    ctx, status = _run(tmp_path, Cfg(), calls)
    assert calls == Counter({"z": 1, "w": 1})
    assert status["x"]["status"] == "reused" and ctx["w"] == 46.0


def test_a_record_without_its_output_file_is_not_trusted(tmp_path):
    calls: Counter = Counter()
    _run(tmp_path, Cfg(), calls)
    (tmp_path / "z.npy").unlink()
    calls.clear()
    _run(tmp_path, Cfg(), calls)
    assert calls["z"] == 1


def test_in_memory_runs_everything_without_files(tmp_path):
    calls: Counter = Counter()
    ctx, status = _run(None, Cfg(), calls)
    assert ctx["w"] == 46 and sum(calls.values()) == 4


def test_computable_restricts_what_may_run(tmp_path):
    calls: Counter = Counter()
    _run(tmp_path, Cfg(), calls)
    (tmp_path / ".stages" / "z.json").unlink()  # z not done any more
    calls.clear()
    ctx = Context(config=Cfg(), out=tmp_path, fingerprints={"data": "abc"}, log=lambda m: None)
    run_stages(_toy_stages(calls), ctx, computable={"y"})
    # z may not be computed: it (and w, which needs it) drop out; x, y are reused
    assert not calls and not ctx.has("z") and not ctx.has("w") and ctx["y"] == 6.0


def test_workdir_is_wiped_when_the_key_changes(tmp_path):
    ctx = Context(config=Cfg(), out=tmp_path, log=lambda m: None)
    ctx.keys = {"s": "k1"}
    folder = ctx.workdir("s")
    (folder / "partial.bin").write_bytes(b"1")
    assert (ctx.workdir("s") / "partial.bin").exists()  # same key: partial work kept
    ctx.keys = {"s": "k2"}
    assert not (ctx.workdir("s") / "partial.bin").exists()


def test_lock_refuses_a_second_run_and_says_who_holds_it(tmp_path):
    with RunLock(tmp_path):
        with pytest.raises(ValueError, match=r"in use by pid \d+"):
            with RunLock(tmp_path):
                pass
    with RunLock(tmp_path):  # released on exit
        pass


def test_temporary_files_of_an_interrupted_write_are_removed(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / ".codes.npy.abc123.tmp").write_bytes(b"x")
    (tmp_path / "keep.tmp").write_bytes(b"x")  # not ours: no leading dot
    assert remove_temporary_files(tmp_path) == 1
    assert (tmp_path / "keep.tmp").exists()


def test_records_are_json_and_name_safe(tmp_path):
    ctx = Context(config=Cfg(), out=tmp_path, fingerprints={}, log=lambda m: None)
    stage = Stage("checkpoint/step 1", lambda c: 3, save=lambda r, out: None, load=lambda out: 3)
    run_stages([stage], ctx)
    files = list((tmp_path / ".stages").iterdir())
    assert len(files) == 1 and "/" not in files[0].name[:-5]
    assert json.loads(files[0].read_text())["material"]["stage"] == "checkpoint/step 1"
