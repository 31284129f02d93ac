"""TEMPLATE: a copy-me skeleton for an external venue adapter. Not registered, not a working venue.

Copy ``engine_server/venues/template/`` to ``engine_server/venues/<name>/``, rename the classes and
replace every ``TEMPLATE`` section. See ``docs/adding-a-venue.md`` for the whole procedure.

Anatomy of a real adapter:

- ``config.py``: a frozen pydantic model (``nautilus_mesh.config.StrictModel``), one docstring per field, with
  an ``adapter`` literal that selects it in the engine's ``venues`` list.
- I/O runs on its own asyncio task (REST/WebSocket client); it turns the venue's acks, fills and
  cancels into :class:`VenueEvent` values and buffers them. The synchronous calls below send the
  request, and ``advance`` drains the buffer, so the engine sees the same shape as with ``sim``.
- Rejections the venue returns become REJECTED events with the venue's reason code; "cannot
  reach the venue at all" raises ``VenueRejectedError`` (the ledger turns it into a REJECTED report).

As shipped, ``submit`` raises ``VenueRejectedError("VENUE_NOT_CONNECTED", ...)`` on every call.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from decimal import Decimal
from typing import Literal

import pydantic

from engine_server.venues.base import (
    Instrument,
    OrderRequest,
    Quote,
    VenueAdapter,
    VenueEvent,
    VenueKind,
    VenueStatus,
)
from nautilus_mesh.config import StrictModel
from nautilus_mesh.errors import VenueRejectedError

log = logging.getLogger(__name__)


class TemplateVenueConfig(StrictModel):
    """TEMPLATE: the settings of your venue (endpoint, credentials file path, instruments...)."""

    adapter: Literal["template"] = "template"
    """Selects this adapter in the engine's ``venues`` list."""
    name: str = pydantic.Field(default="template", min_length=1)
    """Venue name orders address."""
    endpoint: str = ""
    """TEMPLATE: where the venue's API lives. Credentials come from a file or env var, never from here."""
    instruments: tuple[Instrument, ...] = ()
    """Instruments this adapter trades (a real adapter may load them from the venue)."""


class TemplateVenue(VenueAdapter):
    """TEMPLATE: an adapter that is never connected. Every submit raises ``VENUE_NOT_CONNECTED``."""

    kind: VenueKind = "live"

    def __init__(self, config: TemplateVenueConfig) -> None:
        self.name = config.name
        self.config = config
        self._instruments = {i.symbol: i for i in config.instruments}
        # TEMPLATE: create the client here and start its I/O task from the engine's startup hook.
        self._connected = False
        self._pending: list[VenueEvent] = []

    def instruments(self) -> Mapping[str, Instrument]:
        return self._instruments

    def submit(self, req: OrderRequest) -> list[VenueEvent]:
        # TEMPLATE: send the order; return ACCEPTED (or REJECTED) once the venue acknowledges it.
        if not self._connected:
            raise VenueRejectedError(
                "VENUE_NOT_CONNECTED",
                f"venue {self.name} is a template adapter and is not connected to any exchange",
                {"venue": self.name, "client_order_id": req.client_order_id},
                rail="venue",
            )
        raise VenueRejectedError("VENUE_NOT_IMPLEMENTED", f"venue {self.name}: submit is not implemented")

    def cancel(self, client_order_id: str) -> list[VenueEvent]:
        # TEMPLATE: send the cancel; the CANCELED event arrives through advance().
        return []

    def advance(self, now_ns: int) -> list[VenueEvent]:
        # TEMPLATE: hand over the events the I/O task buffered since the last call.
        events, self._pending = self._pending, []
        return events

    def quote(self, symbol: str) -> Quote | None:
        # TEMPLATE: the last top-of-book from the venue's market data stream.
        return None

    def reference_price(self, symbol: str) -> Decimal | None:
        # TEMPLATE: the venue's mark or index price; None makes venue rails reject (no reference).
        return None

    def status(self) -> VenueStatus:
        return VenueStatus(
            name=self.name,
            kind=self.kind,
            connected=self._connected,
            instruments=tuple(self._instruments),
            detail="template adapter: not connected to any exchange",
        )
