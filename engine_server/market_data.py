"""``nautilus.engine.v1.MarketDataService``: the live venues' quotes, public and read-only (no token)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from engine_server.engine_core import EngineCore
from nautilus_mesh.api.engine.v1 import engine_pb2, engine_pb2_grpc
from nautilus_mesh.errors import NotFoundError
from nautilus_mesh.status import abort

Context = grpc.aio.ServicerContext[object, object]


class MarketDataService(engine_pb2_grpc.MarketDataServiceServicer):
    """Quotes of the live venues. Public, read-only: no token needed."""

    def __init__(self, core: EngineCore) -> None:
        self.core = core

    async def StreamQuotes(
        self, request: engine_pb2.StreamQuotesRequest, context: Context
    ) -> AsyncIterator[engine_pb2.StreamQuotesResponse]:
        wanted = frozenset(request.instruments)
        queue = self.core.subscribe_quotes()
        try:
            snapshot = [q for q in self.core.live_quotes() if not wanted or q.instrument in wanted]
            if snapshot:
                yield engine_pb2.StreamQuotesResponse(quotes=snapshot)
            while True:
                quotes = await queue.get()
                selected = [q for q in quotes if not wanted or q.instrument in wanted]
                if selected:
                    yield engine_pb2.StreamQuotesResponse(quotes=selected)
        finally:
            self.core.unsubscribe_quotes(queue)

    async def GetQuote(self, request: engine_pb2.GetQuoteRequest, context: Context) -> engine_pb2.GetQuoteResponse:
        for quote in self.core.live_quotes():
            if quote.instrument == request.instrument:
                return engine_pb2.GetQuoteResponse(quote=quote)
        await abort(
            context,
            NotFoundError("UNKNOWN_INSTRUMENT", f"no quote for {request.instrument!r}", field="instrument"),
        )
