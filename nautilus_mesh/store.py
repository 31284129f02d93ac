"""The state store: JSON documents by key, behind one interface.

Services keep their restartable state (allocator weights, trading states, canary controllers, cursors) as
JSON objects under string keys. Two implementations share the :class:`StateStore` protocol:

    SqliteStore     the default, a file under ``var/`` (stdlib sqlite3, WAL, ``synchronous=FULL``)
    PostgresStore   when a ``postgresql://`` URL is configured (psycopg 3, one table in its own schema)

Every ``put`` and ``put_many`` is one transaction: after ``kill -9`` a reader sees all of a call's documents or
none. Both databases carry a ``schema_version`` table; on open the missing :data:`MIGRATIONS` steps are applied in
order inside one transaction, and a database written by newer code is refused (``ConfigError``).

:func:`open_store` picks the implementation from a database URL. A URL's password never reaches a log or an error.
"""

from __future__ import annotations

import json
import logging
import re
import sqlite3
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg import sql

from nautilus_mesh.clock import REAL_CLOCK
from nautilus_mesh.errors import ConfigError, UnavailableError

log = logging.getLogger(__name__)

Document = dict[str, Any]


Value = Mapping[str, Any]
"""What :meth:`StateStore.put` takes: a JSON object."""


class StateStore(Protocol):
    """JSON documents by key; every write call is atomic."""

    @property
    def location(self) -> str:
        """Where the documents live, fit for a log line (passwords masked)."""
        ...

    @property
    def closed(self) -> bool:
        """True once :meth:`close` has run."""
        ...

    def get(self, key: str) -> Document | None:
        """The document stored under ``key``, or None."""
        ...

    def put(self, key: str, value: Value) -> None:
        """Store ``value`` under ``key`` (replacing it) in one transaction.

        Raises:
            TypeError, ValueError: ``value`` is not strict JSON (nothing is written).
        """
        ...

    def put_many(self, items: Mapping[str, Value]) -> None:
        """Store every item in one transaction: all of them or, on any failure, none."""
        ...

    def close(self) -> None:
        """Release the connection; idempotent."""
        ...


@dataclass(frozen=True)
class Migration:
    """One schema step. ``postgres`` may name the store's schema as ``{schema}``."""

    version: int
    description: str
    sqlite: str
    postgres: str


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "documents table",
        sqlite="CREATE TABLE documents (key TEXT PRIMARY KEY, value TEXT NOT NULL, updated_at REAL NOT NULL)",
        postgres=(
            "CREATE TABLE {schema}.documents "
            "(key TEXT PRIMARY KEY, value JSONB NOT NULL, updated_at DOUBLE PRECISION NOT NULL)"
        ),
    ),
)
"""Append only: a released step is never edited, a change is a new step with the next version."""


def _encode(key: str, value: Value) -> str:
    if not isinstance(value, Mapping):
        raise TypeError(f"store document {key!r} must be a JSON object, got {type(value).__name__}")
    # Strict JSON (no NaN/Infinity), so the same text is valid in both databases.
    return json.dumps(value, allow_nan=False, separators=(",", ":"))


def _decode(key: str, raw: object) -> Document:
    value = json.loads(raw) if isinstance(raw, str) else raw
    if not isinstance(value, dict):
        raise ConfigError(f"store document {key!r} is not a JSON object")
    return value


def _pending(current: int, migrations: Sequence[Migration], location: str) -> list[Migration]:
    """The steps after ``current``, in order; refuses a database newer than the code."""
    versions = [m.version for m in migrations]
    if versions != list(range(1, len(versions) + 1)):
        raise ValueError(f"migration versions must be 1..n in order, got {versions}")
    if current > len(migrations):
        raise ConfigError(
            f"state store {location} has schema version {current}, newer than this code knows "
            f"({len(migrations)}): upgrade the service or point it at another database",
            {"schema_version": current, "known_version": len(migrations)},
            code="STORE_SCHEMA_TOO_NEW",
        )
    return list(migrations[current:])


_PASSWORD_PARAM = re.compile(r"(password\s*=\s*)('[^']*'|[^\s&]+)", re.IGNORECASE)


