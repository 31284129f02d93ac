"""The mesh's child processes: start them with their logs, wait until they serve, supervise and stop them.

``nautilus-mesh up`` (:mod:`clients.launcher`) runs each service as a child process; a child that dies is named
with its exit code and the last lines of its log, and restarted after a backoff, up to a limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from clients.sdk import wait_serving

log = logging.getLogger(__name__)

READY_TIMEOUT = 30.0
"""Seconds a child has to report SERVING."""
STOP_TIMEOUT = 10.0
"""Seconds a child has to exit after SIGTERM before it is killed."""
LOG_DIR = Path("var/log")
PID_DIR = Path("var/run")
MAX_RESTARTS = 5
"""Restarts of one child in a run before the whole mesh stops."""
RESTART_BACKOFF_INITIAL = 0.5
"""Seconds before the first restart of a child; doubles with each restart."""
RESTART_BACKOFF_MAX = 10.0
"""Longest wait before a restart, seconds."""


@dataclass
class ManagedProcess:
    """A server subprocess with its log file."""

    name: str
    process: asyncio.subprocess.Process
    log_path: Path
    log_file: IO[bytes]

    @property
    def running(self) -> bool:
        return self.process.returncode is None

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    async def stop(self, grace: float = STOP_TIMEOUT) -> int | None:
        """SIGTERM, wait up to ``grace`` seconds, then SIGKILL."""
        if self.running:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), grace)
            except TimeoutError:
                log.warning("[LAUNCHER] %s did not stop within %.0fs; killing it", self.name, grace)
                with contextlib.suppress(ProcessLookupError):
                    self.process.kill()
                await self.process.wait()
        self.log_file.close()
        return self.process.returncode


DEFAULT_TRACE_SAMPLING = "0.1"
"""Share of signals traced by ``make run`` / ``nautilus-mesh up`` when ``OTEL_TRACES_SAMPLER`` is not set."""


def _open_log(log_dir: Path, name: str, *, append: bool = False) -> tuple[Path, IO[bytes]]:
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.log"
    return log_path, open(log_path, "ab" if append else "wb")  # closed by ManagedProcess.stop


def _write_pid(name: str, pid: int) -> None:
    PID_DIR.mkdir(parents=True, exist_ok=True)
    (PID_DIR / f"{name}.pid").write_text(f"{pid}\n")


async def start_process(
    name: str,
    module: str,
    args: Sequence[str],
    log_dir: Path = LOG_DIR,
    *,
    append: bool = False,
    extra_env: Sequence[tuple[str, str]] = (),
) -> ManagedProcess:
    """Start ``python -m module args`` with output to ``log_dir/<name>.log`` (truncated unless ``append``), with
    ``extra_env`` added to the launcher's environment."""
    log_path, log_file = _open_log(log_dir, name, append=append)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **dict(extra_env)}
    # Sample traces unless the operator chose otherwise: the decision is taken once, at the strategy,
    # and followed by ops and engine (parent-based), so an unsampled signal costs no span work.
    env.setdefault("OTEL_TRACES_SAMPLER", "parentbased_traceidratio")
    env.setdefault("OTEL_TRACES_SAMPLER_ARG", DEFAULT_TRACE_SAMPLING)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        module,
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=log_file,
        stderr=asyncio.subprocess.STDOUT,
        env=env,
        # Own session: the terminal's Ctrl-C reaches only the launcher, which stops children in order.
        start_new_session=True,
    )
    _write_pid(name, process.pid)
    return ManagedProcess(name, process, log_path, log_file)


async def wait_ready(proc: ManagedProcess, address: str, within: float = READY_TIMEOUT) -> str | None:
    """None once ``proc`` serves on ``address``; else why not (it exited, or timed out)."""
    serving = asyncio.create_task(wait_serving(address, within))
    exited = asyncio.create_task(proc.process.wait())
    try:
        await asyncio.wait({serving, exited}, return_when=asyncio.FIRST_COMPLETED)
        if serving.done():
            exc = serving.exception()
            return None if exc is None else f"{proc.name} not SERVING at {address} within {within:g}s"
        return f"{proc.name} exited with code {proc.process.returncode} before serving"
    finally:
        for task in (serving, exited):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await task


@dataclass
class ChildSpec:
    """How to (re)start one child: its module, arguments and the address it serves on (None: no gRPC server)."""

    name: str
    module: str
    args: tuple[str, ...]
    address: str | None = None
    restarts: int = 0
    env: tuple[tuple[str, str], ...] = ()
    """Added to the child's environment (e.g. ``OPS_WORKER_INDEX`` of an ops worker)."""


class Supervisor:
    """Restarts children that die, with a doubling backoff and a limit per child.

    Args:
        procs: the running children in stop order; restarted children replace their entry in place.
        specs: how to restart each child, by name.
        max_restarts: restarts allowed per child before the mesh gives up.
    """

    def __init__(
        self, procs: list[ManagedProcess], specs: Mapping[str, ChildSpec], max_restarts: int = MAX_RESTARTS
    ) -> None:
        self.procs = procs
        self.specs = specs
        self.max_restarts = max_restarts

    async def wait_for_death(self, stop: asyncio.Event, within: float) -> list[ManagedProcess]:
        """Wait up to ``within`` seconds for ``stop`` or any child to exit; returns the dead children."""
        waits = [asyncio.ensure_future(p.process.wait()) for p in self.procs if p.running]
        waits.append(asyncio.ensure_future(stop.wait()))
        try:
            await asyncio.wait(waits, timeout=max(0.0, within), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in waits:
                task.cancel()
        return [p for p in self.procs if not p.running]

    async def restart(self, dead: ManagedProcess, stop: asyncio.Event) -> bool:
        """Restart ``dead`` after its backoff; False when it is past its restart limit (or a stop came first)."""
        spec = self.specs[dead.name]
        dead.log_file.close()
        if spec.restarts >= self.max_restarts:
            print(
                f"error: {dead.name} died {spec.restarts + 1} times; giving up (limit {self.max_restarts})", flush=True
            )
            return False
        spec.restarts += 1
        backoff = min(RESTART_BACKOFF_MAX, RESTART_BACKOFF_INITIAL * 2 ** (spec.restarts - 1))
        print(f"restarting {dead.name} in {backoff:g}s (restart {spec.restarts}/{self.max_restarts})", flush=True)
        log.warning("[LAUNCHER] restarting %s (restart %d/%d)", dead.name, spec.restarts, self.max_restarts)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), backoff)
        if stop.is_set():
            return True
        proc = await start_process(spec.name, spec.module, spec.args, append=True, extra_env=spec.env)
        self.procs[self.procs.index(dead)] = proc
        if spec.address is not None:
            failure = await wait_ready(proc, spec.address)
            if failure:
                print(f"error: {failure}", flush=True)
                return True  # the next round sees it dead and counts another restart
        print(f"restarted: {spec.name} pid={proc.process.pid}", flush=True)
        return True


async def stop_all(procs: Sequence[ManagedProcess]) -> None:
    for proc in procs:  # already in stop order: strategies, ops, engine
        code = await proc.stop()
        log.info("[LAUNCHER] %s stopped with code %s", proc.name, code)
