"""The generated project's structure rules (issue 20), checked on bakes.

- No Jinja block (``{%``) inside any generated ``.py`` file, tests included: a bake-time
  answer picks a whole file (a conditional file name); ``{{ cookiecutter.x }}`` is fine.
- Tests mirror the code: every module under ``src/<package>/`` and ``src/localcycles/`` has
  a test file named for it in the mirrored folder, or an entry in ``NO_TEST_FILE`` with a
  reason; every test file in a mirrored folder is named for a module there.
- The app's modules import each other without a cycle (type-only imports count) and
  dependencies point one way: web, commands -> observability -> budget -> cycles -> config,
  errors, money, llm. Budget and Cycles code reads no request context.

Each test lists every offender at once, so a failure reads as a to-do list.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

from support.baking import TEMPLATE_DIR, Baker
from support.matrix import MATRIX

PACKAGE = "llm_service"  # the default package name; every row of the matrix keeps it
PROJECT_TEMPLATE = TEMPLATE_DIR / "{{cookiecutter.project_slug}}"
JINJA_TAG_RE = re.compile(r"\{%.*?%\}")

# One bake per (tenant_auth, tenant_isolation, llm_provider): the answers that choose files.
FILE_CHOOSING_ROWS = list(
    {(r["tenant_auth"], r["tenant_isolation"], r["llm_provider"]): r for r in MATRIX}.values()
)

# Modules that have no test file named for them, with the reason. Paths are relative to
# src/, with "{package}" for the app's package; an entry that matches no module in any bake
# fails the test, so the list cannot go stale.
NO_TEST_FILE: dict[str, str] = {}

# Test files in a mirrored folder (tests/<package>/..., tests/localcycles/...) that are named
# for no module there, with the reason; promises across the app's modules go in tests/e2e/.
NOT_NAMED_FOR_A_MODULE: dict[str, str] = {
    "localcycles/test_reference_parity.py": "the embedded server held to facts from the "
    "reference server, across its protocol, ledger and http parts",
}

# Which layer each concern of the app sits in: a module may import its own concern and any
# lower layer. Layer 0 is the foundation its modules share; "__init__" is create_app, the
# wiring, which may import anything and which nothing imports. Observability sits just under
# web and commands: the web layer serves /metrics and tags requests with observability's
# help, and observability hears about the web and the budget only through signals.
LAYERS: dict[str, int] = {
    "web": 4,
    # gunicorn's side, imported only by gunicorn.conf.py; its check reads the app's settings
    "serving": 5,
    "commands": 4,
    "observability": 3,
    "budget": 2,
    # Budget alerts (store, signatures, forwarder): beside the budget, never importing it.
    "alerts": 2,
    "cycles": 1,
    "config": 0,
    "config_values": 0,
    "config_callers": 0,
    "config_tenancy": 0,
    "config_reader": 0,
    "config_plans": 0,
    "config_alerts": 0,
    "config_models": 0,
    "config_end_users": 0,
    "settings_source": 0,
    "errors": 0,
    "money": 0,
    "llm": 0,
    "callers": 0,
}
WIRING = "__init__"


# --- no Jinja block inside Python -----------------------------------------------------------


def rendered_name(template_path: Path) -> str:
    """A template file's name once rendered, for answers that keep it (tags dropped)."""
    return JINJA_TAG_RE.sub("", template_path.name)


def python_templates() -> list[Path]:
    """Every template file that becomes a ``.py`` file in some bake."""
    return sorted(
        path
        for path in PROJECT_TEMPLATE.rglob("*")
        if path.is_file()
        and "__pycache__" not in path.parts
        and rendered_name(path).endswith(".py")
    )


