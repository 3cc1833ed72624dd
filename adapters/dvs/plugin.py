"""The DVS adapter as the hub runs it (entry point ``hub.services``: ``dvs-adapter``)."""

from __future__ import annotations

from adapters.dvs.client import client_from_url
from adapters.dvs.service import service as dvs_service
from hub.plugins import Built, Clock, http_client_options
from hub.settings import Settings


def service(settings: Settings, *, clock: Clock | None = None, api: bool = True) -> Built:
    """The adapter, its client pointed at ``HUB_DVS_URL``."""
    client = client_from_url(settings.dvs_url, **http_client_options(settings))
    return Built(dvs_service(client), where=f"DVS at {settings.dvs_url}")
