"""Imports point one way (DESIGN.md section 2); a violation fails here."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# package -> top-level packages of this project it must never import
FORBIDDEN = {
    "nautilus_mesh": {"engine_server", "ops_server", "clients", "strategies"},
    "engine_server": {"ops_server", "clients", "strategies"},
    "ops_server": {"engine_server", "strategies"},
    "clients": {"engine_server", "ops_server", "strategies"},
    "strategies": {"engine_server", "ops_server"},
}


def imported_packages(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_when_walked_imports_nothing_forbidden(package: str) -> None:
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"{package} has no modules"
    violations = [
        f"{path.relative_to(ROOT)} imports {name}"
        for path in files
        for name in sorted(imported_packages(path) & FORBIDDEN[package])
    ]
    assert violations == []


def test_layering_check_when_given_a_violating_module_reports_it(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("from ops_server.core import OpsCore\nimport strategies.momentum\n")
    assert imported_packages(bad) >= {"ops_server", "strategies"}
