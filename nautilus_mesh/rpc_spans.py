"""A SERVER span around every unary RPC (queries, admin calls), named and attributed per the OTel RPC conventions.

Streams are left alone: their messages have their own per-message spans (see :mod:`nautilus_mesh.telemetry`), and
wrapping a streaming handler is what breaks the contrib gRPC instrumentation. The span is parented on a
``traceparent`` request header when the client sent one, and ends with ``rpc.grpc.status_code`` and, for anything
but OK, status ERROR with the code's name. Health checks and reflection (``grpc.*`` services) get none.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from nautilus_mesh.telemetry import Tracing

_PROPAGATOR = TraceContextTextMapPropagator()


def _status_of(context: Any, default: grpc.StatusCode) -> grpc.StatusCode:
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code
    if isinstance(code, int):
        return next((c for c in grpc.StatusCode if c.value[0] == code), default)
    return default


class RpcSpanInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Opens ``<service>/<method>`` SERVER spans on ``tracing`` for unary-unary calls."""

    def __init__(self, tracing: Tracing) -> None:
        self._tracing = tracing

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None or self._tracing.provider is None:
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
