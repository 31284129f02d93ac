"""The floor under the mesh's latency on this machine: one gRPC stream hop between two processes, and one fsync.

Usage: .venv/bin/python benchmarks/bench_hop.py [--rates 0,50,1000] [--messages 500] [--fsyncs 200]
       [--loop uvloop|asyncio]

* **hop**: a client process writes a 200-byte message on a bidirectional grpc.aio stream and waits for the server
  process to echo it back, at each rate of ``--rates`` (0: back to back), on the event loop the services run on
  (``--loop``, uvloop by default). Half a round trip is what one of the mesh's hops (strategy -> ops, ops -> engine,
  engine -> ops, ops -> strategy) costs before any work is done on the message.
* **fsync**: a 300-byte append and ``os.fsync`` in the folder the benchmarks write to, every 20 ms: what the engine's
  ``batch`` journal policy adds before a frame's reports leave.

Prints round trips and fsyncs, p50 / p90 / p99 in milliseconds; figures, not pass/fail.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

import grpc

METHOD = "/bench.Hop/Echo"
PAYLOAD = b"x" * 200
FSYNC_INTERVAL_SECONDS = 0.02


def _same(data: bytes) -> bytes:
    return data


def percentiles(values: Sequence[float]) -> str:
    ordered = sorted(values)
    n = len(ordered)
    return " / ".join(f"{ordered[min(n - 1, int(n * q))]:.3f}" for q in (0.5, 0.9, 0.99))


async def serve(port_file: Path) -> None:
    """The echo server: writes its port to ``port_file`` and serves until killed."""

    async def echo(requests: AsyncIterator[bytes], _context: Any) -> AsyncIterator[bytes]:
        async for message in requests:
            yield message

    handler = grpc.method_handlers_generic_handler(
        "bench.Hop", {"Echo": grpc.stream_stream_rpc_method_handler(echo, _same, _same)}
    )
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    await asyncio.to_thread(port_file.write_text, str(port), encoding="utf-8")
    await server.wait_for_termination()


async def round_trips(port: int, rate: float, messages: int) -> list[float]:
    """Round trips in ms of ``messages`` echoes, one every 1/``rate`` s (back to back when ``rate`` is 0)."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.stream_stream(METHOD, request_serializer=_same, response_deserializer=_same)()
        for _ in range(20):  # warm-up: connection, HTTP/2 windows
            await call.write(PAYLOAD)
            await call.read()
        out = []
        for _ in range(messages):
            started = time.perf_counter()
            await call.write(PAYLOAD)
            await call.read()
            out.append((time.perf_counter() - started) * 1000)
            if rate:
                await asyncio.sleep(1 / rate)
        call.cancel()
        return out


def fsyncs(folder: Path, count: int) -> list[float]:
    """fsync times in ms of ``count`` small appends, one every FSYNC_INTERVAL_SECONDS."""
    out = []
    path = folder / "fsync.bin"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for _ in range(count):
            os.write(fd, b"r" * 300)
            started = time.perf_counter()
            os.fsync(fd)
            out.append((time.perf_counter() - started) * 1000)
            time.sleep(FSYNC_INTERVAL_SECONDS)
    finally:
        os.close(fd)
    return out


def runner(loop: str) -> Callable[[Coroutine[Any, Any, Any]], Any]:
    if loop == "uvloop":
        import uvloop

        return uvloop.run
    return asyncio.run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rates", default="0,50,1000", help="echoes per second, comma-separated (0: back to back)")
    parser.add_argument("--messages", type=int, default=500, help="echoes per rate (default 500)")
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop", help="event loop of both processes")
    parser.add_argument("--fsyncs", type=int, default=200, help="fsyncs timed (default 200)")
    parser.add_argument("--serve", type=Path, help=argparse.SUPPRESS)  # the server process
    args = parser.parse_args()
    run = runner(args.loop)
    if args.serve is not None:
        run(serve(args.serve))
        return
    rates = [float(r) for r in args.rates.split(",") if r.strip()]
    if args.messages <= 0 or args.fsyncs <= 0 or any(r < 0 for r in rates):
        parser.error("--messages and --fsyncs must be positive and --rates not negative")
    var = Path(__file__).resolve().parents[1] / "var"  # the disk the services' journals are on by default
    var.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bench-hop-", dir=var) as tmp:
        port_file = Path(tmp) / "port"
        cmd = [sys.executable, __file__, "--loop", args.loop, "--serve", str(port_file)]
        server = subprocess.Popen(cmd)
        try:
            deadline = time.monotonic() + 30
            while not port_file.exists() or not port_file.read_text(encoding="utf-8"):
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("the echo server did not start")
                time.sleep(0.05)
            port = int(port_file.read_text(encoding="utf-8"))
            print(f"gRPC stream echo between two processes ({args.loop}), 200-byte messages, round trip ms")
            print("rate/s     p50 / p90 / p99")
            for rate in rates:
                label = "back2back" if rate == 0 else f"{rate:,.0f}"
                print(f"{label:<10} {percentiles(run(round_trips(port, rate, args.messages)))}")
        finally:
            server.kill()
            server.wait()
        print(f"fsync of a 300-byte append every {FSYNC_INTERVAL_SECONDS * 1000:.0f} ms, ms p50 / p90 / p99: "
              f"{percentiles(fsyncs(Path(tmp), args.fsyncs))}")  # fmt: skip


if __name__ == "__main__":
    main()
