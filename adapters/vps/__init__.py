"""VPS adapter: the queue and population register feed in, and the population register's
residence checks answered; offers, their deadlines, refusals and admission rounds out to the
e-service."""

from adapters.vps.client import (
    Declared,
    FeedReset,
    OfferNotShownYet,
    UnknownApplication,
    VpsClient,
    client_from_url,
)
from adapters.vps.service import VpsFeed, message_for, service

__all__ = [
    "Declared",
    "FeedReset",
    "OfferNotShownYet",
    "UnknownApplication",
    "VpsClient",
    "VpsFeed",
    "client_from_url",
    "message_for",
    "service",
]
