"""Mutation testing of a baked project's money, isolation and configuration paths.

Plants one small bug at a time (a mutant) in a fresh bake, runs the generated test suite,
and reports the mutants no test noticed (survivors). A survivor is either a missing test
or an equivalent mutant (a change that cannot alter behaviour); the report names both so
a maintainer can tell them apart. Run on demand, not in CI (it runs the suite per mutant):

    .venv/bin/python scripts/mutation_test.py                # every target, all mutants
    .venv/bin/python scripts/mutation_test.py --sample 60    # a seeded sample, faster
    .venv/bin/python scripts/mutation_test.py --files pricing.py guard.py -j 2
    .venv/bin/python scripts/mutation_test.py --answers input_price_per_million_usd=0.075

Mutations (on the AST, one node at a time): comparison operators (< <= > >= == !=),
arithmetic (+ - * // %), boolean operators (and/or), negated conditions (if/while/ternary/
assert conditions and ``not``), integer constants (n -> n+1, n -> 0), True/False, and
``return x`` -> ``return None`` in functions that return values. Lines containing
``# mutation: skip`` are left alone (logging, messages).
"""

from __future__ import annotations

import argparse
import ast
import concurrent.futures
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

TEMPLATE_DIR = Path(__file__).resolve().parent.parent
PACKAGE = "llm_service"

# What the issue asks for: pricing and money, the guard (decorator, held calls, streams),
# tenancy, config (settings, reader, per-answer parts), the deny cache and the
# embedded server's accounting, auth and lifecycle. Paths are relative to the bake's src/.
DEFAULT_TARGETS = (
    f"{PACKAGE}/budget/pricing.py",
    f"{PACKAGE}/web/guard.py",
    f"{PACKAGE}/budget/reservations.py",
    f"{PACKAGE}/cycles/errors.py",
    f"{PACKAGE}/callers.py",
    f"{PACKAGE}/cycles/tenancy.py",
    f"{PACKAGE}/config.py",
    f"{PACKAGE}/config_reader.py",
    f"{PACKAGE}/config_values.py",
    f"{PACKAGE}/config_callers.py",
    f"{PACKAGE}/config_tenancy.py",
    f"{PACKAGE}/money.py",
    f"{PACKAGE}/web/calls.py",
    f"{PACKAGE}/web/streaming.py",
    f"{PACKAGE}/budget/deny_cache.py",
    "localcycles/ledger/accounting.py",
    "localcycles/ledger/keys.py",
    "localcycles/protocol/permissions.py",
    "localcycles/ledger/lifecycle.py",
)

COMPARE_SWAPS: dict[type[ast.cmpop], list[type[ast.cmpop]]] = {
    ast.Lt: [ast.LtE, ast.Gt],
    ast.LtE: [ast.Lt, ast.GtE],
    ast.Gt: [ast.GtE, ast.Lt],
    ast.GtE: [ast.Gt, ast.LtE],
    ast.Eq: [ast.NotEq],
    ast.NotEq: [ast.Eq],
    ast.In: [ast.NotIn],
    ast.NotIn: [ast.In],
    ast.Is: [ast.IsNot],
    ast.IsNot: [ast.Is],
}
BINOP_SWAPS: dict[type[ast.operator], list[type[ast.operator]]] = {
    ast.Add: [ast.Sub],
    ast.Sub: [ast.Add],
    ast.Mult: [ast.FloorDiv],
    ast.FloorDiv: [ast.Mult],
    ast.Mod: [ast.FloorDiv],
}


@dataclass(frozen=True)
class Mutant:
    path: str  # relative to src/
    index: int  # the index-th mutation point of the file, in walk order
    line: int
    description: str


def skipped_lines(source: str) -> set[int]:
    return {n for n, text in enumerate(source.splitlines(), 1) if "# mutation: skip" in text}


