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

While another stream without a backlog is **active** (a frame of it decided within ``ACTIVE_SECONDS``), the
streams with a backlog are **held back** to ``backlog_share`` of ops' deciding time, together: after a slice that
took *d* seconds the next backlogged slice waits until *d* / ``backlog_share`` seconds after that one began. The
sparse stream's own frames never wait for that; a flood's cost to the host (deciding, its orders in the engine,
its answers, its frames) shrinks to that share while a neighbour trades, whatever the flooder's client window
hides of its not reading. A stream alone, or streams that all have a backlog, are never held back.

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
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from typing import Protocol

from prometheus_client import Counter

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
"""A strategy's pause and hold warnings are logged at most once per this many seconds (the others are counted in)."""
BACKLOG_SHARE = 0.1
"""Default of ``stream_backlog_share``: the fraction of ops' deciding time (0-1] the streams with a backlog get,
together, while another stream without one is active (1: never held back)."""
ACTIVE_SECONDS = 1.0
"""A stream without a backlog counts as active for this long after a frame of it was decided (seconds)."""

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
        self.held = False  # has a backlog while another stream is active: decided at most at the backlog share
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
        metrics: where ``signal_stream_pauses_total``, ``signal_streams_paused``, ``signal_stream_holds_total`` and
            ``intake_pending_signals`` go.
        sizer: slice sizes from the measured cost per signal.
        backlog_share: the fraction of deciding time (0-1] the streams with a backlog get while another is active.
        clock: seconds (a slice's duration, and when the next backlogged slice may start).
    """

    def __init__(
        self,
        decide: Decide,
        *,
        max_pending_answers: int = MAX_PENDING_ANSWERS,
        metrics: OpsMetrics,
        sizer: SliceSizer | None = None,
        backlog_share: float = BACKLOG_SHARE,
        clock: Callable[[], float] | None = None,
    ) -> None:
        if max_pending_answers < 1:
            raise ValueError("max_pending_answers must be at least 1")
        if not 0.0 < backlog_share <= 1.0:
            raise ValueError("backlog_share must be in (0, 1]")
        self._decide = decide
        self.max_pending_answers = max_pending_answers
        self._resume_at = max_pending_answers // 2
        self._sizer = sizer or SliceSizer()
        self._metrics = metrics
        self._new: deque[IntakeStream] = deque()  # streams that had nothing waiting: served first
        self._old: deque[IntakeStream] = deque()  # streams with a backlog: round-robin
        self._held: list[IntakeStream] = []  # backlogged streams waiting for the backlog's next share, in turn order
        self._sparse: OrderedDict[IntakeStream, float] = OrderedDict()  # no backlog: when a frame was last decided
        self.backlog_share = backlog_share
        self._clock = clock or time.perf_counter
        self._backlog_at = 0.0  # clock time before which no held-back slice starts
        self._wake = asyncio.Event()  # set when work arrives while the worker waits for the backlog's share
        self._waiting = False
        self._worker: asyncio.Task[None] | None = None
        self._open: set[IntakeStream] = set()
        self._pending = 0
        self._paused = 0
        self._pause_log = LogThrottle(PAUSE_LOG_SECONDS)
        self._hold_log = LogThrottle(PAUSE_LOG_SECONDS)

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
        self._sparse[stream] = self._clock()  # nothing was waiting: an active stream without a backlog
        self._sparse.move_to_end(stream)
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
                self._backlogged(stream)
                self._start_worker()

    def close(self, stream: IntakeStream) -> None:
        """The stream ended: its undecided frames are dropped (their client never got an answer for them)."""
        if stream.closed:
            return
        stream.closed = True
        self._open.discard(stream)
        self._sparse.pop(stream, None)
        stream.held = False
        self._add_pending(-stream.undecided)
        stream.frames.clear()
        if stream.paused:
            stream.paused = False
            self._set_paused(-1)
        stream._progressed()  # a reader waiting in submit() or finish() returns

    # -- the worker ------------------------------------------------------------------------

    @property
    def busy(self) -> bool:
        """True while slices are scheduled: more decisions (and their orders) follow in the next loop turns (not
        while the backlogged streams wait for their share)."""
        return self._worker is not None and not self._waiting

    @property
    def pending_signals(self) -> int:
        """Signals read from every stream and not yet decided."""
        return self._pending

    def _start_worker(self) -> None:
        if self._worker is None:
            self._worker = asyncio.get_running_loop().create_task(self._run(), name="fair-intake")
        elif self._waiting:
            self._wake.set()  # a new stream's frame (or a resumed stream) is not kept waiting for the backlog's share

    async def _run(self) -> None:
        """Slices, one turn at a time, while any stream has work; the event loop is yielded after every slice, and
        while every stream with work is held back the worker waits for the backlog's next share."""
        try:
            while True:
                stream = self._next()
                if stream is None:
                    if not self._held:
                        return
                    await self._wait_until(self._backlog_at)
                    self._old.extendleft(reversed(self._held))  # their turns again, in the order they had
                    self._held.clear()
                    continue
                held, began = stream.held, self._clock()
                self._turn(stream)
                if held:  # the next backlogged slice starts no sooner than the backlog's share allows
                    self._backlog_at = began + (self._clock() - began) / self.backlog_share
                await asyncio.sleep(0)
        finally:
            self._worker = None

    async def _wait_until(self, at: float) -> None:
        delay = at - self._clock()
        if delay <= 0.0:
            return
        self._waiting = True
        self._wake.clear()
        timer = asyncio.get_running_loop().call_later(delay, self._wake.set)
        try:
            await self._wake.wait()
        finally:
            timer.cancel()
            self._waiting = False

    def _next(self) -> IntakeStream | None:
        """The stream whose turn it is: new streams first, then the backlogged ones in turn, but a backlogged one only
        within its share while another stream is active (else it joins the held ones); None when none may go now."""
        while self._new:
            stream = self._new.popleft()
            stream.queued = False
            if not stream.closed and stream.frames and not stream.paused:
                return stream
        now = self._clock()
        while self._old:
            stream = self._old.popleft()
            stream.queued = False
            if stream.closed or not stream.frames or stream.paused:
                continue
            if self.backlog_share >= 1.0 or not self._other_active(stream, now):
                stream.held = False
                return stream
            if not stream.held:
                self._hold(stream)
            if now >= self._backlog_at:
                return stream
            self._held.append(stream)
            stream.queued = True
        return None

    def _other_active(self, stream: IntakeStream, now: float) -> bool:
        """Whether a stream other than ``stream`` had a frame decided without a backlog in the last ACTIVE_SECONDS."""
        sparse = self._sparse
        while sparse:
            oldest, at = next(iter(sparse.items()))
            if at >= now - ACTIVE_SECONDS:
                break
            del sparse[oldest]
        return any(other is not stream for other, _ in zip(reversed(sparse), range(2), strict=False))

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
        began = self._clock()
        try:
            decisions = self._decide(chunk, stream.principal)
        except Exception as exc:  # the signal path answers its own failures in-band; this is a bug in the intake
            log.exception("[OPS] intake of strategy %s failed; its stream ends", stream.principal.name)
            stream.failure = exc
            self.close(stream)
            return
        if not frame.whole:
            self._sizer.observe(len(chunk), self._clock() - began)
        for decision in decisions:
            stream.outbox.put_nowait(decision)  # room was checked: the outbox never refuses an answer
        frame.start += len(chunk)
        self._add_pending(-len(chunk))
        if frame.whole or frame.start >= len(frame.signals):
            stream.frames.popleft()
            stream._progressed()
        if not stream.frames:
            stream.held = False  # no backlog left: its next frame is a new stream's
        elif stream.outbox.qsize() >= self.max_pending_answers:
            self._pause(stream)
        else:
            self._backlogged(stream)

    def _backlogged(self, stream: IntakeStream) -> None:
        """Queue ``stream`` for a turn among the streams with a backlog (it no longer counts as active without one)."""
        self._sparse.pop(stream, None)
        self._old.append(stream)
        stream.queued = True

    def _hold(self, stream: IntakeStream) -> None:
        stream.held = True
        what = "held back: it has a backlog while another stream is active, so those get %g%% of ops' deciding time"
        self._warn(stream, self._hold_log, self._metrics.stream_holds, "hold", what, self.backlog_share * 100)

    def _pause(self, stream: IntakeStream) -> None:
        stream.paused = True
        self._set_paused(1)
        what = "paused: %d answers wait to be sent (it is not reading them)"
        self._warn(stream, self._pause_log, self._metrics.stream_pauses, "pause", what, stream.outbox.qsize())

    def _warn(
        self, stream: IntakeStream, throttle: LogThrottle, counter: Counter, kind: str, what: str, *args: object
    ) -> None:
        """Count a decision about ``stream`` in ``counter`` and log it (one line per strategy per PAUSE_LOG_SECONDS)."""
        name = stream.principal.name
        counter.labels(name).inc()
        count = throttle.note(name)
        if count is not None:
            log.warning(
                "[OPS] signal stream of strategy %s %s; %d %s(s) of its streams in the last %g s",
                name,
                what % args,
                count,
                kind,
                PAUSE_LOG_SECONDS,
            )

    def _set_paused(self, delta: int) -> None:
        self._paused += delta
        self._metrics.streams_paused.set(self._paused)

    def _add_pending(self, delta: int) -> None:
        self._pending += delta
        self._metrics.intake_pending.set(self._pending)
