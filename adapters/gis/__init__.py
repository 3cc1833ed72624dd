"""The GIS adapter: address codes resolved through the address register (VZD VARIS)."""

from __future__ import annotations

from adapters.gis.client import AddressRecord, GisClient
from adapters.gis.service import ResolveAddresses, service
from hub.reliability.retry import RetryPolicy


def client_from_url(
    url: str, *, timeout: float = 5.0, policy: RetryPolicy | None = None
) -> GisClient:
    """A register client for the base ``url``, with a per-request ``timeout`` in seconds."""
    return GisClient(url, timeout=timeout, policy=policy)


__all__ = ["AddressRecord", "GisClient", "ResolveAddresses", "client_from_url", "service"]
