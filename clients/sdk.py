"""Async Python SDK for the mesh: ``OpsClient``, ``OpsAdminClient``, ``EngineClient`` and ``wait_serving``.

Every method translates ``grpc.aio.AioRpcError`` into :class:`~clients.errors.MeshRpcError` at this boundary
(:mod:`clients.errors`), carrying the gRPC status code, the message and, when the server attached one, the
structured ``ErrorDetail`` (kind, stable code, details map).

Streams: ``OpsClient.stream_signals`` returns a :class:`~clients.signal_stream.SignalStream` (write frames with
``await stream.write(...)``, read with ``async for``); its failures raise ``MeshRpcError`` too. A producer that
queues frames for one writer task gets them coalesced with :class:`FrameCoalescer`: whatever is queued leaves
as one frame (up to the frame limit) and a frame never waits for more when the queue is empty (no timer).
``EngineClient.stream_quotes`` is an async iterator that raises MeshRpcError itself.

Example::

    async with OpsClient("127.0.0.1:50051", strategy_token=token) as ops:
        models = await ops.list_models()

    async with OpsAdminClient("127.0.0.1:50051", admin_token=admin) as admin:
        status = await admin.promote_canary("momentum", reason="shadow looks good")
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from types import TracebackType
from typing import Self, TypeVar

import grpc
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc

from clients.errors import MeshRpcError, call
from clients.signal_stream import MAX_SIGNALS_PER_FRAME, FrameCoalescer, SignalStream
from nautilus_mesh.api.common.v1 import common_pb2
from nautilus_mesh.api.engine.v1 import engine_pb2, engine_pb2_grpc
from nautilus_mesh.api.ops.v1 import admin_pb2, admin_pb2_grpc, ops_pb2, ops_pb2_grpc
from nautilus_mesh.auth import ADMIN_TOKEN_HEADER, ENGINE_TOKEN_HEADER, STRATEGY_TOKEN_HEADER
from nautilus_mesh.serving import CHANNEL_OPTIONS

__all__ = [
    "DEFAULT_TIMEOUT",
    "MAX_SIGNALS_PER_FRAME",
    "EngineClient",
    "FrameCoalescer",
    "MeshRpcError",
    "OpsAdminClient",
    "OpsClient",
    "SignalStream",
    "wait_serving",
]

DEFAULT_TIMEOUT = 10.0
"""Seconds a unary call may take before it fails with DEADLINE_EXCEEDED."""

"""Signals per request frame the SDK builds at most; ops refuses frames above its own bound (1000 by default)."""

ResponseT = TypeVar("ResponseT", bound=Message)
Metadata = tuple[tuple[str, str], ...]


class _Client:
    def __init__(self, address: str, metadata: Metadata, timeout: float) -> None:
        self.address = address
        self.timeout = timeout
        self._metadata = metadata
        self._channel = grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)

    @property
    def channel(self) -> grpc.aio.Channel:
        """The underlying channel, e.g. for stubs this SDK does not wrap (send ``metadata`` with them)."""
        return self._channel

    @property
    def metadata(self) -> Metadata:
        """The auth metadata this client sends with every call."""
        return self._metadata

    async def close(self) -> None:
        """Close the channel, cancelling calls still in flight."""
        await self._channel.close(None)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()


class OpsClient(_Client):
    """Client of ``nautilus.ops.v1.OpsService``.

    Args:
        address: ops host:port.
        strategy_token: sent as ``x-strategy-token`` (every OpsService call needs one).
        admin_token: sent as ``x-ops-token`` when given (operator calls).
        timeout: per-call deadline of unary calls, in seconds.
    """

    def __init__(
        self,
        address: str,
        *,
        strategy_token: str | None = None,
        admin_token: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        metadata: list[tuple[str, str]] = []
        if strategy_token:
            metadata.append((STRATEGY_TOKEN_HEADER, strategy_token))
        if admin_token:
            metadata.append((ADMIN_TOKEN_HEADER, admin_token))
        super().__init__(address, tuple(metadata), timeout)
        self._stub = ops_pb2_grpc.OpsServiceStub(self._channel)

    def stream_signals(self) -> SignalStream:
        """Open the bidi signal stream (no deadline: it is long-lived)."""
        return SignalStream(self._stub.StreamSignals(None, metadata=self._metadata))

    async def submit_signal(self, signal: ops_pb2.Signal) -> ops_pb2.SignalDecision:
        """Submit one signal; a rejection raises MeshRpcError with the rejection detail."""
        request = ops_pb2.SubmitSignalRequest(signal=signal)
        response = await call(self._stub.SubmitSignal(request, metadata=self._metadata, timeout=self.timeout))
        return response.decision

    async def get_stream_limits(self) -> ops_pb2.GetStreamLimitsResponse:
        """The bounds ops holds ``StreamSignals`` to (signals per frame): size frames by them."""
        request = ops_pb2.GetStreamLimitsRequest()
        return await call(self._stub.GetStreamLimits(request, metadata=self._metadata, timeout=self.timeout))

    async def get_positions(self, model_id: str = "") -> list[ops_pb2.Position]:
        """Positions per model and instrument (one model when ``model_id`` is given)."""
        request = ops_pb2.GetPositionsRequest(model_id=model_id)
        response = await call(self._stub.GetPositions(request, metadata=self._metadata, timeout=self.timeout))
        return list(response.positions)

    async def list_models(self, strategy_id: str = "") -> list[ops_pb2.ModelInfo]:
        """Models in the registry with their routing (one strategy when given)."""
        request = ops_pb2.ListModelsRequest(strategy_id=strategy_id)
        response = await call(self._stub.ListModels(request, metadata=self._metadata, timeout=self.timeout))
        return list(response.models)

    async def get_allocations(self) -> ops_pb2.GetAllocationsResponse:
        """Capital allocation per strategy, total capital and the last allocation reason."""
        request = ops_pb2.GetAllocationsRequest()
        return await call(self._stub.GetAllocations(request, metadata=self._metadata, timeout=self.timeout))

    async def get_model_quota(self, model_id: str) -> ops_pb2.GetModelQuotaResponse:
        """A model's quota, used and available capital."""
        request = ops_pb2.GetModelQuotaRequest(model_id=model_id)
        return await call(self._stub.GetModelQuota(request, metadata=self._metadata, timeout=self.timeout))

    async def get_model_stats(self, model_id: str = "") -> ops_pb2.GetModelStatsResponse:
        """Performance per model and per strategy."""
        request = ops_pb2.GetModelStatsRequest(model_id=model_id)
        return await call(self._stub.GetModelStats(request, metadata=self._metadata, timeout=self.timeout))

    async def list_orders(
        self, model_id: str = "", *, page_size: int = 0, page_token: str = ""
    ) -> ops_pb2.ListOrdersResponse:
        """One page of orders, newest first."""
        request = ops_pb2.ListOrdersRequest(model_id=model_id, page_size=page_size, page_token=page_token)
        return await call(self._stub.ListOrders(request, metadata=self._metadata, timeout=self.timeout))

    async def list_fills(
        self, model_id: str = "", *, page_size: int = 0, page_token: str = ""
    ) -> ops_pb2.ListFillsResponse:
        """One page of fills, newest first."""
        request = ops_pb2.ListFillsRequest(model_id=model_id, page_size=page_size, page_token=page_token)
        return await call(self._stub.ListFills(request, metadata=self._metadata, timeout=self.timeout))

    async def get_canary_status(self, strategy_id: str = "") -> list[ops_pb2.CanaryStatus]:
        """Canary state of each strategy that has a canary (one strategy when given)."""
        request = ops_pb2.GetCanaryStatusRequest(strategy_id=strategy_id)
        response = await call(self._stub.GetCanaryStatus(request, metadata=self._metadata, timeout=self.timeout))
        return list(response.canaries)

    async def get_risk_limits(self) -> ops_pb2.GetRiskLimitsResponse:
        """The risk limits in force (``limits`` is the limits file as a protobuf Struct)."""
        request = ops_pb2.GetRiskLimitsRequest()
        return await call(self._stub.GetRiskLimits(request, metadata=self._metadata, timeout=self.timeout))

    async def get_trading_state(self) -> ops_pb2.GetTradingStateResponse:
        """Global and per-model trading states and whether the kill switch is engaged."""
        request = ops_pb2.GetTradingStateRequest()
        return await call(self._stub.GetTradingState(request, metadata=self._metadata, timeout=self.timeout))

    async def watch_events(
        self, kinds: Sequence[str] = (), *, include_recent: bool = False
    ) -> AsyncGenerator[ops_pb2.Event, None]:
        """Ops events as they happen (only ``kinds`` when given), optionally recent ones first.

        Raises:
            MeshRpcError: the stream failed; closing the generator (``aclose``) cancels the call.
        """
        request = ops_pb2.WatchEventsRequest(kinds=list(kinds), include_recent=include_recent)
        call = self._stub.WatchEvents(request, metadata=self._metadata)
        try:
            async for frame in call:
                for event in frame.events:
                    yield event
        except grpc.aio.AioRpcError as exc:
            raise MeshRpcError.from_rpc_error(exc) from None
        finally:
            call.cancel()


