"""The ops side of the ops->engine link: one long-lived StreamOrders session.

- One writer: commands are queued (bounded) and sent in batched frames.
- Reconnect with exponential backoff and jitter when the stream drops, capped low (``backoff_max``, 0.25 s) and on a
  channel whose own reconnect backoff is capped at 0.5 s (``nautilus_mesh.serving.CHANNEL_OPTIONS``), so ops is back
  within a second of the engine being ready, whatever the outage length.
- ``available`` (order stream connected and quote stream live) is what the signal path checks: while it is false,
  signals are refused with ``ENGINE_UNAVAILABLE`` instead of failing later on a stale mark.
- After every (re)connect, reconcile: page through ``ListExecutions(since_seq)`` from the
  last applied seq, so reports missed while disconnected are applied; the report handler
  applies each seq exactly once (see ``ReportCursor``).
- Quotes: a ``StreamQuotes`` subscription feeds marks, reconnecting the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import KW_ONLY, InitVar, dataclass

import grpc

from nautilus_mesh.api.common.v1 import common_pb2
from nautilus_mesh.api.engine.v1 import engine_pb2, engine_pb2_grpc
from nautilus_mesh.auth import ENGINE_TOKEN_HEADER, SESSION_ID_HEADER
from nautilus_mesh.backoff import Backoff
from nautilus_mesh.clock import REAL_CLOCK, Clock
from nautilus_mesh.errors import UnavailableError
from nautilus_mesh.serving import CHANNEL_OPTIONS
from nautilus_mesh.status import from_rpc_error
from nautilus_mesh.telemetry import frame_received
from nautilus_mesh.tls import ClientTls, open_channel
from ops_server.intake import SliceSizer

log = logging.getLogger(__name__)

ReportHandler = Callable[[Sequence[engine_pb2.ExecutionReport]], None]
QuoteHandler = Callable[[Sequence[common_pb2.Quote]], None]

_STOP = object()

DEFAULT_COMMANDS_PER_FRAME = 1000
"""Commands per StreamOrders frame until the engine says its own bound (an engine without the field)."""
SETTLE_SECONDS = 0.02
"""The longest a command waits for the rest of its burst before its frame is cut, seconds: about the time ops takes
to decide a frame of 100 signals with their paper twins, so such a frame leaves as one commands frame, while a flood
of frames from many streams still sends every 20 ms."""


class ReportCursor:
    """Exactly-once application of engine reports by ``seq``.

    ``watermark`` is the highest seq W such that every report <= W has been seen; seqs above
    it that were applied out of order are remembered until the watermark passes them. A
    reconciliation page from ``ListExecutions`` is complete up to its last seq, so it moves
    the watermark past gaps left by other sessions' reports.
    """

    def __init__(self, watermark: int = 0) -> None:
        self.watermark = watermark
        self._above: set[int] = set()

    def seen(self, seq: int) -> bool:
        return seq <= self.watermark or seq in self._above

    def mark(self, seq: int) -> None:
        if seq <= self.watermark:
            return
        self._above.add(seq)
        while self.watermark + 1 in self._above:
            self.watermark += 1
            self._above.discard(self.watermark)

    def complete_up_to(self, seq: int) -> None:
        """Every report <= seq has been seen (after a complete reconciliation fetch)."""
        if seq > self.watermark:
            self.watermark = seq
            self._above = {s for s in self._above if s > seq}

    @property
    def highest(self) -> int:
        return max(self._above, default=self.watermark)

    def state(self) -> dict[str, object]:
        """The cursor as a JSON-able dict (the journal snapshot keeps it)."""
        return {"watermark": self.watermark, "above": sorted(self._above)}

    def restore(self, state: dict[str, object]) -> None:
        """Put back what :meth:`state` returned."""
        self.watermark = int(state["watermark"])  # type: ignore[call-overload]
        self._above = {int(s) for s in state["above"]}  # type: ignore[attr-defined]


REPORT_SLICE_MAX = 256
"""Most engine reports applied in one turn of the event loop (count)."""


async def apply_in_slices(
    reports: Sequence[engine_pb2.ExecutionReport],
    on_reports: Callable[[Sequence[engine_pb2.ExecutionReport]], None],
    sizer: SliceSizer,
) -> None:
    """Apply a frame of reports in slices of about a millisecond of work, yielding the event loop between them.

    A large frame (the reports of a busy strategy's orders) would otherwise hold the loop for its whole length and
    every stream's next turn with it. Each slice is journaled and then applied before the loop is yielded, so what
    memory holds always matches the journal between slices.
    """
    start = 0
    while start < len(reports):
        if start:
            await asyncio.sleep(0)
        size = sizer.size()
        began = time.perf_counter()
        part = reports[start : start + size]
        on_reports(part)
        sizer.observe(len(part), time.perf_counter() - began)
        start += size


@dataclass(eq=False, repr=False)
class EngineLink:
    """Keeps the order stream and quote stream to the engine alive.

    Args:
        address: engine host:port.
        token: ops' engine token (``x-engine-token``).
        on_reports: called on the event loop with each batch of reports (from the stream or
            from reconciliation); it must deduplicate by seq (``ReportCursor``).
        on_quotes: called with each batch of quotes.
        cursor: the ReportCursor whose watermark reconciliation starts from.
        on_connected: called after each successful (re)connect and reconciliation.
        queue_size: bound of the outgoing command queue.
        tls: CA (and client certificate for mutual TLS) to dial the engine with; None dials plaintext.
        clock: monotonic time of link state changes and quotes.
    """

    address: str
    token: str
    on_reports: ReportHandler
    on_quotes: QuoteHandler
    cursor: ReportCursor
    _: KW_ONLY
    on_connected: Callable[[], None] | None = None
    queue_size: InitVar[int] = 10_000
    backoff_initial: float = 0.05
    backoff_max: float = 0.25
    tls: ClientTls | None = None
    clock: Clock = REAL_CLOCK

    def __post_init__(self, queue_size: int) -> None:
        self._report_slices = SliceSizer(most=REPORT_SLICE_MAX)
        self._queue: asyncio.Queue[object] = asyncio.Queue(maxsize=queue_size)
        self._channel: grpc.aio.Channel | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._connected = asyncio.Event()
        self._stopping = False
        self.session_id = f"ops-{uuid.uuid4().hex[:12]}"
        self.reconnects = 0
        self.history_skips = 0
        """Reconciliations that started at the engine's oldest retained report (this ops had applied none)."""
        self._unsent: list[engine_pb2.OrderCommand] = []
        self.instruments: dict[str, list[engine_pb2.InstrumentInfo]] = {}
        """Venue name -> the instruments it lists (lot, minimum quantity, tick), as of the last connect."""
        self.venue_kinds: dict[str, str] = {}
        """Venue name -> kind ("live" or "paper"), as the engine lists them."""
        self.max_commands_per_frame = DEFAULT_COMMANDS_PER_FRAME
        """The engine's bound on commands per StreamOrders frame (from ListVenues)."""
        self.more_coming: Callable[[], bool] = lambda: False
        """True while the signal path has more slices scheduled (set by the intake): the writer waits for them."""
        self.state_since = self.clock.monotonic()
        """Monotonic time of the last change of ``connected``."""
        self._quotes_live = False
        self.last_quote_at: float | None = None
        """Monotonic time of the last quote frame."""
        self.quote_times: dict[str, float] = {}
        """Monotonic time of the last quote per instrument (mark freshness)."""

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def quotes_live(self) -> bool:
        """True while the quote stream is up and has delivered its snapshot."""
        return self._quotes_live

    @property
    def available(self) -> bool:
        """True when signals can be traded: order stream connected and quotes flowing."""
        return self._connected.is_set() and self._quotes_live

    def _metadata(self) -> tuple[tuple[str, str], ...]:
        return ((ENGINE_TOKEN_HEADER, self.token), (SESSION_ID_HEADER, self.session_id))

    async def start(self) -> None:
        self._channel = open_channel(self.address, self.tls, CHANNEL_OPTIONS)
        self.stub = engine_pb2_grpc.EngineServiceStub(self._channel)
        self.market = engine_pb2_grpc.MarketDataServiceStub(self._channel)
        self._tasks = [
            asyncio.create_task(self._order_loop(), name="engine-link-orders"),
            asyncio.create_task(self._quote_loop(), name="engine-link-quotes"),
        ]

    async def stop(self) -> None:
        self._stopping = True
        with contextlib.suppress(asyncio.QueueFull):
            self._queue.put_nowait(_STOP)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._channel is not None:
            await self._channel.close(None)

    def ready_to_send(self) -> bool:
        """True when connected and the outgoing queue has room."""
        return self.has_room(1)

    def has_room(self, commands: int) -> bool:
        """True when connected and the outgoing queue can take ``commands`` more commands."""
        return self._connected.is_set() and self._queue.qsize() + commands <= self._queue.maxsize

    def send(self, commands: Sequence[engine_pb2.OrderCommand]) -> None:
        """Queue commands for the engine.

        Raises:
            UnavailableError: not connected, or the queue is full (backpressure, not buffering forever).
        """
        if not self._connected.is_set():
            raise UnavailableError("ENGINE_UNAVAILABLE", "the engine link is down; the order was not sent")
        try:
            for command in commands:
                self._queue.put_nowait(command)
        except asyncio.QueueFull:
            raise UnavailableError("ENGINE_BACKPRESSURE", "the engine order queue is full") from None

    async def _write(self, call: grpc.aio.StreamStreamCall) -> None:  # type: ignore[type-arg]
        """The one writer of a stream attempt: batches queued commands into frames.

        A frame that could not be written is kept and sent first on the next attempt, so a
        command queued while a stream dies is not lost (the engine deduplicates a repeat).
        """
        while True:
            if not self._unsent:
                first = await self._queue.get()
                if first is _STOP:
                    await call.done_writing()
                    return
                self._unsent.append(first)  # type: ignore[arg-type]
            await self._settle()
            while not self._queue.empty() and len(self._unsent) < self.max_commands_per_frame:
                item = self._queue.get_nowait()
                if item is _STOP:
                    await call.write(engine_pb2.StreamOrdersRequest(commands=self._unsent))
                    self._unsent = []
                    await call.done_writing()
                    return
                self._unsent.append(item)  # type: ignore[arg-type]
            await call.write(engine_pb2.StreamOrdersRequest(commands=self._unsent))
            self._unsent = []

    async def _settle(self) -> None:
        """Let the signal path finish the burst it is deciding before a frame is cut: it yields the loop between the
        slices of a frame (and other streams take turns), so cutting at once sends a frame per slice, each with its
        own engine round (execute, journal, reports). This waits one loop turn at a time, only while the queue keeps
        growing or :attr:`more_coming` says slices are still scheduled, the frame is not full and the first command
        has waited less than ``SETTLE_SECONDS``: no timer, and a lone command leaves after a single turn."""
        seen, started = -1, time.perf_counter()
        while (
            (seen != self._queue.qsize() or self.more_coming())
            and self._queue.qsize() + len(self._unsent) < self.max_commands_per_frame
            and time.perf_counter() - started < SETTLE_SECONDS
        ):
            seen = self._queue.qsize()
            await asyncio.sleep(0)

    async def _order_loop(self) -> None:
        backoff = Backoff(self.backoff_initial, self.backoff_max)
        while not self._stopping:
            call = self.stub.StreamOrders(metadata=self._metadata())  # type: ignore[call-arg]
            writer: asyncio.Task[None] | None = None
            try:
                await call.wait_for_connection()
                await self._load_venues()
                await self.reconcile()
                writer = asyncio.create_task(self._write(call), name="engine-link-writer")
                self._connected.set()
                self.state_since = self.clock.monotonic()
                log.info("[ENGINE-LINK] connected to %s (session %s)", self.address, self.session_id)
                if self.on_connected is not None:
                    self.on_connected()
                backoff.reset()
                async for frame in call:
                    frame_received()
                    await apply_in_slices(frame.reports, self.on_reports, self._report_slices)
                if self._stopping:
                    return
                log.warning("[ENGINE-LINK] order stream ended by the engine")
            except asyncio.CancelledError:
                call.cancel()
                raise
            except grpc.aio.AioRpcError as exc:
                if exc.code() in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
                    log.error("[ENGINE-LINK] engine refused ops' credentials: %s", exc.details())
                else:
                    log.warning("[ENGINE-LINK] order stream failed: %s %s", exc.code().name, exc.details())
            finally:
                if self._connected.is_set():
                    self._connected.clear()
                    self.state_since = self.clock.monotonic()
                    log.warning("[ENGINE-LINK] link to %s down; signals answer ENGINE_UNAVAILABLE", self.address)
                if writer is not None:
                    writer.cancel()
                    with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError, Exception):
                        await writer
                call.cancel()
            self.reconnects += 1
            await self._pause(backoff.next_delay())

    async def _pause(self, seconds: float) -> None:
        """Wait ``seconds`` before the next attempt, or less: until the channel changes state.

        The channel retries the connection on its own backoff (<= 0.5 s); a failed call leaves it in
        TRANSIENT_FAILURE, and its next state change (CONNECTING, on its own retry) is the moment to try again:
        a call made while it connects waits for the outcome, so the stream opens as soon as the engine accepts.
        """
        assert self._channel is not None
        state = self._channel.get_state(try_to_connect=True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._channel.wait_for_state_change(state), seconds)

    async def _load_venues(self) -> None:
        response = await self.stub.ListVenues(engine_pb2.ListVenuesRequest(), metadata=self._metadata(), timeout=5)
        if response.max_commands_per_frame:
            self.max_commands_per_frame = response.max_commands_per_frame
        self.learn_venues(response.venues)

    def learn_venues(self, venues: Sequence[engine_pb2.VenueInfo]) -> None:
        """Take the venues the engine lists now, replacing what an earlier connect listed: an engine restarted with
        other venues or instrument rules (a new lot size) is sized against the new ones."""
        self.venue_kinds = {venue.name: venue.kind for venue in venues}
        self.instruments = {venue.name: list(venue.instrument_specs) for venue in venues}

    async def reconcile(self) -> int:
        """Fetch and apply every report after the cursor's watermark; returns how many were fetched."""
        fetched = 0
        since = self.cursor.watermark
        token = ""
        while True:
            try:
                page = await self.stub.ListExecutions(
                    engine_pb2.ListExecutionsRequest(since_seq=since, page_size=1000, page_token=token),
                    metadata=self._metadata(),
                    timeout=10,
                )
            except grpc.aio.AioRpcError as exc:
                since = self._start_of_retention(exc, since, token)
                continue
            fetched += len(page.reports)
            if page.reports:
                frame_received()
                self.on_reports(page.reports)
            if not page.next_page_token:
                self.cursor.complete_up_to(max([since, *[r.seq for r in page.reports]]))
                break
            token = page.next_page_token
        if fetched:
            log.info("[ENGINE-LINK] reconciled %d report(s) after seq %d", fetched, since)
        return fetched

    def _start_of_retention(self, exc: grpc.aio.AioRpcError, since: int, token: str) -> int:
        """Where an ops that has applied no report yet starts when the engine let its oldest reports go.

        Its cursor is 0 (a new worker, or fresh state): no report before the engine's oldest can concern an order it
        knows, so it starts at the oldest available one. Any other cursor re-raises: ops must not skip reports.
        """
        detail = from_rpc_error(exc) if exc.code() == grpc.StatusCode.OUT_OF_RANGE else None
        oldest = detail.details.get("oldest_available_seq", "") if detail is not None else ""
        if since != 0 or token or not oldest.isdigit() or detail is None or detail.code != "EXECUTIONS_PAST_RETENTION":
            raise exc
        self.history_skips += 1
        log.warning(
            "[ENGINE-LINK] the engine keeps reports from seq %s on and this ops has applied none: reconciling from it",
            oldest,
        )
        return int(oldest) - 1

    async def cancel_all(self, venue: str = "", model_id: str = "") -> engine_pb2.CancelAllOrdersResponse:
        response: engine_pb2.CancelAllOrdersResponse = await self.stub.CancelAllOrders(
            engine_pb2.CancelAllOrdersRequest(venue=venue, model_id=model_id), metadata=self._metadata(), timeout=10
        )
        return response

    async def _quote_loop(self) -> None:
        backoff = Backoff(self.backoff_initial, self.backoff_max)
        while not self._stopping:
            try:
                call = self.market.StreamQuotes(engine_pb2.StreamQuotesRequest(), metadata=self._metadata())
                async for frame in call:
                    backoff.reset()
                    self.on_quotes(frame.quotes)
                    self.last_quote_at = now = self.clock.monotonic()
                    for quote in frame.quotes:
                        self.quote_times[quote.instrument] = now
                    self._quotes_live = True
            except asyncio.CancelledError:
                raise
            except grpc.aio.AioRpcError as exc:
                log.debug("[ENGINE-LINK] quote stream failed: %s", exc.code().name)
            finally:
                self._quotes_live = False
            await self._pause(backoff.next_delay())
