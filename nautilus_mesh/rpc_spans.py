"""RPC metrics for every call, and a SERVER span around every unary RPC (queries, admin calls), named and
attributed per the OTel RPC conventions.

Streams are left alone: their messages have their own per-message spans (see :mod:`nautilus_mesh.telemetry`), and
wrapping a streaming handler is what breaks the contrib gRPC instrumentation. The span is parented on a
``traceparent`` request header when the client sent one, and ends with ``rpc.grpc.status_code`` and, for anything
but OK, status ERROR with the code's name. Health checks and reflection (``grpc.*`` services) get none.

Metrics (:class:`RpcMetricsInterceptor`): every RPC, unary or stream, is counted when it ends in
``grpc_server_handled_total`` and timed in ``grpc_server_handling_seconds``.
"""

from __future__ import annotations

import abc
import asyncio
import inspect
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import grpc
from google.protobuf import descriptor_pool
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from prometheus_client import CollectorRegistry, Counter, Histogram

from nautilus_mesh.telemetry import LATENCY_BUCKETS, Tracing

_PROPAGATOR = TraceContextTextMapPropagator()


def _status_of(context: Any, default: grpc.StatusCode) -> grpc.StatusCode:
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code
    if isinstance(code, int):
        return next((c for c in grpc.StatusCode if c.value[0] == code), default)
    return default


