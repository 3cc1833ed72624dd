"""The GIS adapter service: resolves address codes through the address register.

It consumes ``ResolveAddress`` from ``gis.address.requests.v1`` and answers on
``gis.address.resolved.v1`` with ``AddressResolved`` (a current address with
its territory and coordinates) or ``AddressResolutionFailed`` (unknown or not
current). Transient failures of the register propagate, so the runtime parks
and retries the request; permanent ones are dead-lettered.
"""

from __future__ import annotations

from typing import Literal

from adapters.gis.client import AddressRecord, GisClient
from hub.reliability.consumer import Handler, Unit
from hub.reliability.service import ServiceSpec
from schemas.addresses import AddressResolutionFailed, AddressResolved, ResolveAddress
from schemas.topics import GIS

REQUESTS = "gis.address.requests.v1"


class ResolveAddresses(Handler[ResolveAddress]):
    """Looks each address code up in the register and publishes what it found."""

    def __init__(self, client: GisClient) -> None:
        super().__init__(REQUESTS)
        self.client = client

    async def fetch(self, message: ResolveAddress) -> AddressRecord | None:
        return await self.client.address(message.address_code)

    def apply(self, unit: Unit, message: ResolveAddress, fetched: AddressRecord | None) -> None:
        if fetched is None:
            unit.emit(
                self._failed(message, "unknown_address", "the address register has no such code")
            )
        elif not fetched.current:
            unit.emit(
                self._failed(message, "not_current", f"address status is {fetched.status}, not EKS")
            )
        else:
            unit.emit(
                AddressResolved.new(
                    producer=GIS,
                    caused_by=message,
                    subject_ref=message.subject_ref,
                    address_code=message.address_code,
                    full_address=fetched.full_address,
                    postcode=fetched.postcode,
                    territory_code=fetched.territory_code,
                    lks92=fetched.lks92,
                    wgs84=fetched.wgs84,
                )
            )

    @staticmethod
    def _failed(
        message: ResolveAddress, reason: Literal["unknown_address", "not_current"], detail: str
    ) -> AddressResolutionFailed:
        return AddressResolutionFailed.new(
            producer=GIS,
            caused_by=message,
            subject_ref=message.subject_ref,
            address_code=message.address_code,
            reason=reason,
            detail=detail,
            permanent=True,
        )

    async def close(self) -> None:
        await self.client.close()


def service(client: GisClient, name: str = GIS) -> ServiceSpec:
    """The GIS adapter as a service; it owns ``client`` and closes it when it stops."""
    handler = ResolveAddresses(client)
    # Late-bound: the runner sets the handler's retry counter after this.
    client.also_on_retry(lambda error: handler.count_retry(error))  # noqa: PLW0108
    return ServiceSpec(name, (handler,))


__all__ = ["REQUESTS", "ResolveAddresses", "service"]
