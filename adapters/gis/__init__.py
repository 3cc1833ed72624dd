"""The GIS adapter: address codes resolved through the address register (VZD VARIS)."""

from adapters.gis.client import AddressRecord, GisClient, client_from_url
from adapters.gis.service import ResolveAddresses, service

__all__ = ["AddressRecord", "GisClient", "ResolveAddresses", "client_from_url", "service"]
