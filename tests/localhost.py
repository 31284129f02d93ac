"""Ports and child processes on this host: stdlib only, so the benchmarks share it with the tests."""

from __future__ import annotations

import asyncio
import socket

STOP_GRACE_SECONDS = 10.0
"""How long a terminated process has to exit before it is killed."""


def free_ports(n: int) -> list[int]:
    """``n`` distinct ports nobody listens on right now (for processes that need a port before they start)."""
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in sockets]
    finally:
        for s in sockets:
            s.close()


def free_port() -> int:
    return free_ports(1)[0]


async def stop(proc: asyncio.subprocess.Process) -> None:
    """Terminate ``proc`` if it still runs; kill it when it has not exited after :data:`STOP_GRACE_SECONDS`."""
    if proc.returncode is None:
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), STOP_GRACE_SECONDS)
        except TimeoutError:
            proc.kill()
            await proc.wait()
