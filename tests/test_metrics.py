"""The /metrics endpoints of ops and engine, scraped over HTTP and parsed as Prometheus text."""

from __future__ import annotations

import asyncio
import urllib.request

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from nautilus_mesh.api.ops.v1 import ops_pb2
from tests.conftest import MOMENTUM_TOKEN, Mesh, wait_until


async def scrape(port: int) -> dict[str, list[tuple[str, dict[str, str], float]]]:
    def get() -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            return str(response.read().decode())

    text = await asyncio.to_thread(get)
    return {
        family.name: [(s.name, s.labels, s.value) for s in family.samples]
        for family in text_string_to_metric_families(text)
    }


async def test_metrics_when_a_signal_is_filled_expose_routing_orders_capital_and_latency(metered_mesh: Mesh) -> None:
    async with metered_mesh.channel() as channel:
        stub = metered_mesh.ops_stub(channel)
        decision = await stub.SubmitSignal(
            ops_pb2.SubmitSignalRequest(
                signal=ops_pb2.Signal(signal_id="m-1", model_id="momentum_v1", instrument="BTC-USD", target=0.1)
            ),
            metadata=(("x-strategy-token", MOMENTUM_TOKEN),),
        )
    core = metered_mesh.ops.core
    await wait_until(lambda: not core.queries.order(decision.decision.client_order_id).open_quantity)
    assert metered_mesh.ops.metrics_server is not None and metered_mesh.engine.metrics_server is not None
    ops = await scrape(metered_mesh.ops.metrics_server.port)
    routed = {(s[1]["model"], s[1]["mode"]): s[2] for s in ops["signals_routed"] if s[0].endswith("_total")}
    assert routed[("momentum_v1", "LIVE")] == 1
    submitted = {s[1]["venue"]: s[2] for s in ops["orders_submitted"] if s[0].endswith("_total")}
    assert submitted["sim"] == 1
    capital = {s[1]["model"]: s[2] for s in ops["allocated_capital_usd"]}
    assert capital["momentum_v1"] == 500000.0
    buckets = [s for s in ops["signal_latency_seconds"] if s[0].endswith("_bucket")]
    bounds = {float(s[1]["le"]) for s in buckets}
    assert {0.00005, 0.0001, 0.0005, 0.001} <= bounds  # sub-millisecond resolution
    assert next(s[2] for s in buckets if s[1]["le"] == "+Inf") >= 1

    # One strategy order, one first fill: the demo canary's paper twin filled too, and is not a signal's fill.
    await wait_until(lambda: core.queries.fills("momentum_v1@paper", 10, "").items != [])
    ops = await scrape(metered_mesh.ops.metrics_server.port)
    to_fill = {s[0]: s[2] for s in ops["signal_to_fill_seconds"] if s[0].endswith("_count")}
    assert to_fill == {"signal_to_fill_seconds_count": 1.0}

    engine = await scrape(metered_mesh.engine.metrics_server.port)
    received = {s[1]["venue"]: s[2] for s in engine["engine_orders"] if s[0].endswith("_total")}
    assert received["sim"] == 1
    assert "venue_rejections" in engine
    # The engine's checks are on /metrics without anyone calling GetHealth.
    up = {s[1]["component"]: s[2] for s in engine["component_up"]}
    assert up["venue:sim"] == 1 and up["last_seq"] == 1 and "ops_session" in up


async def test_metrics_before_any_signal_show_the_known_label_sets_at_zero(metered_mesh: Mesh) -> None:
    """Panels and alerts read ``decisions_total`` and the engine's order, fill and report counters: each configured
    model's decisions by status and each venue's series exist at 0 before the first signal (a counter first seen at 1
    is no increase to ``rate()``)."""
    assert metered_mesh.ops.metrics_server is not None and metered_mesh.engine.metrics_server is not None
    ops = await scrape(metered_mesh.ops.metrics_server.port)
    decisions = {
        (s[1]["model"], s[1]["status"], s[1]["code"]): s[2] for s in ops["decisions"] if s[0] == "decisions_total"
    }
    for model in ("momentum_v1", "momentum_v2", "meanrev_v1"):
        for status in ("ACCEPTED", "REJECTED", "NO_ACTION", "DUPLICATE"):
            assert decisions[(model, status, "")] == 0, (model, status)
    engine = await scrape(metered_mesh.engine.metrics_server.port)
    venues = {v.name for v in metered_mesh.engine.config.venues}
    for family, sample in (("engine_orders", "engine_orders_total"), ("engine_fills", "engine_fills_total")):
        assert {s[1]["venue"]: s[2] for s in engine[family] if s[0] == sample} == dict.fromkeys(venues, 0.0)
    reports = {(s[1]["venue"], s[1]["exec_type"]): s[2] for s in engine["execution_reports"] if s[0].endswith("_total")}
    assert reports[("sim", "FILL")] == 0 and reports[("sim", "REJECTED")] == 0
    assert len(reports) == 6 * len(venues)


async def test_paper_twin_fills_when_counted_add_no_signal_series_for_the_paper_book(metered_mesh: Mesh) -> None:
    async with metered_mesh.channel() as channel:
        await metered_mesh.ops_stub(channel).SubmitSignal(
            ops_pb2.SubmitSignalRequest(
                signal=ops_pb2.Signal(signal_id="twin-1", model_id="momentum_v1", instrument="BTC-USD", target=0.1)
            ),
            metadata=(("x-strategy-token", MOMENTUM_TOKEN),),
        )
    core = metered_mesh.ops.core
    await wait_until(lambda: core.queries.fills("momentum_v1@paper", 10, "").items != [])
    assert metered_mesh.ops.metrics_server is not None
    ops = await scrape(metered_mesh.ops.metrics_server.port)
    fills = {s[1]["model"]: s[2] for s in ops["fills"] if s[0] == "fills_total"}
    assert fills["momentum_v1@paper"] == 1 and fills["momentum_v1"] == 1
    for family in ("signals_received", "signals_routed", "signal_decisions", "decisions"):
        assert not [s for s in ops[family] if s[1]["model"].endswith("@paper")], family


async def test_engine_connected_when_the_engine_goes_away_reads_0_at_once(metered_mesh: Mesh) -> None:
    core = metered_mesh.ops.core
    assert metered_mesh.ops.metrics_server is not None
    assert (await scrape(metered_mesh.ops.metrics_server.port))["engine_connected"][0][2] == 1
    await metered_mesh.engine.stop(grace=0.1)
    await wait_until(lambda: not core.engine_connected)
    assert (await scrape(metered_mesh.ops.metrics_server.port))["engine_connected"][0][2] == 0


async def test_engine_health_when_venues_connected_reports_each_venue_serving(mesh: Mesh) -> None:
    async with grpc.aio.insecure_channel(mesh.engine_address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for name in ("sim", "paper"):
            response = await health.Check(health_pb2.HealthCheckRequest(service=f"nautilus.engine.v1.venue.{name}"))
            assert response.status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await health.Check(health_pb2.HealthCheckRequest(service="nautilus.engine.v1.venue.nope"))
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
