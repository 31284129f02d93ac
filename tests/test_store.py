"""The state store on SQLite and on the real PostgreSQL, and ops keeping its state through it."""

from __future__ import annotations

import json
import logging
import socket
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from nautilus_mesh.errors import ConfigError, UnavailableError
from nautilus_mesh.store import (
    MIGRATIONS,
    Migration,
    PostgresStore,
    SqliteStore,
    StateStore,
    mask_url,
    open_store,
)
from ops_server.core import OpsCore
from ops_server.server import OpsServer
from tests.conftest import Mesh, ops_config, running_mesh, seed_returns
from tests.localhost import free_port

PG_HOST, PG_PORT = "127.0.0.1", 5432
PG_URL = f"postgresql://postgres@{PG_HOST}:{PG_PORT}/test"

INDEX_STEP = Migration(
    2,
    "documents by update time",
    sqlite="CREATE INDEX documents_updated_at ON documents (updated_at)",
    postgres="CREATE INDEX documents_updated_at ON {schema}.documents (updated_at)",
)
BROKEN_STEP = Migration(2, "broken", sqlite="CREATE TABLE oops (", postgres="CREATE TABLE {schema}.oops (")


def postgres_accepts_connections() -> bool:
    try:
        with socket.create_connection((PG_HOST, PG_PORT), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture
def pg_schema() -> Iterator[str]:
    """A fresh schema name on the real PostgreSQL, dropped after the test."""
    if not postgres_accepts_connections():
        pytest.skip(f"PostgreSQL does not accept connections on {PG_HOST}:{PG_PORT}")
    schema = f"test_store_{uuid.uuid4().hex[:12]}"
    yield schema
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


@dataclass
class Backend:
    """Opens stores on one database and reads its schema_version table behind the store's back."""

    open: Callable[[Sequence[Migration]], StateStore]
    versions: Callable[[], list[int]]
    opened: list[StateStore] = field(default_factory=list)

    def store(self, migrations: Sequence[Migration] = MIGRATIONS) -> StateStore:
        opened = self.open(migrations)
        self.opened.append(opened)
        return opened


def sqlite_backend(tmp_path: Path) -> Backend:
    path = tmp_path / "state.db"

    def versions() -> list[int]:
        conn = sqlite3.connect(path)
        try:
            rows = conn.execute("SELECT version FROM schema_version ORDER BY version").fetchall()
        except sqlite3.OperationalError:  # no such table: nothing was ever migrated
            rows = []
        finally:
            conn.close()
        return [int(r[0]) for r in rows]

    return Backend(lambda migrations: SqliteStore(path, migrations=migrations), versions)


def postgres_backend(schema: str) -> Backend:
    def versions() -> list[int]:
        with psycopg.connect(PG_URL) as conn:
            table = sql.Identifier(schema, "schema_version")
            try:
                rows = conn.execute(sql.SQL("SELECT version FROM {} ORDER BY version").format(table)).fetchall()
            except psycopg.errors.UndefinedTable:  # nothing was ever migrated
                rows = []
        return [int(r[0]) for r in rows]

    return Backend(lambda migrations: PostgresStore(PG_URL, schema, migrations=migrations), versions)


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "sqlite":
        b = sqlite_backend(tmp_path)
    else:
        b = postgres_backend(request.getfixturevalue("pg_schema"))
    yield b
    for opened in b.opened:
        opened.close()


# -- the store -----------------------------------------------------------------------------


def test_put_then_get_returns_the_same_document(backend: Backend) -> None:
    store = backend.store()
    document = {"weights": {"momentum": 0.65, "meanrev": 0.35}, "last": None, "day": [2025, 1, 2], "ok": True}
    store.put("allocator", document)
    assert store.get("allocator") == document
    store.close()
    assert backend.store().get("allocator") == document  # durable across a reopen


def test_get_when_key_was_never_put_returns_none(backend: Backend) -> None:
    assert backend.store().get("nothing") is None


def test_put_when_key_exists_overwrites_it(backend: Backend) -> None:
    store = backend.store()
    store.put("risk", {"state": "ACTIVE", "extra": 1})
    store.put("risk", {"state": "HALTED"})
    assert store.get("risk") == {"state": "HALTED"}


def test_put_many_writes_every_item(backend: Backend) -> None:
    store = backend.store()
    store.put_many({"a": {"n": 1}, "b": {"n": 2}})
    assert (store.get("a"), store.get("b")) == ({"n": 1}, {"n": 2})


@pytest.mark.parametrize(
    ("bad", "error"),
    [({"x": object()}, TypeError), ({"x": float("nan")}, ValueError), (["not", "an", "object"], TypeError)],
)
def test_put_many_when_an_item_fails_midway_writes_nothing(backend: Backend, bad: Any, error: type[Exception]) -> None:
    store = backend.store()
    store.put("a", {"v": 1})
    with pytest.raises(error):
        store.put_many({"a": {"v": 2}, "b": {"v": 2}, "c": bad, "d": {"v": 2}})
    assert (store.get("a"), store.get("b"), store.get("c"), store.get("d")) == ({"v": 1}, None, None, None)
    store.put("b", {"v": 3})  # the store is usable after the rollback
    assert store.get("b") == {"v": 3}


def test_open_when_new_applies_migrations_once_and_records_them(backend: Backend) -> None:
    store = backend.store()
    assert backend.versions() == [1]
    store.put("k", {"v": 1})
    store.close()
    assert backend.store().get("k") == {"v": 1}
    assert backend.versions() == [1]


def test_open_when_a_step_is_missing_applies_only_that_step(backend: Backend) -> None:
    backend.store().put("k", {"v": 1})
    upgraded = backend.store((*MIGRATIONS, INDEX_STEP))
    assert backend.versions() == [1, 2]
    assert upgraded.get("k") == {"v": 1}


def test_open_when_a_step_fails_rolls_the_whole_migration_back(backend: Backend) -> None:
    with pytest.raises((sqlite3.Error, psycopg.Error)):
        backend.store((*MIGRATIONS, BROKEN_STEP))
    assert backend.versions() == []  # not even step 1 or the version table stayed
    backend.store()
    assert backend.versions() == [1]


def test_open_when_database_schema_is_newer_raises_config_error(backend: Backend) -> None:
    backend.store((*MIGRATIONS, INDEX_STEP)).close()
    with pytest.raises(ConfigError, match="schema version 2, newer than this code knows") as caught:
        backend.store()
    assert caught.value.code == "STORE_SCHEMA_TOO_NEW"


# -- open_store ----------------------------------------------------------------------------


@pytest.mark.parametrize("url", [None, ""])
def test_open_store_when_no_url_opens_sqlite_at_the_default_path(tmp_path: Path, url: str | None) -> None:
    store = open_store(url, tmp_path / "ops" / "state.db")
    try:
        assert isinstance(store, SqliteStore)
        assert store.path == tmp_path / "ops" / "state.db"
        assert store.path.exists()
    finally:
        store.close()


def test_open_store_when_sqlite_url_opens_that_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    relative = open_store("sqlite:///rel/state.db", tmp_path / "default.db")
    absolute = open_store(f"sqlite:///{tmp_path}/abs/state.db", tmp_path / "default.db")
    try:
        assert (tmp_path / "rel" / "state.db").exists()
        assert (tmp_path / "abs" / "state.db").exists()
        assert not (tmp_path / "default.db").exists()
    finally:
        relative.close()
        absolute.close()


def test_open_store_when_postgresql_url_uses_its_schema(
    tmp_path: Path, pg_schema: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    # Trust auth ignores the password; it is there to show that it never reaches a log.
    store = open_store(f"postgresql://postgres:s3cret@{PG_HOST}:{PG_PORT}/test?schema={pg_schema}", tmp_path / "x.db")
    try:
        assert isinstance(store, PostgresStore)
        assert store.schema == pg_schema
        store.put("k", {"v": 1})
        assert postgres_backend(pg_schema).versions() == [1]
        assert "s3cret" not in store.location
        assert "s3cret" not in caplog.text
        assert "postgres:***@" in caplog.text
    finally:
        store.close()
    assert not (tmp_path / "x.db").exists()


@pytest.mark.parametrize(
    "url",
    [
        "mysql://admin:s3cret@db.example.com/ops",
        "postgresql+psycopg://admin:s3cret@db.example.com/ops",
        "sqlite://",
        "sqlite://host/state.db",
        "host=db.example.com password=s3cret",
    ],
)
def test_open_store_when_url_is_unsupported_raises_config_error_without_password(tmp_path: Path, url: str) -> None:
    with pytest.raises(ConfigError, match="database_url") as caught:
        open_store(url, tmp_path / "state.db")
    assert "s3cret" not in caught.value.message
    assert "s3cret" not in repr(caught.value)


def test_open_store_when_postgresql_is_unreachable_raises_unavailable_without_password(tmp_path: Path) -> None:
    port = free_port()  # nothing listens on it
    with pytest.raises(UnavailableError, match="cannot connect to state store") as caught:
        open_store(f"postgresql://admin:s3cret@127.0.0.1:{port}/ops", tmp_path / "state.db")
    assert "s3cret" not in caught.value.message
    assert "admin:***@" in caught.value.message


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("postgresql://u:p@ss@h:5432/db", "postgresql://u:***@h:5432/db"),
        ("postgresql://u@h/db?password=p&sslmode=require", "postgresql://u@h/db?password=***&sslmode=require"),
        ("postgresql://h/db", "postgresql://h/db"),
        ("host=h password=p", "host=h password=***"),
    ],
)
def test_mask_url_replaces_the_password(url: str, masked: str) -> None:
    assert mask_url(url) == masked


