"""One process per port and per state directory: a second ops or engine exits 2, the launcher refuses early."""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from clients.config_dir import MeshEndpoints
from clients.launcher import preflight, run_mesh
from clients.sdk import wait_serving
from nautilus_mesh.instance_lock import InstanceLock, lock_holder
from tests.conftest import DEMO, wait_until
from tests.localhost import free_ports

ROOT = Path(__file__).resolve().parent.parent


def engine_file(tmp: Path, name: str, port: int, state: Path) -> Path:
    path = tmp / f"{name}.json"
    path.write_text(
        json.dumps(
            {"port": port, "metrics_port": None, "journal_path": str(state / "journal.jsonl"), "journal_fsync": False}
        )
    )
    return path


def ops_file(tmp: Path, name: str, port: int, state: Path) -> Path:
    config: dict[str, Any] = json.loads((DEMO / "ops.json").read_text())
    config.update(
        {
            "port": port,
            "metrics_port": None,
            "engine_address": f"127.0.0.1:{free_ports(1)[0]}",
            "state_dir": str(state),
            "registry_path": str(DEMO / "registry.json"),
            "capital_policy_path": str(DEMO / "capital_policy.json"),
            "risk_limits_path": str(DEMO / "risk_limits.json"),
            "tracing": False,
        }
    )
    path = tmp / f"{name}.json"
    path.write_text(json.dumps(config))
    return path


def spawn(module: str, config: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", module, "--config", str(config)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def run(module: str, config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", module, "--config", str(config)], cwd=ROOT, capture_output=True, text=True, timeout=60
    )


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()


@pytest.mark.parametrize(("module", "make_config"), [("engine_server", engine_file), ("ops_server", ops_file)])
async def test_second_instance_on_the_same_state_dir_exits_2_naming_the_first(
    module: str, make_config: Any, tmp_path: Path, processes: list[subprocess.Popen[str]]
) -> None:
    state = tmp_path / "state"
    first = spawn(module, make_config(tmp_path, "first", 0, state))
    processes.append(first)
    await wait_until(lambda: lock_holder(state) == first.pid or first.poll() is not None, within=30)
    assert first.poll() is None

    second = run(module, make_config(tmp_path, "second", 0, state))

    service = "engine" if module == "engine_server" else "ops"
    assert second.returncode == 2
    assert second.stderr.strip().splitlines()[-1] == f"error: {service} already running on {state} (pid {first.pid})"
    assert "Traceback" not in second.stderr
    assert lock_holder(state) == first.pid and first.poll() is None


async def test_second_engine_on_the_same_port_exits_2(tmp_path: Path, processes: list[subprocess.Popen[str]]) -> None:
    port = free_ports(1)[0]
    first = spawn("engine_server", engine_file(tmp_path, "first", port, tmp_path / "a"))
    processes.append(first)
    await wait_serving(f"127.0.0.1:{port}", 30)

    second = run("engine_server", engine_file(tmp_path, "second", port, tmp_path / "b"))

    assert second.returncode == 2
    assert f"could not bind 127.0.0.1:{port}" in second.stderr
    assert "Traceback" not in second.stderr


def test_lock_is_released_with_its_holder(tmp_path: Path) -> None:
    with InstanceLock(tmp_path, "ops"):
        assert lock_holder(tmp_path) == os.getpid()
    assert lock_holder(tmp_path) is None
    with InstanceLock(tmp_path, "ops"):  # a stale file (no live holder) never blocks a restart
        pass


async def test_launcher_refuses_before_touching_logs_or_stats(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    config_dir = tmp_path / "config"
    config_dir.mkdir()
    ports = free_ports(4)
    for name in ("ops", "engine"):
        data: dict[str, Any] = json.loads((DEMO / f"{name}.json").read_text())
        data.update({"port": ports[0] if name == "ops" else ports[1], "metrics_port": ports[2 if name == "ops" else 3]})
        (config_dir / f"{name}.json").write_text(json.dumps(data))
    log_file = tmp_path / "var" / "log" / "ops.log"
    log_file.parent.mkdir(parents=True)
    log_file.write_text("the running mesh's log\n")
    stats = tmp_path / "var" / "run" / "strategies.json"
    stats.parent.mkdir(parents=True)
    stats.write_text('{"totals": {}}')

    with InstanceLock(tmp_path / "var" / "ops", "ops"):
        code = await run_mesh(config_dir, 1, with_strategies=False, console=Console(file=io.StringIO()))

    assert code == 2
    assert log_file.read_text() == "the running mesh's log\n"
    assert stats.read_text() == '{"totals": {}}'
    assert not (tmp_path / "var" / "log" / "engine.log").exists()


async def test_up_when_its_config_folder_lacks_a_file_exits_2_before_starting_anything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    code = await run_mesh(tmp_path / "nonexistent", 1, console=Console(file=io.StringIO()))
    assert code == 2
    err = capsys.readouterr().err
    for name in ("engine.json", "ops.json", "strategies.json"):
        assert f"error: config file not found: {tmp_path / 'nonexistent' / name}" in err
    assert not (tmp_path / "var").exists()  # no log or stats written


def test_preflight_when_a_port_is_taken_names_it(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        endpoints = MeshEndpoints(f"127.0.0.1:{port}", "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0")
        problems = preflight(endpoints, {"ops": tmp_path / "ops"})
    assert problems == [f"ops address 127.0.0.1:{port} is already in use"]
    assert preflight(MeshEndpoints("127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"), {}) == []
