"""The signal stream of the SDK: one ``StreamSignals`` call whose failures raise ``MeshRpcError``, and the frame
coalescer that merges what a producer has queued into one frame (no timer)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc

from clients.errors import MeshRpcError
from nautilus_mesh.api.ops.v1 import ops_pb2

log = logging.getLogger(__name__)

MAX_SIGNALS_PER_FRAME = 500
"""Signals per request frame the SDK builds at most; ops refuses frames above its own bound (1000 by default)."""

StreamCall = grpc.aio.StreamStreamCall[ops_pb2.StreamSignalsRequest, ops_pb2.StreamSignalsResponse]

WRONG_SHARD = "WRONG_SHARD"
WORKER_HEADER = "x-ops-worker"
"""Response header ops sends as soon as it accepts a signal stream (the index of the ops worker)."""
ACCEPTANCE_WAIT_SECONDS = 0.5
"""How long a new stream waits for ops' acceptance header before its first write; a server that sends no header
before its first response (a test double, an older ops) gets the frames after this wait."""


def _consume(future: asyncio.Future[Any]) -> None:
    """Retrieve a background future's outcome, so an error in it is not reported as never retrieved."""
    if not future.cancelled():
        future.exception()


def wrong_shard_owner(error: MeshRpcError) -> str | None:
    """The owner's address when ``error`` is ops' ``WRONG_SHARD`` refusal (another ops worker owns the strategy)."""
    detail = error.detail
    if error.code != grpc.StatusCode.FAILED_PRECONDITION or detail is None or detail.code != WRONG_SHARD:
        return None
    return detail.details.get("owner_address") or None


