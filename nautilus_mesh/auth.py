"""Token authentication for strategies, operators and the ops->engine link.

Tokens are compared in constant time (``hmac.compare_digest``), every configured token is
checked so timing does not reveal which one matched, and a door with no token configured is
closed, never open. Tokens never appear in logs or error messages.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from nautilus_mesh.errors import AuthError, PermissionDeniedError

STRATEGY_TOKEN_HEADER = "x-strategy-token"
ADMIN_TOKEN_HEADER = "x-ops-token"
ENGINE_TOKEN_HEADER = "x-engine-token"
SESSION_ID_HEADER = "x-session-id"

Metadata = Iterable[tuple[str, str | bytes]] | None


def metadata_value(metadata: Metadata, key: str) -> str:
    """The first value of ``key`` in gRPC invocation metadata ("" when absent)."""
    for k, v in metadata or ():
        if k == key:
            return v.decode() if isinstance(v, bytes) else v
    return ""


def _matches(presented: str, expected: str) -> bool:
    return hmac.compare_digest(presented.encode(), expected.encode())


@dataclass(frozen=True)
class Principal:
    """An authenticated strategy: its name and the models it may signal for."""

    name: str
    models: frozenset[str]

    def require_model(self, model_id: str) -> None:
        """Raise PermissionDeniedError unless this principal may act for ``model_id``."""
        if model_id not in self.models:
            raise PermissionDeniedError(
                "MODEL_NOT_ALLOWED",
                f"strategy {self.name!r} may not signal for model {model_id!r}",
                {"strategy": self.name, "model_id": model_id},
                field="model_id",
            )


class StrategyAuthenticator:
    """Maps strategy tokens to the models they are bound to.

    Args:
        tokens: strategy name -> (token, models). An empty token disables that strategy.
    """

    def __init__(self, tokens: Mapping[str, tuple[str, Iterable[str]]]) -> None:
        self._entries = [(name, token, frozenset(models)) for name, (token, models) in tokens.items() if token]

    def authenticate(self, metadata: Metadata) -> Principal:
        presented = metadata_value(metadata, STRATEGY_TOKEN_HEADER)
        if not presented:
            raise AuthError("MISSING_TOKEN", f"missing {STRATEGY_TOKEN_HEADER} metadata")
        found: Principal | None = None
        for name, token, models in self._entries:  # check all: no early exit that timing could reveal
            if _matches(presented, token) and found is None:
                found = Principal(name, models)
        if found is None:
            raise AuthError("INVALID_TOKEN", "strategy token not recognised")
        return found


def require_token(metadata: Metadata, header: str, expected: str | None, *, door: str) -> None:
    """Check a single shared token (admin, engine).

    Raises:
        PermissionDeniedError: ``door`` is disabled because no token is configured.
        AuthError: the token is missing or wrong.
    """
    if not expected:
        raise PermissionDeniedError("DOOR_DISABLED", f"{door} is disabled: no token configured")
    presented = metadata_value(metadata, header)
    if not presented:
        raise AuthError("MISSING_TOKEN", f"missing {header} metadata")
    if not _matches(presented, expected):
        raise AuthError("INVALID_TOKEN", f"{door} token not recognised")
