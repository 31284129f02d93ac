"""Venue adapters and the registry the engine builds them from.

The engine's config lists venues in order, each an object whose ``adapter`` key picks its config model
(:data:`VenueConfig`) and its factory in :data:`VENUE_FACTORIES`::

    [{"name": "sim", "adapter": "sim", "seed": 7},
     {"name": "paper", "adapter": "paper", "follows": "sim"}]

A factory gets its validated config and a :class:`VenueBuildContext` describing the venues built before it:
their read-only quote feeds, instruments and configs (never the adapters themselves, so a
factory cannot wire a shadow venue to a live one). See ``docs/adding-a-venue.md``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any

import pydantic

from engine_server.venues.base import Instrument, QuoteFeed, VenueAdapter
from engine_server.venues.paper import PaperVenue, PaperVenueConfig
from engine_server.venues.sim import SimVenue, SimVenueConfig
from nautilus_mesh.errors import ConfigError

VenueConfig = Annotated[SimVenueConfig | PaperVenueConfig, pydantic.Field(discriminator="adapter")]
"""One entry of the engine's ``venues`` list; its ``adapter`` picks the model (and the factory)."""


@dataclass(frozen=True, slots=True)
class VenueBuildContext:
    """What a venue factory may know about the venues configured before it."""

    quote_feeds: Mapping[str, QuoteFeed] = field(default_factory=dict)
    """Read-only reference quote feeds by venue name."""
    instruments: Mapping[str, Mapping[str, Instrument]] = field(default_factory=dict)
    """Instruments by venue name, then symbol."""
    configs: Mapping[str, VenueConfig] = field(default_factory=dict)
    """The venue configs by venue name."""
    clock: Callable[[], int] | None = None
    """Wall clock in ns for event timestamps (None: venue time from ``advance``)."""


VenueFactory = Callable[[Any, VenueBuildContext], VenueAdapter]
"""Builds a venue from its validated config model."""


def build_sim_venue(config: SimVenueConfig, ctx: VenueBuildContext) -> SimVenue:
    """Factory of the embedded matching engine (``"adapter": "sim"``)."""
    return SimVenue(config, clock=ctx.clock)


def build_paper_venue(config: PaperVenueConfig, ctx: VenueBuildContext) -> PaperVenue:
    """Factory of a shadow venue (``"adapter": "paper"``, ``"follows": <live venue name>``).

    Instruments and market maker settings the config leaves out are the followed venue's, so the paper book
    mirrors it: a ``market_maker`` block that sets some fields takes the others from the followed venue's block.
    """
    feed = ctx.quote_feeds.get(config.follows)
    if feed is None:
        raise ConfigError(
            f"paper venue {config.name} follows {config.follows!r}, which is not configured before it or has no feed"
        )
    inherited: dict[str, object] = {}
    if not config.instruments:
        inherited["instruments"] = tuple(ctx.instruments.get(config.follows, {}).values())
    followed = ctx.configs.get(config.follows)
    if followed is not None:
        own = config.market_maker
        inherited["market_maker"] = followed.market_maker.model_copy(
            update={name: getattr(own, name) for name in own.model_fields_set}
        )
    return PaperVenue(config.model_copy(update=inherited), feed.get, clock=ctx.clock)


VENUE_FACTORIES: dict[str, VenueFactory] = {
    "sim": build_sim_venue,
    "paper": build_paper_venue,
}
"""Adapter name -> factory. The template adapter is deliberately not registered."""


def build_venues(
    configs: Sequence[VenueConfig],
    *,
    clock: Callable[[], int] | None = None,
    factories: Mapping[str, VenueFactory] | None = None,
) -> dict[str, VenueAdapter]:
    """Build venues in config order (a paper venue must come after the venue it follows).

    Raises:
        ConfigError: unknown adapter, duplicate name, or a paper venue following no venue before it.
    """
    registry = VENUE_FACTORIES if factories is None else factories
    venues: dict[str, VenueAdapter] = {}
    feeds: dict[str, QuoteFeed] = {}
    instruments: dict[str, Mapping[str, Instrument]] = {}
    built: dict[str, VenueConfig] = {}
    for config in configs:
        name = config.name
        if name in venues:
            raise ConfigError(f"venue {name} is configured twice")
        factory = registry.get(config.adapter)
        if factory is None:
            raise ConfigError(
                f"venue {name}: unknown adapter {config.adapter!r}", {"known": ",".join(sorted(registry))}
            )
        ctx = VenueBuildContext(
            quote_feeds=dict(feeds), instruments=dict(instruments), configs=dict(built), clock=clock
        )
        venue = factory(config, ctx)
        venues[name] = venue
        instruments[name] = venue.instruments()
        built[name] = config
        feed = venue.quote_feed()
        if feed is not None:
            feeds[name] = feed
    return venues


__all__ = [
    "VENUE_FACTORIES",
    "VenueBuildContext",
    "VenueConfig",
    "VenueFactory",
    "build_paper_venue",
    "build_sim_venue",
    "build_venues",
]
