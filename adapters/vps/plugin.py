"""The VPS adapter as the hub runs it (entry point ``hub.services``: ``vps-adapter``): it polls
the feed, answers residence checks and shows offers, refusals and rounds in the e-service."""

from __future__ import annotations

from adapters.vps.client import client_from_url
from adapters.vps.service import service as vps_service
from hub.plugins import Built, Clock, http_client_options
from hub.settings import Settings


def service(settings: Settings, *, clock: Clock | None = None, api: bool = True) -> Built:
    """The adapter, its client pointed at ``HUB_VPS_URL``; it polls the feed every
    ``HUB_VPS_POLL_INTERVAL`` seconds when there is nothing new."""
    client = client_from_url(settings.vps_url, **http_client_options(settings))
    spec = vps_service(client, settings.municipality, interval=settings.vps_poll_interval)
    return Built(spec, where=f"VPS at {settings.vps_url}")
