"""Helpers for tests that run `nautilus-mesh up` (the launcher behind `make run`) on the demo config."""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

from clients.sdk import OpsClient

ROOT = Path(__file__).resolve().parent.parent
CLI = shutil.which("nautilus-mesh", path=str(Path(sys.executable).parent))
"""The installed console script (None until `make install` put it into the virtualenv)."""


def demo_config_on(tmp: Path, ops: int, engine: int, ops_metrics: int, engine_metrics: int) -> Path:
    """The demo config with its ports moved to free ones, so the test never meets a running demo."""
    config = tmp / "config"
    shutil.copytree(ROOT / "config" / "demo", config)
    edit = {
        "engine.json": {"port": engine, "metrics_port": engine_metrics},
        "ops.json": {"port": ops, "metrics_port": ops_metrics, "engine_address": f"127.0.0.1:{engine}"},
        "strategies.json": {"ops_address": f"127.0.0.1:{ops}", "engine_address": f"127.0.0.1:{engine}"},
    }
    for name, values in edit.items():
        data = json.loads((config / name).read_text())
        data.update(values)
        (config / name).write_text(json.dumps(data))
    return config


def up_command(config: Path, duration_s: int, *flags: str) -> list[str]:
    """`nautilus-mesh up` on ``config`` for ``duration_s`` seconds, with ``flags`` (e.g. ``--no-restart``)."""
    assert CLI is not None
    return [CLI, "up", *flags, "--duration", str(duration_s), "--config-dir", str(config)]


def run_up(
    config: Path, cwd: Path, duration_s: int, env: Mapping[str, str] | None = None, timeout_s: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run `up` to its end in ``cwd`` and capture what it printed."""
    return subprocess.run(
        up_command(config, duration_s), cwd=cwd, capture_output=True, text=True, timeout=timeout_s, env=env
    )


async def start_up(
    config: Path, cwd: Path, duration_s: int, *flags: str, env: Mapping[str, str] | None = None
) -> tuple[asyncio.subprocess.Process, asyncio.StreamReader]:
    """Start `up` in ``cwd``; its output (stdout and stderr) is read from the returned stream."""
    proc = await asyncio.create_subprocess_exec(
        *up_command(config, duration_s, *flags),
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=env,
    )
    assert proc.stdout is not None
    return proc, proc.stdout


async def interrupt_up(proc: asyncio.subprocess.Process, stdout: asyncio.StreamReader, seen: list[str]) -> int:
    """Stop `up` as Ctrl-C does (unless it has exited), keep the rest of its output in ``seen``; its exit code."""
    if proc.returncode is None:
        proc.send_signal(signal.SIGINT)
        rest = await asyncio.wait_for(stdout.read(), 60)
        seen.extend(rest.decode().splitlines())
    return await proc.wait()


async def read_until(stream: asyncio.StreamReader, predicate: str, seen: list[str], within: float) -> str:
    """The first line holding ``predicate`` within ``within`` seconds; every line read is kept in ``seen``."""
    deadline = time.monotonic() + within
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"no line with {predicate!r} within {within}s; got:\n" + "\n".join(seen[-40:]))
        line = (await asyncio.wait_for(stream.readline(), remaining)).decode()
        if not line:
            raise AssertionError("launcher output ended; got:\n" + "\n".join(seen[-40:]))
        seen.append(line.rstrip())
        if predicate in line:
            return line


async def fills(address: str, token: str) -> int:
    """Fills of every model of the strategy whose ``token`` this is, as the ops at ``address`` counts them."""
    async with OpsClient(address, strategy_token=token, timeout=2) as ops:
        stats = await ops.get_model_stats()
    return sum(m.fills for m in stats.models)


def status_rows(lines: list[str]) -> list[dict[str, str]]:
    """Every model row of every status table `up` printed, keyed by column header (plain-text tables)."""
    rows: list[dict[str, str]] = []
    for index, title in enumerate(lines[:-1]):
        if not title.startswith("models ("):
            continue
        header = lines[index + 1]
        starts = [m.start() for m in re.finditer(r"\S+(?: \S+)*", header)]  # a header holds single spaces only
        bounds = list(itertools.pairwise([*starts, None]))
        names = [header[a:b].strip() for a, b in bounds]
        for line in lines[index + 2 :]:
            if not line.startswith(("momentum_v", "meanrev_v")):
                break
            rows.append({name: line[a:b].strip() for name, (a, b) in zip(names, bounds, strict=True)})
    return rows
