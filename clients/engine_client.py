"""``EngineClient`` (``nautilus.engine.v1.EngineService`` and ``MarketDataService``) and ``wait_serving``."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from clients.client_base import DEFAULT_TIMEOUT, _Client
from clients.errors import MeshRpcError
from nautilus_mesh.api.common.v1 import common_pb2
from nautilus_mesh.api.engine.v1 import engine_pb2, engine_pb2_grpc
from nautilus_mesh.auth import ENGINE_TOKEN_HEADER
from nautilus_mesh.serving import CHANNEL_OPTIONS

__all__ = ["EngineClient", "wait_serving"]


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

    async def get_health(self) -> engine_pb2.GetHealthResponse:
        """Every health check of the engine and their rollup (needs the engine token).

        Returns:
            ``status`` (the worst check) and ``checks`` (venues, quotes, journal, last seq, the ops
            session), each with ``name``, ``status``, ``detail`` and ``age_seconds``.

        Raises:
            MeshRpcError: ``UNAUTHENTICATED`` without the engine token.

        Example:
            >>> async def main() -> str:
            ...     async with EngineClient(engine_address, engine_token=engine_token) as engine:
            ...         return common_pb2.HealthStatus.Name((await engine.get_health()).status)
            >>> asyncio.run(main())  # doctest: +ELLIPSIS
            'HEALTH_STATUS_...'
        """
        request = engine_pb2.GetHealthRequest()
        return await self._unary(self._engine.GetHealth, request)

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
        response = await self._unary(self._engine.ListVenues, request)
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
        return await self._unary(self._engine.ListExecutions, request)

    async def get_order(self, client_order_id: str) -> engine_pb2.Order:
        """One order by client order id.

        Args:
            client_order_id: the order's id (ops derives it from model and signal).

        Returns:
            The order: venue, model, instrument, side, type, quantity, filled quantity, status.

        Raises:
            MeshRpcError: ``NOT_FOUND`` (``ORDER_NOT_FOUND``) for an unknown id.

        Example:
            >>> async def main() -> None:
            ...     async with EngineClient(engine_address, engine_token=engine_token) as engine:
            ...         await engine.get_order("no-such-order")
            >>> asyncio.run(main())
            Traceback (most recent call last):
                ...
            clients.errors.MeshRpcError: NOT_FOUND: ORDER_NOT_FOUND: ...
        """
        request = engine_pb2.GetOrderRequest(client_order_id=client_order_id)
        response = await self._unary(self._engine.GetOrder, request)
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
        return await self._unary(self._engine.CancelAllOrders, request)

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
        response = await self._unary(self._market.GetQuote, request)
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
