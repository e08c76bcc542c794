"""The apps depend on each other one way (STYLE 1): sync -> engagements -> mailboxes ->
contacts -> teams. An app may import the apps after it in that chain, never those before."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHAIN = ["sync", "engagements", "mailboxes", "contacts", "teams"]


def imported_apps(path: Path) -> set[str]:
    """The project apps a module imports (relative imports stay in its own app)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return {name.partition(".")[0] for name in names} & set(CHAIN)


@pytest.mark.parametrize("app", CHAIN)
def test_an_app_imports_only_the_apps_after_it(app):
    allowed = set(CHAIN[CHAIN.index(app) :])
    modules = sorted((ROOT / app).rglob("*.py"))
    assert modules, f"no modules found under {app}/"
    wrong = {
        str(path.relative_to(ROOT)): sorted(imported_apps(path) - allowed)
        for path in modules
        if imported_apps(path) - allowed
    }
    assert wrong == {}


def test_the_check_sees_an_import_against_the_chain(tmp_path):
    module = tmp_path / "module.py"
    module.write_text("from sync.services import sync_mailbox\nimport engagements.models\n")

    assert imported_apps(module) == {"sync", "engagements"}
