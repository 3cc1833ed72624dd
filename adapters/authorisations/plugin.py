"""The authorisations adapter as the hub runs it (entry point ``hub.services``:
``authorisations-adapter``)."""

from __future__ import annotations

from adapters.authorisations.client import client_from_url
from adapters.authorisations.service import service as authorisations_service
from hub.plugins import Built, Clock, http_client_options
from hub.settings import Settings


def service(settings: Settings, *, clock: Clock | None = None, api: bool = True) -> Built:
    """The adapter, its client pointed at ``HUB_AUTHORISATIONS_URL``."""
    client = client_from_url(settings.authorisations_url, **http_client_options(settings))
    where = f"the register of authorisations at {settings.authorisations_url}"
    return Built(authorisations_service(client), where=where)
