"""The GIS adapter as the hub runs it (entry point ``hub.services``: ``gis-adapter``)."""

from __future__ import annotations

from adapters.gis.client import client_from_url
from adapters.gis.service import service as gis_service
from hub.plugins import Built, Clock, http_client_options
from hub.settings import Settings


def service(settings: Settings, *, clock: Clock | None = None, api: bool = True) -> Built:
    """The adapter, its client pointed at ``HUB_GIS_URL``."""
    client = client_from_url(settings.gis_url, **http_client_options(settings))
    return Built(gis_service(client), where=f"GIS at {settings.gis_url}")
