"""`python -m engine_server` / `python -m ops_server`: a bad config is one clear line and exit code 2."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from nautilus_mesh.serving import event_loop_factory

ROOT = Path(__file__).resolve().parent.parent


def run_module(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m <args>`` from the repository root, to its exit (60 s at most), its output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


@pytest.mark.parametrize("module", ["engine_server", "ops_server"])
def test_server_when_config_missing_exits_2_with_one_line(module: str, tmp_path: Path) -> None:
    result = run_module(module, "--config", str(tmp_path / "nope.json"))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"error: config file not found: {tmp_path / 'nope.json'}"]


@pytest.mark.parametrize("module", ["engine_server", "ops_server"])
def test_server_when_event_loop_unknown_exits_2_naming_the_variable(module: str, tmp_path: Path) -> None:
    result = run_module(
        module, "--config", str(tmp_path / "nope.json"), env={**os.environ, "NAUTILUS_EVENT_LOOP": "trio"}
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: NAUTILUS_EVENT_LOOP must be one of uvloop, asyncio, got 'trio'"
    ]


@pytest.mark.parametrize(("value", "loop_type"), [("", "uvloop.Loop"), ("uvloop", "uvloop.Loop"), ("asyncio", None)])
def test_event_loop_factory_when_variable_set_then_builds_that_loop(
    value: str, loop_type: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NAUTILUS_EVENT_LOOP", value)
    factory = event_loop_factory()
    if loop_type is None:
        assert factory is None  # asyncio.Runner then makes the standard library's loop
        return
    assert factory is not None
    loop = factory()
    try:
        assert f"{type(loop).__module__}.{type(loop).__name__}" == loop_type
    finally:
        loop.close()


def test_ops_when_config_has_unknown_key_names_it(tmp_path: Path) -> None:
    config = json.loads((ROOT / "config/demo/ops.json").read_text())
    config["engine_adress"] = "typo"
    path = tmp_path / "ops.json"
    path.write_text(json.dumps(config))
    result = run_module("ops_server", "--config", str(path))
    assert result.returncode == 2
    assert "engine_adress" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("module", ["ops_server.allocation", "ops_server.capital_allocator"])
def test_allocator_what_if_when_run_as_module_prints_the_decision(module: str, tmp_path: Path) -> None:
    returns = tmp_path / "returns.json"
    returns.write_text(json.dumps({"momentum": [0.01, 0.02, 0.015] * 20, "meanrev": [0.0, -0.01, 0.005] * 20}))
    result = run_module(module, "--returns", str(returns), "--policy", str(ROOT / "config/demo/capital_policy.json"))
    assert result.returncode == 0, result.stderr
    assert "reason:" in result.stdout and "momentum" in result.stdout


def test_strategies_when_event_loop_unknown_exits_2_naming_the_variable() -> None:
    result = run_module(
        "strategies",
        "--config",
        str(ROOT / "config/demo/strategies.json"),
        env={**os.environ, "NAUTILUS_EVENT_LOOP": "trio"},
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: NAUTILUS_EVENT_LOOP must be one of uvloop, asyncio, got 'trio'"
    ]


@pytest.mark.parametrize(
    ("value", "loop_type"), [("", "uvloop.Loop"), ("asyncio", "asyncio.unix_events._UnixSelectorEventLoop")]
)
def test_strategies_run_on_the_event_loop_the_variable_names(
    value: str, loop_type: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import strategies.__main__ as strategies_main

    seen: list[str] = []

    async def run(config: object, args: object) -> int:
        loop = asyncio.get_running_loop()
        seen.append(f"{type(loop).__module__}.{type(loop).__name__}")
        return 0

    monkeypatch.setenv("NAUTILUS_EVENT_LOOP", value)
    monkeypatch.setattr(strategies_main, "run", run)
    assert strategies_main.main(["--config", str(ROOT / "config/demo/strategies.json")]) == 0
    assert seen == [loop_type]


@pytest.mark.parametrize("value", ["64MiB", "0", "-5", "1e6"])
@pytest.mark.parametrize("module", ["engine_server", "ops_server", "strategies"])
def test_entry_point_when_span_file_size_is_not_a_byte_count_exits_2_naming_the_variable(
    module: str, value: str, tmp_path: Path
) -> None:
    config = ROOT / "config/demo/strategies.json" if module == "strategies" else tmp_path / "nope.json"
    result = run_module(module, "--config", str(config), env={**os.environ, "NAUTILUS_SPAN_FILE_MAX_BYTES": value})
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        "error: NAUTILUS_SPAN_FILE_MAX_BYTES must be a whole number of bytes above 0 (64 MiB is 67108864), "
        f"got {value!r}"
    ]
