"""The house rules of the library's layout, checked on every test run.

- The import contracts of pyproject.toml (layers, no cycles between the modules of a package,
  no UI in the library, maths reads no files), with import-linter.
- No import inside a function body and no private (leading underscore) name or module imported
  from another module of gem_app.
- The optional heavy dependencies are imported in gem_app/utils/optional.py only.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LIBRARY = ROOT / "gem_app"
OPTIONAL = {"ray", "umap", "hdbscan", "faiss", "sentence_transformers"}
GUARD = LIBRARY / "utils" / "optional.py"


def _modules():
    return sorted(LIBRARY.rglob("*.py"))


def _imports(tree):
    """(node, imported module, names) of every import statement of a module."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node, alias.name, []
        elif isinstance(node, ast.ImportFrom):
            yield node, node.module or "", [alias.name for alias in node.names]


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def test_import_contracts_hold():
    lint = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    if lint is None:
        pytest.fail("lint-imports is not installed: pip install import-linter (the dev extra)")
    result = subprocess.run(
        [lint, "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


def test_no_function_level_imports():
    found = []
    for path in _modules():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for func in ast.walk(tree):
            if isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for node in ast.walk(func):
                    if isinstance(node, (ast.Import, ast.ImportFrom)):
                        found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not found, "imports inside functions (move them to the top): " + ", ".join(found)


def test_no_private_names_imported_across_modules():
    found = []
    for path in _modules():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node, module, names in _imports(tree):
            if not module.startswith("gem_app"):
                continue
            private = [n for n in [*module.split("."), *names] if _private(n)]
            if private:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} ({', '.join(private)})")
    assert not found, "private names imported from another module: " + ", ".join(found)


def test_optional_dependencies_only_behind_their_guard():
    found = []
    for path in _modules():
        if path == GUARD:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node, module, _ in _imports(tree):
            if module.split(".")[0] in OPTIONAL:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} ({module})")
    assert not found, "import optional dependencies through gem_app.utils.optional: " + ", ".join(
        found
    )


def test_the_rules_see_a_violation(tmp_path):
    """The AST checks above do find a function-level import and a private import."""
    bad = ast.parse("def f():\n    from gem_app.core.rows import _x\n")
    imports = list(_imports(bad))
    assert imports and imports[0][1] == "gem_app.core.rows" and _private(imports[0][2][0])
