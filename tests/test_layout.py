"""Dependencies point one way: components import the core, never each other."""

from __future__ import annotations

import ast
from pathlib import Path

from streamrec.settings import REPO_ROOT

COMPONENTS = ("streams", "serving", "trainer")


def imported_packages(folder: Path) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in folder.rglob("*.py"):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            else:
                continue
            for name in names:
                found.setdefault(name.split(".")[0], set()).add(str(path.relative_to(REPO_ROOT)))
    return found


def test_core_imports_no_component():
    imports = imported_packages(REPO_ROOT / "streamrec")
    offenders = {name: files for name, files in imports.items() if name in COMPONENTS}
    assert not offenders, f"streamrec/ must not import components: {offenders}"


def test_components_do_not_import_each_other():
    for component in COMPONENTS:
        imports = imported_packages(REPO_ROOT / component)
        others = {name: files for name, files in imports.items() if name in COMPONENTS and name != component}
        assert not others, f"{component}/ imports {others}; share code through streamrec/ instead"


def test_model_repo_code_imports_only_the_core():
    for path in (REPO_ROOT / "model_repo").rglob("model.py"):
        imports = imported_packages(path.parent)
        assert not set(imports) & set(COMPONENTS), f"{path} imports a component"


def test_checker_sees_a_cross_import(tmp_path):
    (tmp_path / "bad.py").write_text("from serving.collector.app import create_app\n")
    global REPO_ROOT
    saved, REPO_ROOT = REPO_ROOT, tmp_path
    try:
        assert "serving" in imported_packages(tmp_path)
    finally:
        REPO_ROOT = saved
