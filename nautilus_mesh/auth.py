"""Token authentication for strategies, operators and the ops->engine link.

Tokens are compared in constant time (``hmac.compare_digest``), every configured token is
checked so timing does not reveal which one matched, and a door with no token configured is
closed, never open. Tokens never appear in logs or error messages.

Where a config holds a token it may give it three ways besides plain text (kept for the demo):

- ``sha256:<64 hex digits>``: the token's SHA-256, for tokens the service only checks (admin, strategy
  and the engine's order-entry token); the config then holds no usable secret.
  ``printf %s "$TOKEN" | sha256sum`` prints the digits.
- ``env:NAME``: the value of environment variable ``NAME`` (itself plain or ``sha256:``).
- ``file:PATH``: the first line of file ``PATH`` (e.g. a mounted secret), stripped.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from nautilus_mesh.errors import AuthError, PermissionDeniedError

STRATEGY_TOKEN_HEADER = "x-strategy-token"  # noqa: S105  a metadata key, not a token
ADMIN_TOKEN_HEADER = "x-ops-token"  # noqa: S105  a metadata key, not a token
ENGINE_TOKEN_HEADER = "x-engine-token"  # noqa: S105  a metadata key, not a token
SESSION_ID_HEADER = "x-session-id"

Metadata = Iterable[tuple[str, str | bytes]] | None


def metadata_value(metadata: Metadata, key: str) -> str:
    """The first value of ``key`` in gRPC invocation metadata ("" when absent)."""
    for k, v in metadata or ():
        if k == key:
            return v.decode() if isinstance(v, bytes) else v
    return ""


HASH_PREFIX = "sha256:"
_HASH = re.compile(r"sha256:[0-9a-f]{64}")
_REFERENCE_PREFIXES = (HASH_PREFIX, "env:", "file:")


def hash_token(token: str) -> str:
    """The ``sha256:<hex>`` form of a token, as a config may store it."""
    return HASH_PREFIX + hashlib.sha256(token.encode()).hexdigest()


def is_plain_token(value: str) -> bool:
    """True when ``value`` is a token itself, not a hash or an ``env:``/``file:`` reference."""
    return bool(value) and not value.startswith(_REFERENCE_PREFIXES)


def resolve_secret(value: str) -> str:
    """Resolve ``env:NAME`` and ``file:PATH`` references of a configured token; check ``sha256:`` hashes.

    Raises:
        ValueError: the variable is unset or empty, the file cannot be read or is empty, or a hash is not
            64 lower-case hex digits. The message names the variable or file, never a secret.
    """
    if value.startswith("env:"):
        name = value[4:]
        resolved = os.environ.get(name, "").strip()
        if not resolved:
            raise ValueError(f"environment variable {name} is unset or empty")
        value = resolved
    elif value.startswith("file:"):
        path = value[5:]
        try:
            with open(path, encoding="utf-8") as fh:
                resolved = fh.readline().strip()
        except OSError as exc:
            raise ValueError(f"token file {path} cannot be read ({exc.strerror})") from None
        if not resolved:
            raise ValueError(f"token file {path} is empty")
        value = resolved
    if value.startswith(HASH_PREFIX) and _HASH.fullmatch(value.lower()) is None:
        raise ValueError("a sha256: token hash must be 64 hex digits")
    return value.lower() if value.startswith(HASH_PREFIX) else value


def resolve_sent_secret(value: str) -> str:
    """Like ``resolve_secret`` for a token the service sends: it must be usable, so a hash is refused."""
    resolved = resolve_secret(value)
    if resolved.startswith(HASH_PREFIX):
        raise ValueError("a token this service sends cannot be given as a sha256: hash (use env: or file:)")
    return resolved


def _matches(presented: str, expected: str) -> bool:
    """Constant-time check of a presented token against a configured one (plain or ``sha256:`` hash)."""
    if expected.startswith(HASH_PREFIX):
        return hmac.compare_digest(hash_token(presented).encode(), expected.encode())
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
        """The principal whose token ``metadata`` presents.

        Raises:
            PermissionDeniedError: ``DOOR_DISABLED`` when no strategy has a token (the strategy door is closed).
            AuthError: ``MISSING_TOKEN``, ``INVALID_TOKEN``.
        """
        if not self._entries:
            raise PermissionDeniedError("DOOR_DISABLED", "the strategy door is disabled: no strategy token configured")
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
