"""The base of the SDK's three clients: one channel, the auth metadata, ``async with`` closes it."""

from __future__ import annotations

import abc
from types import TracebackType
from typing import Self, TypeVar

import grpc
from google.protobuf.message import Message

from clients.errors import call
from nautilus_mesh.serving import CHANNEL_OPTIONS

__all__ = ["DEFAULT_TIMEOUT", "AsyncClosing", "Metadata"]

DEFAULT_TIMEOUT = 10.0
"""Seconds a unary call may take before it fails with DEADLINE_EXCEEDED."""

Metadata = tuple[tuple[str, str], ...]

RequestT = TypeVar("RequestT", bound=Message)
ResponseT = TypeVar("ResponseT", bound=Message)


class AsyncClosing(abc.ABC):
    """``async with`` support for anything with an async :meth:`close`."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release what the object holds (channels, clients)."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()


class _Client(AsyncClosing):
    def __init__(self, address: str, metadata: Metadata, timeout: float) -> None:
        self.address = address
        self.timeout = timeout
        self._metadata = metadata
        self._channel = grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)

    @property
    def channel(self) -> grpc.aio.Channel:
        """The underlying channel, e.g. for stubs this SDK does not wrap (send ``metadata`` with them).

        Example:
            >>> from grpc_health.v1 import health_pb2, health_pb2_grpc
            >>> async def main() -> str:
            ...     async with OpsClient(ops_address, strategy_token=strategy_token) as ops:
            ...         health = health_pb2_grpc.HealthStub(ops.channel)
            ...         answer = await health.Check(health_pb2.HealthCheckRequest(), metadata=ops.metadata)
            ...         return health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status)
            >>> asyncio.run(main())
            'SERVING'
        """
        return self._channel

    @property
    def metadata(self) -> Metadata:
        """The auth metadata this client sends with every call.

        Example:
            >>> async def main() -> tuple[tuple[str, str], ...]:
            ...     async with OpsAdminClient(ops_address, admin_token="secret") as admin:
            ...         return admin.metadata
            >>> asyncio.run(main())
            (('x-ops-token', 'secret'),)
        """
        return self._metadata

    async def _unary(
        self, method: grpc.aio.UnaryUnaryMultiCallable[RequestT, ResponseT], request: RequestT
    ) -> ResponseT:
        """Call one unary method with this client's auth metadata and timeout; a failure raises MeshRpcError."""
        return await call(method(request, metadata=self._metadata, timeout=self.timeout))

    async def close(self) -> None:
        """Close the channel, cancelling calls still in flight.

        ``async with`` calls it on exit; call it yourself when you hold a client without one.

        Example:
            >>> async def main() -> None:
            ...     engine = EngineClient(engine_address)
            ...     try:
            ...         await engine.get_quote("BTC-USD")
            ...     finally:
            ...         await engine.close()
            >>> asyncio.run(main())
        """
        await self._channel.close(None)
