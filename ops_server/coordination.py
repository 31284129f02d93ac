"""Several ops workers kept in step through PostgreSQL: the allocator's leader, global rails, exposure.

Every ``coordination_interval_seconds`` (0.2 s) each worker, on the event loop with psycopg's async driver:

1. **Global rails**: a kill switch or global trading state changed on this worker is written to the store document
   ``rails`` with the next version; a newer version written by another worker is applied here (the kill switch
   engaged or released, the global state set), so an operator's halt on one worker reaches every worker within one
   interval plus a store round trip.
2. **Exposure**: this worker's own gross exposure goes to ``exposure/<index>``; the others' sum becomes
   :attr:`ExposureView.other_workers_gross`, so the gross-exposure rail counts every shard.
3. **Returns**: the return series of the strategies this worker owns go to ``returns/<strategy>`` (their last
   ``lookback`` samples, what the allocator reads; at most once a sample interval).
4. **Leader**: one worker holds a PostgreSQL advisory lock (``pg_try_advisory_lock`` on a connection of its own);
   a worker that dies (even by SIGKILL) loses its connection and so the lock, and the next worker to poll takes
   it. The leader runs the allocation cycle ``cycle_id = floor(now / allocation_interval_seconds)`` on every
   strategy's series from the store and inserts ``allocation/cycle/<cycle_id>`` (``ON CONFLICT DO NOTHING``: a
   cycle id is decided once, whoever leads) together with ``allocation/latest``, in one transaction.
5. **Apply**: every worker applies ``allocation/latest`` when its cycle id is newer than the one it applied.
6. **Forced cycles**: an operator's ``TriggerAllocation`` on any worker writes ``allocation/request/<uuid>``
   (:meth:`Coordinator.request_cycle`). The leader runs one forced cycle for every pending request at its next
   round, under the next free cycle id (``max(current, last decided + 1)``: the periodic cycle of that id is then
   skipped), inserts it like any cycle and answers each request with the cycle id in the same transaction. The
   asking worker waits for that answer and for its own application of the cycle, then replies: one cycle, run
   once by the leader, applied by every worker. A request no leader answers within
   :data:`FORCED_CYCLE_TIMEOUT_SECONDS` is withdrawn (never run later) and refused with
   ``ALLOCATOR_LEADER_UNAVAILABLE``.

The shared documents live in the configured schema's ``documents`` table; each worker's own state stays in its own
schema (:func:`ops_server.sharding.worker_database_url`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from dataclasses import KW_ONLY, dataclass, field
from decimal import Decimal
from typing import Any

import psycopg
from psycopg import sql

from nautilus_mesh.decimals import fmt
from nautilus_mesh.errors import (
    FailedPreconditionError,
    MeshError,
    PermissionDeniedError,
    UnavailableError,
    ValidationError,
)
from nautilus_mesh.store import PostgresStore, _split_schema
from nautilus_mesh.tasks import cancel_and_wait
from ops_server.allocation import AllocationDecision, AllocationReason
from ops_server.controls import OpsControls
from ops_server.parts import OpsParts
from ops_server.periodic import PeriodicDecisions
from ops_server.risk.trading_state import TradingState
from ops_server.sharding import ShardMap

log = logging.getLogger(__name__)

Document = dict[str, Any]

REQUEST_PREFIX = "allocation/request/"
FORCED_CYCLE_TIMEOUT_SECONDS = 10.0
"""How long a worker waits for the leader to run (and itself to apply) a forced cycle, seconds (less when the caller's
deadline is nearer)."""
DEADLINE_MARGIN_SECONDS = 0.3
"""Time kept before the caller's deadline to withdraw the request and answer, seconds."""
REFUSALS: dict[str, type[MeshError]] = {
    "permission_denied": PermissionDeniedError,
    "validation_failed": ValidationError,
}


@dataclass(frozen=True)
class SharedCycle:
    """A forced allocation cycle the leader ran for a request (see the module docstring, step 6)."""

    cycle_id: int
    leader: int
    reason: str
    """The allocator's reason (FORCED, COOLDOWN, ...)."""
    message: str