# -- ops on the store ----------------------------------------------------------------------


def move_weights(mesh: Mesh) -> dict[str, float]:
    seed_returns(mesh)
    mesh.ops.core.periodic.run_allocation(forced=True)
    weights = dict(mesh.ops.core.allocator.snapshot()["weights"])
    assert weights == pytest.approx({"momentum": 0.65, "meanrev": 0.35})
    return weights


async def test_ops_restart_keeps_allocator_weights_through_the_store(tmp_path: Path) -> None:
    async with running_mesh(tmp_path) as mesh:
        weights = move_weights(mesh)
        await mesh.ops.stop(grace=0.5)
        assert (tmp_path / "ops" / "state.db").exists()
        assert not (tmp_path / "ops" / "state.json").exists()

        mesh.ops = OpsServer(ops_config(tmp_path, mesh.engine.port))
        await mesh.ops.start()
        assert mesh.ops.core.allocator.snapshot()["weights"] == weights


async def test_ops_when_configured_with_postgresql_persists_its_state_there(tmp_path: Path, pg_schema: str) -> None:
    url = f"{PG_URL}?schema={pg_schema}"
    async with running_mesh(tmp_path, ops={"database_url": url}) as mesh:
        assert isinstance(mesh.ops.core.state.store, PostgresStore)
        weights = move_weights(mesh)
        await mesh.ops.stop(grace=0.5)
        assert not (tmp_path / "ops" / "state.db").exists()

        store = PostgresStore(PG_URL, pg_schema)
        try:
            allocator, trading_day = store.get("allocator"), store.get("trading_day")
            assert store.get("risk") is not None
            assert store.get("canaries") is not None
        finally:
            store.close()
        assert allocator is not None and allocator["weights"] == weights
        assert trading_day is not None and trading_day["day"] == list(time.gmtime()[:3])

        mesh.ops = OpsServer(ops_config(tmp_path, mesh.engine.port, database_url=url))
        await mesh.ops.start()
        assert mesh.ops.core.allocator.snapshot()["weights"] == weights


