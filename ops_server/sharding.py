"""Ops as several workers sharded by strategy: who owns which strategy, and the refusal of the others.

Each strategy belongs to exactly one worker: the one ``shard_map`` names, else ``sha256(name) mod ops_workers``
(stable across processes, restarts and Python versions, unlike ``hash()``). The owner alone takes the strategy's
signal streams and SubmitSignal calls, so it alone sends the strategy's orders (on its own engine order session),
applies their fills and holds their positions. Another worker refuses them with ``FAILED_PRECONDITION``, code
``WRONG_SHARD`` and the owner's address in the details (``owner_address``); the Python SDK follows that once.

Several workers share state (allocations, the kill switch, exposure) through PostgreSQL only
(:mod:`ops_server.coordination`); :func:`check_deployment` refuses more than one worker on SQLite. Each worker keeps
its own documents in its own schema (``<schema>_w<index>``, :func:`worker_database_url`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from nautilus_mesh.api.ops.v1 import ops_pb2
from nautilus_mesh.errors import ConfigError, FailedPreconditionError
from ops_server.config import OpsConfig

WRONG_SHARD = "WRONG_SHARD"
WORKER_HEADER = "x-ops-worker"
"""Response header of an accepted signal stream (this worker's index): the SDK writes only once it arrived."""


def stable_index(strategy: str, workers: int) -> int:
    """The worker a strategy hashes to: sha256 of its UTF-8 name, as a big-endian integer, mod ``workers``."""
    return int.from_bytes(hashlib.sha256(strategy.encode("utf-8")).digest(), "big") % workers


@dataclass(frozen=True)
class ShardMap:
    """Strategy -> owning worker, and every worker's address.

    Args:
        workers: how many workers share the strategies (1: no sharding, everything is local).
        index: this worker's index.
        addresses: host:port of each worker, by index (may be empty for one worker).
        explicit: strategies placed by hand (strategy -> index); the rest are hashed.
        strategies: the registry's strategies, for :meth:`describe`.
    """

    workers: int
    index: int
    addresses: tuple[str, ...]
    explicit: dict[str, int]
    strategies: tuple[str, ...] = ()

    @classmethod
    def from_config(cls, config: OpsConfig, strategies: Iterable[str] = ()) -> ShardMap:
        """The map of ``config`` (after :func:`check_deployment`)."""
        check_deployment(config)
        addresses = tuple(config.worker_addresses) or (f"{config.host}:{config.port}",)
        return cls(config.ops_workers, config.worker_index, addresses, dict(config.shard_map), tuple(strategies))

    @property
    def sharded(self) -> bool:
        return self.workers > 1

    def owner(self, strategy: str) -> int:
        """The index of the worker owning ``strategy``."""
        if self.workers == 1:
            return 0
        if strategy in self.explicit:
            return self.explicit[strategy]
        return stable_index(strategy, self.workers)

    def owns(self, strategy: str) -> bool:
        return self.owner(strategy) == self.index

    def address(self, index: int) -> str:
        return self.addresses[index] if index < len(self.addresses) else ""

    def owned(self, strategies: Iterable[str]) -> list[str]:
        """The strategies of ``strategies`` this worker owns, in their order."""
        return [s for s in strategies if self.owns(s)]

    def check(self, strategy: str) -> None:
        """Refuse a strategy this worker does not own.

        Raises:
            FailedPreconditionError: ``WRONG_SHARD``, with ``owner_index`` and ``owner_address`` in the details.
        """
        owner = self.owner(strategy)
        if owner == self.index:
            return
        address = self.address(owner)
        raise FailedPreconditionError(
            WRONG_SHARD,
            f"strategy {strategy} belongs to ops worker {owner} ({address or 'address unknown'}), "
            f"not to worker {self.index}: reconnect there",
            {"strategy_id": strategy, "owner_index": owner, "owner_address": address, "worker_index": self.index},
        )

    def describe(self) -> ops_pb2.GetShardMapResponse:
        """Every worker and the owner of every strategy (``GetShardMap``)."""
        strategies = self.strategies
        return ops_pb2.GetShardMapResponse(
            workers=self.workers,
            worker_index=self.index,
            worker_list=[ops_pb2.ShardWorker(index=i, address=a) for i, a in enumerate(self.addresses)],
            assignments=[
                ops_pb2.ShardAssignment(strategy_id=s, worker_index=self.owner(s), address=self.address(self.owner(s)))
                for s in sorted(strategies)
            ],
        )


def is_postgres(url: str) -> bool:
    return url.partition(":")[0].lower() in ("postgresql", "postgres")


def check_deployment(config: OpsConfig) -> None:
    """Refuse a sharded deployment that cannot work.

    Raises:
        ConfigError: more than one worker without PostgreSQL, an index or a placement out of range, or a
            ``worker_addresses`` list that does not name every worker.
    """
    n = config.ops_workers
    if n == 1:
        return
    if not is_postgres(config.database_url):
        raise ConfigError(
            f"ops_workers={n} needs a PostgreSQL database_url (postgresql://..., or env OPS_DATABASE_URL): the "
            "workers share allocations, the kill switch and exposure through it; SQLite serves a single worker only "
            "(ops_workers=1)",
            code="SHARDING_NEEDS_POSTGRES",
        )
    if not 0 <= config.worker_index < n:
        raise ConfigError(f"worker_index {config.worker_index} is outside 0..{n - 1} (ops_workers={n})")
    if len(config.worker_addresses) != n:
        raise ConfigError(f"worker_addresses names {len(config.worker_addresses)} worker(s), ops_workers is {n}")
    bad = {s: i for s, i in config.shard_map.items() if not 0 <= i < n}
    if bad:
        raise ConfigError(f"shard_map places strategies outside 0..{n - 1}: {bad}")


def worker_database_url(config: OpsConfig) -> str:
    """The URL of this worker's own documents: the configured one for a single worker; for a worker of several, the
    same database in schema ``<schema>_w<index>`` (the configured schema keeps what the workers share)."""
    if config.ops_workers == 1:
        return config.database_url
    parts = urlsplit(config.database_url)
    params = parse_qsl(parts.query, keep_blank_values=True)
    schema = next((v for k, v in reversed(params) if k == "schema"), "nautilus")
    query = urlencode([*((k, v) for k, v in params if k != "schema"), ("schema", f"{schema}_w{config.worker_index}")])
    return urlunsplit(parts._replace(query=query))