def test_no_generated_python_file_holds_a_jinja_block(bake: Baker) -> None:
    sources = python_templates()
    # The scan must see every .py file a bake has: map the default bake's files back.
    scanned = {
        JINJA_TAG_RE.sub("", str(p.relative_to(PROJECT_TEMPLATE)))
        .replace("{{cookiecutter.package_name}}", PACKAGE)
        .replace("{{ cookiecutter.package_name }}", PACKAGE)
        for p in sources
    }
    project = bake()
    produced = {
        str(p.relative_to(project)) for p in project.rglob("*.py") if "__pycache__" not in p.parts
    }
    assert produced <= scanned, f"bake files the scan missed: {sorted(produced - scanned)}"
    offenders = []
    for path in sources:
        lines = path.read_text(encoding="utf-8").splitlines()
        numbers = [str(n) for n, line in enumerate(lines, 1) if "{%" in line]
        if numbers:
            offenders.append(f"{path.relative_to(PROJECT_TEMPLATE)}: lines {', '.join(numbers)}")
    assert not offenders, (
        f"{len(offenders)} Python file(s) with a Jinja block inside; let the answer choose a "
        "whole file instead:\n" + "\n".join(offenders)
    )


# --- tests mirror the code ------------------------------------------------------------------


def has_definitions(module: Path) -> bool:
    """Whether a module defines a function or class (not only imports and re-exports)."""
    tree = ast.parse(module.read_text(encoding="utf-8"))
    kinds = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
    return any(isinstance(node, kinds) for node in tree.body)


def mirror_patterns(relative: Path) -> tuple[Path, str]:
    """The folder under tests/ and the file-name pattern a module's tests must match.

    ``budget/reservations.py`` -> ``tests/<package>/budget/test_reservations*.py``; a
    package's ``__init__.py`` -> ``test_<package dir>*.py`` in that package's folder.
    """
    folder = relative.parent
    stem = folder.name if relative.name == "__init__.py" else relative.stem
    return Path("tests") / folder, f"test_{stem}*.py"


def untested_modules(project: Path) -> Iterator[str]:
    """Modules of a bake with neither a mirrored test file nor a ``NO_TEST_FILE`` entry."""
    src = project / "src"
    for top in (PACKAGE, "localcycles"):
        for module in sorted((src / top).rglob("*.py")):
            relative = module.relative_to(src)
            key = str(relative).replace(PACKAGE, "{package}", 1)
            if key in NO_TEST_FILE:
                continue
            if relative.name in {"__init__.py", "__main__.py"} and not has_definitions(module):
                continue  # docstring, imports and re-exports: nothing of its own to test
            folder, pattern = mirror_patterns(relative)
            if not any((project / folder).glob(pattern)):
                yield f"src/{relative} -> {folder}/{pattern}"


def test_every_module_has_a_mirrored_test_file(bake: Baker) -> None:
    offenders: set[str] = set()
    modules: set[str] = set()
    for row in FILE_CHOOSING_ROWS:
        project = bake(**row)
        offenders.update(untested_modules(project))
        src = project / "src"
        modules.update(
            str(p.relative_to(src)).replace(PACKAGE, "{package}", 1) for p in src.rglob("*.py")
        )
    stale = sorted(set(NO_TEST_FILE) - modules)
    assert not stale, f"NO_TEST_FILE lists modules that no bake has: {stale}"
    assert not offenders, (
        f"{len(offenders)} module(s) without a test file named for them (add one, or an entry "
        "with a reason in NO_TEST_FILE):\n" + "\n".join(sorted(offenders))
    )


def misplaced_tests(project: Path) -> Iterator[str]:
    """Test files in a mirrored folder named for no module (or sub-package) beside them."""
    for top in (PACKAGE, "localcycles"):
        for test in sorted((project / "tests" / top).rglob("test_*.py")):
            relative = test.relative_to(project / "tests")
            key = str(relative).replace(PACKAGE, "{package}", 1)
            src = project / "src" / relative.parent
            names = {src.name} | {
                p.stem if p.suffix == ".py" else p.name
                for p in (src.iterdir() if src.is_dir() else ())
                if p.suffix == ".py" or (p / "__init__.py").is_file()
            }
            named = test.stem.removeprefix("test_")
            if key not in NOT_NAMED_FOR_A_MODULE and not any(
                named == name or named.startswith(name + "_") for name in names
            ):
                yield f"tests/{relative}: no module src/{relative.parent}/{named}*.py"