def mask_url(url: str) -> str:
    """``url`` with its password (in the authority or a ``password=`` parameter) replaced by ``***``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable database url>"
    netloc = parts.netloc
    if parts.password is not None:
        userinfo, _, hostinfo = netloc.rpartition("@")
        netloc = f"{userinfo.split(':', 1)[0]}:***@{hostinfo}"
    masked = urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    return _PASSWORD_PARAM.sub(r"\1***", masked)


def _scrub(text: str, url: str) -> str:
    """``text`` (a driver's message) with any occurrence of the URL's password masked."""
    try:
        password = urlsplit(url).password
    except ValueError:
        password = None
    return _PASSWORD_PARAM.sub(r"\1***", text.replace(password, "***") if password else text)


class _Closable(Protocol):
    def close(self) -> None: ...


class _SharedConnection:
    """One database connection shared by threads, serialised by a lock, closed once."""

    _conn: _Closable
    location: str
    schema_version: int

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._closed = False

    def _opened(self, prepare: Callable[[], int]) -> None:
        """Run ``prepare`` (settings, migrations) on the new connection, closing it when that fails; it returns the
        schema version."""
        try:
            self.schema_version = prepare()
        except BaseException:
            self._conn.close()
            raise
        log.info("[STORE] opened %s (schema version %d)", self.location, self.schema_version)

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._conn.close()


class SqliteStore(_SharedConnection):
    """Documents in one SQLite file: WAL journal, ``synchronous=FULL`` (a commit survives a power loss).

    Thread-safe: one connection, serialised by a lock.

    Raises:
        ConfigError: The file's schema is newer than this code.
        UnavailableError: The file cannot be opened.
    """

    _conn: sqlite3.Connection

    def __init__(self, path: str | Path, *, migrations: Sequence[Migration] = MIGRATIONS) -> None:
        self.path = Path(path)
        self.location = f"sqlite:///{self.path}"
        super().__init__()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # isolation_level=None: no implicit transactions, every one is spelled out in _transaction().
            self._conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        except (OSError, sqlite3.Error) as exc:
            raise UnavailableError("STORE_UNAVAILABLE", f"cannot open state store {self.location}: {exc}") from exc

        def prepare() -> int:
            for pragma in ("journal_mode=WAL", "synchronous=FULL", "busy_timeout=5000"):
                self._conn.execute(f"PRAGMA {pragma}")
            return self._migrate(migrations)

        self._opened(prepare)

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            # IMMEDIATE takes the write lock up front: two processes migrating the same file do it one at a time.
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def _migrate(self, migrations: Sequence[Migration]) -> int:
        with self._transaction() as conn:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_version "
                "(version INTEGER PRIMARY KEY, description TEXT NOT NULL, applied_at REAL NOT NULL)"
            )
            current = conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version").fetchone()[0]
            for step in _pending(current, migrations, self.location):
                conn.execute(step.sqlite)
                conn.execute(
                    "INSERT INTO schema_version (version, description, applied_at) VALUES (?, ?, ?)",
                    (step.version, step.description, REAL_CLOCK.time()),
                )
                log.info("[STORE] %s: applied migration %d (%s)", self.location, step.version, step.description)
                current = step.version
        return int(current)

    def get(self, key: str) -> Document | None:
        with self._lock:
            row = self._conn.execute("SELECT value FROM documents WHERE key = ?", (key,)).fetchone()
        return None if row is None else _decode(key, row[0])

    def put(self, key: str, value: Value) -> None:
        self.put_many({key: value})

    def put_many(self, items: Mapping[str, Value]) -> None:
        now = REAL_CLOCK.time()
        with self._transaction() as conn:
            # Values are encoded inside the transaction: one that fails rolls back the rows before it.
            conn.executemany(
                "INSERT INTO documents (key, value, updated_at) VALUES (?, ?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
                ((key, _encode(key, value), now) for key, value in items.items()),
            )


_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")


class PostgresStore(_SharedConnection):
    """Documents in PostgreSQL: table ``<schema>.documents`` (JSONB), one transaction per write.

    Thread-safe: one synchronous psycopg connection (autocommit off), serialised by a lock.

    Raises:
        ConfigError: The schema name is invalid or the schema is newer than this code.
        UnavailableError: The server cannot be reached.
    """

    _conn: psycopg.Connection[Any]

    def __init__(
        self,
        url: str,
        schema: str = "nautilus",
        *,
        migrations: Sequence[Migration] = MIGRATIONS,
        connect_timeout: int = 10,
    ) -> None:
        if not _SCHEMA_NAME.fullmatch(schema):
            raise ConfigError(f"invalid store schema name {schema!r}: use lower-case letters, digits and _")
        self.schema = schema
        self.location = f"{mask_url(url)} (schema {schema})"
        super().__init__()
        self._documents = sql.Identifier(schema, "documents")
        self._url, self._connect_timeout = url, connect_timeout
        self._conn = self._connect()
        self._opened(lambda: self._migrate(migrations))

    def _connect(self) -> psycopg.Connection[Any]:
        try:
            return psycopg.connect(self._url, autocommit=False, connect_timeout=self._connect_timeout)
        except psycopg.Error as exc:
            # psycopg's message names host, port and user, never the password; the URL is masked.
            raise UnavailableError(
                "STORE_UNAVAILABLE",
                f"cannot connect to state store {self.location}: {_scrub(str(exc), self._url)}",
            ) from None

    @contextmanager
    def _transaction(self) -> Iterator[psycopg.Cursor[Any]]:
        # Every statement, reads included, runs in an explicit transaction: with autocommit off, a bare
        # execute would leave one open and turn the next transaction() into a savepoint.
        with self._lock:
            if self._conn.broken and not self._closed:  # lost (a server restart, a network cut): connect again
                self._conn = self._connect()
                log.warning("[STORE] reconnected to %s", self.location)
            with self._conn.transaction(), self._conn.cursor() as cur:
                yield cur

    def _migrate(self, migrations: Sequence[Migration]) -> int:
        schema = sql.Identifier(self.schema)
        versions = sql.Identifier(self.schema, "schema_version")
        with self._transaction() as cur:
            # Serialises concurrent openers (two replicas starting at once) until this transaction ends.
            cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"nautilus_mesh.store:{self.schema}",))
            cur.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(schema))
            cur.execute(
                sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {} "
                    "(version INTEGER PRIMARY KEY, description TEXT NOT NULL, applied_at DOUBLE PRECISION NOT NULL)"
                ).format(versions)
            )
            cur.execute(sql.SQL("SELECT COALESCE(MAX(version), 0) FROM {}").format(versions))
            row = cur.fetchone()
            current = int(row[0]) if row is not None else 0
            for step in _pending(current, migrations, self.location):
                cur.execute(sql.SQL(step.postgres).format(schema=schema))
                cur.execute(
                    sql.SQL("INSERT INTO {} (version, description, applied_at) VALUES (%s, %s, %s)").format(versions),
                    (step.version, step.description, REAL_CLOCK.time()),
                )
                log.info("[STORE] %s: applied migration %d (%s)", self.location, step.version, step.description)
                current = step.version
        return current

    def get(self, key: str) -> Document | None:
        with self._transaction() as cur:
            cur.execute(sql.SQL("SELECT value FROM {} WHERE key = %s").format(self._documents), (key,))
            row = cur.fetchone()
        return None if row is None else _decode(key, row[0])

    def put(self, key: str, value: Value) -> None:
        self.put_many({key: value})

    def put_many(self, items: Mapping[str, Value]) -> None:
        now = REAL_CLOCK.time()
        statement = sql.SQL(
            "INSERT INTO {} (key, value, updated_at) VALUES (%s, %s::jsonb, %s) "
            "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, updated_at = EXCLUDED.updated_at"
        ).format(self._documents)
        with self._transaction() as cur:
            # Values are encoded inside the transaction: one that fails rolls back the rows before it.
            for key, value in items.items():
                cur.execute(statement, (key, _encode(key, value), now))


def _split_schema(url: str) -> tuple[str, str]:
    """Take our own ``schema=`` parameter out of a PostgreSQL URL (libpq would refuse it)."""
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise ConfigError(f"invalid database_url {mask_url(url)!r}: {exc}") from None
    params = parse_qsl(parts.query, keep_blank_values=True)
    schemas = [v for k, v in params if k == "schema"]
    query = urlencode([(k, v) for k, v in params if k != "schema"])
    return urlunsplit(parts._replace(query=query)), (schemas[-1] if schemas else "nautilus")


def open_store(database_url: str | None, default_path: Path) -> StateStore:
    """Open the store a database URL names.

    Args:
        database_url: None or "" for SQLite at ``default_path``; ``sqlite:///<path>`` for SQLite elsewhere
            (``sqlite:///state.db`` is relative, ``sqlite:////var/ops/state.db`` absolute);
            ``postgresql://user:password@host:port/db`` (or ``postgres://``) for PostgreSQL, in schema
            ``nautilus`` unless a ``schema=<name>`` parameter names another.
        default_path: The SQLite file used when no URL is given.

    Raises:
        ConfigError: The URL is not one of the above (the message masks its password).
        UnavailableError: The database cannot be opened.
    """
    if not database_url:
        return SqliteStore(default_path)
    scheme = database_url.partition(":")[0].lower()
    if scheme == "sqlite":
        prefix = "sqlite:///"
        path = database_url[len(prefix) :] if database_url.lower().startswith(prefix) else ""
        if not path or "?" in path:
            raise ConfigError(
                f"invalid database_url {mask_url(database_url)!r}: a SQLite URL is sqlite:///<path> "
                "(relative) or sqlite:////<absolute path>, without parameters"
            )
        return SqliteStore(Path(path))
    if scheme in ("postgresql", "postgres"):
        url, schema = _split_schema(database_url)
        return PostgresStore(url, schema)
    raise ConfigError(
        f"unsupported database_url {mask_url(database_url)!r}: use sqlite:///<path> or "
        "postgresql://user:password@host:port/database (empty for the default SQLite file)"
    )
