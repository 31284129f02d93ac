"""The strategies' stats file (``var/run/strategies.json``), declared once: the strategy runtime writes it, the
launcher's status table and summary line read it. Latencies are in milliseconds, times in seconds."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pydantic
from typing_extensions import TypedDict

log = logging.getLogger(__name__)


class LatencySummary(TypedDict):
    """Percentiles of a latency sample, milliseconds."""

    count: int
    p50: float
    p99: float


class ModelCounts(TypedDict):
    """One model's counters since the strategy process started."""

    signals: int
    decisions: dict[str, int]
    """Decisions by status name (ACCEPTED, REJECTED, NO_ACTION, DUPLICATE)."""
    accepted: int
    fills: int
    rejected: int


class Totals(TypedDict):
    """Counters, rates and latencies: of one strategy runner, or (``totals``) of every strategy of the process."""

    elapsed_s: float
    signals: int
    signals_per_s: float
    orders: int
    fills: int
    rejected: int
    decision_latency_ms: LatencySummary
    """Signal sent -> decision received."""
    fill_latency_ms: LatencySummary
    """Signal sent -> first fill received."""


class StrategySnapshot(Totals, total=False):
    """One strategy runner's totals, with its rejections, connections and models."""

    rejections_by_code: dict[str, int]
    reconnects: dict[str, int]
    """Reconnects by peer (``ops``, ``engine``)."""
    connected: dict[str, bool]
    """Whether each peer's stream is up."""
    models: dict[str, ModelCounts]
    in_flight: int
    """Signals sent and not yet decided, plus accepted ones whose first fill has not arrived (count)."""


class StatsFile(TypedDict, total=False):
    """The whole file."""

    updated_at_unix: float
    """When it was written, epoch seconds."""
    totals: Totals
    models: dict[str, ModelCounts]
    strategies: dict[str, StrategySnapshot]


_FILE = pydantic.TypeAdapter(StatsFile)


def read_stats_file(path: Path) -> StatsFile:
    """The file's contents, validated against the schema ({} before the first one is written or when it is not one)."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
    try:
        return _FILE.validate_python(raw)
    except pydantic.ValidationError as exc:
        log.warning("[LAUNCHER] %s does not match the stats schema: %s", path, exc.errors()[:1])
        return {}
