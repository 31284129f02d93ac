"""Group commit off the event loop: a journal's fsyncs run on a thread of their own.

A service that journals with the ``batch`` policy writes a frame's records on the event loop (one ``write``) and must
not act on them (send the reports they describe) before they are fsynced. Doing the fsync on the loop stalls every
stream for the length of a disk flush. :class:`GroupSync` moves it to one thread: the loop hands it a release
callback after each write, the thread runs one fsync for every request waiting at that moment (a group commit) and
the callbacks then run on the loop, in the order they were asked for. What is released is always durable, and
nothing is released out of order.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


class GroupSync:
    """Runs ``sync`` (an fsync) on its own thread and releases waiting work on ``loop`` once it returned.

    Args:
        sync: makes durable everything written before it is called (thread-safe), e.g. ``JournalWriter.sync``.
        loop: the event loop the release callbacks run on.
        name: the thread's name (for logs and profilers).
    """

    def __init__(self, sync: Callable[[], None], loop: asyncio.AbstractEventLoop, name: str = "group-sync") -> None:
        self._sync = sync
        self._loop = loop
        self._requests: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self.fsyncs = 0
        """fsyncs run so far (each covers every request waiting when it started)."""
        self.released = 0
        """Release callbacks run so far."""
        self.failure = ""
        """Why the last fsync failed ("" while none has): nothing is released after a failure."""
        self._waiters: set[asyncio.Future[None]] = set()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def after_sync(self, release: Callable[[], None]) -> None:
        """Run ``release`` on the loop once everything written before this call is durable (FIFO with other calls)."""
        self._requests.put(release)

    async def drain(self) -> None:
        """Wait until every release asked for so far has run.

        Raises:
            OSError: an fsync failed (before or while waiting): what was written may not be durable.
        """
        if self.failure:
            raise OSError(self.failure)
        done: asyncio.Future[None] = self._loop.create_future()

        def release() -> None:
            if not done.done():
                done.set_result(None)

        self._waiters.add(done)
        self.after_sync(release)
        try:
            await done
        finally:
            self._waiters.discard(done)

    def close(self) -> None:
        """Stop the thread after it served what is waiting (their releases are still scheduled on the loop)."""
        self._requests.put(None)
        self._thread.join()

    def _run(self) -> None:
        while True:
            group = [self._requests.get()]
            while not self._requests.empty():
                group.append(self._requests.get_nowait())
            releases = [item for item in group if item is not None]
            if releases:
                try:
                    self._sync()
                    self.fsyncs += 1
                except OSError as exc:  # a disk that cannot fsync: nothing written since can be called durable
                    self.failure = f"{type(exc).__name__}: {exc}"
                    log.critical("[JOURNAL] fsync failed; holding %d release(s) and all later ones", len(releases))
                    self._loop.call_soon_threadsafe(self._fail_waiters)
                    return
                # One wake-up of the loop per group, not per release: each call_soon_threadsafe writes to the loop's
                # wake-up pipe, and a group holds every frame written while the previous fsync ran.
                self._loop.call_soon_threadsafe(self._release_all, releases)
            if len(releases) < len(group):
                return

    def _fail_waiters(self) -> None:
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_exception(OSError(self.failure))

    def _release_all(self, releases: list[Callable[[], None]]) -> None:
        for release in releases:
            self.released += 1
            try:
                release()
            except Exception:  # one failing release must not stop the others
                log.exception("[JOURNAL] a release after an fsync raised; the others still run")
