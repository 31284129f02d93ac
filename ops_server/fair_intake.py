"""Fair intake across signal streams: turns of one slice, a bound on each stream's backlog and on its unsent answers.

Every ``StreamSignals`` stream hands the frames it reads to one :class:`FairIntake`, which decides them a slice at a
time (:class:`~ops_server.intake.SliceSizer`: at most ``SLICE_SIGNALS`` signals and about ``SLICE_SECONDS`` of
work) and yields the event loop after every slice. The next slice goes to:

1. a **new** stream, one that had nothing waiting when its frame arrived (a well-behaved strategy sending a frame
   now and then), ahead of every stream with a backlog, as FQ-CoDel serves sparse flows first. Its frame waits for
   the one slice in progress, however many streams flood;
2. otherwise the streams with a **backlog**, round-robin, one slice each per turn: a flooding stream's backlog
   delays another stream's next slice by at most one slice of its own.

Two bounds per stream make a stream that floods without reading its answers stop costing work:

- **intake**: at most ``INTAKE_FRAMES`` frames read but not yet decided. Its reader reads no further frame until one
  is decided, so gRPC flow control holds the sender (ops' receive window stays at HTTP/2's 64 KiB; see
  ``SERVER_OPTIONS`` in ``nautilus_mesh/serving.py``).
- **answers**: at most ``max_pending_answers`` answers (decisions and fills) waiting to be sent. A stream with that
  many is **paused**: none of its signals is decided until its answers drain to half the bound. Its answers drain
  only as fast as the transport takes them, so a strategy that stops reading is paused once its HTTP/2 receive
  window is full (64 KiB by default; up to 4 MiB or twice the measured bandwidth-delay product when its gRPC client
  probes BDP, which gRPC clients do by default).

Answers go onto the stream's outbox in signal order, frame after frame. The work per frame is O(1) (a deque append,
a list append per turn); the deciding itself is the signal path's. A new stream's first slice is decided at once in
its reader's task (no hop through the worker), so a lone strategy pays nothing for the fairness and a well-behaved
one under a flood waits no longer than it must.
A stream that closes drops its undecided frames: its client saw no answer for them and sends them again (a signal
decided before that answers ``DUPLICATE``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Protocol

from nautilus_mesh.api.ops.v1 import ops_pb2
from nautilus_mesh.auth import Principal
from nautilus_mesh.log_safety import LogThrottle
from ops_server.intake import SliceSizer
from ops_server.metrics import OpsMetrics

log = logging.getLogger(__name__)

INTAKE_FRAMES = 2
"""Frames of one stream read but not yet decided, at most (count): the one being decided and the next one."""
MAX_PENDING_ANSWERS = 2_000
"""Default of ``stream_max_pending_answers``: answers waiting to be sent before a stream is paused (count)."""
PAUSE_LOG_SECONDS = 30.0
"""A strategy's pause warnings are logged at most once per this many seconds (the others are counted into it)."""

Decide = Callable[[Sequence[ops_pb2.Signal], Principal], list[ops_pb2.SignalDecision]]
"""Decides a slice: one decision per signal, in order (a frame over the size limit: a single rejection)."""


class Outbox(Protocol):
    """Where a stream's answers wait to be sent (an ``asyncio.Queue`` of decisions, fills and the closing None)."""

    def qsize(self) -> int: ...

    def put_nowait(self, item: ops_pb2.SignalDecision) -> None: ...


class _Frame:
    __slots__ = ("signals", "start", "whole")

    def __init__(self, signals: Sequence[ops_pb2.Signal], whole: bool) -> None:
        self.signals = signals
        self.whole = whole  # decided in one call, not sliced (a frame over the size limit: one rejection)
        self.start = 0  # signals of the frame decided so far


