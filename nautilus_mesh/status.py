"""The service boundary: mesh errors to gRPC statuses and in-band error details.

Unary RPCs fail with a gRPC status whose ``google.rpc.Status`` details carry an ``ErrorInfo``
(reason = our stable code), a ``BadRequest`` field violation for validation errors, a
``QuotaFailure`` for quota denials, and our own ``ErrorDetail`` with the full structured shape.
Stream items are answered in-band with the same ``ErrorDetail``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import NoReturn

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from nautilus_mesh.api.common.v1 import common_pb2
from nautilus_mesh.bounds import clip, escape_controls
from nautilus_mesh.errors import (
    AuthError,
    ConfigError,
    FailedPreconditionError,
    MeshError,
    NotFoundError,
    OutOfRangeError,
    PermissionDeniedError,
    RiskRejectedError,
    UnavailableError,
    ValidationError,
    VenueRejectedError,
)

log = logging.getLogger(__name__)

ERROR_DOMAIN = "nautilus-mesh"

# Risk codes that mean "a budget is used up" rather than "the state forbids it".
_EXHAUSTED_CODES = frozenset({"INVALID_QUOTE", "RATE_LIMITED", "GROSS_EXPOSURE"})


GRPC_CODES: Mapping[type[MeshError], grpc.StatusCode] = {
    ValidationError: grpc.StatusCode.INVALID_ARGUMENT,
    ConfigError: grpc.StatusCode.INVALID_ARGUMENT,
    AuthError: grpc.StatusCode.UNAUTHENTICATED,
    PermissionDeniedError: grpc.StatusCode.PERMISSION_DENIED,
    NotFoundError: grpc.StatusCode.NOT_FOUND,
    RiskRejectedError: grpc.StatusCode.FAILED_PRECONDITION,
    VenueRejectedError: grpc.StatusCode.FAILED_PRECONDITION,
    UnavailableError: grpc.StatusCode.UNAVAILABLE,
    FailedPreconditionError: grpc.StatusCode.FAILED_PRECONDITION,
    OutOfRangeError: grpc.StatusCode.OUT_OF_RANGE,
}
"""The gRPC status code of each kind of mesh error (a subclass takes its nearest listed base's)."""


def grpc_code_for(error: MeshError) -> grpc.StatusCode:
    """The gRPC status code that best describes a mesh error (``INTERNAL`` for a kind not in :data:`GRPC_CODES`).

    A risk or venue rejection whose code means a budget is used up is ``RESOURCE_EXHAUSTED``.
    """
    if isinstance(error, RiskRejectedError | VenueRejectedError) and error.code in _EXHAUSTED_CODES:
        return grpc.StatusCode.RESOURCE_EXHAUSTED
    for kind in type(error).__mro__:
        code = GRPC_CODES.get(kind)
        if code is not None:
            return code
    return grpc.StatusCode.INTERNAL


# What an error may carry back to a peer, whatever the peer sent: messages, detail values and the number of
# details are bounded (cut with a marker), so a rejection stays small (trailers under the 8 KiB default).
MAX_MESSAGE_CHARS = 300
MAX_DETAIL_CHARS = 64
MAX_DETAILS = 8


def _message(error: MeshError) -> str:
    return escape_controls(clip(error.message, MAX_MESSAGE_CHARS))


def _details(error: MeshError) -> dict[str, str]:
    items = list(error.details.items())[:MAX_DETAILS]
    return {clip(k, MAX_DETAIL_CHARS): clip(v, MAX_DETAIL_CHARS) for k, v in items}


def error_detail(error: MeshError) -> common_pb2.ErrorDetail:
    """The in-band structured detail for an error (message and details bounded)."""
    return common_pb2.ErrorDetail(
        kind=error.kind,
        code=error.code,
        message=_message(error),
        details=_details(error),
        field=clip(error.field, MAX_DETAIL_CHARS),
    )


def _pack(message: object) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)  # type: ignore[arg-type]
    return packed


def to_rpc_status(error: MeshError) -> status_pb2.Status:
    """A ``google.rpc.Status`` with rich details for a mesh error.

    The message is bounded (``MAX_MESSAGE_CHARS``) before it is packed, so the trailers stay small whatever
    the request held.
    """
    code = grpc_code_for(error)
    message = _message(error)
    extra = _details(error)
    details = [
        _pack(
            error_details_pb2.ErrorInfo(reason=error.code, domain=ERROR_DOMAIN, metadata={"kind": error.kind, **extra})
        )
    ]
    if isinstance(error, ValidationError) and error.field:
        details.append(
            _pack(
                error_details_pb2.BadRequest(
                    field_violations=[
                        error_details_pb2.BadRequest.FieldViolation(
                            field=clip(error.field, MAX_DETAIL_CHARS), description=message
                        )
                    ]
                )
            )
        )
    if error.code == "INVALID_QUOTE":
        details.append(
            _pack(
                error_details_pb2.QuotaFailure(
                    violations=[
                        error_details_pb2.QuotaFailure.Violation(subject=extra.get("model_id", ""), description=message)
                    ]
                )
            )
        )
    details.append(_pack(error_detail(error)))
    return status_pb2.Status(code=getattr(code_pb2, code.name), message=f"{error.code}: {message}", details=details)


async def abort(context: grpc.aio.ServicerContext[object, object], error: MeshError) -> NoReturn:
    """Abort the current unary RPC with the rich status of ``error``."""
    await context.abort_with_status(rpc_status.to_status(to_rpc_status(error)))  # type: ignore[attr-defined]
    raise AssertionError("abort_with_status returned")  # pragma: no cover - grpc raises


def from_rpc_error(exc: grpc.RpcError) -> common_pb2.ErrorDetail | None:
    """The ``ErrorDetail`` inside a failed call's rich status (client side), if any."""
    status = rpc_status.from_call(exc)  # type: ignore[arg-type]
    if status is None:
        return None
    for detail in status.details:
        if detail.Is(common_pb2.ErrorDetail.DESCRIPTOR):
            out = common_pb2.ErrorDetail()
            detail.Unpack(out)
            return out
    return None


_KINDS: dict[str, type[MeshError]] = {
    cls.kind: cls
    for cls in (
        ValidationError,
        AuthError,
        PermissionDeniedError,
        NotFoundError,
        RiskRejectedError,
        VenueRejectedError,
        UnavailableError,
        ConfigError,
        FailedPreconditionError,
        OutOfRangeError,
    )
}


def error_from_detail(detail: common_pb2.ErrorDetail) -> MeshError:
    """Rebuild the mesh error an in-band detail describes (to raise it as a unary status)."""
    cls = _KINDS.get(detail.kind, MeshError)
    if cls is ConfigError:
        return ConfigError(detail.message, dict(detail.details), code=detail.code)
    error = MeshError.__new__(cls)
    MeshError.__init__(error, detail.code, detail.message, dict(detail.details), field=detail.field)
    if isinstance(error, (RiskRejectedError, VenueRejectedError)):
        error.rail = detail.details.get("rail", detail.code.lower())
    return error
