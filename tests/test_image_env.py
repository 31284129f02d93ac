"""The container image's Python environment, built the way the Dockerfile builds it, starts every service.

No Docker engine runs here, so the test reproduces the image's build stage: a fresh virtualenv, ``pip install .`` of
the files the Dockerfile copies (no editable install, no dev extras) and ``PSYCOPG_IMPL=binary`` as the runtime stage
sets it, so psycopg must use the libpq bundled in its binary wheel, never a system library (python:3.11-slim has
none). From a directory outside the source tree it then starts engine, ops (with PostgreSQL as its store when the
machine's PostgreSQL accepts connections, else SQLite) and the strategies, probes them with the compose health check
(``python -m nautilus_mesh.healthcheck``) and waits for a fill.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from clients.sdk import OpsClient
from nautilus_mesh.health import OPS_ENGINE_LINK_SERVICE
from tests.conftest import DEMO, MEANREV_TOKEN, MOMENTUM_TOKEN
from tests.localhost import free_ports
from tests.processes import tail, write_configs
from tests.test_store import PG_URL, postgres_accepts_connections

ROOT = Path(__file__).resolve().parent.parent
COPIED = ("pyproject.toml", "README.md", "nautilus_mesh", "engine_server", "ops_server", "clients", "strategies")

pytestmark = pytest.mark.timeout(300)


def build_image_env(tmp: Path) -> Path:
    """The Dockerfile's build stage: copy what it copies, fresh venv, ``pip install .``; returns the venv's python."""
    src = tmp / "src"
    src.mkdir()
    for name in COPIED:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(path, src / name)
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    result = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", "."],
        cwd=src,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return python


def installed_from(python: Path, cwd: Path) -> tuple[str, str]:
    """psycopg's implementation and where ``ops_server`` is imported from, in the image environment."""
    where = subprocess.run(
        [str(python), "-c", "import psycopg, ops_server, strategies; print(psycopg.pq.__impl__, ops_server.__file__)"],
        cwd=cwd, env=image_env(), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert where.returncode == 0, where.stderr
    impl, location = where.stdout.split()
    return impl, location


def image_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(PSYCOPG_IMPL="binary", PYTHONUNBUFFERED="1")
    return env


async def probe(python: Path, address: str, service: str = "") -> int:
    proc = await asyncio.create_subprocess_exec(
        str(python), "-m", "nautilus_mesh.healthcheck", address, "--service", service, "--deadline", "1",
        env=image_env(), stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    return await proc.wait()


async def wait_probe(python: Path, address: str, service: str = "", within: float = 60) -> None:
    deadline = time.monotonic() + within
    while (code := await probe(python, address, service)) != 0:
        assert time.monotonic() < deadline, f"{address} {service}: healthcheck exit {code} after {within}s"


async def test_image_env_when_built_like_the_dockerfile_imports_and_starts_every_service(tmp_path: Path) -> None:
    python = build_image_env(tmp_path)
    run = tmp_path / "run"  # outside the source tree: every import comes from the installed package
    run.mkdir()
    impl, location = installed_from(python, run)
    assert impl == "binary"
    assert location.startswith(str(tmp_path / "venv")), location

    engine_port, ops_port = free_ports(2)
    store = {}
    if postgres_accepts_connections():
        store["database_url"] = f"{PG_URL}?schema=image_env_{uuid.uuid4().hex[:12]}"
    engine_cfg, ops_cfg = write_configs(run, engine_port, ops_port, **store)
    strategies = json.loads((DEMO / "strategies.json").read_text())
    strategies.update(ops_address=f"127.0.0.1:{ops_port}", engine_address=f"127.0.0.1:{engine_port}")
    tokens = {"momentum": MOMENTUM_TOKEN, "meanrev": MEANREV_TOKEN}
    for strategy in strategies["strategies"]:
        strategy["token"] = tokens[strategy["name"]]
    strategies_cfg = run / "strategies.json"
    strategies_cfg.write_text(json.dumps(strategies))

    procs: list[tuple[asyncio.subprocess.Process, Path]] = []

    async def start(module: str, *args: str) -> None:
        log = run / f"{module}.log"
        with log.open("ab") as out:
            proc = await asyncio.create_subprocess_exec(
                str(python), "-m", module, *args, cwd=run, env=image_env(), stdout=out, stderr=subprocess.STDOUT
            )
        procs.append((proc, log))

    try:
        await start("engine_server", "--config", str(engine_cfg))
        await wait_probe(python, f"127.0.0.1:{engine_port}")
        await start("ops_server", "--config", str(ops_cfg))
        await wait_probe(python, f"127.0.0.1:{ops_port}")
        await wait_probe(python, f"127.0.0.1:{ops_port}", OPS_ENGINE_LINK_SERVICE, within=10)
        await wait_probe(python, f"127.0.0.1:{ops_port}", "nautilus.ops.v1.store", within=10)
        await start("strategies", "--config", str(strategies_cfg), "--stats-file", str(run / "stats.json"))
        deadline = time.monotonic() + 60
        async with OpsClient(f"127.0.0.1:{ops_port}", strategy_token=MOMENTUM_TOKEN, timeout=2) as ops:
            while sum(m.fills for m in (await ops.get_model_stats()).models) == 0:
                for proc, log in procs:
                    assert proc.returncode is None, f"{log.name} exited {proc.returncode}: {tail(log)}"
                assert time.monotonic() < deadline, "no fill within 60 s: " + tail(run / "strategies.log")
                await asyncio.sleep(0.2)
    finally:
        for proc, _ in reversed(procs):
            if proc.returncode is None:
                proc.terminate()
                await proc.wait()
    if store:
        assert "[STORE] opened postgresql://" in tail(run / "ops_server.log", 100_000)
