"""Mutation testing of a baked project's money, isolation and configuration paths.

Plants one small bug at a time (a mutant) in a fresh bake, runs the generated test suite,
and reports the mutants no test noticed (survivors). A survivor is either a missing test
or an equivalent mutant (a change that cannot alter behaviour); the report names both so
a maintainer can tell them apart. Run on demand, not in CI (it runs the suite per mutant):

    .venv/bin/python scripts/mutation_test.py                # every target, all mutants
    .venv/bin/python scripts/mutation_test.py --sample 60    # a seeded sample, faster
    .venv/bin/python scripts/mutation_test.py --files pricing.py guard.py -j 2
    .venv/bin/python scripts/mutation_test.py --answers input_price_per_million_usd=0.075
    .venv/bin/python scripts/mutation_test.py --all-modules --sample 80 --json out.json

``--all-modules`` targets every module of the app and of the embedded server instead of
the list below. Each mutant runs the tests that mirror its module first, on their own
(then the whole suite, stopping at the first failure), so most killed mutants cost
seconds. Progress and survivors are printed as they come, and ``--json`` is rewritten
after every mutant, so an interrupted run still leaves what it finished. The unmutated
suite runs first; ``--allow-failing`` leaves its failures out of every mutant's run
instead of stopping, and the timeout per mutant defaults to three times its duration.

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
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
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


def all_modules(src: Path) -> list[str]:
    """Every module of the app's package and of localcycles, relative to ``src``."""
    return sorted(
        path.relative_to(src).as_posix()
        for package in (PACKAGE, "localcycles")
        for path in (src / package).rglob("*.py")
        if "__pycache__" not in path.parts
    )


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


def mirrored_tests(project: Path, mutant: Mutant) -> list[str]:
    """The test files that mirror the mutated module (tests/<sub>/test_<module>*.py)."""
    module = Path(mutant.path)
    folder = project / "tests" / module.parent
    return sorted(
        path.relative_to(project).as_posix() for path in folder.glob(f"test_{module.stem}*.py")
    )


# Extra pytest arguments for every run (--pytest-args), e.g. an --ignore for a test file
# whose dependency is not installed here.
EXTRA_PYTEST_ARGS: list[str] = []


PYTEST = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider"]
NO_TESTS_COLLECTED = 5  # pytest's exit status when every mirrored test was left out


