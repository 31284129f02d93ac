"""The signal stream of the SDK: one ``StreamSignals`` call whose failures raise ``MeshRpcError``, and the frame
coalescer that merges what a producer has queued into one frame (no timer)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc

from clients.errors import MeshRpcError
from nautilus_mesh.api.ops.v1 import ops_pb2

MAX_SIGNALS_PER_FRAME = 500
"""Signals per request frame the SDK builds at most; ops refuses frames above its own bound (1000 by default)."""


class SignalStream:
    """One ``StreamSignals`` call; its failures (writing or reading) raise :class:`MeshRpcError`.

    Args:
        call: the grpc.aio bidi call.
    """

    def __init__(
        self, call: grpc.aio.StreamStreamCall[ops_pb2.StreamSignalsRequest, ops_pb2.StreamSignalsResponse]
    ) -> None:
        self._call = call

    async def write(self, frame: ops_pb2.StreamSignalsRequest) -> None:
        """Send one frame of signals."""
        try:
            await self._call.write(frame)
        except grpc.aio.AioRpcError as exc:
            raise MeshRpcError.from_rpc_error(exc) from None

    async def done_writing(self) -> None:
        """Half-close: no more signals; decisions and fills still arrive."""
        try:
            await self._call.done_writing()
        except grpc.aio.AioRpcError as exc:
            raise MeshRpcError.from_rpc_error(exc) from None

    def cancel(self) -> None:
        """Cancel the call; iterating then ends without an error."""
        self._call.cancel()

    async def __aiter__(self) -> AsyncIterator[ops_pb2.StreamSignalsResponse]:
        try:
            async for response in self._call:
                yield response
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.CANCELLED:
                raise MeshRpcError.from_rpc_error(exc) from None


class FrameCoalescer:
    """Turns a queue of signal frames into the frames to write: what is ready leaves together.

    :meth:`next` waits for the first frame, then merges every frame already queued behind it
    while the merged frame stays within ``limit`` signals. It never waits for more: when the
    queue is empty the frame leaves at once, so coalescing adds no latency, only fewer, larger
    frames under load (one decode, one journal commit and one commands frame downstream).
    ``None`` in the queue means "no more frames": it is returned after what came before it.

    Args:
        queue: Frames from the producer (``None`` ends the stream).
        limit: Most signals per merged frame; a single larger frame is passed on as it is.
    """

    def __init__(
        self, queue: asyncio.Queue[ops_pb2.StreamSignalsRequest | None], limit: int = MAX_SIGNALS_PER_FRAME
    ) -> None:
        self._queue = queue
        self._limit = limit
        self._carry: list[ops_pb2.StreamSignalsRequest | None] = []

    async def next(self) -> ops_pb2.StreamSignalsRequest | None:
        """The next frame to write (merged), or None once the producer ended the stream."""
        first = self._carry.pop() if self._carry else await self._queue.get()
        if first is None:
            return None
        if self._queue.empty() or len(first.signals) >= self._limit:
            return first
        merged = ops_pb2.StreamSignalsRequest()
        merged.signals.extend(first.signals)
        while not self._queue.empty():
            more = self._queue.get_nowait()
            if more is None or len(merged.signals) + len(more.signals) > self._limit:
                self._carry.append(more)
                break
            merged.signals.extend(more.signals)
        return merged
