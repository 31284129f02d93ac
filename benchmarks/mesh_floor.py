"""The mesh's messages with no work behind them: the floor under the three-process mesh (``--only floor``).

Two stand-ins, each its own process, carry the messages the mesh carries for a signal and do nothing else:

* **engine**: answers each commands frame with one reports frame, an ACCEPTED and a FILL report per order (what the
  simulated venue answers a market order that fills at once);
* **ops**: answers each signals frame with its decisions, sends two orders per signal to the engine (the order and
  its paper twin, as the demo's shadow canary makes) in one commands frame per burst (what is queued when the writer
  is free), and streams each strategy order's fill back, coalesced with the decisions that are ready, up to 100 items
  a response (as ops' outbox does).

The messages are the mesh's own protobufs with the fields the mesh fills (ids of the same length, decimal strings,
the strategy's trace context carried on); the servers and channels take the services' options and event loop
(``NAUTILUS_EVENT_LOOP``, uvloop by default), and the GC and mmap thresholds the services run with. Nothing is decided,
sized, checked, journaled, fsynced, traced or measured. So the throughput and CPU per signal of this pair are what a
Python process pair carrying the mesh's messages over grpc.aio on this machine reaches with no work at all; the
mesh's distance to it is what its work costs, and no Python implementation of the same protocol on the same
transport gets above it.

    python benchmarks/mesh_floor.py engine --port P
    python benchmarks/mesh_floor.py ops --port P --engine 127.0.0.1:E

Not a test and not a service: ``bench_mesh.py`` starts both, drives them with its load client and prints the row.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import hashlib
import itertools
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from nautilus_mesh.api.common.v1 import common_pb2
from nautilus_mesh.api.engine.v1 import engine_pb2, engine_pb2_grpc
from nautilus_mesh.api.ops.v1 import ops_pb2
from nautilus_mesh.serving import (
    CHANNEL_OPTIONS,
    GC_THRESHOLDS,
    SERVER_OPTIONS,
    event_loop_factory,
    fix_mmap_threshold,
)

PRICE = "64123.5"
"""The fill price every FILL report carries (a decimal string as long as a BTC-USD price)."""
FEE = "0.32061750"
"""The fee every FILL report carries (USD, a decimal string as the engine writes one)."""
MAX_ITEMS_PER_RESPONSE = 100
"""Decisions and fills in one StreamSignalsResponse at most (ops' ``max_signals_per_frame`` default)."""
LIVE_VENUE, PAPER_VENUE = "sim", "paper"
_SEQ = itertools.count(1)


def order_id(model_id: str, signal_id: str) -> str:
    """A client order id of the length ops makes (``o-`` and 24 hex digits of a SHA-256)."""
    return "o-" + hashlib.sha256(f"{model_id}\x00{signal_id}".encode()).hexdigest()[:24]


def new_order(client_order_id: str, venue: str, model_id: str, sig: ops_pb2.Signal) -> engine_pb2.OrderCommand:
    """The command ops sends for one order (MARKET IOC, the quantity as a decimal string, the signal's trace)."""
    command = engine_pb2.OrderCommand()
    new = command.new_order
    new.client_order_id = client_order_id
    new.venue = venue
    new.account = "main"
    new.model_id = model_id
    new.instrument = sig.instrument
    new.side = common_pb2.SIDE_BUY if sig.target >= 0 else common_pb2.SIDE_SELL
    new.order_type = common_pb2.ORDER_TYPE_MARKET
    new.time_in_force = common_pb2.TIME_IN_FORCE_IOC
    new.quantity = "0.005"
    new.trace.CopyFrom(sig.trace)
    return command


def reports_of(new: engine_pb2.NewOrder, now_ns: int) -> tuple[engine_pb2.ExecutionReport, engine_pb2.ExecutionReport]:
    """The ACCEPTED and FILL reports of an order that fills at once, with the fields the engine fills."""
    accepted_seq, fill_seq = next(_SEQ), next(_SEQ)
    common = {
        "client_order_id": new.client_order_id,
        "venue_order_id": f"{new.venue}-{accepted_seq}",
        "venue": new.venue,
        "model_id": new.model_id,
        "account": new.account,
        "instrument": new.instrument,
        "side": new.side,
        "ts_unix_nanos": now_ns,
        "trace": new.trace,
    }
    accepted = engine_pb2.ExecutionReport(
        seq=accepted_seq,
        exec_id=f"{new.venue}-{accepted_seq}",
        exec_type=engine_pb2.EXEC_TYPE_ACCEPTED,
        order_status=engine_pb2.ORDER_STATUS_ACCEPTED,
        last_qty="0",
        last_price="0",
        cum_qty="0",
        leaves_qty=new.quantity,
        avg_price="0",
        fee="0",
        **common,
    )
    fill = engine_pb2.ExecutionReport(
        seq=fill_seq,
        exec_id=f"{new.venue}-{fill_seq}",
        exec_type=engine_pb2.EXEC_TYPE_FILL,
        order_status=engine_pb2.ORDER_STATUS_FILLED,
        last_qty=new.quantity,
        last_price=PRICE,
        cum_qty=new.quantity,
        leaves_qty="0",
        avg_price=PRICE,
        fee=FEE,
        liquidity="TAKER",
        **common,
    )
    return accepted, fill


class FloorEngine:
    """Answers every commands frame with one reports frame: an ACCEPTED and a FILL report per order."""

    async def StreamOrders(
        self, request_iterator: AsyncIterator[engine_pb2.StreamOrdersRequest], context: Any
    ) -> AsyncIterator[engine_pb2.StreamOrdersResponse]:
        async for frame in request_iterator:
            now_ns = time.time_ns()
            reports = []
            for command in frame.commands:
                reports.extend(reports_of(command.new_order, now_ns))
            yield engine_pb2.StreamOrdersResponse(reports=reports)


class FloorOps:
    """Decides every signal ACCEPTED, sends its order and paper twin to the engine, streams the order's fill back."""

    def __init__(self, engine_address: str) -> None:
        self._engine_address = engine_address
        self._commands: asyncio.Queue[list[engine_pb2.OrderCommand]] = asyncio.Queue()
        self._owners: dict[str, tuple[asyncio.Queue[Any], ops_pb2.Signal, str]] = {}
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        channel = grpc.aio.insecure_channel(self._engine_address, options=CHANNEL_OPTIONS)
        call = engine_pb2_grpc.EngineServiceStub(channel).StreamOrders()
        self._tasks = [asyncio.create_task(self._write(call)), asyncio.create_task(self._read(call))]

    async def _write(self, call: Any) -> None:
        """One commands frame per burst: what is queued when the previous frame is written."""
        while True:
            commands = await self._commands.get()
            while not self._commands.empty():
                commands.extend(self._commands.get_nowait())
            await call.write(engine_pb2.StreamOrdersRequest(commands=commands))

    async def _read(self, call: Any) -> None:
        """Each FILL of a strategy's order becomes a Fill on the stream that sent the signal (a paper twin's: none)."""
        while True:
            response = await call.read()
            if response is grpc.aio.EOF:
                return
            for report in response.reports:
                if report.exec_type != engine_pb2.EXEC_TYPE_FILL:
                    continue
                owner = self._owners.pop(report.client_order_id, None)
                if owner is None:
                    continue
                outbox, sig, model_id = owner
                outbox.put_nowait(
                    ops_pb2.Fill(
                        model_id=model_id,
                        signal_id=sig.signal_id,
                        client_order_id=report.client_order_id,
                        exec_id=report.exec_id,
                        seq=report.seq,
                        instrument=report.instrument,
                        side=report.side,
                        quantity=report.last_qty,
                        price=report.last_price,
                        fee=report.fee,
                        liquidity=report.liquidity,
                        mode=ops_pb2.ROUTING_MODE_LIVE,
                        ts_unix_nanos=report.ts_unix_nanos,
                    )
                )

    async def StreamSignals(
        self, request_iterator: AsyncIterator[ops_pb2.StreamSignalsRequest], context: Any
    ) -> AsyncIterator[ops_pb2.StreamSignalsResponse]:
        outbox: asyncio.Queue[Any] = asyncio.Queue()

        async def read() -> None:
            async for frame in request_iterator:
                commands = []
                decisions = []
                for sig in frame.signals:
                    live = order_id(sig.model_id, sig.signal_id)
                    twin_model = f"{sig.model_id}@paper"
                    commands.append(new_order(live, LIVE_VENUE, sig.model_id, sig))
                    commands.append(new_order(order_id(twin_model, sig.signal_id), PAPER_VENUE, twin_model, sig))
                    self._owners[live] = (outbox, sig, sig.model_id)
                    decisions.append(
                        ops_pb2.SignalDecision(
                            signal_id=sig.signal_id,
                            model_id=sig.model_id,
                            status=ops_pb2.DECISION_STATUS_ACCEPTED,
                            mode=ops_pb2.ROUTING_MODE_LIVE,
                            client_order_id=live,
                            side=commands[-1].new_order.side,
                            quantity="0.005",
                            trace=sig.trace,
                        )
                    )
                self._commands.put_nowait(commands)
                for decision in decisions:
                    outbox.put_nowait(decision)
            outbox.put_nowait(None)

        reader = asyncio.create_task(read())
        try:
            done = False
            while not done:
                items = [await outbox.get()]
                while not outbox.empty() and len(items) < MAX_ITEMS_PER_RESPONSE:
                    items.append(outbox.get_nowait())
                if items[-1] is None:
                    done = True
                    items.pop()
                decisions = [i for i in items if isinstance(i, ops_pb2.SignalDecision)]
                fills = [i for i in items if isinstance(i, ops_pb2.Fill)]
                if decisions or fills:
                    yield ops_pb2.StreamSignalsResponse(decisions=decisions, fills=fills)
        finally:
            reader.cancel()


async def serve(role: str, port: int, engine: str) -> None:
    server = grpc.aio.server(options=SERVER_OPTIONS)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    if role == "engine":
        service, method = engine_pb2.DESCRIPTOR.services_by_name["EngineService"], "StreamOrders"
        behaviour = FloorEngine().StreamOrders
        request, response = engine_pb2.StreamOrdersRequest, engine_pb2.StreamOrdersResponse
    else:
        ops = FloorOps(engine)
        await ops.start()
        service, method = ops_pb2.DESCRIPTOR.services_by_name["OpsService"], "StreamSignals"
        behaviour = ops.StreamSignals
        request, response = ops_pb2.StreamSignalsRequest, ops_pb2.StreamSignalsResponse
    handler = grpc.stream_stream_rpc_method_handler(
        behaviour, request_deserializer=request.FromString, response_serializer=response.SerializeToString
    )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service.full_name, {method: handler}),))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await server.stop(0.5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("role", choices=("engine", "ops"))
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--engine", default="", help="the floor engine's address (ops only)")
    args = parser.parse_args()
    if args.role == "ops" and not args.engine:
        parser.error("ops needs --engine HOST:PORT")
    gc.set_threshold(*GC_THRESHOLDS)
    fix_mmap_threshold()
    with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
        runner.run(serve(args.role, args.port, args.engine))


if __name__ == "__main__":
    main()