def test_command(mutant: Mutant) -> list[str]:
    # The embedded server's mutants run its own tests and the app's; the app's, the app's.
    tests = (
        ["tests"]
        if mutant.path.startswith("localcycles/")
        else ["tests", "--ignore=tests/localcycles"]
    )
    return [*PYTEST, *EXTRA_PYTEST_ARGS, *tests]


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
        # The tests that mirror the module first, on their own: most mutants die there in
        # seconds, without collecting the whole suite; the survivors then face all of it.
        mirrored = mirrored_tests(project, mutant)
        stages = [[*PYTEST, *EXTRA_PYTEST_ARGS, *mirrored]] if mirrored else []
        passed = {0, NO_TESTS_COLLECTED}
        try:
            for command in [*stages, test_command(mutant)]:
                result = subprocess.run(
                    command, cwd=project, env=suite_env(project),
                    capture_output=True, timeout=timeout, check=False,
                )  # fmt: skip
                if result.returncode not in passed:
                    return mutant, "killed"
                passed = {0}
        except subprocess.TimeoutExpired:
            return mutant, "timeout"  # a hang is a detected change too
        return mutant, "survived"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--files", nargs="*", help="targets relative to the bake's src/ (or basenames)"
    )
    parser.add_argument("--sample", type=int, default=0, help="run a seeded sample of N mutants")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("-j", "--jobs", type=int, default=2)
    parser.add_argument(
        "--timeout", type=float, default=0, help="seconds per mutant (0: 3x the unmutated suite)"
    )
    parser.add_argument("--answers", nargs="*", default=[], help="cookiecutter key=value answers")
    parser.add_argument("--json", type=Path, help="write the results here as JSON")
    parser.add_argument(
        "--all-modules",
        action="store_true",
        help="target every module of the app and of localcycles, not only the default list",
    )
    parser.add_argument(
        "--pytest-args", default="", help="extra pytest arguments, one string (shell-split)"
    )
    parser.add_argument(
        "--allow-failing",
        action="store_true",
        help="deselect the tests that fail without any mutant instead of stopping",
    )
    args = parser.parse_args()
    EXTRA_PYTEST_ARGS.extend(shlex.split(args.pytest_args))

    with tempfile.TemporaryDirectory(prefix="mutation-bake-") as tmp:
        base = bake(Path(tmp), args.answers)
        candidates = all_modules(base / "src") if args.all_modules else list(DEFAULT_TARGETS)
        targets = candidates
        if args.files:
            targets = [t for t in candidates if t in args.files or Path(t).name in args.files]
        print("running the unmutated suite...", flush=True)
        baseline_started = time.monotonic()
        command = [c for c in test_command(Mutant("localcycles/x", 0, 0, "")) if c != "-x"]
        baseline = subprocess.run(
            [*command, "-rfE", "--tb=no", "--continue-on-collection-errors"], cwd=base,
            env=suite_env(base), capture_output=True, text=True, check=False,
        )  # fmt: skip
        baseline_s = time.monotonic() - baseline_started
        if baseline.returncode != 0:
            broken = already_failing(baseline.stdout)
            if not args.allow_failing or not broken:
                print("the unmutated suite fails; fix that first:\n" + baseline.stdout[-3000:])
                return 2
            # --allow-failing: leave the unmutated suite's failures out of every mutant's
            # run, so they are not counted as kills.
            print(f"left out, failing without any mutant: {' '.join(broken)}", flush=True)
            EXTRA_PYTEST_ARGS.extend(broken)
        # A mutant that only makes the suite slower is no kill: allow three baselines.
        timeout = args.timeout or max(300.0, 3 * baseline_s)
        print(f"unmutated suite: {baseline_s:.0f} s; timeout per mutant {timeout:.0f} s")
        mutants = enumerate_mutants(base / "src", targets)
        if args.sample and args.sample < len(mutants):
            mutants = random.Random(args.seed).sample(mutants, args.sample)
        print(f"{len(mutants)} mutants in {len(targets)} files; {args.jobs} at a time", flush=True)
        started = time.monotonic()
        results: list[tuple[Mutant, str]] = []
        with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
            futures = [pool.submit(run_mutant, base, m, timeout) for m in mutants]
            for done, future in enumerate(concurrent.futures.as_completed(futures), 1):
                mutant, outcome = future.result()
                results.append((mutant, outcome))
                if outcome == "survived":
                    where = f"{mutant.path}:{mutant.line}"
                    print(f"  SURVIVED {where} {mutant.description}", flush=True)
                if done % 10 == 0:
                    killed_so_far = sum(1 for _, o in results if o != "survived")
                    print(f"  ... {done}/{len(mutants)} done, {killed_so_far} killed", flush=True)
                if args.json:
                    write_json(args.json, results)
        survivors = sorted(
            (m for m, o in results if o == "survived"), key=lambda m: (m.path, m.line)
        )
        killed = sum(1 for _, o in results if o != "survived")
        print(f"\n{killed}/{len(results)} killed, {len(survivors)} survived "
              f"in {time.monotonic() - started:.0f} s")  # fmt: skip
        for mutant in survivors:
            print(f"survivor: {mutant.path}:{mutant.line}: {mutant.description}")
        tried = Counter(m.path for m, _ in results)
        lost = Counter(m.path for m in survivors)
        print("\nby module (survived/tried):")
        for path in sorted(tried):
            print(f"  {path}: {lost[path]}/{tried[path]}")
        if args.json:
            write_json(args.json, results)
    return 0


def already_failing(output: str) -> list[str]:
    """pytest arguments that leave out what failed in ``output`` (-rfE summary lines)."""
    out: list[str] = []
    for line in output.splitlines():
        kind, _, rest = line.partition(" ")
        node = rest.split(" - ")[0].strip()
        if kind == "FAILED" and node:
            out.append(f"--deselect={node}")
        elif kind == "ERROR" and node:
            # A module that cannot be collected; a failing fixture names its test instead.
            out.append(f"--ignore={node}" if "::" not in node else f"--deselect={node}")
    return out


def write_json(path: Path, results: list[tuple[Mutant, str]]) -> None:
    rows = [{**vars(m), "outcome": o} for m, o in results]
    path.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    sys.exit(main())
