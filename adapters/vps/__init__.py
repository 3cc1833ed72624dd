"""VPS adapter: the queue and population register feed in, offers out to the e-service."""

from adapters.vps.client import VpsClient, client_from_url
from adapters.vps.service import VpsFeed, message_for, service

__all__ = ["VpsClient", "VpsFeed", "client_from_url", "message_for", "service"]
