"""The SDK's one error type: every failed gRPC call (unary or stream) is translated here, once.

Exception
└── MeshRpcError        a call failed: .code (grpc.StatusCode), .message, .detail (our ErrorDetail)
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TypeVar

import grpc
from google.protobuf.message import Message

from nautilus_mesh.api.common.v1 import common_pb2
from nautilus_mesh.status import from_rpc_error

ResponseT = TypeVar("ResponseT", bound=Message)


class MeshRpcError(Exception):
    """A mesh RPC failed.

    Attributes:
        code: the gRPC status code.
        message: the server's (or transport's) status message.
        detail: the structured ErrorDetail from the rich status, when the server sent one.
    """

    def __init__(self, code: grpc.StatusCode, message: str, detail: common_pb2.ErrorDetail | None = None) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message
        self.detail = detail

    @classmethod
    def from_rpc_error(cls, exc: grpc.aio.AioRpcError) -> MeshRpcError:
        """Translate a failed grpc.aio call."""
        try:
            detail = from_rpc_error(exc)
        except Exception:  # a malformed rich status must not hide the status code itself
            detail = None
        return cls(exc.code(), exc.details() or "", detail)

    @property
    def unreachable(self) -> bool:
        """True when the server could not be reached at all (as opposed to refusing the call)."""
        return self.code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED) and self.detail is None


async def call(coro: Awaitable[ResponseT]) -> ResponseT:
    try:
        return await coro
    except grpc.aio.AioRpcError as exc:
        raise MeshRpcError.from_rpc_error(exc) from None