class OpsAdminClient(_Client):
    """Client of ``nautilus.ops.v1.OpsAdminService``, the operators' controls.

    Every call sends the admin token as ``x-ops-token``; the server audits each call with its
    reason, and the canary controls and the kill-switch release refuse an empty reason
    (INVALID_ARGUMENT, detail code ``REASON_REQUIRED``).

    Args:
        address: ops host:port.
        admin_token: sent as ``x-ops-token`` with every call.
        timeout: per-call deadline, in seconds.
    """

    def __init__(self, address: str, *, admin_token: str, timeout: float = DEFAULT_TIMEOUT) -> None:
        super().__init__(address, ((ADMIN_TOKEN_HEADER, admin_token),), timeout)
        self._stub = admin_pb2_grpc.OpsAdminServiceStub(self._channel)

    async def get_health(self) -> admin_pb2.GetHealthResponse:
        """Every health check of ops with status, detail and age, and their rollup."""
        request = admin_pb2.GetHealthRequest()
        return await call(self._stub.GetHealth(request, metadata=self._metadata, timeout=self.timeout))

    async def trigger_allocation(self, *, reason: str = "") -> admin_pb2.TriggerAllocationResponse:
        """Run a capital allocation cycle now, bypassing the cooldown; the answer says what it decided."""
        request = admin_pb2.TriggerAllocationRequest(reason=reason)
        return await call(self._stub.TriggerAllocation(request, metadata=self._metadata, timeout=self.timeout))

    async def set_routing_weights(
        self, strategy_id: str, weights: Mapping[str, float], *, reason: str = ""
    ) -> list[ops_pb2.ModelInfo]:
        """Set a strategy's routing weights (summing to 1); models not named get 0. Returns its models."""
        request = admin_pb2.SetRoutingWeightsRequest(strategy_id=strategy_id, weights=dict(weights), reason=reason)
        response = await call(self._stub.SetRoutingWeights(request, metadata=self._metadata, timeout=self.timeout))
        return list(response.models)

    async def promote_canary(self, strategy_id: str, *, reason: str, to_full: bool = False) -> ops_pb2.CanaryStatus:
        """Promote a strategy's canary one step, or straight to 100% with ``to_full``."""
        request = admin_pb2.PromoteCanaryRequest(strategy_id=strategy_id, to_full=to_full, reason=reason)
        response = await call(self._stub.PromoteCanary(request, metadata=self._metadata, timeout=self.timeout))
        return response.status

    async def rollback_canary(self, strategy_id: str, *, reason: str) -> ops_pb2.CanaryStatus:
        """Roll a canary back: canary 0%, stable 100%."""
        request = admin_pb2.RollbackCanaryRequest(strategy_id=strategy_id, reason=reason)
        response = await call(self._stub.RollbackCanary(request, metadata=self._metadata, timeout=self.timeout))
        return response.status

    async def pause_canary(self, strategy_id: str, *, reason: str) -> ops_pb2.CanaryStatus:
        """Hold a canary at its current weight."""
        request = admin_pb2.PauseCanaryRequest(strategy_id=strategy_id, reason=reason)
        response = await call(self._stub.PauseCanary(request, metadata=self._metadata, timeout=self.timeout))
        return response.status

    async def resume_canary(self, strategy_id: str, *, reason: str) -> ops_pb2.CanaryStatus:
        """Resume a paused canary."""
        request = admin_pb2.ResumeCanaryRequest(strategy_id=strategy_id, reason=reason)
        response = await call(self._stub.ResumeCanary(request, metadata=self._metadata, timeout=self.timeout))
        return response.status

    async def confirm_canary(self, strategy_id: str, *, reason: str) -> ops_pb2.CanaryStatus:
        """Confirm the step to 100% when the confirmation gate holds the canary."""
        request = admin_pb2.ConfirmCanaryRequest(strategy_id=strategy_id, reason=reason)
        response = await call(self._stub.ConfirmCanary(request, metadata=self._metadata, timeout=self.timeout))
        return response.status

    async def set_trading_state(
        self, state: common_pb2.TradingState.ValueType, *, model_id: str = "", reason: str = ""
    ) -> admin_pb2.SetTradingStateResponse:
        """Set one model's trading state, or the global one when ``model_id`` is empty."""
        request = admin_pb2.SetTradingStateRequest(model_id=model_id, state=state, reason=reason)
        return await call(self._stub.SetTradingState(request, metadata=self._metadata, timeout=self.timeout))

    async def engage_kill_switch(self, *, reason: str = "") -> admin_pb2.EngageKillSwitchResponse:
        """Halt everything and cancel every resting order at the engine."""
        request = admin_pb2.EngageKillSwitchRequest(reason=reason)
        return await call(self._stub.EngageKillSwitch(request, metadata=self._metadata, timeout=self.timeout))

    async def release_kill_switch(self, *, reason: str) -> common_pb2.TradingState.ValueType:
        """Release the kill switch; returns the global trading state after the release."""
        request = admin_pb2.ReleaseKillSwitchRequest(reason=reason)
        response = await call(self._stub.ReleaseKillSwitch(request, metadata=self._metadata, timeout=self.timeout))
        return response.global_state

    async def reload_config(self, target: admin_pb2.ConfigTarget.ValueType) -> str:
        """Reload one config file; a bad file is refused and the previous config stays. Returns the server's note."""
        request = admin_pb2.ReloadConfigRequest(target=target)
        response = await call(self._stub.ReloadConfig(request, metadata=self._metadata, timeout=self.timeout))
        return response.message


