"""Malformed request bytes are a client error: ``INVALID_ARGUMENT``, logged once, never ``UNKNOWN`` or a silent OK.

grpc decodes each request with the method's deserializer before the handler sees it; a frame that is
not a valid message makes grpc answer ``UNKNOWN: Unexpected DecodeError`` on unary calls and end a
request stream as if the client had closed it (status OK). ``guard`` wraps every handler the server
registers: the deserializer turns undecodable bytes into a ``MalformedRequest`` marker, and the handler
wrapper answers it with ``INVALID_ARGUMENT`` (code ``MALFORMED_REQUEST``), also in the middle of a stream.
"""

from __future__ import annotations

import inspect
import logging
import weakref
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from prometheus_client import CollectorRegistry, Counter

from nautilus_mesh.errors import ValidationError
from nautilus_mesh.status import abort

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MalformedRequest:
    """Stands for a request frame that did not decode."""

    size: int
    reason: str


_COUNTERS: weakref.WeakKeyDictionary[CollectorRegistry, Counter] = weakref.WeakKeyDictionary()


def malformed_requests_counter(registry: CollectorRegistry) -> Counter:
    """``malformed_requests_total{method}`` in ``registry`` (one per registry, however many servers use it)."""
    counter = _COUNTERS.get(registry)
    if counter is None:
        counter = Counter(
            "malformed_requests_total",
            "Requests refused because their bytes do not decode.",
            ["method"],
            registry=registry,
        )
        _COUNTERS[registry] = counter
    return counter


def _error(method: str, bad: MalformedRequest, counter: Counter | None) -> ValidationError:
    if counter is not None:
        counter.labels(method).inc()
    log.warning("[SERVER] malformed request to %s refused: %d bytes (%s)", method, bad.size, bad.reason)
    return ValidationError(
        "MALFORMED_REQUEST",
        f"the request to {method} is not a valid message ({bad.size} bytes)",
        {"method": method, "bytes": bad.size},
    )


def _deserializer(decode: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if decode is None:
        return None

    def deserialize(data: bytes) -> Any:
        try:
            return decode(data)
        except Exception as exc:  # DecodeError, or bad UTF-8 in a string field
            return MalformedRequest(len(data), type(exc).__name__)

    return deserialize


class _Checked:
    """A request stream that ends at the first undecodable frame and remembers it.

    The handler sees an ordinary end of stream (so it answers what it already read and finishes as it does
    when a client half-closes); the wrapper then ends the call with INVALID_ARGUMENT.
    """

    def __init__(self, requests: AsyncIterator[Any]) -> None:
        self._requests = requests
        self.malformed: MalformedRequest | None = None

    def __aiter__(self) -> _Checked:
        return self

    async def __anext__(self) -> Any:
        if self.malformed is not None:
            raise StopAsyncIteration
        request = await self._requests.__anext__()
        if isinstance(request, MalformedRequest):
            self.malformed = request
            raise StopAsyncIteration
        return request


def _refusing_malformed(inner: Any, method: str, counter: Counter | None) -> Any:
    """A unary-request behaviour that answers a malformed request with INVALID_ARGUMENT instead of calling ``inner``."""

    async def behaviour(request: Any, context: Any) -> Any:
        if isinstance(request, MalformedRequest):
            await abort(context, _error(method, request, counter))
        return await inner(request, context)

    return behaviour


def _wrap(handler: Any, method: str, counter: Counter | None) -> Any:
    """The same RpcMethodHandler with a guarded deserializer and behaviour."""
    if handler is None or not hasattr(handler, "_replace"):
        return handler
    decode = _deserializer(handler.request_deserializer)
    if handler.unary_unary is not None:
        return handler._replace(
            request_deserializer=decode, unary_unary=_refusing_malformed(handler.unary_unary, method, counter)
        )
    if handler.unary_stream is not None:
        inner = handler.unary_stream
        if inspect.isasyncgenfunction(inner):

            async def unary_stream_gen(request: Any, context: Any) -> AsyncIterator[Any]:
                if isinstance(request, MalformedRequest):
                    await abort(context, _error(method, request, counter))
                async for response in inner(request, context):
                    yield response

            return handler._replace(request_deserializer=decode, unary_stream=unary_stream_gen)

        return handler._replace(request_deserializer=decode, unary_stream=_refusing_malformed(inner, method, counter))
    if handler.stream_unary is not None:
        inner = handler.stream_unary

        async def stream_unary(requests: AsyncIterator[Any], context: Any) -> Any:
            checked = _Checked(requests)
            response = await inner(checked, context)
            if checked.malformed is not None:
                await abort(context, _error(method, checked.malformed, counter))
            return response

        return handler._replace(request_deserializer=decode, stream_unary=stream_unary)
    if handler.stream_stream is not None:
        inner = handler.stream_stream
        if inspect.isasyncgenfunction(inner):

            async def stream_stream_gen(requests: AsyncIterator[Any], context: Any) -> AsyncIterator[Any]:
                checked = _Checked(requests)
                async for response in inner(checked, context):
                    yield response
                if checked.malformed is not None:
                    await abort(context, _error(method, checked.malformed, counter))

            return handler._replace(request_deserializer=decode, stream_stream=stream_stream_gen)

        async def stream_stream(requests: AsyncIterator[Any], context: Any) -> Any:
            checked = _Checked(requests)
            await inner(checked, context)
            if checked.malformed is not None:
                await abort(context, _error(method, checked.malformed, counter))

        return handler._replace(request_deserializer=decode, stream_stream=stream_stream)
    return handler


class _GuardedGenericHandler(grpc.GenericRpcHandler):  # type: ignore[type-arg]
    def __init__(self, inner: grpc.GenericRpcHandler[Any, Any], counter: Counter | None) -> None:
        self._inner = inner
        self._counter = counter

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = self._inner.service(handler_call_details)
        return _wrap(handler, str(handler_call_details.method), self._counter)  # type: ignore[no-any-return]


class GuardedServer:
    """A registration view of a grpc.aio server: every handler added through it is guarded.

    Only the two registration calls the generated ``add_*Servicer_to_server`` functions use are guarded;
    everything else is passed through to the server.
    """

    def __init__(self, server: grpc.aio.Server, counter: Counter | None = None) -> None:
        self._server = server
        self._counter = counter

    def add_generic_rpc_handlers(self, handlers: Sequence[grpc.GenericRpcHandler[Any, Any]]) -> None:
        self._server.add_generic_rpc_handlers([_GuardedGenericHandler(h, self._counter) for h in handlers])

    def add_registered_method_handlers(self, service_name: str, method_handlers: Mapping[str, Any]) -> None:
        wrapped = {name: _wrap(h, f"/{service_name}/{name}", self._counter) for name, h in method_handlers.items()}
        self._server.add_registered_method_handlers(service_name, wrapped)  # type: ignore[attr-defined]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._server, name)


def guard(server: grpc.aio.Server, registry: CollectorRegistry | None = None) -> grpc.aio.Server:
    """``server`` seen through ``GuardedServer`` (typed as the server, for the generated ``add_*`` functions).

    With a ``registry``, refusals are counted in its ``malformed_requests_total{method}``.
    """
    counter = None if registry is None else malformed_requests_counter(registry)
    return GuardedServer(server, counter)  # type: ignore[return-value]
