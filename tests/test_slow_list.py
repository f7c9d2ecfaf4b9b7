"""tests/slow.txt (the tests conftest.py marks ``slow``) names tests that exist, and every area
keeps a quick test in ``pytest -m "not slow"``, so the subset still catches a broken piece."""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import SLOW_LIST, slow_functions

HERE = Path(__file__).parent

#: an area and the test files of it: the quick subset runs at least one test of each
AREAS = {
    "engine (a rule type screened)": ["test_types_scope.py", "test_types_standards.py"],
    "loader": ["test_loader.py"],
    "command line": ["test_cli.py"],
    "pre-alert service": ["test_prealert_api.py"],
    "hospital loop": ["test_lifecycle.py", "test_appeals.py", "test_deduct.py"],
    "portal": ["test_web.py"],
    "money": ["test_money.py"],
}


def _is_slow_mark(node: ast.expr) -> bool:
    return ast.unparse(node) in ("pytest.mark.slow", "mark.slow")


def quick_tests(path: Path, listed: set[str]) -> list[str]:
    """The test functions of a file that neither the list, a decorator nor ``pytestmark`` marks slow."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "pytestmark" for t in node.targets):
            marks = node.value.elts if isinstance(node.value, (ast.List, ast.Tuple)) else [node.value]
            if any(_is_slow_mark(m) for m in marks):
                return []
    return [
        n.name
        for n in tree.body
        if isinstance(n, ast.FunctionDef)
        and n.name.startswith("test_")
        and f"{path.name}::{n.name}" not in listed
        and not any(_is_slow_mark(d) for d in n.decorator_list)
    ]


def test_every_listed_test_exists():
    names: dict[str, set[str]] = {}  # file -> its top-level names
    missing = []
    for entry in sorted(slow_functions(SLOW_LIST.read_text(encoding="utf-8"))):
        file, _, name = entry.partition("::")
        if file not in names:
            path = HERE / file
            tree = ast.parse(path.read_text(encoding="utf-8")) if path.is_file() else ast.Module([], [])
            names[file] = {getattr(n, "name", "") for n in tree.body}
        if name not in names[file]:
            missing.append(entry)
    assert missing == [], "tests/slow.txt names tests that are not there (renamed or removed?)"


def test_every_area_keeps_a_quick_test():
    listed = slow_functions(SLOW_LIST.read_text(encoding="utf-8"))
    bare = [area for area, files in AREAS.items() if not any(quick_tests(HERE / f, listed) for f in files)]
    assert bare == [], "the quick subset would run no test of these areas"


def test_the_list_is_read_as_test_names():
    text = "# a comment\n\ntest_a.py::test_x  # why\n  test_b.py::test_y\n"
    assert slow_functions(text) == {"test_a.py::test_x", "test_b.py::test_y"}
