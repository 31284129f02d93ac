"""Async Python SDK for the mesh: ``OpsClient``, ``OpsAdminClient``, ``EngineClient`` and ``wait_serving``.

Every unary method translates ``grpc.aio.AioRpcError`` into :class:`MeshRpcError` at this
boundary, carrying the gRPC status code, the message and, when the server attached one, the
structured :class:`ErrorDetail` (kind, stable code, details map).

    Exception
    └── MeshRpcError        a call failed: .code (grpc.StatusCode), .message, .detail

Streams: ``OpsClient.stream_signals`` returns the raw bidi call (write frames with
``await call.write(...)``, read with ``async for``); wrap its errors with
``MeshRpcError.from_rpc_error``. ``OpsClient.watch_events`` and ``EngineClient.stream_quotes``
are async iterators that raise MeshRpcError themselves.

The examples in this module run as doctests against a real mesh on loopback
(``tests/test_sdk_doctests.py``): ``ops_address``, ``engine_address``, ``strategy_token`` (the
``momentum`` strategy's), ``admin_token`` and ``engine_token`` name that mesh. With the demo mesh of
``make run`` they are ``127.0.0.1:50051``, ``127.0.0.1:50052``, ``demo-momentum-token``,
``demo-admin-token`` and ``demo-engine-token``.

Example:
    >>> async def main() -> list[str]:
    ...     async with OpsClient(ops_address, strategy_token=strategy_token) as ops:
    ...         return [m.model_id for m in await ops.list_models("momentum")]
    >>> asyncio.run(main())
    ['momentum_v1', 'momentum_v2']
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Mapping, Sequence
from types import TracebackType
from typing import Self, TypeVar

import grpc
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc

from nautilus_mesh.api.common.v1 import common_pb2
from nautilus_mesh.api.engine.v1 import engine_pb2, engine_pb2_grpc
from nautilus_mesh.api.ops.v1 import admin_pb2, admin_pb2_grpc, ops_pb2, ops_pb2_grpc
from nautilus_mesh.auth import ADMIN_TOKEN_HEADER, ENGINE_TOKEN_HEADER, STRATEGY_TOKEN_HEADER
from nautilus_mesh.serving import CHANNEL_OPTIONS
from nautilus_mesh.status import from_rpc_error

__all__ = ["DEFAULT_TIMEOUT", "EngineClient", "MeshRpcError", "OpsAdminClient", "OpsClient", "wait_serving"]

DEFAULT_TIMEOUT = 10.0
"""Seconds a unary call may take before it fails with DEADLINE_EXCEEDED."""

ResponseT = TypeVar("ResponseT", bound=Message)
Metadata = tuple[tuple[str, str], ...]


class MeshRpcError(Exception):
    """A mesh RPC failed.

    Args:
        code: the gRPC status code.
        message: the server's (or transport's) status message.
        detail: the structured ErrorDetail from the rich status, when the server sent one.

    Attributes:
        code: the gRPC status code.
        message: the server's (or transport's) status message.
        detail: the structured ErrorDetail from the rich status, when the server sent one.

    Example:
        >>> async def main() -> MeshRpcError:
        ...     async with OpsClient(ops_address, strategy_token=strategy_token) as ops:
        ...         try:
        ...             await ops.get_model_quota("no_such_model")
        ...         except MeshRpcError as exc:
        ...             return exc
        ...     raise AssertionError("unreachable")
        >>> error = asyncio.run(main())
        >>> error.code.name, error.detail.kind, error.detail.code
        ('NOT_FOUND', 'not_found', 'UNKNOWN_MODEL')
    """

    def __init__(self, code: grpc.StatusCode, message: str, detail: common_pb2.ErrorDetail | None = None) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message
        self.detail = detail

    @classmethod
    def from_rpc_error(cls, exc: grpc.aio.AioRpcError) -> MeshRpcError:
        """Translate a failed grpc.aio call.

        Args:
            exc: the error a ``grpc.aio`` call raised (a stream's, for instance).

        Returns:
            The MeshRpcError with the call's status code, message and ErrorDetail (None when the
            status carries none or a malformed one).

        Example:
            >>> async def main() -> str:
            ...     async with OpsClient(ops_address) as ops:  # no strategy token
            ...         call = ops.stream_signals()
            ...         try:
            ...             async for _ in call:
            ...                 pass
            ...         except grpc.aio.AioRpcError as exc:
            ...             return MeshRpcError.from_rpc_error(exc).detail.code
            ...     return "no error"
            >>> asyncio.run(main())
            'MISSING_TOKEN'
        """
        try:
            detail = from_rpc_error(exc)
        except Exception:  # a malformed rich status must not hide the status code itself
            detail = None
        return cls(exc.code(), exc.details() or "", detail)

    @property
    def unreachable(self) -> bool:
        """True when the server could not be reached at all (as opposed to refusing the call).

        Example:
            >>> MeshRpcError(grpc.StatusCode.UNAVAILABLE, "connection refused").unreachable
            True
            >>> MeshRpcError(grpc.StatusCode.NOT_FOUND, "unknown model").unreachable
            False
        """
        return self.code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED) and self.detail is None


async def _call(coro: Awaitable[ResponseT]) -> ResponseT:
    try:
        return await coro
    except grpc.aio.AioRpcError as exc:
        raise MeshRpcError.from_rpc_error(exc) from None


class _Client:
    def __init__(self, address: str, metadata: Metadata, timeout: float) -> None:
        self.address = address
        self.timeout = timeout
        self._metadata = metadata
        self._channel = grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)

    @property
    def channel(self) -> grpc.aio.Channel:
        """The underlying channel, e.g. for stubs this SDK does not wrap (send ``metadata`` with them).

        Example:
            >>> from grpc_health.v1 import health_pb2, health_pb2_grpc
            >>> async def main() -> str:
            ...     async with OpsClient(ops_address, strategy_token=strategy_token) as ops:
            ...         health = health_pb2_grpc.HealthStub(ops.channel)
            ...         answer = await health.Check(health_pb2.HealthCheckRequest(), metadata=ops.metadata)
            ...         return health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status)
            >>> asyncio.run(main())
            'SERVING'
        """
        return self._channel

    @property
    def metadata(self) -> Metadata:
        """The auth metadata this client sends with every call.

        Example:
            >>> async def main() -> tuple[tuple[str, str], ...]:
            ...     async with OpsAdminClient(ops_address, admin_token="secret") as admin:
            ...         return admin.metadata
            >>> asyncio.run(main())
            (('x-ops-token', 'secret'),)
        """
        return self._metadata

    async def close(self) -> None:
        """Close the channel, cancelling calls still in flight.

        ``async with`` calls it on exit; call it yourself when you hold a client without one.

        Example:
            >>> async def main() -> None:
            ...     engine = EngineClient(engine_address)
            ...     try:
            ...         await engine.get_quote("BTC-USD")
            ...     finally:
            ...         await engine.close()
            >>> asyncio.run(main())
        """
        await self._channel.close(None)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()


class OpsClient(_Client):
    """Client of ``nautilus.ops.v1.OpsService``: signals in, decisions and fills out, and the queries.

    The channel connects lazily: building a client does no I/O. Use it with ``async with`` (or call
    :meth:`close`).

    Args:
        address: ops host:port.
        strategy_token: sent as ``x-strategy-token`` (every OpsService call needs one).
        admin_token: sent as ``x-ops-token`` when given (operator calls).
        timeout: per-call deadline of unary calls, in seconds.

    Example:
        >>> async def main() -> str:
        ...     async with OpsClient(ops_address, strategy_token=strategy_token) as ops:
        ...         quota = await ops.get_model_quota("momentum_v1")
        ...         return quota.model_id
        >>> asyncio.run(main())
        'momentum_v1'
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

    def stream_signals(self) -> grpc.aio.StreamStreamCall[ops_pb2.StreamSignalsRequest, ops_pb2.StreamSignalsResponse]:
        """Open the bidi signal stream (no deadline: it is long-lived).

        Write ``StreamSignalsRequest`` frames (one or many signals each) and read
        ``StreamSignalsResponse`` frames (decisions, then the fills of the orders). A bad signal is
        answered in-band with a ``REJECTED`` decision; the stream stays open.

        Returns:
            The raw ``grpc.aio`` bidi call. Its errors are ``grpc.aio.AioRpcError``: translate them
            with :meth:`MeshRpcError.from_rpc_error`.

        Example:
            >>> async def main() -> str:
            ...     async with OpsClient(ops_address, strategy_token=strategy_token) as ops:
            ...         call = ops.stream_signals()
            ...         signal = ops_pb2.Signal(signal_id="doc-stream-1", model_id="momentum_v1",
            ...                                 instrument="BTC-USD", target=0.05)
            ...         await call.write(ops_pb2.StreamSignalsRequest(signals=[signal]))
            ...         async for frame in call:
            ...             if frame.decisions:
            ...                 call.cancel()
            ...                 return ops_pb2.DecisionStatus.Name(frame.decisions[0].status)
            ...     return "no decision"
            >>> asyncio.run(main())
            'DECISION_STATUS_ACCEPTED'
        """
        return self._stub.StreamSignals(None, metadata=self._metadata)

    async def submit_signal(self, signal: ops_pb2.Signal) -> ops_pb2.SignalDecision:
        """Submit one signal and wait for its decision.

        Args:
            signal: the signal: ``signal_id`` (unique per model), ``model_id``, ``instrument`` and
                ``target`` (a fraction of the model's quota in [-1, 1]).

        Returns:
            The decision: ``ACCEPTED`` (an order was sent; ``client_order_id``, ``side``,
            ``quantity``), ``NO_ACTION`` (already at target) or ``DUPLICATE`` (the earlier decision of
            a re-used ``signal_id``).

        Raises:
            MeshRpcError: the signal was rejected (``INVALID_ARGUMENT``, ``NOT_FOUND``,
                ``PERMISSION_DENIED``, ``FAILED_PRECONDITION`` or ``RESOURCE_EXHAUSTED`` for a risk
                rail); ``.detail.code`` is the stable code, e.g. ``OUT_OF_RANGE``.

        Example:
            >>> async def main() -> tuple[str, str]:
            ...     async with OpsClient(ops_address, strategy_token=strategy_token) as ops:
            ...         signal = ops_pb2.Signal(signal_id="doc-submit-1", model_id="momentum_v1",
            ...                                 instrument="BTC-USD", target=0.1)
            ...         decision = await ops.submit_signal(signal)
            ...         try:
            ...             await ops.submit_signal(ops_pb2.Signal(signal_id="doc-submit-2", model_id="momentum_v1",
            ...                                                    instrument="BTC-USD", target=7.0))
            ...         except MeshRpcError as exc:
            ...             return ops_pb2.DecisionStatus.Name(decision.status), exc.detail.code
            ...     return "", ""
            >>> asyncio.run(main())
            ('DECISION_STATUS_ACCEPTED', 'OUT_OF_RANGE')
        """
        request = ops_pb2.SubmitSignalRequest(signal=signal)
        response = await _call(self._stub.SubmitSignal(request, metadata=self._metadata, timeout=self.timeout))
        return response.decision

    async def get_positions(self, model_id: str = "") -> list[ops_pb2.Position]:
        """Positions per model and instrument (one model when ``model_id`` is given).

        Args:
            model_id: only this model's positions; every model's when empty. A SHADOW model shows
                its paper book.

        Returns:
            One ``Position`` per model and instrument held: quantity, ``avg_cost`` (to the
            instrument's tick), realized and unrealized PnL, mark and fees, as decimal strings.

        Raises:
            MeshRpcError: the call failed (e.g. ``UNAUTHENTICATED`` without a token).

        Example:
            >>> async def main() -> list[str]:
            ...     async with OpsClient(ops_address, strategy_token=strategy_token) as ops:
            ...         return [p.model_id for p in await ops.get_positions("meanrev_v1")]
            >>> asyncio.run(main())  # meanrev_v1 has not traded here
            []
        """
        request = ops_pb2.GetPositionsRequest(model_id=model_id)
        response = await _call(self._stub.GetPositions(request, metadata=self._metadata, timeout=self.timeout))
        return list(response.positions)

    async def list_models(self, strategy_id: str = "") -> list[ops_pb2.ModelInfo]:
        """Models in the registry with their routing (one strategy when given).

        Args:
            strategy_id: only this strategy's models; every model's when empty.

        Returns:
            One ``ModelInfo`` per model: mode, routing weight, stable flag, instruments, quota in
            USD and trading state.

        Raises:
            MeshRpcError: the call failed.

        Example:
            >>> async def main() -> list[str]:
            ...     async with OpsClient(ops_address, strategy_token=strategy_token) as ops:
            ...         models = await ops.list_models()
            ...         return sorted(f"{m.strategy_id} {m.model_id} {m.version}" for m in models)
            >>> print("\\n".join(asyncio.run(main())))
            meanrev meanrev_v1 1.0.0
            momentum momentum_v1 1.0.0
            momentum momentum_v2 2.0.0
        """
        request = ops_pb2.ListModelsRequest(strategy_id=strategy_id)
        response = await _call(self._stub.ListModels(request, metadata=self._metadata, timeout=self.timeout))
        return list(response.models)

    async def get_allocations(self) -> ops_pb2.GetAllocationsResponse:
        """Capital allocation per strategy, total capital and the last allocation reason.

        Returns:
            ``allocations`` (strategy, fraction, capital in USD), ``total_capital_usd``,
            ``updated_at_unix_nanos`` and ``last_reason`` (APPLIED, FORCED, COOLDOWN, DEADBAND, KEPT).

        Raises:
            MeshRpcError: the call failed.

        Example:
            >>> async def main() -> str:
            ...     async with OpsClient(ops_address, strategy_token=strategy_token) as ops:
            ...         return (await ops.get_allocations()).total_capital_usd
            >>> asyncio.run(main())
            '1000000'
        """
        request = ops_pb2.GetAllocationsRequest()
        return await _call(self._stub.GetAllocations(request, metadata=self._metadata, timeout=self.timeout))

    async def get_model_quota(self, model_id: str) -> ops_pb2.GetModelQuotaResponse:
        """A model's quota, used and available capital.

        Args:
            model_id: the model.

        Returns:
            ``quota_usd`` (strategy allocation x routing weight), ``used_usd`` and ``available_usd``,
            as decimal strings.

        Raises:
            MeshRpcError: ``NOT_FOUND`` (``UNKNOWN_MODEL``) for a model not in the registry.

        Example:
            >>> async def main() -> bool:
            ...     async with OpsClient(ops_address, strategy_token=strategy_token) as ops:
            ...         quota = await ops.get_model_quota("momentum_v1")
            ...         return Decimal(quota.available_usd) <= Decimal(quota.quota_usd)
            >>> from decimal import Decimal
            >>> asyncio.run(main())
            True
        """
        request = ops_pb2.GetModelQuotaRequest(model_id=model_id)
        return await _call(self._stub.GetModelQuota(request, metadata=self._metadata, timeout=self.timeout))

    async def get_model_stats(self, model_id: str = "") -> ops_pb2.GetModelStatsResponse:
        """Performance per model and per strategy.

        Args:
            model_id: only this model; every model when empty.

        Returns:
            ``models`` and ``strategies``: PnL, fees, slippage, equity, Sharpe, max drawdown, hit rate,
            observations and fills.

        Raises:
            MeshRpcError: the call failed.

        Example:
            >>> async def main() -> list[str]:
            ...     async with OpsClient(ops_address, strategy_token=strategy_token) as ops:
            ...         return [m.model_id for m in (await ops.get_model_stats("momentum_v2")).models]
            >>> asyncio.run(main())
            ['momentum_v2']
        """
        request = ops_pb2.GetModelStatsRequest(model_id=model_id)
        return await _call(self._stub.GetModelStats(request, metadata=self._metadata, timeout=self.timeout))

    async def list_orders(
        self, model_id: str = "", *, page_size: int = 0, page_token: str = ""
    ) -> ops_pb2.ListOrdersResponse:
        """One page of orders, newest first.

        Args:
            model_id: only this model's orders; every model's when empty.
            page_size: orders per page (0: the server's default).
            page_token: ``next_page_token`` of the previous page; empty for the first page.

        Returns:
            ``orders`` and ``next_page_token`` (empty on the last page).

        Raises:
            MeshRpcError: ``INVALID_ARGUMENT`` (``INVALID_PAGE_SIZE``, ``INVALID_PAGE_TOKEN``).

        Example:
            >>> async def main() -> int:
            ...     async with OpsClient(ops_address, strategy_token=strategy_token) as ops:
            ...         orders, token = [], ""
            ...         while True:
            ...             page = await ops.list_orders("meanrev_v1", page_size=50, page_token=token)
            ...             orders += page.orders
            ...             if not (token := page.next_page_token):
            ...                 return len(orders)
            >>> asyncio.run(main())
            0
        """
        request = ops_pb2.ListOrdersRequest(model_id=model_id, page_size=page_size, page_token=page_token)
        return await _call(self._stub.ListOrders(request, metadata=self._metadata, timeout=self.timeout))

    async def list_fills(
        self, model_id: str = "", *, page_size: int = 0, page_token: str = ""
    ) -> ops_pb2.ListFillsResponse:
        """One page of fills, newest first.

        Args:
            model_id: only this model's fills; every model's when empty.
            page_size: fills per page (0: the server's default).
            page_token: ``next_page_token`` of the previous page; empty for the first page.

        Returns:
            ``fills`` and ``next_page_token`` (empty on the last page).

        Raises:
            MeshRpcError: ``INVALID_ARGUMENT`` (``INVALID_PAGE_SIZE``, ``INVALID_PAGE_TOKEN``).

        Example:
            >>> async def main() -> str:
            ...     async with OpsClient(ops_address, strategy_token=strategy_token) as ops:
            ...         try:
            ...             await ops.list_fills(page_token="not-a-token")
            ...         except MeshRpcError as exc:
            ...             return exc.detail.code
            ...     return "accepted"
            >>> asyncio.run(main())
            'INVALID_PAGE_TOKEN'
        """
        request = ops_pb2.ListFillsRequest(model_id=model_id, page_size=page_size, page_token=page_token)
        return await _call(self._stub.ListFills(request, metadata=self._metadata, timeout=self.timeout))

    async def get_canary_status(self, strategy_id: str = "") -> list[ops_pb2.CanaryStatus]:
        """Canary state of each strategy that has a canary (one strategy when given).

        Args:
            strategy_id: only this strategy; every strategy with a canary when empty.

        Returns:
            One ``CanaryStatus`` per canary: models, state, step, weights, check counts, the last
            check and the schedule.

        Raises:
            MeshRpcError: the call failed.

        Example:
            >>> async def main() -> list[tuple[str, str]]:
            ...     async with OpsClient(ops_address, strategy_token=strategy_token) as ops:
            ...         return [(c.canary_model, c.stable_model) for c in await ops.get_canary_status()]
            >>> asyncio.run(main())
            [('momentum_v2', 'momentum_v1')]
        """
        request = ops_pb2.GetCanaryStatusRequest(strategy_id=strategy_id)
        response = await _call(self._stub.GetCanaryStatus(request, metadata=self._metadata, timeout=self.timeout))
        return list(response.canaries)

    async def get_risk_limits(self) -> ops_pb2.GetRiskLimitsResponse:
        """The risk limits in force.

        Returns:
            ``limits``: the limits file as a protobuf ``Struct`` (``global``, ``default_model``,
            ``models``).

        Raises:
            MeshRpcError: the call failed.

        Example:
            >>> async def main() -> list[str]:
            ...     async with OpsClient(ops_address, strategy_token=strategy_token) as ops:
            ...         return sorted((await ops.get_risk_limits()).limits.keys())
            >>> asyncio.run(main())
            ['default_model', 'global', 'models']
        """
        request = ops_pb2.GetRiskLimitsRequest()
        return await _call(self._stub.GetRiskLimits(request, metadata=self._metadata, timeout=self.timeout))

    async def get_trading_state(self) -> ops_pb2.GetTradingStateResponse:
        """Global and per-model trading states and whether the kill switch is engaged.

        Returns:
            ``global_state``, the per-model states and ``kill_switch_engaged``.

        Raises:
            MeshRpcError: the call failed.

        Example:
            >>> async def main() -> str:
            ...     async with OpsClient(ops_address, strategy_token=strategy_token) as ops:
            ...         return common_pb2.TradingState.Name((await ops.get_trading_state()).global_state)
            >>> asyncio.run(main())
            'TRADING_STATE_ACTIVE'
        """
        request = ops_pb2.GetTradingStateRequest()
        return await _call(self._stub.GetTradingState(request, metadata=self._metadata, timeout=self.timeout))

    async def watch_events(
        self, kinds: Sequence[str] = (), *, include_recent: bool = False
    ) -> AsyncGenerator[ops_pb2.Event, None]:
        """Ops events as they happen (only ``kinds`` when given), optionally recent ones first.

        Args:
            kinds: only events of these kinds (``ALLOCATION``, ``WEIGHTS_CHANGED``,
                ``RISK_REJECTED``, ``RISK_STATE_CHANGED``, ``KILL_SWITCH``, ``CANARY``, ...); every
                kind when empty.
            include_recent: first send the recent events ops keeps in memory.

        Yields:
            Each event: ``seq``, ``kind``, ``at_unix_nanos``, ``message`` and ``attributes``.

        Raises:
            MeshRpcError: the stream failed; closing the generator (``aclose``) cancels the call.

        Example:
            >>> async def main() -> str:
            ...     async with OpsAdminClient(ops_address, admin_token=admin_token) as admin:
            ...         await admin.set_trading_state(common_pb2.TRADING_STATE_ACTIVE, model_id="meanrev_v1",
            ...                                       reason="doc example")
            ...     async with OpsClient(ops_address, strategy_token=strategy_token) as ops:
            ...         events = ops.watch_events(["RISK_STATE_CHANGED"], include_recent=True)
            ...         event = await anext(events)
            ...         await events.aclose()
            ...         return event.kind
            >>> asyncio.run(main())
            'RISK_STATE_CHANGED'
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

    Example:
        >>> async def main() -> str:
        ...     async with OpsAdminClient(ops_address, admin_token="wrong") as admin:
        ...         try:
        ...             await admin.trigger_allocation(reason="doc example")
        ...         except MeshRpcError as exc:
        ...             return exc.code.name
        ...     return "accepted"
        >>> asyncio.run(main())
        'UNAUTHENTICATED'
    """

    def __init__(self, address: str, *, admin_token: str, timeout: float = DEFAULT_TIMEOUT) -> None:
        super().__init__(address, ((ADMIN_TOKEN_HEADER, admin_token),), timeout)
        self._stub = admin_pb2_grpc.OpsAdminServiceStub(self._channel)

    async def trigger_allocation(self, *, reason: str = "") -> admin_pb2.TriggerAllocationResponse:
        """Run a capital allocation cycle now, bypassing the cooldown.

        Args:
            reason: why (audited).

        Returns:
            What the cycle decided: ``reason`` (APPLIED, FORCED, COOLDOWN, DEADBAND or KEPT), a
            ``message`` and the ``allocations`` after it.

        Raises:
            MeshRpcError: ``PERMISSION_DENIED`` (``MANUAL_ALLOCATION_DISABLED``) when the capital
                policy has ``allow_manual: false``.

        Example:
            >>> async def main() -> list[str]:
            ...     async with OpsAdminClient(ops_address, admin_token=admin_token) as admin:
            ...         decision = await admin.trigger_allocation(reason="doc example")
            ...         return sorted(a.strategy_id for a in decision.allocations)
            >>> asyncio.run(main())
            ['meanrev', 'momentum']
        """
        request = admin_pb2.TriggerAllocationRequest(reason=reason)
        return await _call(self._stub.TriggerAllocation(request, metadata=self._metadata, timeout=self.timeout))

    async def set_routing_weights(
        self, strategy_id: str, weights: Mapping[str, float], *, reason: str = ""
    ) -> list[ops_pb2.ModelInfo]:
        """Set a strategy's routing weights; models not named get 0.

        Args:
            strategy_id: the strategy.
            weights: model id -> weight, each in [0, 1], summing to 1 (+-0.001).
            reason: why (audited).

        Returns:
            The strategy's models with their new weights.

        Raises:
            MeshRpcError: ``INVALID_ARGUMENT`` (``INVALID_WEIGHTS``; ``CANARY_ACTIVE`` while a canary
                owns the strategy's weights) or ``NOT_FOUND`` (``UNKNOWN_STRATEGY``, ``UNKNOWN_MODEL``).

        Example:
            >>> async def main() -> list[tuple[str, float]]:
            ...     async with OpsAdminClient(ops_address, admin_token=admin_token) as admin:
            ...         models = await admin.set_routing_weights("meanrev", {"meanrev_v1": 1.0}, reason="doc example")
            ...         return [(m.model_id, m.routing_weight) for m in models]
            >>> asyncio.run(main())
            [('meanrev_v1', 1.0)]
        """
        request = admin_pb2.SetRoutingWeightsRequest(strategy_id=strategy_id, weights=dict(weights), reason=reason)
        response = await _call(self._stub.SetRoutingWeights(request, metadata=self._metadata, timeout=self.timeout))
        return list(response.models)

    async def promote_canary(self, strategy_id: str, *, reason: str, to_full: bool = False) -> ops_pb2.CanaryStatus:
        """Promote a strategy's canary one step, or straight to 100% with ``to_full``.

        Args:
            strategy_id: the strategy whose canary moves.
            reason: why (audited; required).
            to_full: go to 100% at once (the canary becomes the stable model).

        Returns:
            The canary's status after the promotion.

        Raises:
            MeshRpcError: ``NOT_FOUND`` (``UNKNOWN_STRATEGY``, ``NO_CANARY``) or ``INVALID_ARGUMENT``
                (``REASON_REQUIRED``, ``CANARY_FINISHED`` once promoted or rolled back).

        Example:
            >>> async def main() -> float:
            ...     async with OpsAdminClient(ops_address, admin_token=admin_token) as admin:
            ...         status = await admin.promote_canary("momentum", reason="doc example: shadow reviewed")
            ...         return status.weights["momentum_v2"]
            >>> asyncio.run(main()) > 0  # out of shadow: the canary carries live weight
            True
        """
        request = admin_pb2.PromoteCanaryRequest(strategy_id=strategy_id, to_full=to_full, reason=reason)
        response = await _call(self._stub.PromoteCanary(request, metadata=self._metadata, timeout=self.timeout))
        return response.status

    async def rollback_canary(self, strategy_id: str, *, reason: str) -> ops_pb2.CanaryStatus:
        """Roll a canary back: canary 0%, stable 100%.

        Args:
            strategy_id: the strategy whose canary is rolled back.
            reason: why (audited; required).

        Returns:
            The canary's status (``CANARY_STATE_ROLLED_BACK``, a terminal state).

        Raises:
            MeshRpcError: ``NOT_FOUND`` (``UNKNOWN_STRATEGY``, ``NO_CANARY``) or ``INVALID_ARGUMENT``
                (``REASON_REQUIRED``, ``CANARY_FINISHED``).

        Example:
            >>> async def main() -> tuple[str, float]:
            ...     async with OpsAdminClient(ops_address, admin_token=admin_token) as admin:
            ...         status = await admin.rollback_canary("momentum", reason="doc example")
            ...         return ops_pb2.CanaryState.Name(status.state), status.weights["momentum_v2"]
            >>> asyncio.run(main())
            ('CANARY_STATE_ROLLED_BACK', 0.0)
        """
        request = admin_pb2.RollbackCanaryRequest(strategy_id=strategy_id, reason=reason)
        response = await _call(self._stub.RollbackCanary(request, metadata=self._metadata, timeout=self.timeout))
        return response.status

    async def pause_canary(self, strategy_id: str, *, reason: str) -> ops_pb2.CanaryStatus:
        """Hold a canary at its current weight: no step up or down until :meth:`resume_canary`.

        Hard guards still roll a paused canary back.

        Args:
            strategy_id: the strategy whose canary pauses.
            reason: why (audited; required).

        Returns:
            The canary's status (``CANARY_STATE_PAUSED``).

        Raises:
            MeshRpcError: ``NOT_FOUND`` (``UNKNOWN_STRATEGY``, ``NO_CANARY``) or ``INVALID_ARGUMENT``
                (``REASON_REQUIRED``, ``CANARY_FINISHED``).

        Example:
            >>> async def main() -> list[str]:
            ...     async with OpsAdminClient(ops_address, admin_token=admin_token) as admin:
            ...         paused = await admin.pause_canary("momentum", reason="doc example")
            ...         resumed = await admin.resume_canary("momentum", reason="doc example")
            ...         return [ops_pb2.CanaryState.Name(s.state) for s in (paused, resumed)]
            >>> asyncio.run(main())  # doctest: +ELLIPSIS
            ['CANARY_STATE_PAUSED', 'CANARY_STATE_...']
        """
        request = admin_pb2.PauseCanaryRequest(strategy_id=strategy_id, reason=reason)
        response = await _call(self._stub.PauseCanary(request, metadata=self._metadata, timeout=self.timeout))
        return response.status

    async def resume_canary(self, strategy_id: str, *, reason: str) -> ops_pb2.CanaryStatus:
        """Resume a paused canary: it goes back to the state it was paused in, with a fresh dwell.

        Args:
            strategy_id: the strategy whose canary resumes.
            reason: why (audited; required).

        Returns:
            The canary's status.

        Raises:
            MeshRpcError: ``NOT_FOUND`` (``UNKNOWN_STRATEGY``, ``NO_CANARY``) or ``INVALID_ARGUMENT``
                (``REASON_REQUIRED``, ``CANARY_FINISHED``).

        Example:
            >>> async def main() -> str:
            ...     async with OpsAdminClient(ops_address, admin_token=admin_token) as admin:
            ...         await admin.pause_canary("momentum", reason="doc example")
            ...         status = await admin.resume_canary("momentum", reason="doc example")
            ...         return ops_pb2.CanaryState.Name(status.state)
            >>> asyncio.run(main()) != "CANARY_STATE_PAUSED"
            True
        """
        request = admin_pb2.ResumeCanaryRequest(strategy_id=strategy_id, reason=reason)
        response = await _call(self._stub.ResumeCanary(request, metadata=self._metadata, timeout=self.timeout))
        return response.status

    async def confirm_canary(self, strategy_id: str, *, reason: str) -> ops_pb2.CanaryStatus:
        """Confirm the step to 100% when the confirmation gate holds the canary.

        While the canary waits for confirmation this promotes it to 100% at once. At an earlier step
        it confirms in advance (the event and audit log read ``operator confirmed 100% in advance``):
        the canary still climbs the schedule and passes every check; only the manual gate is open.

        Args:
            strategy_id: the strategy whose canary is confirmed.
            reason: why (audited; required).

        Returns:
            The canary's status (unchanged state when confirmed in advance).

        Raises:
            MeshRpcError: ``NOT_FOUND`` (``UNKNOWN_STRATEGY``, ``NO_CANARY``) or ``INVALID_ARGUMENT``
                (``REASON_REQUIRED``, ``CANARY_FINISHED``).

        Example:
            >>> async def main() -> str:
            ...     async with OpsAdminClient(ops_address, admin_token=admin_token) as admin:
            ...         try:
            ...             await admin.confirm_canary("momentum", reason="")
            ...         except MeshRpcError as exc:
            ...             return exc.detail.code
            ...     return "accepted"
            >>> asyncio.run(main())  # every canary control needs a reason
            'REASON_REQUIRED'
        """
        request = admin_pb2.ConfirmCanaryRequest(strategy_id=strategy_id, reason=reason)
        response = await _call(self._stub.ConfirmCanary(request, metadata=self._metadata, timeout=self.timeout))
        return response.status

    async def set_trading_state(
        self, state: common_pb2.TradingState.ValueType, *, model_id: str = "", reason: str = ""
    ) -> admin_pb2.SetTradingStateResponse:
        """Set one model's trading state, or the global one when ``model_id`` is empty.

        Args:
            state: ``TRADING_STATE_ACTIVE``, ``TRADING_STATE_REDUCING`` (only exposure-reducing
                orders) or ``TRADING_STATE_HALTED`` (none; cancels always pass).
            model_id: the model; empty for the global state.
            reason: why (audited).

        Returns:
            ``global_state`` and the named model's effective ``model_state``.

        Raises:
            MeshRpcError: ``INVALID_ARGUMENT`` (``INVALID_STATE``; ``KILL_SWITCH_ENGAGED`` when
                loosening the global state while the kill switch is engaged) or ``NOT_FOUND``
                (``UNKNOWN_MODEL``).

        Example:
            >>> async def main() -> list[str]:
            ...     async with OpsAdminClient(ops_address, admin_token=admin_token) as admin:
            ...         reducing = await admin.set_trading_state(common_pb2.TRADING_STATE_REDUCING,
            ...                                                  model_id="meanrev_v1", reason="doc example")
            ...         active = await admin.set_trading_state(common_pb2.TRADING_STATE_ACTIVE,
            ...                                                model_id="meanrev_v1", reason="doc example")
            ...         return [common_pb2.TradingState.Name(a.model_state) for a in (reducing, active)]
            >>> asyncio.run(main())
            ['TRADING_STATE_REDUCING', 'TRADING_STATE_ACTIVE']
        """
        request = admin_pb2.SetTradingStateRequest(model_id=model_id, state=state, reason=reason)
        return await _call(self._stub.SetTradingState(request, metadata=self._metadata, timeout=self.timeout))

    async def engage_kill_switch(self, *, reason: str = "") -> admin_pb2.EngageKillSwitchResponse:
        """Halt everything and cancel every resting order at the engine.

        The answer comes when the engine has confirmed the cancels. Releasing is a separate call,
        :meth:`release_kill_switch`.

        Args:
            reason: why (audited).

        Returns:
            ``canceled_count``, ``resting_remaining`` (0 when every cancel is confirmed) and
            ``cancels_confirmed``.

        Raises:
            MeshRpcError: ``UNAVAILABLE`` (``ENGINE_UNAVAILABLE``): ops is halted, but the engine
                could not be asked to cancel; retry.

        Example:
            >>> async def main() -> tuple[bool, str]:
            ...     async with OpsAdminClient(ops_address, admin_token=admin_token) as admin:
            ...         engaged = await admin.engage_kill_switch(reason="doc example")
            ...         state = await admin.release_kill_switch(reason="doc example over")
            ...         return engaged.cancels_confirmed, common_pb2.TradingState.Name(state)
            >>> asyncio.run(main())
            (True, 'TRADING_STATE_ACTIVE')
        """
        request = admin_pb2.EngageKillSwitchRequest(reason=reason)
        return await _call(self._stub.EngageKillSwitch(request, metadata=self._metadata, timeout=self.timeout))

    async def release_kill_switch(self, *, reason: str) -> common_pb2.TradingState.ValueType:
        """Release the kill switch (a separate, audited call).

        Args:
            reason: why (audited; required).

        Returns:
            The global trading state after the release.

        Raises:
            MeshRpcError: ``INVALID_ARGUMENT``: ``REASON_REQUIRED``, or ``KILL_SWITCH_NOT_ENGAGED``
                when there is nothing to release.

        Example:
            >>> async def main() -> str:
            ...     async with OpsAdminClient(ops_address, admin_token=admin_token) as admin:
            ...         try:
            ...             await admin.release_kill_switch(reason="doc example")
            ...         except MeshRpcError as exc:
            ...             return exc.detail.code
            ...     return "released"
            >>> asyncio.run(main())
            'KILL_SWITCH_NOT_ENGAGED'
        """
        request = admin_pb2.ReleaseKillSwitchRequest(reason=reason)
        response = await _call(self._stub.ReleaseKillSwitch(request, metadata=self._metadata, timeout=self.timeout))
        return response.global_state

    async def reload_config(self, target: admin_pb2.ConfigTarget.ValueType) -> str:
        """Reload one config file; a bad file is refused and the previous config stays in force.

        Args:
            target: ``CONFIG_TARGET_RISK_LIMITS``, ``CONFIG_TARGET_CAPITAL_POLICY`` or
                ``CONFIG_TARGET_MODEL_REGISTRY``.

        Returns:
            The server's note, e.g. ``risk limits reloaded from risk_limits.json``.

        Raises:
            MeshRpcError: ``INVALID_ARGUMENT``: ``INVALID_TARGET`` (UNSPECIFIED) or
                ``CONFIG_INVALID`` (the file is invalid; nothing changed).

        Example:
            >>> async def main() -> str:
            ...     async with OpsAdminClient(ops_address, admin_token=admin_token) as admin:
            ...         return await admin.reload_config(admin_pb2.CONFIG_TARGET_RISK_LIMITS)
            >>> asyncio.run(main())
            'risk limits reloaded from risk_limits.json'
        """
        request = admin_pb2.ReloadConfigRequest(target=target)
        response = await _call(self._stub.ReloadConfig(request, metadata=self._metadata, timeout=self.timeout))
        return response.message


