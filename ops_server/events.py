"""Ops events: every allocation, weight change, risk and canary decision, audited and streamed.

Each event is appended to the audit log (JSONL, never rewritten) and fanned out to the
``WatchEvents`` subscribers' bounded queues (a slow subscriber loses events, counted, rather
than slowing the mesh; the audit log keeps everything).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field

from nautilus_mesh.clock import REAL_CLOCK, Clock
from nautilus_mesh.files import JsonlWriter

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OpsEvent:
    """One event."""

    seq: int
    kind: str
    at: float
    message: str
    attributes: Mapping[str, str] = field(default_factory=dict)

    def to_record(self) -> dict[str, object]:
        return {"seq": self.seq, "kind": self.kind, "at": self.at, "message": self.message, **self.attributes}


class EventHub:
    """Audit log plus live fan-out.

    Args:
        audit_path: the JSONL audit log; None keeps events in memory only.
        recent: how many recent events are kept for new subscribers and queries.
        clock: wall time of events.
    """

    def __init__(
        self, audit_path: str | os.PathLike[str] | None, recent: int = 1000, *, clock: Clock = REAL_CLOCK
    ) -> None:
        self._clock = clock
        self._audit = JsonlWriter(audit_path) if audit_path else None
        self._seq = itertools.count(1)
        self._subscribers: set[asyncio.Queue[OpsEvent]] = set()
        self.recent: deque[OpsEvent] = deque(maxlen=recent)
        self.dropped = 0

    def publish(self, kind: str, message: str, **attributes: object) -> OpsEvent:
        event = OpsEvent(next(self._seq), kind, self._clock.time(), message, {k: str(v) for k, v in attributes.items()})
        self.recent.append(event)
        if self._audit is not None:
            self._audit.append(event.to_record())
        for queue in self._subscribers:
            try:
                queue.put_nowait(event)
            except asyncio.QueueFull:
                self.dropped += 1
        return event

    def subscribe(self, maxsize: int = 10_000) -> asyncio.Queue[OpsEvent]:
        queue: asyncio.Queue[OpsEvent] = asyncio.Queue(maxsize=maxsize)
        self._subscribers.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[OpsEvent]) -> None:
        self._subscribers.discard(queue)

    def close(self) -> None:
        if self._audit is not None:
            self._audit.close()
