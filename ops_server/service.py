"""``nautilus.ops.v1.OpsService``: strategies' entry point, a thin face over the signal path and the read views.

Every call needs a strategy token; the read RPCs also take the admin token (``x-ops-token``) instead. A strategy
token reads its own models and strategies only, the admin token reads everything (see
:class:`~ops_server.queries.Scope`). A bad item in a stream is answered in-band and the stream stays open; an
unexpected failure is logged with the stream and the item, answered in-band with ``INTERNAL``, and the stream goes
on (or, when the stream itself breaks, ends with a non-OK status, never with OK). The frames of every signal stream
are decided by one :class:`~ops_server.fair_intake.FairIntake`: turns of one slice, new streams first, and a
stream whose answers are not being read is paused.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import grpc
from google.protobuf import struct_pb2

from nautilus_mesh.api.ops.v1 import ops_pb2, ops_pb2_grpc
from nautilus_mesh.auth import ADMIN_TOKEN_HEADER, Principal, StrategyAuthenticator, metadata_value, require_token
from nautilus_mesh.errors import MeshError, ValidationError
from nautilus_mesh.status import abort, error_detail, error_from_detail
from nautilus_mesh.telemetry import frame_received
from ops_server import wire
from ops_server.events import OpsEvent
from ops_server.execution_feedback import ExecutionFeedback
from ops_server.fair_intake import BACKLOG_SHARE, MAX_PENDING_ANSWERS, FairIntake
from ops_server.intake import StrategyIntake
from ops_server.metrics import OpsMetrics
from ops_server.queries import EVERYTHING, OpsQueries, Scope
from ops_server.sharding import WORKER_HEADER, ShardMap
from ops_server.signal_path import SignalPath

log = logging.getLogger(__name__)

T = TypeVar("T")
Context = grpc.aio.ServicerContext[object, object]
Outgoing = ops_pb2.SignalDecision | ops_pb2.Fill | None

EVENTS_PER_FRAME = 500
INTERNAL_CODE = "INTERNAL"
MAX_RESPONSE_BYTES = 1 << 20
"""A response frame is closed once its items reach this many bytes (clients' default receive limit is 4 MiB)."""


class _StreamOutbox(asyncio.Queue[Outgoing]):
    """A stream's outgoing queue that remembers the seqs of the fills put on it until its first frame was read (so a
    resume sends none twice); after that it remembers nothing, so a long-lived stream holds no growing set."""

    def __init__(self, maxsize: int) -> None:
        super().__init__(maxsize)
        self.fill_seqs: set[int] | None = set()

    def put_nowait(self, item: Outgoing) -> None:
        super().put_nowait(item)
        if self.fill_seqs is not None and isinstance(item, ops_pb2.Fill):
            self.fill_seqs.add(item.seq)

    def stop_remembering(self) -> None:
        self.fill_seqs = None


def internal_decision(signal: ops_pb2.Signal) -> ops_pb2.SignalDecision:
    """The in-band answer to a signal whose handling failed unexpectedly."""
    error = MeshError(INTERNAL_CODE, "ops failed to decide this signal; it was not traded (see the ops log)")
    return ops_pb2.SignalDecision(
        signal_id=signal.signal_id,
        model_id=signal.model_id,
        status=ops_pb2.DECISION_STATUS_REJECTED,
        error=error_detail(error),
    )


@dataclass(eq=False, repr=False, kw_only=True)
class OpsService(ops_pb2_grpc.OpsServiceServicer):
    """Strategies' entry point.

    Args:
        auth: strategy tokens and the models each may signal for.
        signals: the signal path.
        fills: where a stream subscribes to its models' fills.
        queries: the read views.
        admin_token: the operator's token; it may read everything ("" closes that door).
        intake: the per-strategy signal rate at intake (None: no limit).
        max_signals_per_frame: the most signals one ``StreamSignalsRequest`` may carry.
        stream_queue_size: bound of each stream's outgoing queue (decisions and fills; fills beyond it are dropped).
        stream_max_pending_answers: answers of a stream waiting to be sent at which it is paused (count).
        stream_backlog_share: fraction of deciding time the streams with a backlog get while another is active.
        metrics: where the intake counts pauses and pending signals (None: a registry of its own, for tests).
        shards: which ops worker owns which strategy (None: one worker owns them all).
    """

    auth: StrategyAuthenticator
    signals: SignalPath
    fills: ExecutionFeedback
    queries: OpsQueries
    max_signals_per_frame: int
    admin_token: str = ""
    intake: StrategyIntake | None = None
    stream_queue_size: int = 10_000
    stream_max_pending_answers: int = MAX_PENDING_ANSWERS
    stream_backlog_share: float = BACKLOG_SHARE
    metrics: OpsMetrics | None = None
    shards: ShardMap | None = None

    def __post_init__(self) -> None:
        self.fair = FairIntake(
            self._decide_frame,
            max_pending_answers=self.stream_max_pending_answers,
            backlog_share=self.stream_backlog_share,
            metrics=self.metrics or OpsMetrics(),
        )
        self.signals.set_burst_hint(lambda: self.fair.busy)

    async def _principal(self, context: Context) -> Principal:
        try:
            return self.auth.authenticate(context.invocation_metadata())
        except MeshError as exc:
            await abort(context, exc)

    async def _read(self, context: Context, answer: Callable[[Scope], T]) -> T:
        """A read RPC's answer for the caller's scope; a refusal becomes the RPC's status."""
        scope = await self._scope(context)
        try:
            return answer(scope)
        except MeshError as exc:
            await abort(context, exc)

    async def _owned_principal(self, context: Context) -> Principal:
        """The caller, refused with ``WRONG_SHARD`` when another ops worker owns its strategy."""
        principal = await self._principal(context)
        if self.shards is not None:
            try:
                self.shards.check(principal.name)
            except MeshError as exc:
                await abort(context, exc)
        return principal

    async def _scope(self, context: Context) -> Scope:
        """The caller's read scope: everything with the admin token, else the strategy token's own models."""
        metadata = context.invocation_metadata()
        try:
            if metadata_value(metadata, ADMIN_TOKEN_HEADER):
                require_token(metadata, ADMIN_TOKEN_HEADER, self.admin_token, door="admin")
                return EVERYTHING
            return self.queries.scope_of(self.auth.authenticate(metadata))
        except MeshError as exc:
            await abort(context, exc)

    def _decide_frame(self, signals: Sequence[ops_pb2.Signal], principal: Principal) -> list[ops_pb2.SignalDecision]:
        if len(signals) > self.max_signals_per_frame:
            error = ValidationError(
                "FRAME_TOO_LARGE",
                f"a frame carries at most {self.max_signals_per_frame} signals, got {len(signals)}",
                {"max": self.max_signals_per_frame, "got": len(signals)},
                field="signals",
            )
            return [ops_pb2.SignalDecision(status=ops_pb2.DECISION_STATUS_REJECTED, error=error_detail(error))]
        if self.intake is not None and self.intake.limited:
            repeats = [self.signals.is_duplicate(s, principal) for s in signals]  # answered DUPLICATE, no token
            fresh = len(signals) - sum(repeats)
            admitted = self.intake.admit(principal.name, fresh)
            if admitted < fresh:
                return self._decide_over_rate(signals, repeats, admitted, principal)
        return self._handle(signals, principal)

    def _decide_over_rate(
        self, signals: Sequence[ops_pb2.Signal], repeats: Sequence[bool], admitted: int, principal: Principal
    ) -> list[ops_pb2.SignalDecision]:
        """A duplicate of a signal already decided is answered ``DUPLICATE`` as always (it took no token); of the
        others, the first ``admitted`` are decided and the rest answered ``RATE_LIMITED``. Answers stay in signal
        order."""
        assert self.intake is not None
        handled: list[ops_pb2.Signal] = []
        refused: dict[int, ops_pb2.SignalDecision] = {}
        for index, (signal, repeat) in enumerate(zip(signals, repeats, strict=True)):
            if repeat or admitted > 0:
                handled.append(signal)
                admitted -= 0 if repeat else 1
            else:
                refused[index] = self.intake.refusal(signal, principal.name)
        self.intake.refused(principal.name, len(refused))
        decided = iter(self._handle(handled, principal))
        return [refused[i] if i in refused else next(decided) for i in range(len(signals))]

    def _handle(self, signals: Sequence[ops_pb2.Signal], principal: Principal) -> list[ops_pb2.SignalDecision]:
        try:
            return self.signals.handle_frame(signals, principal)
        except Exception:
            ids = ", ".join(repr(s.signal_id) for s in signals[:5])
            log.exception("[OPS] stream of strategy %s: deciding signals %s failed", principal.name, ids)
            return [internal_decision(s) for s in signals]

    async def StreamSignals(
        self, request_iterator: AsyncIterator[ops_pb2.StreamSignalsRequest], context: Context
    ) -> AsyncIterator[ops_pb2.StreamSignalsResponse]:
        principal = await self._owned_principal(context)
        # Accepted: say so at once (clients wait for it before writing, so a refused stream loses no signal).
        await context.send_initial_metadata(((WORKER_HEADER, str(self.shards.index if self.shards else 0)),))
        outbox = _StreamOutbox(max(self.stream_queue_size, self.stream_max_pending_answers))
        self.fills.subscribe(principal.models, outbox)  # type: ignore[arg-type]
        stream = self.fair.open(principal, outbox)
        log.info("[OPS] signal stream opened by strategy %s", principal.name)
        failure: list[BaseException] = []

        async def read() -> None:
            try:
                async for frame in request_iterator:
                    frame_received()
                    if outbox.fill_seqs is not None:  # the stream's first frame: the only one that may resume
                        if frame.resume_after_fill_seq or frame.resume_fills:
                            self._resume_fills(frame.resume_after_fill_seq, principal, outbox)
                        outbox.stop_remembering()
                    # Queued for its turn; waits while two frames of this stream are undecided or the stream is
                    # paused (its answers not being read), so nothing more is read from it (backpressure).
                    whole = len(frame.signals) > self.max_signals_per_frame  # one FRAME_TOO_LARGE answer
                    await self.fair.submit(stream, frame.signals, whole=whole)
                await self.fair.finish(stream)  # every frame read is answered before the stream ends
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the stream itself broke: end it with a status, not with OK
                failure.append(exc)
                log.warning("[OPS] signal stream of strategy %s failed: %r", principal.name, exc)
            finally:
                await outbox.put(None)

        reader = asyncio.create_task(read())
        try:
            done = False
            while not done:
                item = await outbox.get()
                decisions: list[ops_pb2.SignalDecision] = []
                fills: list[ops_pb2.Fill] = []
                size = 0
                while True:
                    if item is None:
                        done = True
                    elif isinstance(item, ops_pb2.Fill):
                        fills.append(item)
                        size += item.ByteSize()
                    else:
                        decisions.append(item)
                        size += item.ByteSize()
                    full = len(decisions) + len(fills) >= self.max_signals_per_frame or size >= MAX_RESPONSE_BYTES
                    if outbox.empty() or full:
                        break
                    item = outbox.get_nowait()
                if decisions or fills:
                    yield ops_pb2.StreamSignalsResponse(decisions=decisions, fills=fills)  # returns once sent
                self.fair.sent(stream)  # a paused stream resumes once half its answers are sent
            if failure:
                await context.abort(grpc.StatusCode.INTERNAL, f"signal stream failed: {type(failure[0]).__name__}")
        finally:
            self.fair.close(stream)
            self.fills.unsubscribe(outbox)  # type: ignore[arg-type]
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
            log.info("[OPS] signal stream of strategy %s closed", principal.name)

    def _resume_fills(self, after_seq: int, principal: Principal, outbox: _StreamOutbox) -> None:
        """Put the fills this strategy missed (seq above ``after_seq``, not yet on this stream) on its stream, once."""
        delivered = outbox.fill_seqs or set()
        missed = [f for f in self.queries.fills_after(after_seq, principal.models) if f.seq not in delivered]
        for fill in missed:
            try:
                outbox.put_nowait(fill)
            except asyncio.QueueFull:
                log.warning("[OPS] stream of strategy %s: resume stopped, its queue is full", principal.name)
                break
        log.info(
            "[OPS] stream of strategy %s resumed after fill seq %d: %d fill(s) replayed",
            principal.name,
            after_seq,
            len(missed),
        )

    async def SubmitSignal(
        self, request: ops_pb2.SubmitSignalRequest, context: Context
    ) -> ops_pb2.SubmitSignalResponse:
        principal = await self._owned_principal(context)
        decision = self._decide_frame((request.signal,), principal)[0]
        if decision.status == ops_pb2.DECISION_STATUS_REJECTED or _repeats_a_refusal(decision):
            await abort(context, error_from_detail(decision.error))
        return ops_pb2.SubmitSignalResponse(decision=decision)

    async def GetPositions(
        self, request: ops_pb2.GetPositionsRequest, context: Context
    ) -> ops_pb2.GetPositionsResponse:
        return await self._read(
            context,
            lambda scope: ops_pb2.GetPositionsResponse(positions=self.queries.positions(request.model_id, scope)),
        )

    async def ListModels(self, request: ops_pb2.ListModelsRequest, context: Context) -> ops_pb2.ListModelsResponse:
        return await self._read(
            context, lambda scope: ops_pb2.ListModelsResponse(models=self.queries.models(request.strategy_id, scope))
        )

    async def GetAllocations(
        self, request: ops_pb2.GetAllocationsRequest, context: Context
    ) -> ops_pb2.GetAllocationsResponse:
        return await self._read(context, self.queries.allocations)

    async def GetModelQuota(
        self, request: ops_pb2.GetModelQuotaRequest, context: Context
    ) -> ops_pb2.GetModelQuotaResponse:
        return await self._read(context, lambda scope: self.queries.quota(request.model_id, scope))

    async def GetModelStats(
        self, request: ops_pb2.GetModelStatsRequest, context: Context
    ) -> ops_pb2.GetModelStatsResponse:
        return await self._read(context, lambda scope: self.queries.stats(request.model_id, scope))

    async def ListOrders(self, request: ops_pb2.ListOrdersRequest, context: Context) -> ops_pb2.ListOrdersResponse:
        page = await self._read(
            context, lambda scope: self.queries.orders(request.model_id, request.page_size, request.page_token, scope)
        )
        return ops_pb2.ListOrdersResponse(orders=page.items, next_page_token=page.next_page_token)

    async def ListFills(self, request: ops_pb2.ListFillsRequest, context: Context) -> ops_pb2.ListFillsResponse:
        page = await self._read(
            context, lambda scope: self.queries.fills(request.model_id, request.page_size, request.page_token, scope)
        )
        return ops_pb2.ListFillsResponse(fills=page.items, next_page_token=page.next_page_token)

    async def GetCanaryStatus(
        self, request: ops_pb2.GetCanaryStatusRequest, context: Context
    ) -> ops_pb2.GetCanaryStatusResponse:
        return await self._read(
            context,
            lambda scope: ops_pb2.GetCanaryStatusResponse(
                canaries=self.queries.canary_statuses(request.strategy_id, scope)
            ),
        )

    async def WatchEvents(
        self, request: ops_pb2.WatchEventsRequest, context: Context
    ) -> AsyncIterator[ops_pb2.WatchEventsResponse]:
        scope = await self._scope(context)
        kinds = frozenset(request.kinds)
        queue = self.queries.subscribe_events()

        def visible(events: list[OpsEvent]) -> list[ops_pb2.Event]:
            return wire.events((e for e in events if OpsQueries.event_visible(e, scope)), kinds)

        try:
            if request.include_recent:
                recent = visible(list(self.queries.recent_events()))
                if recent:
                    yield ops_pb2.WatchEventsResponse(events=recent)
            while True:
                batch = [await queue.get()]
                while not queue.empty() and len(batch) < EVENTS_PER_FRAME:
                    batch.append(queue.get_nowait())
                selected = visible(batch)
                if selected:
                    yield ops_pb2.WatchEventsResponse(events=selected)
        finally:
            self.queries.unsubscribe_events(queue)

    async def GetRiskLimits(
        self, request: ops_pb2.GetRiskLimitsRequest, context: Context
    ) -> ops_pb2.GetRiskLimitsResponse:
        scope = await self._scope(context)
        limits = struct_pb2.Struct()
        limits.update(self.queries.risk_limits(scope))
        return ops_pb2.GetRiskLimitsResponse(limits=limits)

    async def GetStreamLimits(
        self, request: ops_pb2.GetStreamLimitsRequest, context: Context
    ) -> ops_pb2.GetStreamLimitsResponse:
        await self._scope(context)
        return ops_pb2.GetStreamLimitsResponse(
            max_signals_per_frame=self.max_signals_per_frame, max_items_per_response=self.max_signals_per_frame
        )

    async def GetTradingState(
        self, request: ops_pb2.GetTradingStateRequest, context: Context
    ) -> ops_pb2.GetTradingStateResponse:
        return self.queries.trading_states(await self._scope(context))

    async def GetShardMap(self, request: ops_pb2.GetShardMapRequest, context: Context) -> ops_pb2.GetShardMapResponse:
        await self._scope(context)
        if self.shards is None:
            return ops_pb2.GetShardMapResponse(workers=1)
        return self.shards.describe()


def _repeats_a_refusal(decision: ops_pb2.SignalDecision) -> bool:
    """A DUPLICATE answer to a signal that was refused: it carries the refusal's error and no order (an accepted
    decision always names its order, also when a reduce-only clip left an error beside it)."""
    return (
        decision.status == ops_pb2.DECISION_STATUS_DUPLICATE
        and decision.HasField("error")
        and not decision.client_order_id
    )