class EngineClient(_Client):
    """Client of ``nautilus.engine.v1.EngineService`` and ``MarketDataService``.

    Market data needs no token; the EngineService calls need the engine token (they are ops's
    interface: strategies trade through ops, never here).

    Args:
        address: engine host:port.
        engine_token: sent as ``x-engine-token`` when given.
        timeout: per-call deadline of unary calls, in seconds.

    Example:
        >>> async def main() -> str:
        ...     async with EngineClient(engine_address) as engine:
        ...         return (await engine.get_quote("BTC-USD")).instrument
        >>> asyncio.run(main())
        'BTC-USD'
    """

    def __init__(self, address: str, *, engine_token: str | None = None, timeout: float = DEFAULT_TIMEOUT) -> None:
        metadata = ((ENGINE_TOKEN_HEADER, engine_token),) if engine_token else ()
        super().__init__(address, metadata, timeout)
        self._engine = engine_pb2_grpc.EngineServiceStub(self._channel)
        self._market = engine_pb2_grpc.MarketDataServiceStub(self._channel)

    async def list_venues(self) -> list[engine_pb2.VenueInfo]:
        """Venues with their status and instrument specs.

        Returns:
            One ``VenueInfo`` per venue: name, kind (``live`` or ``paper``), connected, instruments
            and their trading rules (tick, lot, minimum quantity).

        Raises:
            MeshRpcError: ``UNAUTHENTICATED`` without the engine token.

        Example:
            >>> async def main() -> list[tuple[str, str]]:
            ...     async with EngineClient(engine_address, engine_token=engine_token) as engine:
            ...         return [(v.name, v.kind) for v in await engine.list_venues()]
            >>> asyncio.run(main())
            [('sim', 'live'), ('paper', 'paper')]
        """
        request = engine_pb2.ListVenuesRequest()
        response = await _call(self._engine.ListVenues(request, metadata=self._metadata, timeout=self.timeout))
        return list(response.venues)

    async def list_executions(
        self, since_seq: int = 0, *, page_size: int = 0, page_token: str = ""
    ) -> engine_pb2.ListExecutionsResponse:
        """One page of execution reports with seq > ``since_seq``, in seq order.

        Args:
            since_seq: the last seq already applied (0: from the start).
            page_size: reports per page (0: the server's default).
            page_token: ``next_page_token`` of the previous page; empty for the first page.

        Returns:
            ``reports``, ``next_page_token`` and the engine's last seq.

        Raises:
            MeshRpcError: ``UNAUTHENTICATED`` without the engine token; ``INVALID_ARGUMENT`` for a bad
                page size or token.

        Example:
            >>> async def main() -> bool:
            ...     async with EngineClient(engine_address, engine_token=engine_token) as engine:
            ...         page = await engine.list_executions(since_seq=0, page_size=10)
            ...         seqs = [r.seq for r in page.reports]
            ...         return seqs == sorted(seqs) and all(s > 0 for s in seqs)
            >>> asyncio.run(main())
            True
        """
        request = engine_pb2.ListExecutionsRequest(since_seq=since_seq, page_size=page_size, page_token=page_token)
        return await _call(self._engine.ListExecutions(request, metadata=self._metadata, timeout=self.timeout))

    async def get_order(self, client_order_id: str) -> engine_pb2.Order:
        """One order by client order id.

        Args:
            client_order_id: the order's id (ops derives it from model and signal).

        Returns:
            The order: venue, model, instrument, side, type, quantity, filled quantity, status.

        Raises:
            MeshRpcError: ``NOT_FOUND`` (``ORDER_NOT_FOUND``) for an unknown id.

        Example:
            >>> async def main() -> str:
            ...     async with EngineClient(engine_address, engine_token=engine_token) as engine:
            ...         try:
            ...             await engine.get_order("no-such-order")
            ...         except MeshRpcError as exc:
            ...             return exc.detail.code
            ...     return "found"
            >>> asyncio.run(main())
            'ORDER_NOT_FOUND'
        """
        request = engine_pb2.GetOrderRequest(client_order_id=client_order_id)
        response = await _call(self._engine.GetOrder(request, metadata=self._metadata, timeout=self.timeout))
        return response.order

    async def cancel_all_orders(self, *, venue: str = "", model_id: str = "") -> engine_pb2.CancelAllOrdersResponse:
        """Cancel every resting order (optionally one venue's or one model's).

        Args:
            venue: only this venue's orders; every venue's when empty.
            model_id: only this model's orders; every model's when empty.

        Returns:
            How many orders were cancelled.

        Raises:
            MeshRpcError: ``UNAUTHENTICATED`` without the engine token.

        Example:
            >>> async def main() -> int:
            ...     async with EngineClient(engine_address, engine_token=engine_token) as engine:
            ...         return (await engine.cancel_all_orders(venue="paper", model_id="no_such_model")).canceled_count
            >>> asyncio.run(main())
            0
        """
        request = engine_pb2.CancelAllOrdersRequest(venue=venue, model_id=model_id)
        return await _call(self._engine.CancelAllOrders(request, metadata=self._metadata, timeout=self.timeout))

    async def get_quote(self, instrument: str) -> common_pb2.Quote:
        """The current quote of one instrument.

        Args:
            instrument: the symbol, e.g. ``BTC-USD``.

        Returns:
            The quote: bid, ask and mid (decimal strings), sizes, venue and timestamp.

        Raises:
            MeshRpcError: ``NOT_FOUND`` (``UNKNOWN_INSTRUMENT``) when no venue quotes it.

        Example:
            >>> async def main() -> bool:
            ...     async with EngineClient(engine_address) as engine:
            ...         quote = await engine.get_quote("ETH-USD")
            ...         return Decimal(quote.bid) < Decimal(quote.ask)
            >>> from decimal import Decimal
            >>> asyncio.run(main())
            True
        """
        request = engine_pb2.GetQuoteRequest(instrument=instrument)
        response = await _call(self._market.GetQuote(request, metadata=self._metadata, timeout=self.timeout))
        return response.quote

    async def stream_quotes(self, instruments: Sequence[str] = ()) -> AsyncIterator[engine_pb2.StreamQuotesResponse]:
        """Quote frames as they change (every instrument when ``instruments`` is empty).

        Args:
            instruments: only these symbols; every symbol when empty.

        Yields:
            ``StreamQuotesResponse`` frames, each with one or more quotes.

        Raises:
            MeshRpcError: the stream failed; closing the iterator cancels the call.

        Example:
            >>> async def main() -> set[str]:
            ...     async with EngineClient(engine_address) as engine:
            ...         quotes = engine.stream_quotes(["SOL-USD"])
            ...         frame = await anext(quotes)
            ...         await quotes.aclose()
            ...         return {q.instrument for q in frame.quotes}
            >>> asyncio.run(main())
            {'SOL-USD'}
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

    Args:
        address: host:port of any mesh server.
        timeout: how long to wait, in seconds.
        service: the health service name: ``""`` for the whole server, or e.g.
            ``nautilus.engine.v1.venue.sim`` for one venue.

    Raises:
        TimeoutError: not SERVING within ``timeout`` seconds; the message says the last state seen.

    Example:
        >>> asyncio.run(wait_serving(engine_address, 5.0, service="nautilus.engine.v1.venue.sim"))
        >>> asyncio.run(wait_serving("127.0.0.1:1", 0.3))
        Traceback (most recent call last):
        ...
        TimeoutError: 127.0.0.1:1 not SERVING after 0.3s (UNAVAILABLE)
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
