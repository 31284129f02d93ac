"""Helpers for tests that run the services as real processes (``python -m engine_server`` / ``ops_server``)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.conftest import DEMO, engine_config, ops_config

ROOT = Path(__file__).resolve().parent.parent
SERVING = health_pb2.HealthCheckResponse.SERVING


def write_configs(tmp: Path, engine_port: int, ops_port: int, **ops_overrides: Any) -> tuple[Path, Path]:
    """Engine and ops config files for processes on fixed ports (so a restarted engine comes back on its port)."""
    engine = engine_config(tmp, port=engine_port, tick_interval_ms=50)
    ops = ops_config(tmp, engine_port, port=ops_port, **ops_overrides)
    engine_path = tmp / "engine.json"
    ops_path = tmp / "ops.json"
    engine_path.write_text(json.dumps(engine.model_dump(mode="json")))
    ops_data = ops.model_dump(mode="json")
    ops_path.write_text(json.dumps(ops_data))
    return engine_path, ops_path


async def spawn(module: str, config: Path, log: Path) -> asyncio.subprocess.Process:
    with log.open("ab") as out:  # the child keeps its own descriptor
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            module,
            "--config",
            str(config),
            cwd=ROOT,
            stdout=out,
            stderr=asyncio.subprocess.STDOUT,
        )


def tail(log: Path | None, chars: int = 2000) -> str:
    return log.read_text()[-chars:] if log is not None and log.exists() else ""


async def health(address: str, service: str = "", deadline: float = 0.5) -> int | None:
    """The gRPC health status of ``service`` at ``address``; None when the server does not answer."""
    async with grpc.aio.insecure_channel(address) as channel:
        try:
            response = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=deadline
            )
        except grpc.aio.AioRpcError:
            return None
    return int(response.status)


async def wait_health(
    address: str,
    expected: int | None,
    *,
    service: str = "",
    within: float = 30.0,
    proc: asyncio.subprocess.Process | None = None,
    log: Path | None = None,
) -> float:
    """Poll until ``service`` reports ``expected``; returns the monotonic time it was first seen."""
    deadline = time.monotonic() + within
    while True:
        status = await health(address, service)
        if status == expected:
            return time.monotonic()
        if proc is not None and proc.returncode is not None:
            raise AssertionError(f"process exited with {proc.returncode}: {tail(log)}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{address} {service or '(overall)'}: still {status} after {within}s")
        await asyncio.sleep(0.02)


async def start_serving(module: str, config: Path, port: int, log: Path) -> asyncio.subprocess.Process:
    """``python -m <module> --config <config>`` once its health check on ``port`` says SERVING (output to ``log``)."""
    proc = await spawn(module, config, log)
    await wait_health(f"127.0.0.1:{port}", SERVING, proc=proc, log=log)
    return proc


@contextlib.contextmanager
def server_process(
    args: list[str], log_path: Path, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """``python -m <args>`` from the repository root, its output to ``log_path`` (for tests that read the log);
    terminated on exit."""
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", *args], cwd=ROOT, stdout=log_file, stderr=subprocess.STDOUT, env=env
        )
    try:
        yield proc
    finally:
        proc.terminate()
        proc.wait(30)


def write_engine_json(tmp: Path, port: int) -> Path:
    """``<tmp>/engine.json`` for an engine process on ``port``: token ``log-test-token``, no metrics, no tracing."""
    config = {
        "port": port,
        "metrics_port": None,
        "ops_token": "log-test-token",
        "journal_path": str(tmp / "engine" / "journal.jsonl"),
        "journal_fsync": False,
        "tracing": False,
    }
    path = tmp / "engine.json"
    path.write_text(json.dumps(config))
    return path


def write_ops_json(tmp: Path, port: int, engine_port: int, **fields: object) -> dict[str, Any]:
    """``<tmp>/ops.json``: the demo ops config on ``port``, dialing ``engine_port``, no metrics, state under ``tmp``,
    with ``fields`` on top; returns the config written."""
    config: dict[str, Any] = json.loads((DEMO / "ops.json").read_text())
    config.update(
        {
            "port": port,
            "metrics_port": None,
            "engine_address": f"127.0.0.1:{engine_port}",
            "state_dir": str(tmp / "ops"),
            "registry_path": str(DEMO / "registry.json"),
            "capital_policy_path": str(DEMO / "capital_policy.json"),
            "risk_limits_path": str(DEMO / "risk_limits.json"),
            **fields,
        }
    )
    (tmp / "ops.json").write_text(json.dumps(config))
    return config