def test_every_test_file_in_a_mirrored_folder_is_named_for_a_module(bake: Baker) -> None:
    offenders: set[str] = set()
    tests: set[str] = set()
    for row in FILE_CHOOSING_ROWS:
        project = bake(**row)
        offenders.update(misplaced_tests(project))
        tests.update(
            str(p.relative_to(project / "tests")).replace(PACKAGE, "{package}", 1)
            for p in (project / "tests").rglob("test_*.py")
        )
    stale = sorted(set(NOT_NAMED_FOR_A_MODULE) - tests)
    assert not stale, f"NOT_NAMED_FOR_A_MODULE lists test files that no bake has: {stale}"
    assert not offenders, (
        f"{len(offenders)} test file(s) named for no module beside them (rename it for the "
        "module it tests, move it to tests/e2e/, or add a reason to NOT_NAMED_FOR_A_MODULE):\n"
        + "\n".join(sorted(offenders))
    )


def test_the_mirror_rule_sees_a_missing_test_file(tmp_path: Path) -> None:
    project = tmp_path / "project"
    (project / "src" / PACKAGE / "budget").mkdir(parents=True)
    (project / "src" / "localcycles").mkdir(parents=True)
    (project / "src" / PACKAGE / "budget" / "holds.py").write_text("X = 1\n")
    (project / "src" / PACKAGE / "__init__.py").write_text("def create_app(): ...\n")
    assert sorted(untested_modules(project)) == [
        f"src/{PACKAGE}/__init__.py -> tests/{PACKAGE}/test_{PACKAGE}*.py",
        f"src/{PACKAGE}/budget/holds.py -> tests/{PACKAGE}/budget/test_holds*.py",
    ]
    (project / "tests" / PACKAGE / "budget").mkdir(parents=True)
    (project / "tests" / PACKAGE / "budget" / "test_holds_usage.py").write_text("")
    (project / "tests" / PACKAGE / f"test_{PACKAGE}.py").write_text("")
    assert list(untested_modules(project)) == []
    assert list(misplaced_tests(project)) == []
    (project / "tests" / PACKAGE / "budget" / "test_hold.py").write_text("")
    assert list(misplaced_tests(project)) == [
        f"tests/{PACKAGE}/budget/test_hold.py: no module src/{PACKAGE}/budget/hold*.py"
    ]


# --- one-way dependencies -------------------------------------------------------------------


def module_names(package_dir: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every module of a package (packages by __init__)."""
    names = {}
    for path in package_dir.rglob("*.py"):
        parts = path.relative_to(package_dir.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names[".".join(parts)] = path
    return names


def imported_modules(name: str, path: Path, known: set[str]) -> set[str]:
    """The package's own modules that module ``name`` imports, anywhere in it (type-only
    imports under ``if TYPE_CHECKING:`` and imports inside functions included)."""

    def deepest(dotted: str) -> str | None:
        parts = dotted.split(".")
        for end in range(len(parts), 0, -1):
            if ".".join(parts[:end]) in known:
                return ".".join(parts[:end])
        return None

    is_package = path.name == "__init__.py"
    found: set[str | None] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(deepest(alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            for alias in node.names:
                candidate = f"{source}.{alias.name}"
                found.add(candidate if candidate in known else deepest(source))
    found.discard(None)
    found.discard(name)
    return {module for module in found if module is not None}


def import_graph(project: Path) -> dict[str, set[str]]:
    modules = module_names(project / "src" / PACKAGE)
    return {name: imported_modules(name, path, set(modules)) for name, path in modules.items()}


def cycles_in(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return groups


def concern(module: str) -> str:
    """``llm_service.budget.holds`` -> ``budget``; the package itself -> ``__init__``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else WIRING