def in_docstring_or_log(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    """True inside logging calls and f-strings: mutating messages tests nothing useful."""
    current: ast.AST | None = node
    while current is not None:
        if isinstance(current, ast.JoinedStr):
            return True
        if isinstance(current, ast.Call):
            func = current.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name in {"debug", "info", "warning", "error", "exception", "log"}:
                return True
        current = parents.get(current)
    return False


def mutation_points(tree: ast.AST, skip: set[int]) -> Iterator[tuple[ast.AST, str, object]]:
    """(node, description, replacement-spec) for every mutation of ``tree``, in order."""
    parents = {child: parent for parent in ast.walk(tree) for child in ast.iter_child_nodes(parent)}
    for node in ast.walk(tree):
        line = getattr(node, "lineno", 0)
        if line in skip or in_docstring_or_log(node, parents):
            continue
        if isinstance(node, ast.Compare):
            for i, op in enumerate(node.ops):
                for new in COMPARE_SWAPS.get(type(op), []):
                    yield node, f"{type(op).__name__} -> {new.__name__}", ("cmp", i, new)
        elif isinstance(node, ast.BinOp):
            for new in BINOP_SWAPS.get(type(node.op), []):
                yield node, f"{type(node.op).__name__} -> {new.__name__}", ("binop", new)
        elif isinstance(node, ast.BoolOp):
            other = ast.Or if isinstance(node.op, ast.And) else ast.And
            yield node, f"{type(node.op).__name__} -> {other.__name__}", ("boolop", other)
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            yield node, "drop `not`", ("drop_not",)
        elif isinstance(node, (ast.If, ast.While, ast.IfExp)):
            yield node, "negate condition", ("negate",)
        elif isinstance(node, ast.Constant) and type(node.value) is int:
            yield node, f"{node.value} -> {node.value + 1}", ("const", node.value + 1)
            if node.value not in (0, 1):
                yield node, f"{node.value} -> 0", ("const", 0)
        elif isinstance(node, ast.Constant) and isinstance(node.value, bool):
            yield node, f"{node.value} -> {not node.value}", ("const", not node.value)
        elif isinstance(node, ast.Return) and not is_none(node.value):
            yield node, "return None", ("return_none",)


def is_none(node: ast.expr | None) -> bool:
    return node is None or (isinstance(node, ast.Constant) and node.value is None)


def apply(node: ast.AST, spec: tuple) -> None:
    kind = spec[0]
    if kind == "cmp":
        node.ops[spec[1]] = spec[2]()  # type: ignore[attr-defined]
    elif kind == "binop" or kind == "boolop":
        node.op = spec[1]()  # type: ignore[attr-defined]
    elif kind == "drop_not":
        node.op = ast.UAdd()  # type: ignore[attr-defined]  # +bool(x) keeps the truth value
        node.operand = ast.Call(ast.Name("bool", ast.Load()), [node.operand], [])  # type: ignore[attr-defined]
    elif kind == "negate":
        node.test = ast.UnaryOp(ast.Not(), node.test)  # type: ignore[attr-defined]
    elif kind == "const":
        node.value = spec[1]  # type: ignore[attr-defined]
    elif kind == "return_none":
        node.value = ast.Constant(None)  # type: ignore[attr-defined]


def enumerate_mutants(src: Path, targets: list[str]) -> list[Mutant]:
    mutants = []
    for rel in targets:
        path = src / rel
        if not path.exists():
            print(f"(skipping {rel}: not in this bake)")
            continue
        source = path.read_text()
        tree = ast.parse(source)
        for index, (node, description, _) in enumerate(
            mutation_points(tree, skipped_lines(source))
        ):
            mutants.append(Mutant(rel, index, getattr(node, "lineno", 0), description))
    return mutants


def mutated_source(original: str, mutant: Mutant) -> str:
    tree = ast.parse(original)
    for index, (node, _, spec) in enumerate(mutation_points(tree, skipped_lines(original))):
        if index == mutant.index:
            apply(node, spec)
            return ast.unparse(ast.fix_missing_locations(tree))
    raise LookupError(mutant)


def bake(workdir: Path, answers: list[str]) -> Path:
    subprocess.run(
        [sys.executable, "-m", "cookiecutter", "--no-input", "-f", "-o", str(workdir),
         str(TEMPLATE_DIR), *answers],
        check=True, capture_output=True,
    )  # fmt: skip
    (project,) = [p for p in workdir.iterdir() if (p / "pyproject.toml").exists()]
    return project


def test_command(mutant: Mutant) -> list[str]:
    # The embedded server's mutants run its own tests and the app's; the app's, the app's.
    tests = (
        ["tests"]
        if mutant.path.startswith("localcycles/")
        else ["tests", "--ignore=tests/localcycles"]
    )
    return [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests]


def suite_env(project: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CYCLES_", "APP_ENV", "LLM_"))}
    env.update(
        PYTHONPATH=str(project / "src"), HYPOTHESIS_PROFILE="quick", PYTHONDONTWRITEBYTECODE="1"
    )
    return env


def run_mutant(base: Path, mutant: Mutant, timeout: float) -> tuple[Mutant, str]:
    """Copy the bake, plant the mutant, run the suite: 'killed', 'survived' or 'timeout'."""
    with tempfile.TemporaryDirectory(prefix="mutant-") as tmp:
        project = Path(tmp) / base.name
        shutil.copytree(base, project, ignore=shutil.ignore_patterns("__pycache__", ".*_cache"))
        target = project / "src" / mutant.path
        target.write_text(mutated_source(target.read_text(), mutant))
        try:
            result = subprocess.run(
                test_command(mutant), cwd=project, env=suite_env(project),
                capture_output=True, timeout=timeout, check=False,
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            return mutant, "timeout"  # a hang is a detected change too
        return mutant, "survived" if result.returncode == 0 else "killed"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--files", nargs="*", help="targets relative to the bake's src/ (or basenames)"
    )
    parser.add_argument("--sample", type=int, default=0, help="run a seeded sample of N mutants")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("-j", "--jobs", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=300)
    parser.add_argument("--answers", nargs="*", default=[], help="cookiecutter key=value answers")
    parser.add_argument("--json", type=Path, help="write the results here as JSON")
    args = parser.parse_args()

    targets = list(DEFAULT_TARGETS)
    if args.files:
        targets = [t for t in DEFAULT_TARGETS if t in args.files or Path(t).name in args.files]
    with tempfile.TemporaryDirectory(prefix="mutation-bake-") as tmp:
        base = bake(Path(tmp), args.answers)
        baseline = subprocess.run(
            test_command(Mutant("localcycles/x", 0, 0, "")), cwd=base, env=suite_env(base),
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if baseline.returncode != 0:
            print("the unmutated suite fails; fix that first:\n" + baseline.stdout[-3000:])
            return 2
        mutants = enumerate_mutants(base / "src", targets)
        if args.sample and args.sample < len(mutants):
            mutants = random.Random(args.seed).sample(mutants, args.sample)
        print(f"{len(mutants)} mutants in {len(targets)} files; {args.jobs} at a time")
        started = time.monotonic()
        results: list[tuple[Mutant, str]] = []
        with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
            futures = [pool.submit(run_mutant, base, m, args.timeout) for m in mutants]
            for done, future in enumerate(concurrent.futures.as_completed(futures), 1):
                mutant, outcome = future.result()
                results.append((mutant, outcome))
                if outcome == "survived":
                    print(f"  SURVIVED {mutant.path}:{mutant.line} {mutant.description}")
                if done % 10 == 0:
                    print(f"  ... {done}/{len(mutants)}")
        survivors = sorted(
            (m for m, o in results if o == "survived"), key=lambda m: (m.path, m.line)
        )
        killed = sum(1 for _, o in results if o != "survived")
        print(f"\n{killed}/{len(results)} killed, {len(survivors)} survived "
              f"in {time.monotonic() - started:.0f} s")  # fmt: skip
        for mutant in survivors:
            print(f"survivor: {mutant.path}:{mutant.line}: {mutant.description}")
        if args.json:
            rows = [{**vars(m), "outcome": o} for m, o in results]
            args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
