"""Test files import their helpers from shared test modules (`tests/database.py`,
`tests/service/helpers.py`, `tests/training/helpers.py`, conftest files ...), never from another
`test_*.py` file: importing a test module runs it a second time under another name, drags its
fixtures and constants along, and breaks the day its owner renames a private helper."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def _is_test_module(dotted: str) -> bool:
    return dotted.rsplit(".", 1)[-1].startswith("test_")


def test_the_check_finds_every_spelling_of_such_an_import(tmp_path: Path) -> None:
    """Absolute, relative and package-attribute imports of a `test_*` module; shared modules pass."""
    sample = tmp_path / "test_sample.py"
    sample.write_text(
        "import tests.service.test_review_ab\n"
        "from tests.service.test_review_ab import sign_in\n"
        "from tests.service import test_review_ab\n"
        "from .test_store import interaction_record\n"
        "from . import test_store\n"
        "from tests.service.helpers import sign_in\n"
        "from tests.database import interaction_record\n"
        "from tests import conftest\n",
        encoding="utf-8",
    )
    assert [line for line, _ in imported_test_modules(sample)] == [1, 2, 3, 4, 5]


def imported_test_modules(path: Path) -> list[tuple[int, str]]:
    """(line, module) for each import in `path` of a `test_*` module."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names if _is_test_module(alias.name)]
        elif isinstance(node, ast.ImportFrom):
            module = "." * node.level + (node.module or "")
            if node.module and _is_test_module(node.module):
                found.append((node.lineno, module))
            else:
                found += [
                    (node.lineno, f"{module}.{alias.name}".replace("..", "."))
                    for alias in node.names
                    if alias.name.startswith("test_")
                ]
    return sorted(found)


def test_no_test_file_imports_another_test_module() -> None:
    offenders = [
        f"{path.relative_to(TESTS.parent)}:{line}: imports {module}"
        for path in sorted(TESTS.rglob("*.py"))
        for line, module in imported_test_modules(path)
    ]
    assert not offenders, "move the helpers into a shared test module:\n" + "\n".join(offenders)