async def test_ops_when_an_old_state_file_exists_imports_it_once(tmp_path: Path) -> None:
    state_dir = tmp_path / "ops"
    state_dir.mkdir()
    legacy = {
        "allocator": {"version": 1, "weights": {"momentum": 0.6, "meanrev": 0.4}, "last_applied_at": 1.7e9},
        "trading_day": list(time.gmtime()[:3]),
        "day_start_equity": {"momentum_v1": "12345.67"},
    }
    (state_dir / "state.json").write_text(json.dumps(legacy))

    core = OpsCore(ops_config(tmp_path, 1, tracing=False))
    try:
        assert core.allocator.snapshot()["weights"] == {"momentum": 0.6, "meanrev": 0.4}
        assert core.measurement.book("momentum_v1").day_start_equity == Decimal("12345.67")
    finally:
        await core.stop()
    assert not (state_dir / "state.json").exists()
    assert json.loads((state_dir / "state.json.imported").read_text()) == legacy

    # A second start reads the store; a stray state.json no longer overrides it.
    stale = {**legacy, "allocator": {**legacy["allocator"], "weights": {"momentum": 0.2, "meanrev": 0.8}}}
    (state_dir / "state.json").write_text(json.dumps(stale))
    core = OpsCore(ops_config(tmp_path, 1, tracing=False))
    try:
        assert core.allocator.snapshot()["weights"] == {"momentum": 0.6, "meanrev": 0.4}
    finally:
        await core.stop()
    assert (state_dir / "state.json").exists()


async def test_ops_restart_keeps_every_drawdown_figure(tmp_path: Path) -> None:
    async with running_mesh(tmp_path) as mesh:
        book = mesh.ops.core.measurement.book("momentum_v1")
        book.equity_index, book.peak_index, book.max_drawdown_ratio = Decimal("0.7"), Decimal("1.2"), 0.5
        book.peak_pnl, book.max_drawdown_usd = Decimal("1234.5"), Decimal("600")
        await mesh.ops.stop(grace=0.5)

        mesh.ops = OpsServer(ops_config(tmp_path, mesh.engine.port))
        await mesh.ops.start()
        measurement = mesh.ops.core.measurement
        assert measurement.drawdown_ratio("momentum_v1") == pytest.approx(1 - 0.7 / 1.2)
        restored = measurement.book("momentum_v1")
        assert (restored.max_drawdown_ratio, restored.peak_pnl, restored.max_drawdown_usd) == (
            0.5,
            Decimal("1234.5"),
            Decimal("600"),
        )


def test_postgres_store_when_its_connection_is_cut_connects_again_on_the_next_call(pg_schema: str) -> None:
    """A worker's store kept its one connection for life: after PostgreSQL dropped it (a restart, a network cut),
    every save failed until ops restarted (no allocation applied, the kill switch's save raised)."""
    store = PostgresStore(PG_URL, pg_schema)
    try:
        store.put("a", {"x": 1})
        backend = store._conn.info.backend_pid  # the server process serving this store's connection
        with psycopg.connect(PG_URL, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (backend,))
        with pytest.raises(psycopg.OperationalError):
            store.get("a")  # the cut is seen once, by the call that meets it
        assert store.get("a") == {"x": 1}
        store.put("b", {"y": 2})
        assert store.get("b") == {"y": 2}
    finally:
        store.close()
