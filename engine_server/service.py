"""``nautilus.engine.v1.EngineService``: the gRPC face of the engine core (:mod:`engine_server.engine_core`; quotes:
:mod:`engine_server.market_data`): authenticate, map to and from the wire, and stream each session's reports."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator

import grpc

from engine_server import wire
from engine_server.engine_core import EngineCore
from engine_server.execution_report import STATUS_PB, write_order
from engine_server.health import EngineHealth
from nautilus_mesh.api.engine.v1 import engine_pb2, engine_pb2_grpc
from nautilus_mesh.auth import ENGINE_TOKEN_HEADER, SESSION_ID_HEADER, metadata_value, require_token
from nautilus_mesh.bounds import require_bounded
from nautilus_mesh.decimals import fmt
from nautilus_mesh.errors import MeshError, UnavailableError, ValidationError
from nautilus_mesh.health import HEALTH_PB
from nautilus_mesh.pagination import page_size, token_number
from nautilus_mesh.status import abort, error_detail
from nautilus_mesh.telemetry import frame_received

log = logging.getLogger(__name__)

Context = grpc.aio.ServicerContext[object, object]


class EngineService(engine_pb2_grpc.EngineServiceServicer):
    """Order entry for ops only (``x-engine-token``)."""

    def __init__(
        self,
        core: EngineCore,
        ops_token: str,
        *,
        max_commands_per_frame: int = 1000,
        health: EngineHealth | None = None,
    ) -> None:
        self.core = core
        self._token = ops_token
        self._max_commands = max_commands_per_frame
        self._health = health or EngineHealth(core)  # the server's, which also refreshes component_up

    async def GetHealth(self, request: engine_pb2.GetHealthRequest, context: Context) -> engine_pb2.GetHealthResponse:
        await self._authorize(context)
        status, checks = self._health.report()
        return engine_pb2.GetHealthResponse(status=HEALTH_PB[status], checks=[c.to_pb() for c in checks])

    async def _durable(self, context: Context) -> None:
        try:
            await self.core.durable()
        except MeshError as exc:  # JOURNAL_FSYNC_FAILED
            await abort(context, exc)

    async def _authorize(self, context: Context) -> None:
        try:
            require_token(context.invocation_metadata(), ENGINE_TOKEN_HEADER, self._token, door="engine order entry")
        except MeshError as exc:
            log.warning("[ENGINE] refused a call: %s", exc.code)
            await abort(context, exc)

    async def StreamOrders(
        self, request_iterator: AsyncIterator[engine_pb2.StreamOrdersRequest], context: Context
    ) -> AsyncIterator[engine_pb2.StreamOrdersResponse]:
        await self._authorize(context)
        core = self.core
        session_id = metadata_value(context.invocation_metadata(), SESSION_ID_HEADER) or f"s-{uuid.uuid4().hex[:12]}"
        old = core.sessions.get(session_id)
        if old is not None:  # a reconnect under the same id replaces the stale stream
            core.close_session(session_id)
        queue: asyncio.Queue[list[engine_pb2.ExecutionReport] | None] = asyncio.Queue(core.session_queue_size)
        core.sessions[session_id] = queue
        core.metrics.sessions.set(len(core.sessions))
        log.info("[ENGINE] order session %s opened", session_id)

        async def read() -> None:
            try:
                async for frame in request_iterator:
                    frame_received()
                    if len(frame.commands) > self._max_commands:
                        error = ValidationError(
                            "FRAME_TOO_LARGE",
                            f"a frame carries at most {self._max_commands} commands, got {len(frame.commands)}",
                            field="commands",
                        )
                        refused = engine_pb2.ExecutionReport(
                            exec_type=engine_pb2.EXEC_TYPE_REJECTED, error=error_detail(error)
                        )
                        core.answer(session_id, [refused])
                        continue
                    malformed = core.execute(frame.commands, session_id)
                    if malformed:
                        core.answer(session_id, malformed)
                # The client half-closed: what its frames made is sent before the stream ends (under group commit the
                # reports wait for their fsync), so a client that sends and then closes still reads every answer.
                with contextlib.suppress(UnavailableError):
                    await core.durable()
            finally:
                if core.sessions.get(session_id) is queue:
                    await queue.put(None)

        reader = asyncio.create_task(read())
        try:
            while True:
                frame = await queue.get()
                if frame is None:
                    break
                while not queue.empty() and len(frame) < self._max_commands:
                    more = queue.get_nowait()
                    if more is None:
                        queue.put_nowait(None)
                        break
                    frame.extend(more)
                yield engine_pb2.StreamOrdersResponse(reports=frame)
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
            if core.sessions.get(session_id) is queue:
                del core.sessions[session_id]
                core.metrics.sessions.set(len(core.sessions))
                cancels = core.manager.on_session_closed(session_id)
                if cancels:
                    core.dispatch(cancels)
            log.info("[ENGINE] order session %s closed", session_id)

    async def ListExecutions(
        self, request: engine_pb2.ListExecutionsRequest, context: Context
    ) -> engine_pb2.ListExecutionsResponse:
        await self._authorize(context)
        try:
            size = page_size(request.page_size, default=wire.DEFAULT_PAGE, maximum=wire.MAX_PAGE)
        except MeshError as exc:
            await abort(context, exc)
        since = request.since_seq
        if request.page_token:
            try:
                since = token_number(request.page_token)  # the seq to list after, as the last page gave it
            except MeshError as exc:
                await abort(context, exc)
        try:
            last = await self.core.durable()  # never a report that is not yet fsynced
            reports = [r for r in self.core.manager.list_executions(since, size) if r.seq <= last]
        except MeshError as exc:
            await abort(context, exc)
        next_token = str(reports[-1].seq) if reports and reports[-1].seq < last and len(reports) == size else ""
        return engine_pb2.ListExecutionsResponse(
            reports=[self.core.to_pb(r) for r in reports], next_page_token=next_token, last_seq=last
        )

    async def GetOrder(self, request: engine_pb2.GetOrderRequest, context: Context) -> engine_pb2.GetOrderResponse:
        await self._authorize(context)
        try:
            require_bounded(request.client_order_id, "client_order_id", required=True)
        except MeshError as exc:
            await abort(context, exc)
        order = self.core.manager.get_order(request.client_order_id)
        if order is None:  # ORDER_NOT_FOUND, or ORDER_PAST_RETENTION for an id a snapshot let go
            await abort(context, self.core.manager.missing_order_error(request.client_order_id))
        pb = engine_pb2.Order(
            status=STATUS_PB[order.status],
            filled_qty=fmt(order.filled_qty),
            avg_price=fmt(order.avg_price),
            fees=fmt(order.fees),
        )
        write_order(pb, order.venue, order.request)
        return engine_pb2.GetOrderResponse(order=pb)

    async def CancelOrder(
        self, request: engine_pb2.CancelOrderRequest, context: Context
    ) -> engine_pb2.CancelOrderResponse:
        await self._authorize(context)
        try:
            require_bounded(request.client_order_id, "client_order_id", required=True)
            with self.core.manager.frame():  # journaled before the report is sent
                reports = self.core.manager.cancel(request.client_order_id)
        except MeshError as exc:  # ORDER_NOT_FOUND, or a cancel reject (TOO_LATE_TO_CANCEL, ORDER_ALREADY_DONE)
            await abort(context, exc)
        self.core.dispatch(reports)
        await self._durable(context)
        return engine_pb2.CancelOrderResponse(reports=[self.core.to_pb(r) for r in reports])

    async def ListVenues(
        self, request: engine_pb2.ListVenuesRequest, context: Context
    ) -> engine_pb2.ListVenuesResponse:
        await self._authorize(context)
        return engine_pb2.ListVenuesResponse(
            venues=wire.venue_infos(self.core.manager), max_commands_per_frame=self._max_commands
        )

    async def CancelAllOrders(
        self, request: engine_pb2.CancelAllOrdersRequest, context: Context
    ) -> engine_pb2.CancelAllOrdersResponse:
        await self._authorize(context)
        manager = self.core.manager
        reports = manager.cancel_all(model_id=request.model_id or None, venue=request.venue or None)
        self.core.dispatch(reports)
        await self._durable(context)
        canceled = sum(1 for r in reports if r.exec_type.value == "CANCELED")
        remaining = len(manager.open_orders(model_id=request.model_id or None, venue=request.venue or None))
        log.warning(
            "[ENGINE] cancel-all (venue=%s model=%s): %d cancelled, %d left",
            request.venue or "*",
            request.model_id or "*",
            canceled,
            remaining,
        )
        return engine_pb2.CancelAllOrdersResponse(canceled_count=canceled, resting_remaining=remaining)
