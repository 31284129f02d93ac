"""The ``paper`` venue for shadow trading: live prices, separate book, no path to a live venue."""

from engine_server.venues.paper.venue import PaperVenue, PaperVenueConfig

__all__ = ["PaperVenue", "PaperVenueConfig"]
