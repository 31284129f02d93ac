"""TEMPLATE venue adapter: copy this folder to start a new adapter. Not registered by default."""

from engine_server.venues.template.adapter import TemplateVenue, TemplateVenueConfig

__all__ = ["TemplateVenue", "TemplateVenueConfig"]
