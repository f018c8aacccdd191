"""Mutation testing of the numerical core: change the code one small way at a time and check
that a test fails (the mutant is *killed*). A mutant that survives is a change to the code no
test notices.

    python tools/mutation.py                      # every target, a seeded sample of mutants each
    python tools/mutation.py --target complexity --max 0   # every mutant of one target
    python tools/mutation.py --list               # the mutants, without running anything

Operators (on the AST, one site at a time): arithmetic (+ - * / swapped), comparisons (< <=
> >= == != swapped), constants (0 -> 1, 1 -> 0 or 2, other numbers x 2), ``and``/``or``,
unary minus dropped, and a few reductions (mean/sum, nanmean/nansum, min/max, amin/amax,
argmin/argmax). Docstrings, strings and the arguments of ``raise`` are left alone (messages are
not numbers). Each mutant runs the target's test files with ``pytest -x -q`` under a timeout;
the original file is restored afterwards, also on Ctrl-C.

Writes a JSON summary (``--out``) and prints one line per surviving mutant. The results of the
last full run are in docs/TESTING.md.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import random
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "src" / "feature_complexity"

#: target -> (module file, the tests that must catch its mutants)
TARGETS: dict[str, tuple[str, tuple[str, ...]]] = {
    "complexity": ("complexity.py", ("tests/test_complexity.py",)),
    "nnls": ("features/nnls.py", ("tests/test_nnls.py",)),
    "importance": ("importance.py", ("tests/test_importance.py",)),
    "cka": ("analyses/cka.py", ("tests/test_cka.py",)),
    "flow": ("analyses/flow.py", ("tests/test_flow.py",)),
}

_BINOPS = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult, ast.Pow: ast.Mult}
_CMPOPS = {ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt, ast.Eq: ast.NotEq, ast.NotEq: ast.Eq}
_CALLS = {"mean": "sum", "sum": "mean", "nanmean": "nansum", "nansum": "nanmean", "min": "max", "max": "min",
          "amin": "amax", "amax": "amin", "argmin": "argmax", "argmax": "argmin", "minimum": "maximum",
          "maximum": "minimum"}


@dataclass
class Mutant:
    target: str
    index: int
    line: int
    operator: str
    before: str
    after: str
    status: str = "not run"  # killed | survived | timeout | error


def _skipped_lines(tree: ast.AST) -> set[int]:
    """Lines of docstrings, strings and ``raise`` statements (messages, not numbers)."""
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Raise) or (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)):
            lines.update(range(node.lineno, (node.end_lineno or node.lineno) + 1))
        if isinstance(node, ast.JoinedStr):
            lines.update(range(node.lineno, (node.end_lineno or node.lineno) + 1))
    return lines


def _sites(tree: ast.AST) -> list[tuple[ast.AST, str, object]]:
    """``(node, operator, replacement)`` for every mutation site."""
    skip = _skipped_lines(tree)
    out: list[tuple[ast.AST, str, object]] = []
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in skip:
            continue
        if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
            out.append((node, "binop", _BINOPS[type(node.op)]))
        elif isinstance(node, ast.Compare) and len(node.ops) == 1 and type(node.ops[0]) in _CMPOPS:
            out.append((node, "compare", _CMPOPS[type(node.ops[0])]))
        elif isinstance(node, ast.BoolOp):
            out.append((node, "boolop", ast.Or if isinstance(node.op, ast.And) else ast.And))
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            out.append((node, "drop_minus", None))
        elif isinstance(node, ast.Constant) and type(node.value) in (int, float) and not isinstance(node.value, bool):
            v = node.value
            new = 1 if v == 0 else (0 if v == 1 else v * 2)
            out.append((node, "constant", type(v)(new)))
        elif isinstance(node, ast.Call):
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", None)
            if name in _CALLS:
                out.append((node, "call", _CALLS[name]))
    return out


def _apply(node: ast.AST, operator: str, repl: object) -> None:
    if operator == "binop":
        node.op = repl()  # type: ignore[attr-defined,operator]
    elif operator == "compare":
        node.ops = [repl()]  # type: ignore[attr-defined,operator]
    elif operator == "boolop":
        node.op = repl()  # type: ignore[attr-defined,operator]
    elif operator == "constant":
        node.value = repl  # type: ignore[attr-defined]
    elif operator == "call":
        if isinstance(node.func, ast.Attribute):  # type: ignore[attr-defined]
            node.func.attr = repl  # type: ignore[attr-defined]
        else:
            node.func.id = repl  # type: ignore[attr-defined]


def mutants(target: str) -> list[tuple[Mutant, str]]:
    """Every mutant of ``target`` with its mutated source."""
    path = PKG / TARGETS[target][0]
    source = path.read_text()
    out = []
    n_sites = len(_sites(ast.parse(source)))
    for i in range(n_sites):
        tree = ast.parse(source)
        node, operator, repl = _sites(tree)[i]
        before = ast.unparse(node)
        _apply(node, operator, repl)
        after = ast.unparse(node)
        if before == after:
            continue
        out.append((Mutant(target, i, node.lineno, operator, before[:80], after[:80]), ast.unparse(tree)))
    return out


def run_one(mutant: Mutant, mutated: str, timeout: float) -> str:
    """Write the mutant, run the target's tests, restore the file; returns the status."""
    path = PKG / TARGETS[mutant.target][0]
    original = path.read_text()
    try:
        path.write_text(mutated)
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"}
        cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-m", "not slow and not browser",
               *TARGETS[mutant.target][1]]
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, timeout=timeout)
        return "killed" if proc.returncode != 0 else "survived"
    except subprocess.TimeoutExpired:
        return "timeout"  # counts as killed: the mutant broke termination
    finally:
        path.write_text(original)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--target", action="append", choices=sorted(TARGETS), help="default: all")
    p.add_argument("--max", type=int, default=40, help="mutants per target, a seeded sample (0: all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--timeout", type=float, default=300, help="seconds per mutant's test run")
    p.add_argument("--out", default="mutation-results.json", help="JSON summary")
    p.add_argument("--list", action="store_true", help="list the mutants and stop")
    args = p.parse_args(argv)
    results: list[Mutant] = []
    for target in args.target or sorted(TARGETS):
        found = mutants(target)
        if args.max and len(found) > args.max:
            found = sorted(random.Random(args.seed).sample(found, args.max), key=lambda m: m[0].line)
        for mutant, mutated in found:
            if not args.list:
                started = time.perf_counter()
                mutant.status = run_one(mutant, mutated, args.timeout)
                print(f"{mutant.status:9s} {target}:{mutant.line} {mutant.operator}: {mutant.before} -> "
                      f"{mutant.after} ({time.perf_counter() - started:.0f} s)", flush=True)
            results.append(mutant)
    if args.list:
        for m in results:
            print(f"{m.target}:{m.line} {m.operator}: {m.before} -> {m.after}")
        return 0
    summary = {t: {s: sum(1 for m in results if m.target == t and m.status == s)
                   for s in ("killed", "timeout", "survived")} for t in {m.target for m in results}}
    Path(args.out).write_text(json.dumps({"summary": summary, "mutants": [asdict(m) for m in results]}, indent=1))
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
