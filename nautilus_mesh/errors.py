"""One small error tree for the whole mesh.

Errors are raised in domain code and mapped to gRPC status codes and in-band
rejection details only at the service boundary (``nautilus_mesh.status``).

    MeshError                      root; carries kind, code, message, details
    ├── ConfigError                a config file or policy is invalid (kind ``config_invalid``)
    ├── ValidationError            a request field is invalid (kind ``validation_failed``)
    ├── AuthError                  no or bad credentials (kind ``unauthenticated``)
    ├── PermissionDeniedError      authenticated but not allowed (kind ``permission_denied``)
    ├── NotFoundError              unknown id (kind ``not_found``)
    ├── RiskRejectedError          a risk rail denied an order (kind ``risk_rejected``)
    ├── VenueRejectedError         a venue rail or venue denied an order (kind ``venue_rejected``)
    ├── UnavailableError           a dependency is down (kind ``unavailable``)
    ├── FailedPreconditionError    sent to the wrong place, e.g. another ops worker (kind ``failed_precondition``)
    └── OutOfRangeError            asks for what is past a retention window (kind ``out_of_range``)
"""

from __future__ import annotations

from collections.abc import Mapping


class MeshError(Exception):
    """Root of every error the mesh raises on purpose.

    Args:
        code: A stable, upper-case reason code such as ``INVALID_QUOTE``.
        message: A human-readable message. Never contains a secret.
        details: Structured details, e.g. ``{"requested": "1000", "available": "500"}``.
        field: For validation errors, the offending field path.
    """

    kind = "internal"

    def __init__(
        self,
        code: str,
        message: str,
        details: Mapping[str, object] | None = None,
        *,
        field: str = "",
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details: dict[str, str] = {k: str(v) for k, v in (details or {}).items()}
        self.field = field

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, message={self.message!r}, details={self.details!r})"


class ConfigError(MeshError):
    """A configuration file, policy or schedule is invalid."""

    kind = "config_invalid"

    def __init__(self, message: str, details: Mapping[str, object] | None = None, *, code: str = "CONFIG_INVALID"):
        super().__init__(code, message, details)


class ValidationError(MeshError):
    """A request field is missing, malformed or out of range."""

    kind = "validation_failed"


class AuthError(MeshError):
    """Credentials are missing or wrong."""

    kind = "unauthenticated"


class PermissionDeniedError(MeshError):
    """The caller is authenticated but not allowed to do this."""

    kind = "permission_denied"


class NotFoundError(MeshError):
    """An id does not name anything known."""

    kind = "not_found"


class RiskRejectedError(MeshError):
    """A pre-trade risk rail denied an order."""

    kind = "risk_rejected"

    def __init__(self, code: str, message: str, details: Mapping[str, object] | None = None, *, rail: str = "") -> None:
        super().__init__(code, message, details)
        self.rail = rail or code.lower()


class VenueRejectedError(MeshError):
    """A venue rail or the venue itself denied an order."""

    kind = "venue_rejected"

    def __init__(self, code: str, message: str, details: Mapping[str, object] | None = None, *, rail: str = "") -> None:
        super().__init__(code, message, details)
        self.rail = rail or code.lower()


class UnavailableError(MeshError):
    """A dependency (engine, store) cannot be reached right now."""

    kind = "unavailable"


class FailedPreconditionError(MeshError):
    """The request cannot be served here as things stand (e.g. ``WRONG_SHARD``: another ops worker owns it)."""

    kind = "failed_precondition"


class OutOfRangeError(MeshError):
    """The request asks for what is no longer kept (e.g. ``EXECUTIONS_PAST_RETENTION``: reports older than the
    engine's retention window); the details say what the oldest available item is."""

    kind = "out_of_range"
