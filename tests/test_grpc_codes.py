"""Each kind of mesh error answers with its gRPC status code (grpc_code_for, nautilus_mesh.status.GRPC_CODES)."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from backtests.tape import TapeError
from engine_server.order_lifecycle import IllegalTransitionError
from nautilus_mesh import errors
from nautilus_mesh.journal import JournalFormatError
from nautilus_mesh.status import grpc_code_for

Code = grpc.StatusCode


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (errors.ValidationError("MISSING_FIELD", "m"), Code.INVALID_ARGUMENT),
        (errors.ConfigError("bad file"), Code.INVALID_ARGUMENT),
        (errors.AuthError("UNAUTHENTICATED", "m"), Code.UNAUTHENTICATED),
        (errors.PermissionDeniedError("NOT_YOUR_MODEL", "m"), Code.PERMISSION_DENIED),
        (errors.NotFoundError("UNKNOWN_MODEL", "m"), Code.NOT_FOUND),
        (errors.RiskRejectedError("MODEL_HALTED", "m"), Code.FAILED_PRECONDITION),
        (errors.VenueRejectedError("BOOK_CLOSED", "m"), Code.FAILED_PRECONDITION),
        (errors.UnavailableError("ENGINE_UNAVAILABLE", "m"), Code.UNAVAILABLE),
        (errors.FailedPreconditionError("NOT_LEADER", "m"), Code.FAILED_PRECONDITION),
        (errors.OutOfRangeError("EXECUTIONS_PAST_RETENTION", "m"), Code.OUT_OF_RANGE),
    ],
)
def test_grpc_code_for_each_kind_of_error(error: errors.MeshError, code: grpc.StatusCode) -> None:
    assert grpc_code_for(error) is code


@pytest.mark.parametrize("reason", ["INVALID_QUOTE", "RATE_LIMITED", "GROSS_EXPOSURE"])
def test_grpc_code_for_a_rejection_that_used_up_a_budget_is_resource_exhausted(reason: str) -> None:
    assert grpc_code_for(errors.RiskRejectedError(reason, "m")) is Code.RESOURCE_EXHAUSTED
    assert grpc_code_for(errors.VenueRejectedError(reason, "m")) is Code.RESOURCE_EXHAUSTED


def test_grpc_code_for_a_subclass_is_its_base_kinds_and_an_unlisted_kind_is_internal() -> None:
    assert grpc_code_for(TapeError(Path("tape.csv"), 3, "no bid")) is Code.INVALID_ARGUMENT
    assert grpc_code_for(JournalFormatError("not a journal")) is Code.INVALID_ARGUMENT
    assert grpc_code_for(IllegalTransitionError("overfill")) is Code.INTERNAL
    assert grpc_code_for(errors.MeshError("BUG", "m")) is Code.INTERNAL
