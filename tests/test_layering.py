"""Imports point one way (DESIGN.md section 2); a violation fails here."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# package -> top-level packages of this project it must never import
FORBIDDEN = {
    "nautilus_mesh": {"engine_server", "ops_server", "clients", "strategies", "backtests"},
    "engine_server": {"ops_server", "clients", "strategies", "backtests"},
    "ops_server": {"engine_server", "strategies", "backtests"},
    "clients": {"engine_server", "ops_server", "strategies", "backtests"},
    "strategies": {"engine_server", "ops_server", "backtests"},
}
# backtests/ sits on top of everything (it wires ops, the engine and a strategy's models in one process) and nothing
# imports it: the CLI runs it as a child process (``python -m backtests``).

# The one exception: the operator tools read the config directory through the services' own config models.
CONFIG_READERS = {"clients/config_dir.py": {"engine_server.config", "ops_server.config"}}


def relative(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


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
        for name in sorted(imported_modules(path))
        if name.split(".")[0] in FORBIDDEN[package] and name not in CONFIG_READERS.get(relative(path), set())
    ]
    assert violations == []


def test_sdk_when_imported_loads_no_server_package() -> None:
    code = "import sys, clients, clients.sdk; print(sorted({m.split('.')[0] for m in sys.modules} & {FORBIDDEN}))"
    out = subprocess.run(
        [sys.executable, "-c", code.replace("{FORBIDDEN}", repr(FORBIDDEN["clients"]))],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out.strip() == "[]"


def test_layering_check_when_given_a_violating_module_reports_it(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("from ops_server.core import OpsCore\nimport strategies.momentum\n")
    assert imported_packages(bad) >= {"ops_server", "strategies"}


SERVICERS = ("ops_server/service.py", "ops_server/admin.py")
# What code outside ops_server may import from it: the servers' entry points (launcher, benchmarks).
OPS_ENTRY_POINTS = {"ops_server", "ops_server.server", "ops_server.config", "ops_server.core"}


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


@pytest.mark.parametrize("servicer", SERVICERS)
def test_servicer_when_walked_imports_no_sibling_servicer_and_not_the_core(servicer: str) -> None:
    siblings = {f"ops_server.{Path(s).stem}" for s in SERVICERS} - {f"ops_server.{Path(servicer).stem}"}
    imported = imported_modules(ROOT / servicer)
    assert imported & (siblings | {"ops_server.core"}) == set()


def test_code_outside_ops_when_walked_reaches_only_ops_entry_points() -> None:
    files = [
        p
        for top in ("clients", "strategies", "engine_server", "nautilus_mesh", "benchmarks")
        for p in (ROOT / top).rglob("*.py")
    ]
    violations = [
        f"{path.relative_to(ROOT)} imports {name}"
        for path in files
        for name in sorted(imported_modules(path))
        if name.split(".")[0] == "ops_server" and name not in OPS_ENTRY_POINTS
    ]
    assert violations == []


# What the backtest runner may import from ops beyond its entry points, and why:
BACKTEST_OPS_IMPORTS = {
    "ops_server.engine_link",  # the transport seam it replaces with an in-process link (a subclass)
    "ops_server.canary.checks",  # --compare runs the canary controller's own check, not a copy of its formulas
    "ops_server.canary.config",  # ... with the strategy's canary policy
    "ops_server.model_registry",  # ... read from the registry file
    "ops_server.performance",  # per-bar <-> annual Sharpe conversion of those figures
}


def test_backtest_runner_when_walked_reaches_only_ops_entry_points_and_named_seams() -> None:
    violations = [
        f"{path.relative_to(ROOT)} imports {name}"
        for path in (ROOT / "backtests").rglob("*.py")
        for name in sorted(imported_modules(path))
        if name.split(".")[0] == "ops_server" and name not in OPS_ENTRY_POINTS | BACKTEST_OPS_IMPORTS
    ]
    assert violations == []


@pytest.mark.parametrize("top", ["ops_server", "engine_server", "clients", "backtests"])
def test_module_when_counted_has_at_most_500_lines(top: str) -> None:
    too_long = {
        str(p.relative_to(ROOT)): n
        for p in (ROOT / top).rglob("*.py")
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > 500
    }
    assert too_long == {}


def test_ops_core_when_counted_keeps_wiring_only_within_300_lines() -> None:
    assert len((ROOT / "ops_server/core.py").read_text(encoding="utf-8").splitlines()) <= 300