class IntakeStream:
    """One stream's place in the intake: its undecided frames, its outbox, and whether it is queued or paused."""

    def __init__(self, principal: Principal, outbox: Outbox) -> None:
        self.principal = principal
        self.outbox = outbox
        self.frames: deque[_Frame] = deque()
        self.queued = False  # in one of the intake's two lists
        self.paused = False  # at its bound of answers waiting to be sent
        self.closed = False
        self.failure: BaseException | None = None
        self._progress = asyncio.Event()  # set when a frame of this stream was decided (or it failed or closed)

    @property
    def undecided(self) -> int:
        """Signals read from this stream and not yet decided."""
        return sum(len(f.signals) - f.start for f in self.frames)

    async def _wait_progress(self) -> None:
        self._progress.clear()
        await self._progress.wait()

    def _progressed(self) -> None:
        self._progress.set()


class FairIntake:
    """Decides the frames of every signal stream fairly (see the module docstring).

    Args:
        decide: decides a slice of signals for a principal.
        max_pending_answers: answers waiting to be sent at which a stream is paused (count).
        metrics: where ``signal_stream_pauses_total``, ``signal_streams_paused`` and ``intake_pending_signals`` go.
        sizer: slice sizes from the measured cost per signal.
    """

    def __init__(
        self,
        decide: Decide,
        *,
        max_pending_answers: int = MAX_PENDING_ANSWERS,
        metrics: OpsMetrics,
        sizer: SliceSizer | None = None,
    ) -> None:
        if max_pending_answers < 1:
            raise ValueError("max_pending_answers must be at least 1")
        self._decide = decide
        self.max_pending_answers = max_pending_answers
        self._resume_at = max_pending_answers // 2
        self._sizer = sizer or SliceSizer()
        self._metrics = metrics
        self._new: deque[IntakeStream] = deque()  # streams that had nothing waiting: served first
        self._old: deque[IntakeStream] = deque()  # streams with a backlog: round-robin
        self._worker: asyncio.Task[None] | None = None
        self._open: set[IntakeStream] = set()
        self._pending = 0
        self._paused = 0
        self._pause_log = LogThrottle(PAUSE_LOG_SECONDS)

    # -- a stream's side -------------------------------------------------------------------

    def open(self, principal: Principal, outbox: Outbox) -> IntakeStream:
        stream = IntakeStream(principal, outbox)
        self._open.add(stream)
        return stream

    def streams(self) -> tuple[IntakeStream, ...]:
        """The streams open now."""
        return tuple(self._open)

    async def submit(self, stream: IntakeStream, signals: Sequence[ops_pb2.Signal], *, whole: bool = False) -> None:
        """Queue a frame read from ``stream``; returns once it is queued (its answers go to the stream's outbox).

        Waits first while the stream already has ``INTAKE_FRAMES`` frames undecided (backpressure on its reader).
        ``whole``: decide the frame in one call instead of in slices (a frame over the size limit).
        """
        while len(stream.frames) >= INTAKE_FRAMES and stream.failure is None and not stream.closed:
            await stream._wait_progress()
        if stream.failure is not None:
            raise stream.failure
        if stream.closed or not signals:
            return
        stream.frames.append(_Frame(signals, whole))
        self._add_pending(len(signals))
        if stream.queued or stream.paused:
            return  # already waiting for its turn (or for its answers to drain)
        if self._new:
            self._new.append(stream)  # behind the new streams that came first
            stream.queued = True
        else:
            # A new stream's turn is the next one; the worker is not mid-slice (it yields between slices), so that
            # turn is taken now, in this reader's task: no hop through the worker for a well-behaved stream.
            self._turn(stream)
            if not stream.frames or stream.paused or stream.closed:
                return
        self._start_worker()

    async def finish(self, stream: IntakeStream) -> None:
        """Wait until every frame queued from ``stream`` is decided (raises what made the stream fail)."""
        while stream.frames and stream.failure is None and not stream.closed:
            await stream._wait_progress()
        if stream.failure is not None:
            raise stream.failure

    def sent(self, stream: IntakeStream) -> None:
        """Some of ``stream``'s answers were sent: a paused stream resumes once half its bound has drained."""
        if stream.paused and stream.outbox.qsize() <= self._resume_at:
            stream.paused = False
            self._set_paused(-1)
            if stream.frames and not stream.closed:
                self._old.append(stream)
                stream.queued = True
                self._start_worker()

    def close(self, stream: IntakeStream) -> None:
        """The stream ended: its undecided frames are dropped (their client never got an answer for them)."""
        if stream.closed:
            return
        stream.closed = True
        self._open.discard(stream)
        self._add_pending(-stream.undecided)
        stream.frames.clear()
        if stream.paused:
            stream.paused = False
            self._set_paused(-1)
        stream._progressed()  # a reader waiting in submit() or finish() returns

    # -- the worker ------------------------------------------------------------------------

    @property
    def busy(self) -> bool:
        """True while slices are scheduled: more decisions (and their orders) follow in the next loop turns."""
        return self._worker is not None

    @property
    def pending_signals(self) -> int:
        """Signals read from every stream and not yet decided."""
        return self._pending

    def _start_worker(self) -> None:
        if self._worker is None:
            self._worker = asyncio.get_running_loop().create_task(self._run(), name="fair-intake")

    async def _run(self) -> None:
        """Slices, one turn at a time, while any stream has work; the event loop is yielded after every slice."""
        try:
            while (stream := self._next()) is not None:
                self._turn(stream)
                await asyncio.sleep(0)
        finally:
            self._worker = None

    def _next(self) -> IntakeStream | None:
        """The stream whose turn it is: new streams first, then the backlogged ones in turn; None when none waits."""
        for streams in (self._new, self._old):
            while streams:
                stream = streams.popleft()
                stream.queued = False
                if not stream.closed and stream.frames and not stream.paused:
                    return stream
        return None

    def _turn(self, stream: IntakeStream) -> None:
        """Decide one slice of ``stream``'s oldest frame, put its answers on the outbox, queue the stream again."""
        room = self.max_pending_answers - stream.outbox.qsize()
        if room <= 0:
            self._pause(stream)
            return
        frame = stream.frames[0]
        if frame.whole:
            chunk = frame.signals
        else:
            size = min(self._sizer.size(), room)
            chunk = frame.signals[frame.start : frame.start + size]
        began = time.perf_counter()
        try:
            decisions = self._decide(chunk, stream.principal)
        except Exception as exc:  # the signal path answers its own failures in-band; this is a bug in the intake
            log.exception("[OPS] intake of strategy %s failed; its stream ends", stream.principal.name)
            stream.failure = exc
            self.close(stream)
            return
        if not frame.whole:
            self._sizer.observe(len(chunk), time.perf_counter() - began)
        for decision in decisions:
            stream.outbox.put_nowait(decision)  # room was checked: the outbox never refuses an answer
        frame.start += len(chunk)
        self._add_pending(-len(chunk))
        if frame.whole or frame.start >= len(frame.signals):
            stream.frames.popleft()
            stream._progressed()
        if stream.frames:
            if stream.outbox.qsize() >= self.max_pending_answers:
                self._pause(stream)
            else:
                self._old.append(stream)
                stream.queued = True

    def _pause(self, stream: IntakeStream) -> None:
        stream.paused = True
        self._set_paused(1)
        name = stream.principal.name
        self._metrics.stream_pauses.labels(name).inc()
        held = self._pause_log.note(name)
        if held is not None:
            log.warning(
                "[OPS] signal stream of strategy %s paused: %d answers wait to be sent (it is not reading them); "
                "%d pause(s) of its streams in the last %g s",
                name,
                stream.outbox.qsize(),
                held,
                PAUSE_LOG_SECONDS,
            )

    def _set_paused(self, delta: int) -> None:
        self._paused += delta
        self._metrics.streams_paused.set(self._paused)

    def _add_pending(self, delta: int) -> None:
        self._pending += delta
        self._metrics.intake_pending.set(self._pending)
