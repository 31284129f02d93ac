"""One process per state directory: an exclusive ``flock`` on ``<dir>/lock`` that holds the owner's pid.

A server takes the lock before it opens anything else (journals, store, logs of its own), so a second
instance started on the same state directory exits at once instead of sharing files with the first.
The kernel drops the lock when the process dies (even on ``kill -9``), so a stale lock file never
blocks a restart.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
from pathlib import Path

from nautilus_mesh.errors import ConfigError

LOCK_NAME = "lock"


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", errors="replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


class InstanceLock:
    """The exclusive lock of one service on one state directory.

    Args:
        directory: the state directory (created when missing).
        service: the service's name in messages, e.g. ``"ops"``.
    """

    def __init__(self, directory: Path, service: str) -> None:
        self.directory = directory
        self.service = service
        self.path = directory / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock and write our pid into it.

        Raises:
            ConfigError: code ``ALREADY_RUNNING``: another live process holds the lock.
        """
        self.directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _read_pid(fd)
            os.close(fd)
            raise ConfigError(
                f"{self.service} already running on {self.directory} (pid {pid if pid is not None else '?'})",
                {"pid": pid if pid is not None else "", "directory": self.directory},
                code="ALREADY_RUNNING",
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        self._fd = fd

    def release(self) -> None:
        """Drop the lock (the file stays; an unlocked file means nobody runs)."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> InstanceLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def lock_holder(directory: Path) -> int | None:
    """The pid of the live process holding ``directory``'s lock, or None when nobody holds it.

    Used by the launcher to refuse a start before it touches logs or stats; it never creates files.
    Returns 0 when the lock is held but the pid in the file is unreadable.
    """
    path = directory / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _read_pid(fd)
            return pid if pid is not None else 0
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def address_in_use(address: str) -> bool:
    """True when something listens on ``HOST:PORT`` already (port 0 is never in use).

    Binds with SO_REUSEADDR like the servers do, so a port in TIME_WAIT from a previous run counts as free.
    """
    host, _, port_text = address.rpartition(":")
    port = int(port_text)
    if port == 0:
        return False
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host.strip("[]"), port))
        except OSError:
            return True
    return False
