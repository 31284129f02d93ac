"""The engine service's configuration (one JSON file, validated; secrets never logged)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import pydantic

from engine_server.venue_rails import VenueRailsConfig
from engine_server.venues import VenueConfig
from engine_server.venues.paper import PaperVenueConfig
from engine_server.venues.sim import SimVenueConfig
from nautilus_mesh.config import Secret, StrictModel, load_config
from nautilus_mesh.tls import ServerTls


def default_venues() -> list[VenueConfig]:
    """The ``sim`` venue (seed 7) and a ``paper`` venue following it."""
    return [SimVenueConfig(name="sim", seed=7), PaperVenueConfig(name="paper", follows="sim")]


class EngineConfig(StrictModel):
    host: str = "127.0.0.1"
    """Address the gRPC server binds (EngineService, MarketDataService, health, reflection)."""
    port: int = pydantic.Field(50052, ge=0, le=65535)
    """gRPC port; 0 picks a free one (tests)."""
    metrics_host: str = "127.0.0.1"
    """Address the Prometheus /metrics server binds."""
    metrics_port: int | None = pydantic.Field(8003, ge=0, le=65535)
    """Port of /metrics; None disables it."""
    ops_token: Secret = pydantic.Field("", repr=False)
    """The token ops must present as ``x-engine-token``: plain, ``sha256:<hex>``, ``env:NAME`` or ``file:PATH``;
    empty closes order entry entirely."""
    journal_path: Path | None = Path("var/engine/journal.bin")
    """Binary execution journal (replayed on start); None keeps the ledger in memory only. A JSONL journal
    from an earlier version at this path is migrated once (the original is kept as ``<name>.migrated``)."""
    journal_fsync: Literal["never", "batch", "always"] | bool = "batch"
    """``never``: one write per commands frame (survives a process crash, not power loss); ``batch``: plus
    one fsync per frame (survives power loss); ``always``: an fsync per record. true/false mean batch/never."""
    order_retention: int = pydantic.Field(20_000, ge=0)
    """Finished orders kept in memory (count); an older one is answered from the snapshot and the journal while its id
    is in ``dedupe_window`` (``ORDER_NOT_FOUND`` past both windows, or without a journal)."""
    dedupe_window: int = pydantic.Field(200_000, ge=0)
    """Orders (count) whose client_order_id stays recognised as a duplicate after leaving memory (a 64-bit fingerprint
    each, about 34 bytes of memory with its index: 7 MB at the default). It needs the journal: without one
    (``journal_path`` None) only the orders still in memory (``order_retention``) are recognised."""
    report_history: int = pydantic.Field(50_000, gt=0)
    """Execution reports kept in memory for ``ListExecutions`` (count); older ranges are read from the journal."""
    journal_segment_bytes: int | None = pydantic.Field(64 * 1024 * 1024, ge=4096)
    """Size at which the engine starts a new journal segment (``journal.000001.bin``, ...), bytes; None starts one
    only at a snapshot. Segments are read in order as one journal."""
    snapshot_every_bytes: int | None = pydantic.Field(64 * 1024 * 1024, ge=1024)
    """Journal bytes written since the last snapshot that trigger the next compaction (bytes): the ledger is saved
    to ``journal.snapshot.json`` beside the journal and the segments it covers are deleted, so a restart replays only
    what follows. None never compacts (every segment is kept and replayed)."""
    execution_retention: int = pydantic.Field(50_000, gt=0)
    """Execution reports (count) each snapshot keeps for ``ListExecutions`` once the segments holding them are
    deleted; a ``since_seq`` older than what is kept is answered ``OUT_OF_RANGE`` (``EXECUTIONS_PAST_RETENTION``)
    with the oldest available seq."""
    tick_interval_ms: float = pydantic.Field(100.0, gt=0)
    """How often the venues' markets advance (market maker requotes, resting orders may fill)."""
    venues: list[VenueConfig] = pydantic.Field(default_factory=default_venues)
    """Venue configs in order, each picked by its ``adapter``; see docs/adding-a-venue.md."""
    rails: dict[str, VenueRailsConfig] = {}
    """Venue rails per venue name."""
    max_commands_per_frame: int = pydantic.Field(1000, gt=0)
    """Most order commands one StreamOrders frame may carry (count)."""
    session_queue_size: int = pydantic.Field(10_000, gt=0)
    """Report frames queued per order session before the writer applies backpressure (count)."""
    tracing: bool = True
    """Record spans; False makes every span a no-op."""
    span_file: Path | None = None
    """JSONL span file when no OTLP endpoint is set; None is ``var/traces/engine.jsonl``."""
    tls: ServerTls | None = None
    """Server certificate paths; with ``client_ca_file`` only clients with a certificate from that CA (ops) may
    connect (mutual TLS). None serves plaintext, the loopback default."""

    @pydantic.model_validator(mode="after")
    def _venue_names_resolve(self) -> EngineConfig:
        """Each ``rails`` entry names a venue, and a paper venue follows a venue configured before it."""
        names: list[str] = []
        for venue in self.venues:
            if isinstance(venue, PaperVenueConfig) and venue.follows not in names:
                raise ValueError(f"paper venue {venue.name!r} follows {venue.follows!r}, not a venue before it")
            names.append(venue.name)
        unknown = sorted(set(self.rails) - set(names))
        if unknown:
            raise ValueError(f"rails for unknown venue(s): {', '.join(unknown)}")
        return self


def load_engine_config(path: str | os.PathLike[str]) -> EngineConfig:
    """Load and validate the engine config, venues and rails included.

    Raises:
        ConfigError: naming the file and the path of each bad field.
    """
    return load_config(EngineConfig, path)
