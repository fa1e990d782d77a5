"""A guarded route is added in one place: follow the generated README's "Add a guarded route"
on a fresh bake, then check that the API document, the fuzz run and the property tests
all pick the new route up with nothing else edited.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from support.baking import Baker, fresh_copy
from support.runcache import hypothesis_storage

pytestmark = pytest.mark.slow

PACKAGE = "llm_service"
SECTION = "## Add a guarded route"
# Settings a developer's shell might carry into the bake's processes.
LEAKY_PREFIXES = ("CYCLES_", "APP_ENV", "LLM_", "OPENAI_", "ANTHROPIC_", "TENANT", "FLASK_")
PRINT_DOCUMENT = """
import json, sys
from llm_service import create_app
app = create_app({"APP_ENV": "development", "CYCLES_LOCAL_DB": sys.argv[1] + "/ledger.sqlite3",
                  "CYCLES_JOURNAL_DIR": sys.argv[1] + "/journal"})
print(json.dumps(app.test_client().get("/openapi.json").get_json()))
"""


def readme_blocks(project: Path) -> list[str]:
    """The Python blocks of the README's "Add a guarded route" section, in order."""
    readme = (project / "README.md").read_text()
    assert SECTION in readme, "the generated README has no 'Add a guarded route' section"
    section = readme.split(SECTION, 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, re.DOTALL)


def add_translate_route(project: Path) -> None:
    """What the README says: the models into web/schemas.py, their import and the route
    into web/routes.py. Nothing else."""
    models, route = readme_blocks(project)
    web = project / "src" / PACKAGE / "web"
    schemas = web / "schemas.py"
    schemas.write_text(schemas.read_text() + "\n\n" + models)
    routes = web / "routes.py"
    text = routes.read_text()
    # "import both in web/routes.py, with the other models from .schemas" (sorted, as ruff
    # wants them).
    imports = re.search(r"from \.schemas import \((.*?)\)", text, re.DOTALL)
    assert imports is not None, "web/routes.py no longer imports its models from .schemas"
    names = sorted({*imports.group(1).replace(",", " ").split(), "TranslateRequest",
                    "TranslationResponse"})  # fmt: skip
    listed = "".join(f"    {name},\n" for name in names)
    text = text.replace(imports.group(0), f"from .schemas import (\n{listed})")
    routes.write_text(text + "\n\n" + route)


def run(project: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(LEAKY_PREFIXES)}
    clean.update(PYTHONPATH=str(project / "src"), **env)
    return subprocess.run(
        [sys.executable, *args], cwd=project, env=clean, capture_output=True, text=True,
        timeout=600, check=False,
    )  # fmt: skip


def test_a_route_added_as_the_readme_says_is_documented_fuzzed_and_property_tested(
    bake: Baker, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    project = fresh_copy(bake(), tmp_path)
    add_translate_route(project)
    lint = run(project, "-m", "ruff", "check", "--no-cache", "src")
    assert lint.returncode == 0, "the README's code is not lint-clean:\n" + lint.stdout

    # The document lists the route with its models, limits and errors.
    printed = run(project, "-c", PRINT_DOCUMENT, str(tmp_path))
    assert printed.returncode == 0, printed.stderr
    document = json.loads(printed.stdout)
    operation = document["paths"]["/translate"]["post"]
    body = operation["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/TranslateRequest"}
    answer = operation["responses"]["200"]["content"]["application/json"]["schema"]
    assert answer == {"$ref": "#/components/schemas/TranslationResponse"}
    assert {"400", "402", "413", "502", "503", "504"} <= set(operation["responses"])
    schemas = document["components"]["schemas"]
    request = schemas["TranslateRequest"]
    assert set(request["required"]) == {"text", "language"}
    assert request["properties"]["text"]["maxLength"] == 20_000  # MAX_PROMPT_CHARS
    assert "translation" in schemas["TranslationResponse"]["properties"]

    # The generated fuzz run and property tests drive it, and it serves (200) and charges.
    result = run(
        project, "-m", "pytest", "-p", "no:cacheprovider", "-rA", "-q",
        "tests/e2e/test_api_fuzz.py", "tests/e2e/test_properties.py",
        HYPOTHESIS_PROFILE="quick",
        HYPOTHESIS_STORAGE_DIRECTORY=str(hypothesis_storage(tmp_path_factory)),
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    # schemathesis' tests carry the operation in their report headers (-rA), not in the
    # short summary's ids.
    fuzzed = r"_ test_every_route_answers_as_documented\[POST /translate\] _"
    driven = "test_properties.py::test_guarded_calls_by_known_callers_charge_exactly_or_nothing"
    assert re.search(fuzzed, output), "the fuzz run left /translate out"
    assert f"PASSED tests/e2e/{driven}[/translate]" in output, "the property tests left it out"
    served = re.findall(r"POST /translate 200 .*outcome=committed", output)
    assert served, "no test call to /translate was served and charged"
