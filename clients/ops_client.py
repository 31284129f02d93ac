"""``OpsClient``: the strategies' side of ``nautilus.ops.v1.OpsService`` (signals and queries)."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence

import grpc

from clients.client_base import DEFAULT_TIMEOUT, _Client
from clients.errors import MeshRpcError
from clients.signal_stream import SignalStream, StreamCall, wrong_shard_owner
from nautilus_mesh.api.ops.v1 import ops_pb2, ops_pb2_grpc
from nautilus_mesh.auth import ADMIN_TOKEN_HEADER, STRATEGY_TOKEN_HEADER
from nautilus_mesh.serving import CHANNEL_OPTIONS

__all__ = ["OpsClient"]


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
        self._owners: dict[str, tuple[grpc.aio.Channel, ops_pb2_grpc.OpsServiceAsyncStub]] = {}

    def _owner_stub(self, address: str) -> ops_pb2_grpc.OpsServiceAsyncStub:
        """A stub on another ops worker (sharded ops), its channel kept until :meth:`close`."""
        if address not in self._owners:
            channel = grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)
            self._owners[address] = (channel, ops_pb2_grpc.OpsServiceStub(channel))
        return self._owners[address][1]

    def _reopen_stream(self, address: str) -> StreamCall:
        return self._owner_stub(address).StreamSignals(None, metadata=self._metadata)

    async def close(self) -> None:
        """Close the channel (and those opened on other ops workers), cancelling calls still in flight.

        ``async with`` calls it on exit; call it yourself when you hold a client without one.

        Example:
            >>> async def main() -> None:
            ...     ops = OpsClient(ops_address, strategy_token=strategy_token)
            ...     try:
            ...         await ops.get_stream_limits()
            ...     finally:
            ...         await ops.close()
            >>> asyncio.run(main())
        """
        for channel, _ in self._owners.values():
            await channel.close(None)
        self._owners.clear()
        await super().close()

    def stream_signals(self) -> SignalStream:
        """Open the bidi signal stream (no deadline: it is long-lived).

        Write ``StreamSignalsRequest`` frames (one or many signals each; size them by
        :meth:`get_stream_limits`) and read ``StreamSignalsResponse`` frames (decisions, then the
        fills of the orders). A bad signal is answered in-band with a ``REJECTED`` decision; the
        stream stays open.

        Returns:
            A :class:`~clients.signal_stream.SignalStream`: ``write``, ``done_writing``, ``cancel``
            and ``async for``; its failures raise MeshRpcError.

        Example:
            >>> async def main() -> str:
            ...     async with OpsClient(ops_address, strategy_token=strategy_token) as ops:
            ...         stream = ops.stream_signals()
            ...         signal = ops_pb2.Signal(signal_id="doc-stream-1", model_id="momentum_v1",
            ...                                 instrument="BTC-USD", target=0.05)
            ...         await stream.write(ops_pb2.StreamSignalsRequest(signals=[signal]))
            ...         async for frame in stream:
            ...             if frame.decisions:
            ...                 stream.cancel()
            ...                 return ops_pb2.DecisionStatus.Name(frame.decisions[0].status)
            ...     return "no decision"
            >>> asyncio.run(main())
            'DECISION_STATUS_ACCEPTED'

        """
        return SignalStream(self._stub.StreamSignals(None, metadata=self._metadata), reopen=self._reopen_stream)

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
        try:
            response = await self._unary(self._stub.SubmitSignal, request)
        except MeshRpcError as exc:
            owner = wrong_shard_owner(exc)
            if owner is None:
                raise
            # Another ops worker owns the strategy (nothing was decided here): follow the refusal once.
            stub = self._owner_stub(owner)
            response = await self._unary(stub.SubmitSignal, request)
        return response.decision

    async def get_shard_map(self) -> ops_pb2.GetShardMapResponse:
        """Which ops worker owns which strategy (``workers`` is 1 when ops is not sharded).

        Example:
            >>> async def main() -> int:
            ...     async with OpsClient(ops_address, strategy_token=strategy_token) as ops:
            ...         return (await ops.get_shard_map()).workers
            >>> asyncio.run(main())
            1
        """
        return await self._unary(self._stub.GetShardMap, ops_pb2.GetShardMapRequest())

    async def get_stream_limits(self) -> ops_pb2.GetStreamLimitsResponse:
        """The bounds ops holds ``StreamSignals`` to (signals per frame): size frames by them.

        Returns:
            ``max_signals_per_frame`` (a bigger frame is answered with one ``FRAME_TOO_LARGE``
            rejection) and ``max_items_per_response``.

        Raises:
            MeshRpcError: the call failed (e.g. ``UNAUTHENTICATED`` without a token).

        Example:
            >>> async def main() -> bool:
            ...     async with OpsClient(ops_address, strategy_token=strategy_token) as ops:
            ...         limits = await ops.get_stream_limits()
            ...         return MAX_SIGNALS_PER_FRAME <= limits.max_signals_per_frame
            >>> asyncio.run(main())  # the SDK's frames fit the server's bound
            True
        """
        request = ops_pb2.GetStreamLimitsRequest()
        return await self._unary(self._stub.GetStreamLimits, request)

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
            >>> async def main() -> bool:
            ...     async with OpsClient(ops_address, strategy_token=strategy_token) as ops:
            ...         positions = await ops.get_positions("momentum_v1")
            ...         return all(p.model_id == "momentum_v1" and p.quantity for p in positions)
            >>> asyncio.run(main())
            True
        """
        request = ops_pb2.GetPositionsRequest(model_id=model_id)
        response = await self._unary(self._stub.GetPositions, request)
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
            >>> print("\\n".join(asyncio.run(main())))  # a strategy token sees its own strategy's models
            momentum momentum_v1 1.0.0
            momentum momentum_v2 2.0.0
        """
        request = ops_pb2.ListModelsRequest(strategy_id=strategy_id)
        response = await self._unary(self._stub.ListModels, request)
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
        return await self._unary(self._stub.GetAllocations, request)

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
        return await self._unary(self._stub.GetModelQuota, request)

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
        return await self._unary(self._stub.GetModelStats, request)

    async def list_orders(
        self, model_id: str = "", *, page_size: int = 0, page_token: str = ""
    ) -> ops_pb2.ListOrdersResponse:
        """One page of orders, newest first.

        Args:
            model_id: only this model's orders; every model's when empty.
            page_size: orders per page: 0 for 100; a larger size than 1,000 is served 1,000.
            page_token: ``next_page_token`` of the previous page; empty for the first page.

        Returns:
            ``orders`` and ``next_page_token`` (empty on the last page).

        Raises:
            MeshRpcError: ``INVALID_ARGUMENT`` (``INVALID_PAGE_SIZE``, ``INVALID_PAGE_TOKEN``).

        Example:
            >>> async def main() -> bool:
            ...     async with OpsClient(ops_address, strategy_token=strategy_token) as ops:
            ...         orders, token = [], ""
            ...         while True:
            ...             page = await ops.list_orders("momentum_v1", page_size=50, page_token=token)
            ...             orders += page.orders
            ...             if not (token := page.next_page_token):
            ...                 return all(o.model_id == "momentum_v1" for o in orders)
            >>> asyncio.run(main())
            True
        """
        request = ops_pb2.ListOrdersRequest(model_id=model_id, page_size=page_size, page_token=page_token)
        return await self._unary(self._stub.ListOrders, request)

    async def list_fills(
        self, model_id: str = "", *, page_size: int = 0, page_token: str = ""
    ) -> ops_pb2.ListFillsResponse:
        """One page of fills, newest first: ``fills`` and ``next_page_token`` (empty on the last page).

        Pages as :meth:`list_orders` does: ``model_id`` keeps one model's fills (every model's when empty);
        ``page_size``, ``page_token`` and the errors (``INVALID_PAGE_SIZE``, ``INVALID_PAGE_TOKEN``) are the same.

        Example:
            >>> async def main() -> None:
            ...     async with OpsClient(ops_address, strategy_token=strategy_token) as ops:
            ...         await ops.list_fills(page_token="not-a-token")
            >>> asyncio.run(main())
            Traceback (most recent call last):
                ...
            clients.errors.MeshRpcError: INVALID_ARGUMENT: INVALID_PAGE_TOKEN: ...
        """
        request = ops_pb2.ListFillsRequest(model_id=model_id, page_size=page_size, page_token=page_token)
        return await self._unary(self._stub.ListFills, request)

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
        response = await self._unary(self._stub.GetCanaryStatus, request)
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
        return await self._unary(self._stub.GetRiskLimits, request)

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
        return await self._unary(self._stub.GetTradingState, request)

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
            ...         await admin.set_trading_state(common_pb2.TRADING_STATE_ACTIVE, model_id="momentum_v1",
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
