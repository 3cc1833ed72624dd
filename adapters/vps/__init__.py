"""VPS adapter: the queue and population register feed in; offers, their deadlines and
admission rounds out to the e-service."""

from adapters.vps.client import FeedReset, OfferNotShownYet, VpsClient, client_from_url
from adapters.vps.service import VpsFeed, message_for, service

__all__ = [
    "FeedReset",
    "OfferNotShownYet",
    "VpsClient",
    "VpsFeed",
    "client_from_url",
    "message_for",
    "service",
]
