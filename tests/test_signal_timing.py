"""``signal_to_fill_seconds`` is timed from the signal's arrival at ops, not from the order's creation."""

from __future__ import annotations

from nautilus_mesh.api.ops.v1 import ops_pb2
from nautilus_mesh.files import read_jsonl
from tests.conftest import MOMENTUM_META, Mesh, wait_until


async def test_signal_to_fill_when_order_filled_is_timed_from_the_signals_arrival(mesh: Mesh) -> None:
    core = mesh.ops.core
    async with mesh.channel() as channel:
        stub = mesh.ops_stub(channel)
        signal = ops_pb2.Signal(signal_id="t-1", model_id="momentum_v1", instrument="BTC-USD", target=0.1)
        response = await stub.SubmitSignal(ops_pb2.SubmitSignalRequest(signal=signal), metadata=MOMENTUM_META)
    coid = response.decision.client_order_id
    await wait_until(lambda: core.measurement.book("momentum_v1").fills > 0)
    order = core.queries.order(coid)
    assert order is not None
    core.tracing.force_flush()
    spans = [s for s in read_jsonl(mesh.tmp / "spans" / "ops.jsonl") if s.get("name") == "ops.signal receive"]
    (receive,) = [s for s in spans if s.get("attributes", {}).get("nautilus.signal_id") == "t-1"]
    # The clock starts when the signal arrives, before its receive span opens and long before the order exists
    # (sizing and the rails run inside that span).
    assert order.created_ns <= int(receive["start_ns"])
    assert core.metrics.registry.get_sample_value("signal_to_fill_seconds_count") >= 1