class HandlerWrapper(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """An interceptor that runs each call's handler (when the server has one) as :meth:`wrap` returns it."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        return self.wrap(handler, handler_call_details)

    @abc.abstractmethod
    def wrap(
        self, handler: grpc.RpcMethodHandler[Any, Any], handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler[Any, Any]:
        """The handler to run for the call: ``handler`` itself, or one that calls it."""


class RpcSpanInterceptor(HandlerWrapper):
    """Opens ``<service>/<method>`` SERVER spans on ``tracing`` for unary-unary calls."""

    def __init__(self, tracing: Tracing) -> None:
        self._tracing = tracing

    def wrap(
        self, handler: grpc.RpcMethodHandler[Any, Any], handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler[Any, Any]:
        if handler.unary_unary is None or self._tracing.provider is None:
            return handler
        method = str(handler_call_details.method)
        service, _, name = method.lstrip("/").partition("/")
        if service.startswith("grpc."):  # health probes and reflection: frequent, and no one's request
            return handler
        headers = {str(k): str(v) for k, v in (handler_call_details.invocation_metadata or ())}
        inner = handler.unary_unary
        tracer = self._tracing.tracer

        async def unary_unary(request: Any, context: Any) -> Any:
            attributes = {"rpc.system": "grpc", "rpc.service": service, "rpc.method": name}
            parent = _PROPAGATOR.extract(headers) if "traceparent" in headers else None
            with tracer.start_as_current_span(
                method.lstrip("/"),
                context=parent,
                kind=SpanKind.SERVER,
                attributes=attributes,
                record_exception=False,
                set_status_on_exception=False,
            ) as span:
                try:
                    response = await inner(request, context)
                except BaseException:
                    code = _status_of(context, grpc.StatusCode.UNKNOWN)
                    span.set_attribute("rpc.grpc.status_code", code.value[0])
                    span.set_status(Status(StatusCode.ERROR, code.name))
                    raise
                code = _status_of(context, grpc.StatusCode.OK)
                span.set_attribute("rpc.grpc.status_code", code.value[0])
                if code is not grpc.StatusCode.OK:
                    span.set_status(Status(StatusCode.ERROR, code.name))
                return response

        return grpc.unary_unary_rpc_method_handler(
            unary_unary,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


# -- RPC metrics ----------------------------------------------------------------------------------

_RPC_METRICS: weakref.WeakKeyDictionary[CollectorRegistry, RpcMetrics] = weakref.WeakKeyDictionary()


class RpcMetrics:
    """``grpc_server_handled_total{grpc_service,grpc_method,grpc_code}`` and ``grpc_server_handling_seconds``
    (the names of the Go and Java grpc-prometheus interceptors), one pair per registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.handled = Counter(
            "grpc_server_handled_total",
            "RPCs completed on the server, by service, method and status code (streams count when they end).",
            ["grpc_service", "grpc_method", "grpc_code"],
            registry=registry,
        )
        self.handling = Histogram(
            "grpc_server_handling_seconds",
            "Seconds from the start of an RPC to its end (a stream's whole life), by service and method.",
            ["grpc_service", "grpc_method"],
            buckets=RPC_BUCKETS,
            registry=registry,
        )

    @classmethod
    def of(cls, registry: CollectorRegistry) -> RpcMetrics:
        """The pair in ``registry`` (created on first use, however many servers share the registry)."""
        metrics = _RPC_METRICS.get(registry)
        if metrics is None:
            metrics = _RPC_METRICS[registry] = cls(registry)
        return metrics

    def initialize(self, service_names: Sequence[str]) -> None:
        """Create every method's ``OK`` series at zero, so a dashboard shows 0 rather than no data before traffic."""
        pool = descriptor_pool.Default()
        for service in service_names:
            try:
                descriptor = pool.FindServiceByName(service)
            except KeyError:
                continue
            for method in descriptor.methods:
                self.handled.labels(service, method.name, "OK")
                self.handling.labels(service, method.name)

    def observe(self, service: str, method: str, code: grpc.StatusCode, seconds: float) -> None:
        self.handled.labels(service, method, code.name).inc()
        self.handling.labels(service, method).observe(seconds)


RPC_BUCKETS: tuple[float, ...] = (*LATENCY_BUCKETS[:-1], 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0, float("inf"))
"""Handling-time buckets (seconds): the latency buckets, then longer ones for streams that live up to an hour."""


class RpcMetricsInterceptor(HandlerWrapper):
    """Counts every RPC when it ends in :class:`RpcMetrics`.

    Each handler is wrapped once per call; the code is the one the context ended with (``context.abort``), else
    ``CANCELLED`` when the client went away, ``UNKNOWN`` when the handler raised and ``OK`` otherwise. A stream's
    responses pass through one extra async generator step each (a frame, not an item: streams batch).
    """

    def __init__(self, metrics: RpcMetrics) -> None:
        self._metrics = metrics

    def wrap(
        self, handler: grpc.RpcMethodHandler[Any, Any], handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler[Any, Any]:
        service, _, name = str(handler_call_details.method).lstrip("/").partition("/")
        metrics = self._metrics
        if handler.unary_unary is not None:
            inner = handler.unary_unary

            async def unary_unary(request: Any, context: Any) -> Any:
                started = time.perf_counter()
                try:
                    response = await inner(request, context)
                except BaseException:
                    metrics.observe(service, name, _status_of(context, grpc.StatusCode.UNKNOWN), _since(started))
                    raise
                metrics.observe(service, name, _status_of(context, grpc.StatusCode.OK), _since(started))
                return response

            return grpc.unary_unary_rpc_method_handler(
                unary_unary,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )

        def finish(context: Any, started: float, error: BaseException | None) -> None:
            if isinstance(error, asyncio.CancelledError | GeneratorExit) or context.cancelled():
                code = grpc.StatusCode.CANCELLED  # the client went away (or the server is stopping)
            else:
                code = _status_of(context, grpc.StatusCode.OK if error is None else grpc.StatusCode.UNKNOWN)
            metrics.observe(service, name, code, _since(started))

        def streamed(behaviour: Callable[[Any, Any], Any]) -> Callable[[Any, Any], AsyncIterator[Any]]:
            async def responses(request: Any, context: Any) -> AsyncIterator[Any]:
                started = time.perf_counter()
                try:
                    result = behaviour(request, context)
                    if inspect.isasyncgen(result):
                        async for response in result:
                            yield response
                    else:  # a handler that writes with context.write and returns
                        await result
                except BaseException as exc:
                    finish(context, started, exc)
                    raise
                finish(context, started, None)

            return responses

        def collected(behaviour: Callable[[Any, Any], Awaitable[Any]]) -> Callable[[Any, Any], Awaitable[Any]]:
            async def response(request_iterator: Any, context: Any) -> Any:
                started = time.perf_counter()
                try:
                    answer = await behaviour(request_iterator, context)
                except BaseException as exc:
                    finish(context, started, exc)
                    raise
                finish(context, started, None)
                return answer

            return response

        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                streamed(handler.unary_stream),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(
                collected(handler.stream_unary),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.stream_stream is not None:
            return grpc.stream_stream_rpc_method_handler(
                streamed(handler.stream_stream),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler


def _since(started: float) -> float:
    return time.perf_counter() - started
