"""`shared/` is the common package: it imports no service (nor the migrations that know every
service's models, nor test code). Checked on the source, so an import inside a function counts."""

from __future__ import annotations

import ast
from pathlib import Path

from shared.settings import REPO_ROOT

FORBIDDEN = ("services", "migrations", "tests", "testing", "benchmarks")


def _imported_modules(tree: ast.AST) -> list[tuple[int, str]]:
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute | ast.Name)
              and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module"
              and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)):
            found.append((node.lineno, node.args[0].value))
    return found


def _violations(package: Path, root: Path = REPO_ROOT) -> list[str]:
    bad: list[str] = []
    for path in sorted(package.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for line, module in sorted(_imported_modules(tree)):
            if module.split(".")[0] in FORBIDDEN:
                bad.append(f"{path.relative_to(root)}:{line} imports {module}")
    return bad


def test_shared_imports_no_service() -> None:
    assert _violations(REPO_ROOT / "shared") == []


def test_the_check_sees_every_import_form(tmp_path: Path) -> None:
    (tmp_path / "m.py").write_text(
        "import services.alerts\n"
        "from migrations import upgrade\n"
        "def f():\n"
        "    from services.ingest import models\n"
        "    importlib.import_module('tests.conftest')\n"
        "from . import sibling\n"
        "import shared.db\n")
    found = [v.split(" imports ")[1] for v in _violations(tmp_path, root=tmp_path)]
    assert found == ["services.alerts", "migrations", "services.ingest", "tests.conftest"]

