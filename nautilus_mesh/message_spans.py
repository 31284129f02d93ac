"""Recording spans for the stream messages, made with less work than the OpenTelemetry SDK's own ``Span``.

The SDK builds each span with a lock, validated and bounded attributes, a fan-out to the span processors at its start
and end, and a generator-based context manager around it: with its export, about 65 us of CPU per span (the engine
with every order traced, ``benchmarks/bench_engine.py --tracing``: 3 spans an order, +175-220 us an order). The spans
of the stream messages (:meth:`nautilus_mesh.telemetry.Tracing.consume` and ``produce``, a few per signal) are made
here instead, with the same parts: the provider's sampler decides, ids are random (a root takes the trace id its
sampling decision was taken for), the parent, kind, attributes, events and status are the SDK's types, the timestamps
are wall-clock nanoseconds (read from :data:`nautilus_mesh.clock.REAL_CLOCK`, as the SDK reads ``time.time_ns``, in
a backtest too), and the ended span goes to the service's span processor as the ``ReadableSpan`` it is, so the exporters
(JSONL, OTLP) write what they wrote before.

What is left out: attribute validation and limits (the attributes are the mesh's own: strings of bounded ids, numbers),
``on_start`` callbacks (the batch processor has none) and span processors added to the provider after the service's
own (none are). The unary RPC spans (:mod:`nautilus_mesh.rpc_spans`) stay on the SDK: they are not per message.
"""

from __future__ import annotations

import random
import traceback
from collections.abc import Mapping
from contextlib import AbstractContextManager
from types import TracebackType
from typing import Any

from opentelemetry import context as context_api
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, SpanProcessor
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, Decision, ParentBased, Sampler, TraceIdRatioBased
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import (
    NonRecordingSpan,
    Span,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    TraceState,
)
from opentelemetry.util import types

from nautilus_mesh.clock import REAL_CLOCK

SCOPE = InstrumentationScope("nautilus_mesh")
"""The instrumentation scope of every message span (the SDK tracer's is ``nautilus_mesh`` too)."""
_UNSET = Status(StatusCode.UNSET)
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_NOT_SAMPLED = TraceFlags(TraceFlags.DEFAULT)


class RecordingSpan(Span, ReadableSpan):
    """A span that records until :meth:`end`, then hands itself to ``processor`` (``on_end``) and changes no more."""

    def __init__(
        self,
        name: str,
        context: SpanContext,
        parent: SpanContext | None,
        kind: SpanKind,
        attributes: dict[str, Any],
        resource: Resource,
        processor: SpanProcessor,
    ) -> None:
        ReadableSpan.__init__(
            self,
            name,
            context,
            parent,
            resource,
            attributes,
            [],
            (),
            kind,
            None,
            _UNSET,
            REAL_CLOCK.time_ns(),
            None,
            SCOPE,
        )
        self._processor = processor

    def get_span_context(self) -> SpanContext:
        return self._context  # type: ignore[return-value]  # always set here

    def is_recording(self) -> bool:
        return self._end_time is None

    def set_attribute(self, key: str, value: types.AttributeValue) -> None:
        if self._end_time is None and value is not None:  # the SDK drops a None value too
            self._attributes[key] = value  # type: ignore[index]  # the dict given at the start

    def set_attributes(self, attributes: Mapping[str, types.AttributeValue]) -> None:
        for key, value in attributes.items():
            self.set_attribute(key, value)

    def add_event(self, name: str, attributes: types.Attributes = None, timestamp: int | None = None) -> None:
        if self._end_time is None:
            self._events.append(Event(name, attributes, timestamp))  # type: ignore[attr-defined]  # the list given

    def update_name(self, name: str) -> None:
        if self._end_time is None:
            self._name = name

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        """As the SDK: an OK status is final, UNSET is ignored, otherwise the newest status wins."""
        code = status.status_code if isinstance(status, Status) else status
        if self._end_time is not None or self._status.status_code is StatusCode.OK or code is StatusCode.UNSET:
            return
        self._status = status if isinstance(status, Status) else Status(status, description)

    def record_exception(
        self,
        exception: BaseException,
        attributes: types.Attributes = None,
        timestamp: int | None = None,
        escaped: bool = False,
    ) -> None:
        """An ``exception`` event with the OTel semantic attributes, as the SDK records one."""
        module, qualname = type(exception).__module__, type(exception).__qualname__
        recorded: dict[str, Any] = {
            "exception.type": f"{module}.{qualname}" if module and module != "builtins" else qualname,
            "exception.message": str(exception),
            "exception.stacktrace": "".join(traceback.format_exception(exception)),
            "exception.escaped": str(escaped),
        }
        if attributes:
            recorded.update(attributes)
        self.add_event("exception", recorded, timestamp)

    def end(self, end_time: int | None = None) -> None:
        if self._end_time is not None:
            return
        self._end_time = end_time if end_time is not None else REAL_CLOCK.time_ns()
        self._processor.on_end(self)


