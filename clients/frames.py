"""``FrameCoalescer``: signal frames a producer queued, merged into fewer, larger frames (no timer)."""

from __future__ import annotations

import asyncio

from nautilus_mesh.api.ops.v1 import ops_pb2

__all__ = ["MAX_SIGNALS_PER_FRAME", "FrameCoalescer"]

MAX_SIGNALS_PER_FRAME = 500
"""Signals per request frame the SDK builds at most; ops refuses frames above its own bound (1000 by default)."""


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
        merged = ops_pb2.StreamSignalsRequest()
        merged.signals.extend(first.signals)
        while not self._queue.empty():
            more = self._queue.get_nowait()
            if more is None or len(merged.signals) + len(more.signals) > self._limit:
                self._carry.append(more)
                break
            merged.signals.extend(more.signals)
        return merged