class SignalStream:
    """One ``StreamSignals`` call; its failures (writing or reading) raise :class:`MeshRpcError`.

    Made by :meth:`OpsClient.stream_signals`. Iterating yields the response frames until the
    server ends the call; stop iterating after :meth:`cancel`.

    With ops sharded over several workers, a stream opened on a worker that does not own the strategy is refused
    with ``WRONG_SHARD`` before anything is read. The stream writes its first frame only once ops accepted the call
    (its response headers carry ``x-ops-worker``, sent at once; a server without them is written to after
    :data:`ACCEPTANCE_WAIT_SECONDS`), and with ``reopen`` given it follows a ``WRONG_SHARD`` refusal once, reopening
    the call on the owner's address: no signal reaches the refusing worker, so none is lost or decided twice.

    Args:
        call: the grpc.aio bidi call.
        reopen: opens the same call on another ops address (None: a ``WRONG_SHARD`` refusal is raised as it is).

    Example:
        >>> async def main() -> None:
        ...     async with OpsClient(ops_address) as ops:  # no strategy token
        ...         async for _ in ops.stream_signals():
        ...             pass
        >>> asyncio.run(main())
        Traceback (most recent call last):
            ...
        clients.errors.MeshRpcError: UNAUTHENTICATED: MISSING_TOKEN: ...

    """

    def __init__(self, call: StreamCall, reopen: Callable[[str], StreamCall] | None = None) -> None:
        self._call = call
        self._reopen = reopen
        self._accepted = False
        self._followed = False
        self._opening = asyncio.Lock()

    async def _open(self) -> None:
        """Wait until ops accepted the call; follow one ``WRONG_SHARD`` refusal to the owner.

        Raises:
            MeshRpcError: ops refused the call for another reason (or refused it twice).
        """
        if self._accepted:
            return
        async with self._opening:
            while not self._accepted:
                call = self._call
                headers = asyncio.ensure_future(call.initial_metadata())
                await asyncio.wait({headers}, timeout=ACCEPTANCE_WAIT_SECONDS)
                if not headers.done():  # a server that answers its headers with its first response: go on
                    headers.add_done_callback(_consume)
                    self._accepted = True
                    break
                try:
                    metadata = headers.result()
                except grpc.aio.AioRpcError as exc:
                    raise MeshRpcError.from_rpc_error(exc) from None
                if metadata is not None and any(key == WORKER_HEADER for key, _ in metadata):
                    self._accepted = True
                    break
                # No acceptance header: either the call ended (a refusal, read how) or a server without the header.
                ended = asyncio.ensure_future(call.code())
                await asyncio.wait({ended}, timeout=ACCEPTANCE_WAIT_SECONDS)
                if not ended.done():
                    ended.add_done_callback(_consume)
                    self._accepted = True
                    break
                code = ended.result()
                if code in (grpc.StatusCode.OK, grpc.StatusCode.CANCELLED):
                    self._accepted = True
                    break
                error = MeshRpcError.from_rpc_error(
                    grpc.aio.AioRpcError(code, metadata, await call.trailing_metadata(), await call.details(), None)
                )
                owner = wrong_shard_owner(error)
                if owner is None or self._reopen is None or self._followed:
                    raise error
                self._followed = True
                self._call = self._reopen(owner)
                log.info("[SDK] signal stream refused with WRONG_SHARD; reopened on the owner %s", owner)

    async def write(self, frame: ops_pb2.StreamSignalsRequest) -> None:
        """Send one frame of signals.

        Args:
            frame: the frame, at most ``max_signals_per_frame`` signals (see ``GetStreamLimits``).

        Raises:
            MeshRpcError: the call has failed.

        Example:
            >>> async def main() -> int:
            ...     async with OpsClient(ops_address, strategy_token=strategy_token) as ops:
            ...         stream = ops.stream_signals()
            ...         signals = [ops_pb2.Signal(signal_id=f"doc-write-{i}", model_id="momentum_v1",
            ...                                   instrument="ETH-USD", target=0.02) for i in range(2)]
            ...         await stream.write(ops_pb2.StreamSignalsRequest(signals=signals))
            ...         decided = 0
            ...         async for frame in stream:
            ...             decided += len(frame.decisions)
            ...             if decided == 2:
            ...                 stream.cancel()
            ...                 break
            ...         return decided
            >>> asyncio.run(main())  # one decision per signal of the frame
            2

        """
        await self._open()
        try:
            await self._call.write(frame)
        except grpc.aio.AioRpcError as exc:
            raise MeshRpcError.from_rpc_error(exc) from None

    async def done_writing(self) -> None:
        """Half-close: no more signals; decisions and fills still arrive.

        Raises:
            MeshRpcError: the call has failed.

        Example:
            >>> async def main() -> list[str]:
            ...     async with OpsClient(ops_address, strategy_token=strategy_token) as ops:
            ...         stream = ops.stream_signals()
            ...         signal = ops_pb2.Signal(signal_id="doc-done-1", model_id="momentum_v1",
            ...                                 instrument="BTC-USD", target=7.0)  # out of range
            ...         await stream.write(ops_pb2.StreamSignalsRequest(signals=[signal]))
            ...         await stream.done_writing()
            ...         async for frame in stream:  # a frame may carry only fills of earlier orders
            ...             if frame.decisions:
            ...                 stream.cancel()
            ...                 return [d.error.code for d in frame.decisions]
            ...     return []
            >>> asyncio.run(main())  # a bad signal is answered in-band; the stream stays usable
            ['OUT_OF_RANGE']

        """
        await self._open()
        try:
            await self._call.done_writing()
        except grpc.aio.AioRpcError as exc:
            raise MeshRpcError.from_rpc_error(exc) from None

    def cancel(self) -> None:
        """Cancel the call (closing the client's channel does too).

        Stop iterating once cancelled: reading a cancelled call raises ``asyncio.CancelledError``.

        Example:
            >>> async def main() -> None:
            ...     async with OpsClient(ops_address, strategy_token=strategy_token) as ops:
            ...         stream = ops.stream_signals()
            ...         stream.cancel()
            ...         async for _ in stream:
            ...             pass
            >>> asyncio.run(main())
            Traceback (most recent call last):
                ...
            asyncio.exceptions.CancelledError
        """
        self._call.cancel()

    async def __aiter__(self) -> AsyncIterator[ops_pb2.StreamSignalsResponse]:
        await self._open()
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

    Example:
        >>> async def main() -> list[int]:
        ...     queue: asyncio.Queue[ops_pb2.StreamSignalsRequest | None] = asyncio.Queue()
        ...     for i in range(3):
        ...         queue.put_nowait(ops_pb2.StreamSignalsRequest(signals=[ops_pb2.Signal(signal_id=f"s-{i}")]))
        ...     queue.put_nowait(None)
        ...     coalescer, sizes = FrameCoalescer(queue, limit=2), []
        ...     while (frame := await coalescer.next()) is not None:
        ...         sizes.append(len(frame.signals))
        ...     return sizes
        >>> asyncio.run(main())  # three queued frames of one signal leave as two frames
        [2, 1]
    """

    def __init__(
        self, queue: asyncio.Queue[ops_pb2.StreamSignalsRequest | None], limit: int = MAX_SIGNALS_PER_FRAME
    ) -> None:
        self._queue = queue
        self._limit = limit
        self._carry: list[ops_pb2.StreamSignalsRequest | None] = []

    async def next(self) -> ops_pb2.StreamSignalsRequest | None:
        """The next frame to write (merged), or None once the producer ended the stream.

        Returns:
            The first queued frame merged with every frame already queued behind it (within the
            limit), or None when the producer queued None.

        Example:
            >>> async def main() -> int | None:
            ...     queue: asyncio.Queue[ops_pb2.StreamSignalsRequest | None] = asyncio.Queue()
            ...     queue.put_nowait(ops_pb2.StreamSignalsRequest(signals=[ops_pb2.Signal(), ops_pb2.Signal()]))
            ...     frame = await FrameCoalescer(queue).next()
            ...     return None if frame is None else len(frame.signals)
            >>> asyncio.run(main())  # nothing else queued: the frame leaves at once, no timer
            2
        """
        first = self._carry.pop() if self._carry else await self._queue.get()
        if first is None:
            return None
        if self._queue.empty() or len(first.signals) >= self._limit:
            return first
        merged = ops_pb2.StreamSignalsRequest(
            resume_after_fill_seq=first.resume_after_fill_seq, resume_fills=first.resume_fills
        )
        merged.signals.extend(first.signals)
        while not self._queue.empty():
            more = self._queue.get_nowait()
            if more is None or len(merged.signals) + len(more.signals) > self._limit:
                self._carry.append(more)
                break
            merged.signals.extend(more.signals)
            # A merged frame keeps a resume request (ops reads it on a stream's first frame).
            merged.resume_after_fill_seq = max(merged.resume_after_fill_seq, more.resume_after_fill_seq)
            merged.resume_fills = merged.resume_fills or more.resume_fills
        return merged
