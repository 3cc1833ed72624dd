"""Adapter of the DVS (document management system): registers the hub's documents."""

from adapters.dvs.client import (
    DvsClient,
    NewDocument,
    Registration,
    Rejection,
    client_from_url,
)
from adapters.dvs.service import service

__all__ = ["DvsClient", "NewDocument", "Registration", "Rejection", "client_from_url", "service"]