def wrong_way_imports(graph: dict[str, set[str]]) -> set[str]:
    offenders = set()
    for importer, targets in graph.items():
        source = concern(importer)
        if source != WIRING and source not in LAYERS:
            offenders.add(f"{importer}: its concern {source!r} is in no layer")
        for target in targets:
            into = concern(target)
            if into == source or source == WIRING:
                continue  # a concern uses itself; the wiring uses everything
            if into == WIRING:
                offenders.add(f"{importer} -> {target} (only the wiring imports the package)")
            elif source not in LAYERS or into not in LAYERS:
                continue  # unplaced modules are reported on their own
            elif LAYERS[into] > LAYERS[source] or (LAYERS[into] == LAYERS[source] > 0):
                offenders.add(f"{importer} -> {target} ({source} may not depend on {into})")
    return offenders


def test_the_app_has_no_import_cycle_and_dependencies_point_one_way(bake: Baker) -> None:
    cycles: set[str] = set()
    wrong_way: set[str] = set()
    for row in FILE_CHOOSING_ROWS:
        graph = import_graph(bake(**row))
        cycles.update(" <-> ".join(group) for group in cycles_in(graph))
        wrong_way |= wrong_way_imports(graph)
    problems = [f"cycle: {c}" for c in sorted(cycles)] + sorted(wrong_way)
    assert not problems, (
        "import structure (web, commands -> observability -> budget -> cycles -> config, "
        "errors, money, llm; no cycle):\n" + "\n".join(problems)
    )


# What a request is made of, in Flask: code that may run off the request path must not look.
REQUEST_CONTEXT = {"g", "request", "session", "has_request_context", "copy_current_request_context"}


def request_context_reads(project: Path, concerns: tuple[str, ...]) -> Iterator[str]:
    """Imports of Flask's request context in the given concerns' modules."""
    for concern_name in concerns:
        for module in sorted((project / "src" / PACKAGE / concern_name).rglob("*.py")):
            tree = ast.parse(module.read_text(encoding="utf-8"))
            for node in ast.walk(tree):
                if isinstance(node, ast.ImportFrom) and node.module == "flask":
                    names = sorted({a.name for a in node.names} & REQUEST_CONTEXT)
                elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
                    is_flask = node.value.id == "flask" and node.attr in REQUEST_CONTEXT
                    names = [node.attr] if is_flask else []
                else:
                    continue
                for name in names:
                    where = module.relative_to(project / "src")
                    yield f"src/{where}:{node.lineno}: flask.{name}"


def test_budget_and_cycles_code_reads_no_request_context(bake: Baker) -> None:
    offenders: set[str] = set()
    for row in FILE_CHOOSING_ROWS:
        offenders.update(request_context_reads(bake(**row), ("budget", "cycles")))
    assert not offenders, (
        "budget and cycles code runs off the request path too (heartbeats, the settler): it "
        "gets what it needs as arguments, never from the request context:\n"
        + "\n".join(sorted(offenders))
    )


def test_the_import_checks_see_type_only_cycles_and_upward_imports(tmp_path: Path) -> None:
    package = tmp_path / "src" / PACKAGE
    for folder in ("budget", "cycles"):
        (package / folder).mkdir(parents=True)
        (package / folder / "__init__.py").write_text("")
    (package / "__init__.py").write_text("from .budget import holds\n")
    (package / "budget" / "holds.py").write_text("from ..cycles.clients import Clients\n")
    (package / "cycles" / "clients.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        f"    from {PACKAGE}.budget.holds import Hold\n"
    )
    graph = import_graph(tmp_path)
    assert graph[f"{PACKAGE}.budget.holds"] == {f"{PACKAGE}.cycles.clients"}
    assert cycles_in(graph) == [[f"{PACKAGE}.budget.holds", f"{PACKAGE}.cycles.clients"]]
    assert wrong_way_imports(graph) == {
        f"{PACKAGE}.cycles.clients -> {PACKAGE}.budget.holds (cycles may not depend on budget)"
    }
    assert list(request_context_reads(tmp_path, ("budget",))) == []
    (package / "budget" / "signals.py").write_text(
        "import flask\nfrom flask import g\nflask.request\n"
    )
    assert list(request_context_reads(tmp_path, ("budget",))) == [
        f"src/{PACKAGE}/budget/signals.py:2: flask.g",
        f"src/{PACKAGE}/budget/signals.py:3: flask.request",
    ]
