"""The VIIS adapter as the hub runs it (entry point ``hub.services``: ``viis-adapter``)."""

from __future__ import annotations

from adapters.viis.client import client_from_url
from adapters.viis.service import service as viis_service
from hub.plugins import Built, Clock, http_client_options
from hub.settings import Settings


def service(settings: Settings, *, clock: Clock | None = None, api: bool = True) -> Built:
    """The adapter of ``HUB_MUNICIPALITY``'s requests, its client pointed at ``HUB_VIIS_URL``
    (another municipality's requests on a shared cluster are its own adapter's)."""
    client = client_from_url(settings.viis_url, **http_client_options(settings))
    return Built(viis_service(client, settings.municipality), where=f"VIIS at {settings.viis_url}")
