"""What a status table shows from ops (models, stats, positions, allocations), read from every ops worker.

A single ops answers for every model. Ops run as several workers (docs/scale-out.md) answers per worker: each holds
the fills, positions and statistics of its own strategies only. :class:`OpsReader` asks the first address for the
shard map (``GetShardMap``), reads every worker it names at once, and takes each model's row from the worker owning
the model's strategy; allocations, decided by the allocator leader and applied by every worker, come from the first.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation

from clients.client_base import AsyncClosing
from clients.sdk import MeshRpcError, OpsClient
from nautilus_mesh.api.ops.v1 import ops_pb2

log = logging.getLogger(__name__)


@dataclass
class OpsView:
    """What the status table shows from ops (empty when ops did not answer).

    Args:
        models: every model, as its owning worker describes it.
        stats: model id -> its statistics (from its owning worker).
        positions: model id -> its non-zero positions as ``INSTRUMENT:QTY`` words.
        allocations: the capital allocation (the same on every worker), None when no worker answered.
        error: why (part of) the view is missing, "" when every worker answered.
        owners: model id -> index of the ops worker owning it (sharded ops only).
        workers: how many ops workers answered for the view's models (1: a single ops).
    """

    models: list[ops_pb2.ModelInfo]
    stats: dict[str, ops_pb2.ModelStats]
    positions: dict[str, str]
    allocations: ops_pb2.GetAllocationsResponse | None
    error: str = ""
    owners: dict[str, int] = field(default_factory=dict)
    workers: int = 1


@dataclass
class _WorkerRead:
    models: list[ops_pb2.ModelInfo]
    stats: ops_pb2.GetModelStatsResponse
    positions: list[ops_pb2.Position]
    allocations: ops_pb2.GetAllocationsResponse


def _is_zero(quantity: str) -> bool:
    try:
        return Decimal(quantity) == 0
    except InvalidOperation:  # not a number: show it as it came
        return False


def positions_by_model(positions: Sequence[ops_pb2.Position]) -> dict[str, str]:
    """Model id -> its non-zero positions as ``INSTRUMENT:QTY`` words."""
    out: dict[str, list[str]] = {}
    for p in positions:
        if _is_zero(p.quantity):
            continue
        out.setdefault(p.model_id, []).append(f"{p.instrument}:{p.quantity}")
    return {m: " ".join(v) for m, v in out.items()}


class OpsReader(AsyncClosing):
    """Reads the status view from the ops at ``address`` and, when it is one of several workers, from every worker.

    Args:
        address: host:port of ops (any worker).
        strategy_token: strategy token of the calls (one strategy's models), if any.
        admin_token: admin token of the calls (every model), if any.
        timeout: seconds per call.
    """

    def __init__(
        self, address: str, *, strategy_token: str | None, admin_token: str | None, timeout: float = 2.0
    ) -> None:
        self._address = address
        self._tokens = {"strategy_token": strategy_token, "admin_token": admin_token}
        self._timeout = timeout
        self._clients: dict[str, OpsClient] = {}

    def _client(self, address: str) -> OpsClient:
        if address not in self._clients:
            self._clients[address] = OpsClient(address, timeout=self._timeout, **self._tokens)
        return self._clients[address]

    async def close(self) -> None:
        for client in self._clients.values():
            await client.close()
        self._clients.clear()

    async def _workers(self) -> tuple[dict[int, str], dict[str, int]]:
        """Worker index -> address, and strategy -> owning worker ({} for a single ops)."""
        try:
            shard_map = await self._client(self._address).get_shard_map()
        except MeshRpcError as exc:
            if exc.unreachable:
                raise
            return {0: self._address}, {}  # an ops that predates GetShardMap: a single ops
        if shard_map.workers <= 1:
            return {0: self._address}, {}
        addresses = {w.index: w.address for w in shard_map.worker_list}
        addresses[shard_map.worker_index] = self._address  # the address asked reaches that worker from here
        return addresses, {a.strategy_id: a.worker_index for a in shard_map.assignments}

    async def _read(self, address: str) -> _WorkerRead:
        ops = self._client(address)
        models, stats, positions, allocations = await asyncio.gather(
            ops.list_models(), ops.get_model_stats(), ops.get_positions(), ops.get_allocations()
        )
        return _WorkerRead(models, stats, positions, allocations)

    async def read(self) -> OpsView:
        """The view from every worker.

        Raises:
            MeshRpcError: the first failed call (of any worker).
        """
        view, failure = await self._collect()
        if failure is not None:
            raise failure
        return view

    async def view(self) -> OpsView:
        """The view from every worker that answered; the others' failures in :attr:`OpsView.error`."""
        return (await self._collect())[0]

    async def collect(self) -> tuple[OpsView, MeshRpcError | None]:
        """:meth:`view`, and the first failed call (None when every worker answered)."""
        return await self._collect()

    async def _collect(self) -> tuple[OpsView, MeshRpcError | None]:
        try:
            addresses, owner_of = await self._workers()
        except MeshRpcError as exc:
            return OpsView([], {}, {}, None, error=str(exc)), exc
        failure: MeshRpcError | None = None
        indexes = sorted(addresses)
        results = await asyncio.gather(*(self._read(addresses[i]) for i in indexes), return_exceptions=True)
        reads: dict[int, _WorkerRead] = {}
        errors: list[str] = []
        for index, result in zip(indexes, results, strict=True):
            if isinstance(result, MeshRpcError):
                failure = failure or result
                errors.append(
                    str(result) if len(indexes) == 1 else f"ops worker {index} ({addresses[index]}): {result}"
                )
            elif isinstance(result, BaseException):
                raise result
            else:
                reads[index] = result
        if not reads:
            return OpsView([], {}, {}, None, error="; ".join(errors)), failure
        first = reads[min(reads)]
        models: list[ops_pb2.ModelInfo] = []
        stats: dict[str, ops_pb2.ModelStats] = {}
        positions: dict[str, str] = {}
        owners: dict[str, int] = {}
        for listed in first.models:
            owner = owner_of.get(listed.strategy_id, min(reads)) if owner_of else min(reads)
            source = reads.get(owner)
            owners[listed.model_id] = owner
            if source is None:  # its worker did not answer: the model is listed, its figures are not
                models.append(listed)
                continue
            models.extend(m for m in source.models if m.model_id == listed.model_id)
            stats.update((s.model_id, s) for s in source.stats.models if s.model_id == listed.model_id)
            held = positions_by_model([p for p in source.positions if p.model_id == listed.model_id])
            positions.update(held)
        view = OpsView(
            models,
            stats,
            positions,
            first.allocations,
            error="; ".join(errors),
            owners=owners if owner_of else {},
            workers=len(indexes),
        )
        return view, failure
