"""Async Python SDK for the mesh: ``OpsClient``, ``OpsAdminClient``, ``EngineClient`` and ``wait_serving``.

This module is the SDK's facade: ``rpc`` (``MeshRpcError``, the client base), ``ops_client``, ``admin_client``,
``engine_client`` (with ``wait_serving``) and ``frames`` (``FrameCoalescer``) hold one concept each.

Every unary method translates ``grpc.aio.AioRpcError`` into :class:`MeshRpcError` at this
boundary, carrying the gRPC status code, the message and, when the server attached one, the
structured :class:`ErrorDetail` (kind, stable code, details map).

    Exception
    └── MeshRpcError        a call failed: .code (grpc.StatusCode), .message, .detail

Streams: ``OpsClient.stream_signals`` returns the raw bidi call (write frames with
``await call.write(...)``, read with ``async for``); wrap its errors with
``MeshRpcError.from_rpc_error``. A producer that queues frames for one writer task gets them
coalesced with :class:`FrameCoalescer`: whatever is queued leaves as one frame (up to the frame
limit) and a frame never waits for more when the queue is empty (no timer).
``OpsClient.watch_events`` and ``EngineClient.stream_quotes`` are async iterators that raise
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
from clients.engine_client import EngineClient, wait_serving
from clients.frames import MAX_SIGNALS_PER_FRAME, FrameCoalescer
from clients.ops_client import OpsClient
from clients.rpc import DEFAULT_TIMEOUT, MeshRpcError

__all__ = [
    "DEFAULT_TIMEOUT",
    "MAX_SIGNALS_PER_FRAME",
    "EngineClient",
    "FrameCoalescer",
    "MeshRpcError",
    "OpsAdminClient",
    "OpsClient",
    "wait_serving",
]
