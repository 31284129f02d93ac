"""Async Python SDK for the mesh: ``OpsClient``, ``OpsAdminClient``, ``EngineClient`` and ``wait_serving``.

This module is the SDK's facade over one module per concept: ``errors`` (``MeshRpcError``), ``client_base``,
``ops_client``, ``admin_client``, ``engine_client`` (with ``wait_serving``) and ``signal_stream``
(``SignalStream``, ``FrameCoalescer``).

Every method translates ``grpc.aio.AioRpcError`` into :class:`MeshRpcError` at this boundary, carrying the
gRPC status code, the message and, when the server attached one, the structured ``ErrorDetail`` (kind, stable
code, details map).

    Exception
    └── MeshRpcError        a call failed: .code (grpc.StatusCode), .message, .detail

Streams: ``OpsClient.stream_signals`` returns a :class:`SignalStream` (write frames with
``await stream.write(...)``, read with ``async for``); its failures raise ``MeshRpcError`` too. A producer
that queues frames for one writer task gets them coalesced with :class:`FrameCoalescer`: whatever is queued
leaves as one frame (up to the frame limit) and a frame never waits for more when the queue is empty (no
timer). ``OpsClient.watch_events`` and ``EngineClient.stream_quotes`` are async iterators that raise
MeshRpcError themselves.

The examples in this module run as doctests against a real mesh on loopback
(``tests/test_sdk_doctests.py``), with the SDK's public names, ``asyncio``, ``grpc`` and the ``*_pb2``
message modules imported: ``ops_address``, ``engine_address``, ``strategy_token`` (the
``momentum`` strategy's), ``admin_token`` and ``engine_token`` name that mesh. With the demo mesh of
``make run`` they are ``127.0.0.1:50051``, ``127.0.0.1:50052``, ``demo-momentum-token``,
``demo-admin-token`` and ``demo-engine-token``.

Example:
    >>> async def main() -> list[str]:
    ...     async with OpsClient(ops_address, strategy_token=strategy_token) as ops:
    ...         return [m.model_id for m in await ops.list_models("momentum")]
    >>> asyncio.run(main())
    ['momentum_v1', 'momentum_v2']
"""

from clients.admin_client import OpsAdminClient
from clients.client_base import DEFAULT_TIMEOUT
from clients.engine_client import EngineClient, wait_serving
from clients.errors import MeshRpcError
from clients.ops_client import OpsClient
from clients.signal_stream import MAX_SIGNALS_PER_FRAME, FrameCoalescer, SignalStream

__all__ = [
    "DEFAULT_TIMEOUT",
    "MAX_SIGNALS_PER_FRAME",
    "EngineClient",
    "FrameCoalescer",
    "MeshRpcError",
    "OpsAdminClient",
    "OpsClient",
    "SignalStream",
    "wait_serving",
]
