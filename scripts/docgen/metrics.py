"""docs/metrics.md from the metric registries of ops and engine, and the spans found in the source.

Metrics: a fresh ``OpsMetrics`` and ``EngineMetrics`` (plus the shared ``malformed_requests_total`` each service
registers) are read through their registries: name, type, help text and label names. Spans: the source of every
service is parsed with ``ast``; each ``consume("name", ...)``/``produce("name", ...)`` call is a span, and the
string keys of the attribute dicts, ``set_attribute`` and ``add_event`` calls nearest to it in the same function are
its attributes and events.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client import CollectorRegistry
from prometheus_client.metrics import MetricWrapperBase

from clients.trace_stages import HOPS
from docgen import HEADER
from engine_server.metrics import EngineMetrics
from nautilus_mesh.request_guard import malformed_requests_counter
from nautilus_mesh.rpc_spans import RPC_BUCKETS, RpcMetrics
from nautilus_mesh.telemetry import LATENCY_BUCKETS, SpansDroppedCollector, Tracing, count_dropped_spans
from ops_server.metrics import DECISION_STATUSES, ROUTING_MODES, SIGNAL_STAGES, OpsMetrics
from strategies.metrics import RunnerCounters, StrategyMetrics

SPAN_SOURCES = ("strategies", "ops_server", "engine_server", "clients")


@dataclass(frozen=True)
class MetricRow:
    name: str
    type: str
    labels: tuple[str, ...]
    unit: str
    help: str


def _wrappers(registry: CollectorRegistry) -> Iterator[MetricWrapperBase]:
    # The registry's public API yields samples, which a labelled metric has none of until a child exists; the label
    # names live on the collectors themselves.
    for collector in list(registry._collector_to_names):  # no public accessor for the collectors
        if isinstance(collector, MetricWrapperBase):
            yield collector


# Units the name's suffix does not carry.
UNITS = {
    "model_drawdown": "USD",
    "model_position": "qty",
    "model_sharpe": "ratio (annualised)",
    "canary_weight": "fraction",
    "trading_state": "enum (0, 1, 2)",
    "engine_connected": "bool (0, 1)",
    "engine_last_seq": "seq",
    "component_up": "bool (0, 1)",
    "engine_circuit_state": "enum",
    "engine_orders_in_memory": "count",
    "intake_pending_signals": "count",
    "signal_streams_paused": "count",
}
LABEL_VALUES = {
    "mode": ROUTING_MODES,
    "status": DECISION_STATUSES,
    "stage": SIGNAL_STAGES,
}


def _unit(name: str, kind: str) -> str:
    if name in UNITS:
        return UNITS[name]
    for suffix, unit in (("_seconds", "seconds"), ("_usd", "USD"), ("_fraction", "fraction"), ("_total", "count")):
        if name.endswith(suffix) or name.endswith(suffix + "_total"):
            return unit
    return "count" if kind == "gauge" and name.endswith(("_sessions", "_subscribers")) else "-"


def metric_rows(registry: CollectorRegistry) -> list[MetricRow]:
    """Every metric of a registry, in name order."""
    rows = []
    for metric in _wrappers(registry):
        name = metric._name
        kind = metric._type or "untyped"
        shown = f"{name}_total" if kind == "counter" and not name.endswith("_total") else name
        labels = tuple(metric._labelnames)
        rows.append(MetricRow(shown, kind, labels, _unit(shown, kind), metric._documentation))
    for collector in list(registry._collector_to_names):  # our custom collectors describe theirs
        if isinstance(collector, SpansDroppedCollector | RunnerCounters):
            for family in collector.describe():
                labels = tuple(family._labelnames)
                shown = f"{family.name}_total" if family.type == "counter" else family.name
                rows.append(MetricRow(shown, family.type, labels, _unit(shown, family.type), family.documentation))
    return sorted(rows, key=lambda r: r.name)


@dataclass
class Span:
    name: str
    kind: str
    where: set[str] = field(default_factory=set)
    attributes: set[str] = field(default_factory=set)
    events: dict[str, set[str]] = field(default_factory=dict)


def _str_keys(node: ast.Dict) -> list[str]:
    return [k.value for k in node.keys if isinstance(k, ast.Constant) and isinstance(k.value, str)]


def spans_in_source(root: Path) -> dict[str, Span]:
    """Span name -> its kind, the modules that open it, its attributes and events."""
    spans: dict[str, Span] = {}
    for package in SPAN_SOURCES:
        for path in sorted((root / package).rglob("*.py")):
            tree = ast.parse(path.read_text())
            module = path.relative_to(root).as_posix()
            for func in ast.walk(tree):
                if not isinstance(func, ast.FunctionDef | ast.AsyncFunctionDef):
                    continue
                _spans_of_function(func, module, spans)
    return spans


def _spans_of_function(func: ast.FunctionDef | ast.AsyncFunctionDef, module: str, spans: dict[str, Span]) -> None:
    opened: list[tuple[int, Span]] = []
    attrs: list[tuple[int, str]] = []
    events: list[tuple[int, str, list[str]]] = []
    for node in ast.walk(func):
        if isinstance(node, ast.Dict):
            attrs += [(node.lineno, k) for k in _str_keys(node) if k.startswith(("messaging.", "nautilus."))]
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute) or not node.args:
            continue
        first = node.args[0]
        if not isinstance(first, ast.Constant) or not isinstance(first.value, str):
            continue
        method = node.func.attr
        if method in ("consume", "produce") and " " in first.value:
            span = spans.setdefault(first.value, Span(first.value, "CONSUMER" if method == "consume" else "PRODUCER"))
            span.where.add(module)
            opened.append((node.lineno, span))
        elif method == "set_attribute":
            attrs.append((node.lineno, first.value))
        elif method == "add_event":
            keys = _str_keys(node.args[1]) if len(node.args) > 1 and isinstance(node.args[1], ast.Dict) else []
            events.append((node.lineno, first.value, keys))
    if not opened:
        return

    def nearest(line: int) -> Span:
        return min(opened, key=lambda o: abs(o[0] - line))[1]

    for line, key in attrs:
        nearest(line).attributes.add(key)
    for line, name, keys in events:
        nearest(line).events.setdefault(name, set()).update(keys)


def _label(label: str) -> str:
    values = LABEL_VALUES.get(label)
    return f"`{label}` ({'/'.join(values)})" if values else f"`{label}`"


def _metrics_table(title: str, rows: list[MetricRow]) -> str:
    out = [f"## {title}\n\n| metric | type | labels | unit | meaning |\n| --- | --- | --- | --- | --- |\n"]
    for r in rows:
        labels = ", ".join(_label(label) for label in r.labels) or "-"
        out.append(f"| `{r.name}` | {r.type} | {labels} | {r.unit} | {r.help.replace('|', '/')} |\n")
    return "".join(out) + "\n"


def render(root: Path) -> str:
    """The whole of docs/metrics.md."""
    ops = OpsMetrics()
    malformed_requests_counter(ops.registry)
    RpcMetrics.of(ops.registry)
    count_dropped_spans(Tracing("ops", enabled=False), ops.registry)
    engine = EngineMetrics()
    malformed_requests_counter(engine.registry)
    RpcMetrics.of(engine.registry)
    count_dropped_spans(Tracing("engine", enabled=False), engine.registry)
    buckets = ", ".join(f"{b:g}" for b in LATENCY_BUCKETS)
    long_buckets = ", ".join(f"{b:g}" for b in RPC_BUCKETS[len(LATENCY_BUCKETS) - 1 : -1])
    out = [HEADER.format(source="OpsMetrics, EngineMetrics and the spans in the source"), "# Metrics and traces\n\n"]
    out.append(
        "Both services export Prometheus text/OpenMetrics on `/metrics`: ops on `metrics_port` (8002 in the demo), "
        "the engine on its `metrics_port` (8003). Counters are shown with their `_total` suffix; histograms also "
        "export `_bucket`, `_sum` and `_count`. Latency histograms share the buckets (seconds) "
        f"`{buckets}`; `grpc_server_handling_seconds` adds `{long_buckets}` for streams that live long.\n\n"
    )
    out.append(_metrics_table("Ops metrics (`ops_server/metrics.py`)", metric_rows(ops.registry)))
    out.append(_metrics_table("Engine metrics (`engine_server/metrics.py`)", metric_rows(engine.registry)))
    strategies = StrategyMetrics()
    strategies.watch([])
    out.append(
        _metrics_table(
            "Strategy metrics (`strategies/metrics.py`, served when `metrics_port` is set in strategies.json)",
            metric_rows(strategies.registry),
        )
    )
    spans = spans_in_source(root)
    order = {name: i for i, name in enumerate(HOPS)}
    out.append(
        "## Spans\n\n"
        "One trace follows each signal: every hop opens a CONSUMER span parented on the W3C `TraceContext` carried "
        "in the message it received and a PRODUCER span whose context it injects into the message it sends "
        "(messaging semantic conventions; never parented on the long-lived stream's span). Acks and cancels carry "
        "the order's context on without a span of their own. With no OTLP endpoint, spans go to "
        "`var/traces/<service>.jsonl` and `nautilus-mesh traces` prints per-stage latency percentiles.\n\n"
        "Every CONSUMER span also carries `nautilus.frame.received_ns`: when (Unix ns) the stream frame holding its "
        "message was read off the wire. With it a trace splits into stages that add up to its end-to-end time: the "
        "spans, `wire A->B` (producer span end to frame read, the sender's outbox wait included) and "
        "`queue before <span>` (frame read to consumer span start); `nautilus-mesh traces` reports them per stage "
        "and as waterfalls (`--slowest N`, `--trace ID`).\n\n"
        "| span | kind | opened in | attributes | events (attributes) |\n| --- | --- | --- | --- | --- |\n"
    )
    for span in sorted(spans.values(), key=lambda s: (order.get(s.name, len(order)), s.name)):
        attributes = ", ".join(f"`{a}`" for a in sorted(span.attributes)) or "-"
        events = (
            "; ".join(
                f"`{name}` ({', '.join(f'`{k}`' for k in sorted(keys))})" for name, keys in sorted(span.events.items())
            )
            or "-"
        )
        where = ", ".join(f"`{w}`" for w in sorted(span.where))
        out.append(f"| `{span.name}` | {span.kind} | {where} | {attributes} | {events} |\n")
    missing = [hop for hop in HOPS if hop not in spans]
    if missing:
        raise SystemExit(f"metrics.md: spans of the signal's trace not found in the source: {missing}")
    out.append(
        "\nEvery span also carries the resource attribute `service.name` (`ops`, `engine`, `strategy-<name>`). "
        "Sampling follows `OTEL_TRACES_SAMPLER`/`OTEL_TRACES_SAMPLER_ARG` (see "
        "[configuration.md](configuration.md#environment-variables)).\n"
    )
    return re.sub(r"\n{3,}", "\n\n", "".join(out))