@dataclass(eq=False, repr=False)
class Coordinator:
    """One worker's side of the coordination (see the module docstring).

    Args:
        parts: the ops service's domain objects: the config (the shared store's URL, the coordination and
            allocation intervals), the allocator whose weights the leader shares, the risk rails whose kill switch
            and global trading state the workers share, the exposure (gross exposure, this worker's published and
            the others' applied), events, state (saved once a shared allocation is applied), metrics, and the
            clock (wall time of shared documents, monotonic time of request deadlines).
        shards: which worker this is and the strategies it owns.
        periodic: allocation cycles (run by the leader) and their metrics.
        controls: applies the shared kill switch and trading state.
    """

    parts: OpsParts
    shards: ShardMap
    _: KW_ONLY
    periodic: PeriodicDecisions
    controls: OpsControls
    leader: bool = field(init=False, default=False)
    applied_cycle: int = field(init=False, default=-1)
    _conn: psycopg.AsyncConnection[Any] | None = field(init=False, default=None)
    _lock_conn: psycopg.AsyncConnection[Any] | None = field(init=False, default=None)
    _task: asyncio.Task[None] | None = field(init=False, default=None)
    _rails_version: int = field(init=False, default=0)
    _returns_written_at: float = field(init=False, default=float("-inf"))
    _wake: asyncio.Event = field(init=False, default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self._url, self._schema = _split_schema(self.parts.config.database_url)
        self._documents = sql.Identifier(self._schema, "documents")
        self._lock_key = f"nautilus_mesh.allocator:{self._schema}"
        self._rails_synced = self._local_rails()

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        # The shared schema and its documents table, migrated like any store (serialised between workers).
        await asyncio.to_thread(lambda: PostgresStore(self._url, self._schema).close())
        self._task = asyncio.create_task(self._loop(), name="ops-coordination")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        for conn in (self._conn, self._lock_conn):
            if conn is not None:
                with contextlib.suppress(psycopg.Error):
                    await conn.close()
        self._conn = self._lock_conn = None
        self.leader = False

    async def _loop(self) -> None:
        parts = self.parts
        while True:
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except psycopg.Error as exc:
                parts.metrics.coordination_failures.inc()
                log.warning(
                    "[COORD] worker %d: store unreachable (%s); retrying", self.shards.index, type(exc).__name__
                )
                await self._drop_connections()
            except Exception:
                parts.metrics.coordination_failures.inc()
                log.exception("[COORD] worker %d: coordination step failed", self.shards.index)
            with contextlib.suppress(TimeoutError):  # a forced cycle's request wakes the loop early
                await asyncio.wait_for(self._wake.wait(), parts.config.coordination_interval_seconds)
            self._wake.clear()

    async def _drop_connections(self) -> None:
        for conn in (self._conn, self._lock_conn):
            if conn is not None:
                with contextlib.suppress(Exception):
                    await conn.close()
        self._conn = self._lock_conn = None
        if self.leader:
            log.warning("[COORD] worker %d: lost the allocator leadership with its connection", self.shards.index)
        self.leader = False
        self.parts.metrics.allocator_leader.set(0)

    async def _connection(self) -> psycopg.AsyncConnection[Any]:
        if self._conn is None or self._conn.closed:
            self._conn = await psycopg.AsyncConnection.connect(self._url, autocommit=True, connect_timeout=5)
        return self._conn

    async def tick(self) -> None:
        """One round: rails, exposure, returns, leadership and its cycle, then the latest allocation."""
        conn = await self._connection()
        await self._sync_rails(conn)
        await self._sync_exposure(conn)
        await self._write_returns(conn)
        if await self._hold_leadership():
            await self._serve_requests(conn)
            await self._lead(conn)
        await self._apply_latest(conn)

    # -- documents -------------------------------------------------------------------------

    async def _get(self, conn: psycopg.AsyncConnection[Any], key: str) -> Document | None:
        cur = await conn.execute(sql.SQL("SELECT value FROM {} WHERE key = %s").format(self._documents), (key,))
        row = await cur.fetchone()
        return None if row is None else dict(row[0])

    async def _put(self, conn: psycopg.AsyncConnection[Any], key: str, value: Document) -> None:
        await conn.execute(
            sql.SQL(
                "INSERT INTO {} (key, value, updated_at) VALUES (%s, %s::jsonb, %s) "
                "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, updated_at = EXCLUDED.updated_at"
            ).format(self._documents),
            (key, json.dumps(value, allow_nan=False), self.parts.clock.time()),
        )

    # -- global rails ----------------------------------------------------------------------

    def _local_rails(self) -> tuple[bool, str]:
        return self.parts.risk.kill_switch_engaged, str(self.parts.risk.global_state)

    async def _sync_rails(self, conn: psycopg.AsyncConnection[Any]) -> None:
        local = self._local_rails()
        if local != self._rails_synced:  # changed here (an operator, a rail): this worker's change wins
            await self._publish_rails(conn, local)
            return
        doc = await self._get(conn, "rails")
        if doc is None or int(doc["version"]) <= self._rails_version:
            return
        await self._apply_rails(doc)
        self._rails_synced, self._rails_version = self._local_rails(), int(doc["version"])

    async def _publish_rails(self, conn: psycopg.AsyncConnection[Any], local: tuple[bool, str]) -> None:
        """Publish what changed here onto the shared rails, field by field, under a lock: a worker that had not yet
        seen another's kill switch, changing the global state, must not write its stale copy over it (that released
        the kill switch everywhere). While the kill switch is engaged the global state is HALTED."""
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"{self._schema}/rails",))
            doc = await self._get(conn, "rails")
            kill, state = (bool(doc["kill_switch"]), str(doc["global_state"])) if doc else self._rails_synced
            if local[0] != self._rails_synced[0]:
                kill = local[0]
            if local[1] != self._rails_synced[1]:
                state = local[1]
            if kill:
                state = str(TradingState.HALTED)
            version = int((doc or {}).get("version", 0)) + 1
            merged: Document = {"version": version, "kill_switch": kill, "global_state": state}
            await self._put(conn, "rails", {**merged, "worker": self.shards.index})
        log.info("[COORD] worker %d: published global rails %s", self.shards.index, merged)
        if (kill, state) != local:  # another worker's change this one had not seen yet: take it too
            await self._apply_rails({**merged, "worker": (doc or {}).get("worker", self.shards.index)})
        self._rails_synced, self._rails_version = self._local_rails(), version

    async def _apply_rails(self, doc: Document) -> None:
        parts = self.parts
        kill, state = bool(doc["kill_switch"]), TradingState(doc["global_state"])
        reason = f"from ops worker {doc.get('worker')} (global rails v{doc['version']})"
        if kill and not parts.risk.kill_switch_engaged:
            await self.controls.engage_kill_switch(reason)
        elif not kill and parts.risk.kill_switch_engaged:
            self.controls.release_kill_switch(reason)
        if parts.risk.global_state is not state:
            self.controls.set_trading_state(None, state, reason)
        log.warning("[COORD] worker %d: applied global rails %s", self.shards.index, reason)

    # -- exposure and returns --------------------------------------------------------------

    async def _sync_exposure(self, conn: psycopg.AsyncConnection[Any]) -> None:
        parts = self.parts
        own = parts.exposure.own_gross_exposure()
        await self._put(conn, f"exposure/{self.shards.index}", {"gross": fmt(own), "at": parts.clock.time()})
        cur = await conn.execute(
            sql.SQL("SELECT key, value FROM {} WHERE key LIKE 'exposure/%%'").format(self._documents)
        )
        others = Decimal(0)
        for key, value in await cur.fetchall():
            if key != f"exposure/{self.shards.index}":
                others += Decimal(str(value["gross"]))
        parts.exposure.other_workers_gross = others

    async def _write_returns(self, conn: psycopg.AsyncConnection[Any]) -> None:
        parts = self.parts
        now = parts.clock.monotonic()
        if now - self._returns_written_at < parts.config.sample_interval_seconds:
            return
        self._returns_written_at = now
        series = self.periodic.strategy_returns()
        lookback = parts.allocator.policy.lookback  # the allocator reads no more than this
        for strategy in self.shards.owned(series):
            returns = series[strategy][-lookback:]
            await self._put(conn, f"returns/{strategy}", {"worker": self.shards.index, "returns": returns})

    # -- leadership and the allocation cycle -------------------------------------------------

    async def _hold_leadership(self) -> bool:
        """True while this worker holds the advisory lock (trying to take it when it does not)."""
        parts = self.parts
        if self._lock_conn is None or self._lock_conn.closed:
            self._lock_conn = await psycopg.AsyncConnection.connect(self._url, autocommit=True, connect_timeout=5)
            self.leader = False
            parts.metrics.allocator_leader.set(0)
        if self.leader:
            await self._lock_conn.execute("SELECT 1")  # a dead connection raises: the lock went with it
            return True
        cur = await self._lock_conn.execute("SELECT pg_try_advisory_lock(hashtext(%s))", (self._lock_key,))
        row = await cur.fetchone()
        if row is not None and row[0]:
            self.leader = True
            parts.metrics.allocator_leader.set(1)
            log.warning("[COORD] worker %d is the allocator leader", self.shards.index)
            parts.events.publish(
                "LEADER", f"ops worker {self.shards.index} leads the allocator", worker=self.shards.index
            )
        return self.leader

    def cycle_id(self) -> int:
        return int(self.parts.clock.time() // self.parts.config.allocation_interval_seconds)

    async def _returns(self, conn: psycopg.AsyncConnection[Any]) -> dict[str, list[float]]:
        """Every strategy's return series, as the workers wrote them."""
        cur = await conn.execute(
            sql.SQL("SELECT key, value FROM {} WHERE key LIKE 'returns/%%'").format(self._documents)
        )
        return {k.removeprefix("returns/"): [float(x) for x in value["returns"]] for k, value in await cur.fetchall()}

    def _cycle_document(self, cycle: int, decision: AllocationDecision, **extra: object) -> Document:
        return {
            "cycle_id": cycle,
            "leader": self.shards.index,
            "reason": decision.reason.value,
            "message": decision.message,
            "allocator": json.loads(json.dumps(self.parts.allocator.snapshot(), default=str)),
            "at": self.parts.clock.time(),
            **extra,
        }

    async def _decide(
        self, conn: psycopg.AsyncConnection[Any], doc: Document, answered: dict[str, Document] | None = None
    ) -> bool:
        """Insert cycle ``doc`` and make it the latest (and answer ``answered`` requests), in one transaction; False
        when another leader decided that cycle id first."""
        async with conn.transaction():
            cur = await conn.execute(
                sql.SQL(
                    "INSERT INTO {} (key, value, updated_at) VALUES (%s, %s::jsonb, %s) "
                    "ON CONFLICT (key) DO NOTHING RETURNING key"
                ).format(self._documents),
                (f"allocation/cycle/{doc['cycle_id']}", json.dumps(doc, allow_nan=False), self.parts.clock.time()),
            )
            if await cur.fetchone() is None:
                return False
            await self._put(conn, "allocation/latest", doc)
            for key, value in (answered or {}).items():
                await self._put(conn, key, value)
        self.applied_cycle = int(doc["cycle_id"])
        return True

    async def _lead(self, conn: psycopg.AsyncConnection[Any]) -> None:
        cycle = self.cycle_id()
        if cycle <= self.applied_cycle:
            return
        if await self._get(conn, f"allocation/cycle/{cycle}") is not None:
            return  # decided already (by a leader before this one): applied below
        decision = self.periodic.run_allocation(returns=await self._returns(conn))
        if await self._decide(conn, self._cycle_document(cycle, decision)):
            log.info("[COORD] worker %d led allocation cycle %d: %s", self.shards.index, cycle, decision.reason.value)

    # -- forced cycles ---------------------------------------------------------------------

    async def _serve_requests(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """Run one forced cycle for every pending request (the leader only)."""
        cur = await conn.execute(
            sql.SQL("SELECT key, value FROM {} WHERE key LIKE %s AND NOT (value ? 'outcome') ORDER BY key").format(
                self._documents
            ),
            (REQUEST_PREFIX + "%",),
        )
        pending: dict[str, Document] = {key: dict(value) for key, value in await cur.fetchall()}
        if not pending:
            return
        latest = await self._get(conn, "allocation/latest")
        decided = int(latest["cycle_id"]) if latest is not None else -1
        cycle = max(self.cycle_id(), self.applied_cycle + 1, decided + 1)
        askers = sorted({int(r["worker"]) for r in pending.values()})
        try:
            decision = self.periodic.run_allocation(forced=True, returns=await self._returns(conn))
        except MeshError as exc:
            log.warning("[COORD] worker %d refused a forced allocation cycle: %s", self.shards.index, exc.code)
            refusal = {"outcome": "REFUSED", "kind": exc.kind, "code": exc.code, "message": exc.message}
            for key, value in pending.items():
                await self._put(conn, key, {**value, **refusal})
            return
        doc = self._cycle_document(
            cycle,
            decision,
            forced=True,
            requested_by=askers,
            requests=[key.removeprefix(REQUEST_PREFIX) for key in pending],
        )
        answer = {"outcome": "RAN", "cycle_id": cycle, "leader": self.shards.index}
        answer |= {"result": decision.reason.value, "message": decision.message}
        if await self._decide(conn, doc, {key: {**value, **answer} for key, value in pending.items()}):
            log.warning(
                "[COORD] worker %d ran forced allocation cycle %d for worker(s) %s: %s",
                self.shards.index,
                cycle,
                askers,
                decision.reason.value,
            )

    async def request_cycle(self, reason: str, within: float | None = None) -> SharedCycle:
        """Ask the allocator leader for a forced cycle, wait until it ran and this worker applied it.

        Args:
            reason: the operator's reason, kept with the request.
            within: seconds the caller still waits (its gRPC deadline), if it has one: the request is withdrawn a
                little before, so the caller hears why rather than ``DEADLINE_EXCEEDED``.

        Raises:
            UnavailableError: ``ALLOCATOR_LEADER_UNAVAILABLE`` when no leader ran it in time (then it never runs).
            PermissionDeniedError: the leader's refusal (the capital policy disables manual allocation).
        """
        parts = self.parts
        key = REQUEST_PREFIX + uuid.uuid4().hex
        poll = min(0.05, parts.config.coordination_interval_seconds)
        timeout = max(FORCED_CYCLE_TIMEOUT_SECONDS, 20 * parts.config.coordination_interval_seconds)
        if within is not None:
            timeout = max(0.1, min(timeout, within - DEADLINE_MARGIN_SECONDS))
        deadline = parts.clock.monotonic() + timeout
        log.info("[COORD] worker %d asks the allocator leader for a forced cycle (%s)", self.shards.index, reason)
        conn = await psycopg.AsyncConnection.connect(self._url, autocommit=True, connect_timeout=5)
        try:
            request = {"worker": self.shards.index, "operator_reason": reason, "at": parts.clock.time()}
            await self._put(conn, key, request)
            self._wake.set()
            while (answer := await self._get(conn, key)) is None or "outcome" not in answer:
                if parts.clock.monotonic() >= deadline and await self._withdraw(conn, key):
                    parts.metrics.allocation_requests.labels("TIMEOUT").inc()
                    raise UnavailableError(
                        "ALLOCATOR_LEADER_UNAVAILABLE",
                        f"no allocator leader ran the forced cycle within {timeout:g} s; it was withdrawn, nothing ran",
                    )
                await asyncio.sleep(poll)
            await conn.execute(sql.SQL("DELETE FROM {} WHERE key = %s").format(self._documents), (key,))
        finally:
            with contextlib.suppress(psycopg.Error):
                await conn.close()
        parts.metrics.allocation_requests.labels(str(answer["outcome"])).inc()
        if answer["outcome"] != "RAN":
            error = REFUSALS.get(str(answer.get("kind")), FailedPreconditionError)
            raise error(str(answer["code"]), str(answer["message"]))
        cycle = int(answer["cycle_id"])
        self._wake.set()
        while self.applied_cycle < cycle:
            if parts.clock.monotonic() >= deadline:
                raise UnavailableError(
                    "ALLOCATION_NOT_APPLIED",
                    f"the leader ran forced cycle {cycle} but worker {self.shards.index} has not applied it yet",
                    {"cycle_id": cycle},
                )
            await asyncio.sleep(poll)
        return SharedCycle(cycle, int(answer["leader"]), str(answer["result"]), str(answer["message"]))

    async def _withdraw(self, conn: psycopg.AsyncConnection[Any], key: str) -> bool:
        """Delete request ``key`` unless a leader answered it meanwhile; True when it was withdrawn."""
        cur = await conn.execute(
            sql.SQL("DELETE FROM {} WHERE key = %s AND NOT (value ? 'outcome') RETURNING key").format(self._documents),
            (key,),
        )
        return await cur.fetchone() is not None

    async def _apply_latest(self, conn: psycopg.AsyncConnection[Any]) -> None:
        parts = self.parts
        doc = await self._get(conn, "allocation/latest")
        if doc is None or int(doc["cycle_id"]) <= self.applied_cycle:
            return
        parts.allocator.restore(doc["allocator"])
        self.periodic.update_allocation_metrics()
        parts.state.save()
        self.applied_cycle = int(doc["cycle_id"])
        # The applied cycle is this worker's last one too: GetAllocations' last_reason, the allocator health check.
        self.periodic.last_allocation = AllocationDecision(
            reason=AllocationReason(str(doc["reason"])),
            at=float(doc.get("at", parts.clock.time())),
            previous_weights={},
            new_weights=dict(parts.allocator.weights),
            scores={},
            sharpe={},
            observations={},
            turnover=0.0,
            forced=bool(doc.get("forced", False)),
            message=str(doc["message"]),
        )
        parts.events.publish(
            "ALLOCATION",
            f"applied allocation cycle {doc['cycle_id']} of leader worker {doc['leader']}: {doc['message']}",
            reason=str(doc["reason"]),
            cycle_id=self.applied_cycle,
        )
