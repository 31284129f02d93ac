"""A strategy stream resumes from the last fill it saw (fills applied while no stream was open arrive once), and its
response frames are bounded in bytes."""

from __future__ import annotations

from decimal import Decimal

import pytest

from nautilus_mesh.api.ops.v1 import ops_pb2
from ops_server import service as service_module
from tests.conftest import MOMENTUM_META, Mesh, wait_until


def signal(signal_id: str, target: float) -> ops_pb2.Signal:
    return ops_pb2.Signal(signal_id=signal_id, model_id="momentum_v1", instrument="BTC-USD", target=target)


async def filled(mesh: Mesh, client_order_id: str) -> None:
    queries = mesh.ops.core.queries
    await wait_until(lambda: (o := queries.order(client_order_id)) is not None and o.open_quantity == Decimal(0))


async def test_stream_when_reopened_with_a_resume_cursor_gets_the_missed_fills_once(mesh: Mesh) -> None:
    async with mesh.channel() as channel:
        stub = mesh.ops_stub(channel)
        first = stub.StreamSignals(metadata=MOMENTUM_META)
        await first.write(ops_pb2.StreamSignalsRequest(signals=[signal("r-1", 0.1)]))
        seen: list[ops_pb2.Fill] = []
        while not seen:
            seen.extend((await first.read()).fills)
        first.cancel()
        cursor = max(f.seq for f in seen)

        # While no stream is open, two more orders fill: nobody is there to receive those fills.
        missed = []
        for i, target in ((2, 0.2), (3, 0.05)):
            response = await stub.SubmitSignal(
                ops_pb2.SubmitSignalRequest(signal=signal(f"r-{i}", target)), metadata=MOMENTUM_META
            )
            await filled(mesh, response.decision.client_order_id)
            missed.append(response.decision.client_order_id)

        second = stub.StreamSignals(metadata=MOMENTUM_META)
        await second.write(ops_pb2.StreamSignalsRequest(resume_after_fill_seq=cursor))
        expected = {f.exec_id for f in mesh.ops.core.queries.fills_after(cursor, frozenset({"momentum_v1"}))}
        assert expected and {
            f.client_order_id for f in mesh.ops.core.queries.fills_after(cursor, frozenset({"momentum_v1"}))
        } == set(missed)
        replayed: list[ops_pb2.Fill] = []
        while {f.exec_id for f in replayed} != expected:
            replayed.extend((await second.read()).fills)
        # Once: sending the cursor again on the same stream replays nothing more.
        await second.write(ops_pb2.StreamSignalsRequest(resume_after_fill_seq=cursor, signals=[signal("r-4", 0.05)]))
        frame = await second.read()
        second.cancel()
    assert sorted(f.exec_id for f in replayed) == sorted(expected)  # each missed fill exactly once
    assert all(f.seq > cursor for f in replayed)
    assert not [f for f in frame.fills if f.exec_id in expected]


async def test_stream_when_it_resumes_from_seq_0_with_resume_fills_gets_every_fill_held(mesh: Mesh) -> None:
    """A strategy that started when its models had no fill and lost its stream before its first fill resumes from 0:
    ``resume_after_fill_seq`` 0 alone means no replay, ``resume_fills`` asks for one."""
    async with mesh.channel() as channel:
        stub = mesh.ops_stub(channel)
        response = await stub.SubmitSignal(
            ops_pb2.SubmitSignalRequest(signal=signal("z-1", 0.1)), metadata=MOMENTUM_META
        )
        await filled(mesh, response.decision.client_order_id)
        held = {f.exec_id for f in mesh.ops.core.queries.fills_after(0, frozenset({"momentum_v1"}))}
        assert held

        plain = stub.StreamSignals(metadata=MOMENTUM_META)  # 0 without the flag: nothing replayed
        await plain.write(ops_pb2.StreamSignalsRequest(resume_after_fill_seq=0, signals=[signal("z-2", 0.1)]))
        answer = await plain.read()
        plain.cancel()
        assert not {f.exec_id for f in answer.fills} & held

        resumed = stub.StreamSignals(metadata=MOMENTUM_META)
        await resumed.write(ops_pb2.StreamSignalsRequest(resume_after_fill_seq=0, resume_fills=True))
        replayed: list[ops_pb2.Fill] = []
        while not held <= {f.exec_id for f in replayed}:
            replayed.extend((await resumed.read()).fills)
        resumed.cancel()
    assert len({f.exec_id for f in replayed}) == len(replayed)  # once each


async def test_response_frames_when_items_are_many_bytes_are_split_by_size(
    mesh: Mesh, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(service_module, "MAX_RESPONSE_BYTES", 400)
    signals = [
        ops_pb2.Signal(signal_id=f"big-{i}-" + "x" * 100, model_id="momentum_v1", instrument="NOPE-USD", target=0.1)
        for i in range(20)
    ]
    async with mesh.channel() as channel:
        call = mesh.ops_stub(channel).StreamSignals(metadata=MOMENTUM_META)
        await call.write(ops_pb2.StreamSignalsRequest(signals=signals))
        frames: list[ops_pb2.StreamSignalsResponse] = []
        while sum(len(f.decisions) for f in frames) < 20:
            frames.append(await call.read())
        call.cancel()
    assert len(frames) > 1
    for frame in frames:  # each frame stops growing once its items reach the bound (one item may cross it)
        sizes = [d.ByteSize() for d in frame.decisions]
        assert sum(sizes[:-1]) < 400
