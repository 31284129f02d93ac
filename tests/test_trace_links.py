"""Metrics, traces and logs lead to one another: exemplars, trace ids in JSON logs, span status and conventions."""

from __future__ import annotations

import asyncio
import importlib.metadata
import io
import json
import logging
import os
import time
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from clients.sdk import wait_serving
from nautilus_mesh.api.common.v1 import common_pb2
from nautilus_mesh.api.engine.v1 import engine_pb2, engine_pb2_grpc
from nautilus_mesh.api.ops.v1 import ops_pb2, ops_pb2_grpc
from nautilus_mesh.log_format import JsonFormatter, UtcTextFormatter
from nautilus_mesh.log_safety import SafeLogFilter
from nautilus_mesh.telemetry import ENGINE_ORDER_STREAM, OPS_SIGNAL_STREAM, Tracing
from tests.conftest import ENGINE_TOKEN, MOMENTUM_TOKEN, Mesh, wait_until
from tests.localhost import free_ports
from tests.processes import server_process, write_engine_json, write_ops_json

ROOT = Path(__file__).resolve().parent.parent
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
SAMPLED = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


def read_spans(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


async def wait_for_span(path: Path, name: str, deadline: float = 15.0) -> dict[str, Any]:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        for span in read_spans(path):
            if span["name"] == name and span["trace_id"] == TRACE_ID:
                return span
        await asyncio.sleep(0.05)
    raise AssertionError(f"no {name!r} span of trace {TRACE_ID} in {path}")


def sampled_signal(signal_id: str) -> ops_pb2.Signal:
    """A momentum_v1 signal on BTC-USD (target 0.1) whose trace is sampled."""
    return ops_pb2.Signal(
        signal_id=signal_id,
        model_id="momentum_v1",
        instrument="BTC-USD",
        target=0.1,
        trace=common_pb2.TraceContext(traceparent=SAMPLED),
    )


# -- logs ---------------------------------------------------------------------------------


def _log_through(formatter: logging.Formatter, message: str, *args: object) -> str:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    handler.addFilter(SafeLogFilter())
    logger = logging.getLogger(f"test_trace_links.{type(formatter).__name__}")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning(message, *args)
    finally:
        logger.removeHandler(handler)
    return out.getvalue()


def test_json_log_when_a_span_is_active_carries_its_trace_and_span_ids(tmp_path: Path) -> None:
    tracing = Tracing("t", tmp_path / "spans.jsonl")
    with tracing.consume("b receive", common_pb2.TraceContext(traceparent=SAMPLED)) as span:
        line = _log_through(JsonFormatter(), "[OPS] signal %r rejected", "s-1")
    tracing.shutdown()
    entry = json.loads(line)
    assert entry["trace_id"] == TRACE_ID
    assert entry["span_id"] == f"{span.get_span_context().span_id:016x}"
    assert entry["level"] == "WARNING" and entry["message"] == "[OPS] signal 's-1' rejected"
    assert entry["ts"].endswith("Z") and entry["ts"][10] == "T"
    assert "trace_id" not in json.loads(_log_through(JsonFormatter(), "no span"))


def test_json_log_when_a_value_holds_newlines_stays_one_escaped_line() -> None:
    line = _log_through(JsonFormatter(), "signal %s refused", "a\n2026-01-01 CRITICAL forged\x1b[2J")
    assert line.count("\n") == 1
    assert json.loads(line)["message"] == "signal a\\n2026-01-01 CRITICAL forged\\x1b[2J refused"


def test_text_log_when_formatted_writes_utc_with_the_zone() -> None:
    line = _log_through(UtcTextFormatter(), "hello")
    stamp = line.split(" ", 1)[0]
    assert stamp.endswith("Z") and time.strftime("%Y-%m-%dT", time.gmtime()) in stamp
    assert line.rstrip().endswith("WARNING test_trace_links.UtcTextFormatter hello")


@pytest.mark.timeout(90)
async def test_ops_when_json_logs_and_a_sampled_signal_is_rejected_logs_its_trace_with_an_error_span(
    tmp_path: Path,
) -> None:
    port, engine_port = free_ports(2)  # no engine listens: the signal is rejected ENGINE_UNAVAILABLE
    config = write_ops_json(tmp_path, port, engine_port, span_file=str(tmp_path / "ops-spans.jsonl"))
    log_path = tmp_path / "ops.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    with server_process(["ops_server", "--config", str(tmp_path / "ops.json"), "--log-format", "json"], log_path, env):
        await wait_serving(f"127.0.0.1:{port}", 30)
        signal = sampled_signal("s-json-1")
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await ops_pb2_grpc.OpsServiceStub(channel).SubmitSignal(
                    ops_pb2.SubmitSignalRequest(signal=signal),
                    metadata=(("x-strategy-token", config["strategies"]["momentum"]["token"]),),
                )
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        code = "ENGINE_UNAVAILABLE"
        span = await wait_for_span(tmp_path / "ops-spans.jsonl", "ops.signal receive")
    lines = log_path.read_text().splitlines()
    entries = [json.loads(line) for line in lines]  # every line is one JSON object
    rejected = [e for e in entries if "s-json-1" in e["message"] and "rejected" in e["message"]]
    assert rejected and rejected[0]["trace_id"] == TRACE_ID and rejected[0]["span_id"] == span["span_id"]
    assert rejected[0]["logger"] == "ops_server.signal_path" and rejected[0]["level"] == "INFO"
    assert span["status"] == "ERROR" and span["status_message"] == code
    assert span["attributes"]["messaging.system"] == "grpc"
    assert span["attributes"]["messaging.operation.type"] == "receive"
    assert span["attributes"]["messaging.destination.name"] == OPS_SIGNAL_STREAM
    assert span["service"] == "ops"


@pytest.mark.timeout(90)
async def test_engine_when_log_format_env_is_json_writes_every_line_as_json_in_utc(tmp_path: Path) -> None:
    port = free_ports(1)[0]
    write_engine_json(tmp_path, port)
    log_path = tmp_path / "engine.log"
    env = {**os.environ, "LOG_FORMAT": "json"}
    with server_process(["engine_server", "--config", str(tmp_path / "engine.json")], log_path, env):
        await wait_serving(f"127.0.0.1:{port}", 30)
    entries = [json.loads(line) for line in log_path.read_text().splitlines()]
    assert any("[ENGINE] ready on" in e["message"] for e in entries)
    assert all(e["ts"].endswith("Z") and "trace_id" not in e for e in entries)


# -- spans --------------------------------------------------------------------------------


async def test_engine_span_when_the_venue_rejects_an_order_has_status_error_with_the_code(mesh: Mesh) -> None:
    order = engine_pb2.NewOrder(
        client_order_id="c-nowhere",
        venue="nowhere",
        instrument="BTC-USD",
        side=common_pb2.SIDE_BUY,
        order_type=common_pb2.ORDER_TYPE_MARKET,
        quantity="1",
        trace=common_pb2.TraceContext(traceparent=SAMPLED),
    )

    async def frames() -> AsyncIterator[engine_pb2.StreamOrdersRequest]:
        yield engine_pb2.StreamOrdersRequest(commands=[engine_pb2.OrderCommand(new_order=order)])
        await asyncio.Event().wait()  # keep the session open until cancelled

    async with grpc.aio.insecure_channel(mesh.engine_address) as channel:
        call = engine_pb2_grpc.EngineServiceStub(channel).StreamOrders(
            frames(), metadata=(("x-engine-token", ENGINE_TOKEN),)
        )
        async for response in call:
            if any(r.client_order_id == "c-nowhere" for r in response.reports):
                break
        call.cancel()
    mesh.engine.tracing.force_flush()
    span = await wait_for_span(mesh.tmp / "spans" / "engine.jsonl", "engine.order receive")
    assert span["status"] == "ERROR" and span["status_message"] == "UNKNOWN_VENUE"
    assert span["attributes"]["messaging.destination.name"] == ENGINE_ORDER_STREAM
    assert span["attributes"]["messaging.operation.type"] == "receive"


def test_produce_span_when_given_a_destination_has_the_messaging_send_attributes(tmp_path: Path) -> None:
    tracing = Tracing("t", tmp_path / "spans.jsonl")
    with tracing.produce("a send", common_pb2.TraceContext(), destination=OPS_SIGNAL_STREAM) as span:
        attributes = dict(getattr(span, "attributes", {}) or {})
    tracing.shutdown()
    assert attributes["messaging.system"] == "grpc"
    assert attributes["messaging.operation.type"] == "send"
    assert attributes["messaging.destination.name"] == OPS_SIGNAL_STREAM


def test_resource_when_otel_env_is_set_honours_service_name_and_attributes(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    monkeypatch.delenv("OTEL_RESOURCE_ATTRIBUTES", raising=False)
    plain = Tracing("ops", tmp_path / "a.jsonl")
    assert plain.provider is not None
    assert plain.provider.resource.attributes["service.name"] == "ops"
    assert plain.provider.resource.attributes["service.version"] == importlib.metadata.version("nautilus-mesh")
    plain.shutdown()
    monkeypatch.setenv("OTEL_SERVICE_NAME", "ops-eu")
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=staging")
    named = Tracing("ops", tmp_path / "b.jsonl")
    assert named.provider is not None
    attributes = named.provider.resource.attributes
    named.shutdown()
    assert attributes["service.name"] == "ops-eu"
    assert attributes["deployment.environment"] == "staging"
    assert "service.version" in attributes


# -- metrics ------------------------------------------------------------------------------


async def scrape_openmetrics(port: int) -> dict[str, Any]:
    def get() -> str:
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/metrics", headers={"Accept": "application/openmetrics-text"}
        )
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 (a loopback http URL)
            return str(response.read().decode())

    text = await asyncio.to_thread(get)
    return {family.name: family for family in text_string_to_metric_families(text)}


async def global_state_scraped(port: int, within: float = 10.0) -> dict[tuple[str, str], float]:
    """``trading_state`` by (scope, model) once the sampler (every 0.2 s in the tests) has set the global one."""
    deadline = time.monotonic() + within
    while True:
        family = (await scrape_openmetrics(port)).get("trading_state")
        states = {(s.labels["scope"], s.labels.get("model", "")): s.value for s in family.samples} if family else {}
        if ("global", "") in states or time.monotonic() > deadline:
            return states
        await asyncio.sleep(0.05)


async def test_metrics_when_a_sampled_signal_fills_carry_trace_id_exemplars_process_and_global_state(
    metered_mesh: Mesh,
) -> None:
    async with metered_mesh.channel() as channel:
        decision = await metered_mesh.ops_stub(channel).SubmitSignal(
            ops_pb2.SubmitSignalRequest(signal=sampled_signal("x-1")),
            metadata=(("x-strategy-token", MOMENTUM_TOKEN),),
        )
    core = metered_mesh.ops.core
    await wait_until(lambda: not core.queries.order(decision.decision.client_order_id).open_quantity)
    assert metered_mesh.ops.metrics_server is not None and metered_mesh.engine.metrics_server is not None
    ops = await scrape_openmetrics(metered_mesh.ops.metrics_server.port)
    for histogram in ("signal_latency_seconds", "signal_to_fill_seconds"):
        exemplars = [s.exemplar for s in ops[histogram].samples if s.exemplar is not None]
        assert exemplars and all(e.labels == {"trace_id": TRACE_ID} for e in exemplars), histogram
    states = await global_state_scraped(metered_mesh.ops.metrics_server.port)
    assert states[("global", "")] == 0 and states[("model", "momentum_v1")] == 0
    engine = await scrape_openmetrics(metered_mesh.engine.metrics_server.port)
    for families in (ops, engine):
        assert families["process_cpu_seconds"].samples[0].value > 0
        assert "process_resident_memory_bytes" in families and "python_info" in families


def test_strategies_args_when_log_format_json_or_env_set_choose_json(monkeypatch: pytest.MonkeyPatch) -> None:
    from strategies.__main__ import parse_args

    monkeypatch.delenv("LOG_FORMAT", raising=False)
    assert parse_args(["--config", "s.json"]).log_format == "text"
    assert parse_args(["--config", "s.json", "--log-format", "json"]).log_format == "json"
    monkeypatch.setenv("LOG_FORMAT", "json")
    assert parse_args(["--config", "s.json"]).log_format == "json"


async def test_unary_rpcs_when_called_get_server_spans_with_the_grpc_code(mesh: Mesh) -> None:
    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    async with mesh.channel() as channel:
        await mesh.ops_stub(channel).ListModels(
            ops_pb2.ListModelsRequest(),
            metadata=(("x-strategy-token", MOMENTUM_TOKEN), ("traceparent", parent)),
        )
    async with grpc.aio.insecure_channel(mesh.engine_address) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await engine_pb2_grpc.EngineServiceStub(channel).GetOrder(
                engine_pb2.GetOrderRequest(client_order_id="never-sent"), metadata=(("x-engine-token", ENGINE_TOKEN),)
            )
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    mesh.ops.core.tracing.force_flush()
    mesh.engine.tracing.force_flush()
    spans = mesh.tmp / "spans"
    await wait_until(lambda: any(s["name"].endswith("/ListModels") for s in read_spans(spans / "ops.jsonl")))
    await wait_until(lambda: any(s["name"].endswith("/GetOrder") for s in read_spans(spans / "engine.jsonl")))
    listed = next(s for s in read_spans(spans / "ops.jsonl") if s["name"].endswith("/ListModels"))
    assert listed["name"] == "nautilus.ops.v1.OpsService/ListModels" and listed["kind"] == "SERVER"
    assert listed["trace_id"] == "0af7651916cd43dd8448eb211c80319c"  # joined the caller's trace
    assert listed["attributes"] == {
        "rpc.system": "grpc",
        "rpc.service": "nautilus.ops.v1.OpsService",
        "rpc.method": "ListModels",
        "rpc.grpc.status_code": 0,
    }
    assert listed["status"] == "UNSET"
    failed = next(s for s in read_spans(spans / "engine.jsonl") if s["name"].endswith("/GetOrder"))
    assert failed["attributes"]["rpc.grpc.status_code"] == grpc.StatusCode.NOT_FOUND.value[0]
    assert failed["status"] == "ERROR" and failed["status_message"] == "NOT_FOUND"
    served = [s["name"] for s in read_spans(spans / "engine.jsonl") if s["kind"] == "SERVER"]
    assert not any("Stream" in name or name.startswith("grpc.") for name in served)  # no streams, no probes