def parent_decides(sampler: Sampler) -> bool:
    """True when ``sampler`` gives a span with a valid parent the parent's decision and trace state, whatever else: the
    SDK's ``ParentBased`` with its default delegates (``ALWAYS_ON`` under a sampled parent, ``ALWAYS_OFF`` under an
    unsampled one), which every ``parentbased_*`` value of ``OTEL_TRACES_SAMPLER`` configures. :func:`start_span`
    then skips the sampler for such a span."""
    return isinstance(sampler, ParentBased) and all(
        getattr(sampler, name, None) is delegate
        for name, delegate in (
            ("_remote_parent_sampled", ALWAYS_ON),
            ("_remote_parent_not_sampled", ALWAYS_OFF),
            ("_local_parent_sampled", ALWAYS_ON),
            ("_local_parent_not_sampled", ALWAYS_OFF),
        )
    )


def root_bound(sampler: Sampler) -> int | None:
    """For a sampler that decides a root span by its trace id alone, the bound under which ``trace_id & (2**64 - 1)``
    is sampled, compared as the SDK's ``TraceIdRatioBased`` compares it: a sampler :func:`parent_decides` accepts over
    ``TraceIdRatioBased`` (its bound), ``ALWAYS_ON`` (2**64: every trace id) or ``ALWAYS_OFF`` (0: none), which is what
    every ``parentbased_*`` value of ``OTEL_TRACES_SAMPLER`` configures. None for any other sampler: it is asked."""
    if not parent_decides(sampler):
        return None
    root = getattr(sampler, "_root", None)
    if type(root) is TraceIdRatioBased:  # exactly: a subclass may decide otherwise
        return root.bound
    if root is ALWAYS_ON:
        return TraceIdRatioBased.TRACE_ID_LIMIT + 1
    if root is ALWAYS_OFF:
        return 0
    return None


def root_sampled(bound: int, trace_id: int) -> bool:
    """The decision of a sampler with :func:`root_bound` ``bound`` for a root span of ``trace_id``."""
    return trace_id & TraceIdRatioBased.TRACE_ID_LIMIT < bound


def start_span(
    name: str,
    kind: SpanKind,
    parent: Context | None,
    attributes: dict[str, Any],
    *,
    sampler: Sampler,
    resource: Resource,
    processor: SpanProcessor,
    root_trace_id: int = 0,
    follow_parent: bool = False,
    root_decided: bool = False,
) -> Span:
    """A new span under ``parent`` (None: the current context), sampled as the SDK samples one: a recording span, or a
    non-recording one carrying the ids when the sampler drops it. ``root_trace_id``: the trace id of a root span (one
    without a valid parent), when its sampling decision was taken before (0: a random one). ``follow_parent``: the
    sampler is one :func:`parent_decides` accepts, so a span with a valid parent takes the parent's decision and trace
    state without asking it (the same result, without the sampler's calls and result object). ``root_decided``: a
    root span (no valid parent) of ``root_trace_id`` is sampled, as :func:`root_sampled` decided for a sampler with a
    :func:`root_bound` (the sampler's own answer: sampled, no trace state), so the sampler is not asked again."""
    parent_context = trace.get_current_span(parent).get_span_context()
    if parent_context.is_valid:
        trace_id = parent_context.trace_id
    else:
        parent_context, trace_id = None, root_trace_id or random.getrandbits(128) or 1  # type: ignore[assignment]
    trace_state: TraceState | None
    if follow_parent and parent_context is not None:
        sampled, trace_state = parent_context.trace_flags.sampled, parent_context.trace_state
        recording = sampled
    elif root_decided and parent_context is None and root_trace_id:
        sampled, trace_state, recording = True, None, True
    else:
        result = sampler.should_sample(parent, trace_id, name, kind, attributes)
        sampled, trace_state = result.decision is Decision.RECORD_AND_SAMPLE, result.trace_state
        recording = result.decision is not Decision.DROP
    context = SpanContext(
        trace_id,
        random.getrandbits(64) or 1,
        is_remote=False,
        trace_flags=_SAMPLED if sampled else _NOT_SAMPLED,
        trace_state=trace_state,
    )
    if not recording:
        return NonRecordingSpan(context)
    return RecordingSpan(name, context, parent_context, kind, attributes, resource, processor)


class CurrentSpan(AbstractContextManager[Span]):
    """Makes ``span`` the current span while the block runs, then ends it; an exception leaving the block is recorded
    on it and sets its status to ERROR, as the SDK's ``start_as_current_span`` does."""

    __slots__ = ("_span", "_token")

    def __init__(self, span: Span) -> None:
        self._span = span

    def __enter__(self) -> Span:
        self._token = context_api.attach(trace.set_span_in_context(self._span))
        return self._span

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        span = self._span
        context_api.detach(self._token)
        if isinstance(exc, Exception) and span.is_recording():  # not GeneratorExit and the like, as the SDK
            span.record_exception(exc)
            span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
        span.end()
