"""Adapter of the DVS (document management system): registers the hub's documents and stores
their sealed content."""

from adapters.dvs.client import (
    DvsClient,
    NewDocument,
    Registration,
    Rejection,
    Stored,
    client_from_url,
)
from adapters.dvs.service import service

__all__ = [
    "DvsClient",
    "NewDocument",
    "Registration",
    "Rejection",
    "Stored",
    "client_from_url",
    "service",
]
