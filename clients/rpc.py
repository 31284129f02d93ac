"""The SDK's transport seam: the error every failed call raises, and the base of the three clients.

``MeshRpcError`` translates ``grpc.aio.AioRpcError`` once, at this boundary; ``_Client`` owns the channel and the
auth metadata of a client. ``clients.sdk`` re-exports the public names.
"""

from __future__ import annotations

from collections.abc import Awaitable
from types import TracebackType
from typing import Self, TypeVar

import grpc
from google.protobuf.message import Message

from nautilus_mesh.api.common.v1 import common_pb2
from nautilus_mesh.serving import CHANNEL_OPTIONS
from nautilus_mesh.status import from_rpc_error

__all__ = ["DEFAULT_TIMEOUT", "MeshRpcError"]

DEFAULT_TIMEOUT = 10.0
"""Seconds a unary call may take before it fails with DEADLINE_EXCEEDED."""

ResponseT = TypeVar("ResponseT", bound=Message)
Metadata = tuple[tuple[str, str], ...]


class MeshRpcError(Exception):
    """A mesh RPC failed.

    Args:
        code: the gRPC status code.
        message: the server's (or transport's) status message.
        detail: the structured ErrorDetail from the rich status, when the server sent one.

    Attributes:
        code: the gRPC status code.
        message: the server's (or transport's) status message.
        detail: the structured ErrorDetail from the rich status, when the server sent one.

    Example:
        >>> async def main() -> MeshRpcError:
        ...     async with OpsClient(ops_address, strategy_token=strategy_token) as ops:
        ...         try:
        ...             await ops.get_model_quota("no_such_model")
        ...         except MeshRpcError as exc:
        ...             return exc
        ...     raise AssertionError("unreachable")
        >>> error = asyncio.run(main())
        >>> error.code.name, error.detail.kind, error.detail.code  # not one of the token's models
        ('PERMISSION_DENIED', 'permission_denied', 'MODEL_NOT_ALLOWED')
    """

    def __init__(self, code: grpc.StatusCode, message: str, detail: common_pb2.ErrorDetail | None = None) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message
        self.detail = detail

    @classmethod
    def from_rpc_error(cls, exc: grpc.aio.AioRpcError) -> MeshRpcError:
        """Translate a failed grpc.aio call.

        Args:
            exc: the error a ``grpc.aio`` call raised (a stream's, for instance).

        Returns:
            The MeshRpcError with the call's status code, message and ErrorDetail (None when the
            status carries none or a malformed one).

        Example:
            >>> async def main() -> str:
            ...     async with OpsClient(ops_address) as ops:  # no strategy token
            ...         call = ops.stream_signals()
            ...         try:
            ...             async for _ in call:
            ...                 pass
            ...         except grpc.aio.AioRpcError as exc:
            ...             return MeshRpcError.from_rpc_error(exc).detail.code
            ...     return "no error"
            >>> asyncio.run(main())
            'MISSING_TOKEN'
        """
        try:
            detail = from_rpc_error(exc)
        except Exception:  # a malformed rich status must not hide the status code itself
            detail = None
        return cls(exc.code(), exc.details() or "", detail)

    @property
    def unreachable(self) -> bool:
        """True when the server could not be reached at all (as opposed to refusing the call).

        Example:
            >>> MeshRpcError(grpc.StatusCode.UNAVAILABLE, "connection refused").unreachable
            True
            >>> MeshRpcError(grpc.StatusCode.NOT_FOUND, "unknown model").unreachable
            False
        """
        return self.code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED) and self.detail is None


async def _call(coro: Awaitable[ResponseT]) -> ResponseT:
    try:
        return await coro
    except grpc.aio.AioRpcError as exc:
        raise MeshRpcError.from_rpc_error(exc) from None


class _Client:
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

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()