class EngineClient(_Client):
    """Client of ``nautilus.engine.v1.EngineService`` and ``MarketDataService``.

    Market data needs no token; the EngineService calls need the engine token.

    Args:
        address: engine host:port.
        engine_token: sent as ``x-engine-token`` when given.
        timeout: per-call deadline of unary calls, in seconds.
    """

    def __init__(self, address: str, *, engine_token: str | None = None, timeout: float = DEFAULT_TIMEOUT) -> None:
        metadata = ((ENGINE_TOKEN_HEADER, engine_token),) if engine_token else ()
        super().__init__(address, metadata, timeout)
        self._engine = engine_pb2_grpc.EngineServiceStub(self._channel)
        self._market = engine_pb2_grpc.MarketDataServiceStub(self._channel)

    async def get_health(self) -> engine_pb2.GetHealthResponse:
        """Every health check of the engine and their rollup (needs the engine token)."""
        request = engine_pb2.GetHealthRequest()
        return await call(self._engine.GetHealth(request, metadata=self._metadata, timeout=self.timeout))

    async def list_venues(self) -> list[engine_pb2.VenueInfo]:
        """Venues with their status and instrument specs."""
        request = engine_pb2.ListVenuesRequest()
        response = await call(self._engine.ListVenues(request, metadata=self._metadata, timeout=self.timeout))
        return list(response.venues)

    async def list_executions(
        self, since_seq: int = 0, *, page_size: int = 0, page_token: str = ""
    ) -> engine_pb2.ListExecutionsResponse:
        """One page of execution reports with seq > ``since_seq``."""
        request = engine_pb2.ListExecutionsRequest(since_seq=since_seq, page_size=page_size, page_token=page_token)
        return await call(self._engine.ListExecutions(request, metadata=self._metadata, timeout=self.timeout))

    async def get_order(self, client_order_id: str) -> engine_pb2.Order:
        """One order by client order id."""
        request = engine_pb2.GetOrderRequest(client_order_id=client_order_id)
        response = await call(self._engine.GetOrder(request, metadata=self._metadata, timeout=self.timeout))
        return response.order

    async def cancel_all_orders(self, *, venue: str = "", model_id: str = "") -> engine_pb2.CancelAllOrdersResponse:
        """Cancel every resting order (optionally one venue's or one model's)."""
        request = engine_pb2.CancelAllOrdersRequest(venue=venue, model_id=model_id)
        return await call(self._engine.CancelAllOrders(request, metadata=self._metadata, timeout=self.timeout))

    async def get_quote(self, instrument: str) -> common_pb2.Quote:
        """The current quote of one instrument."""
        request = engine_pb2.GetQuoteRequest(instrument=instrument)
        response = await call(self._market.GetQuote(request, metadata=self._metadata, timeout=self.timeout))
        return response.quote

    async def stream_quotes(self, instruments: Sequence[str] = ()) -> AsyncIterator[engine_pb2.StreamQuotesResponse]:
        """Quote frames as they change (every instrument when ``instruments`` is empty).

        Raises:
            MeshRpcError: the stream failed; closing the iterator cancels the call.
        """
        call = self._market.StreamQuotes(
            engine_pb2.StreamQuotesRequest(instruments=list(instruments)), metadata=self._metadata
        )
        try:
            async for frame in call:
                yield frame
        except grpc.aio.AioRpcError as exc:
            raise MeshRpcError.from_rpc_error(exc) from None
        finally:
            call.cancel()


# A plain timeout argument (not asyncio.timeout) so callers get a message naming the address.
async def wait_serving(address: str, timeout: float, *, service: str = "") -> None:  # noqa: ASYNC109
    """Wait until the server at ``address`` reports SERVING on grpc.health.v1.Health/Check.

    Polls with a deadline (the server may not be listening yet).

    Raises:
        TimeoutError: not SERVING within ``timeout`` seconds; the message says the last state seen.
    """
    deadline = time.monotonic() + timeout
    last = "no answer"
    async with grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"{address} not SERVING after {timeout:g}s ({last})")
            try:
                response = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=min(1.0, remaining))
                if response.status == health_pb2.HealthCheckResponse.SERVING:
                    return
                last = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
            except grpc.aio.AioRpcError as exc:
                last = exc.code().name
            await asyncio.sleep(min(0.1, max(0.0, deadline - time.monotonic())))
