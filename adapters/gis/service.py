"""The GIS adapter service: resolves address codes through the address register.

It consumes ``ResolveAddress`` from ``gis.address.requests.v1`` and answers on
``gis.address.resolved.v1`` with ``AddressResolved`` (a current address with
its territory and coordinates) or ``AddressResolutionFailed`` (unknown or not
current). Transient failures of the register propagate, so the runtime parks
and retries the request; permanent ones are dead-lettered. A request that is
dead-lettered is answered ``AddressResolutionFailed`` too (``unavailable`` or
``invalid_response``), so whoever asked is not left waiting.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from adapters.gis.client import AddressRecord, GisClient
from hub.reliability.consumer import Handler, Unit
from hub.reliability.retry import CallFailure
from hub.reliability.service import ServiceSpec
from schemas.addresses import AddressResolutionFailed, AddressResolved, ResolveAddress
from schemas.base import Message
from schemas.topics import GIS
from schemas.values import failure_detail

Reason = Literal["unknown_address", "not_current", "unavailable", "invalid_response"]

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

    def given_up(self, message: ResolveAddress, error: BaseException) -> Sequence[Message]:
        """``AddressResolutionFailed`` for a request that was dead-lettered."""
        failure = CallFailure.of(error)
        # The answer has no reason "refused": a refusal reads as the register being unusable.
        reason: Reason = "invalid_response" if failure.kind == "invalid_response" else "unavailable"
        return (self._failed(message, reason, failure.detail, permanent=failure.permanent),)

    @staticmethod
    def _failed(
        message: ResolveAddress, reason: Reason, detail: str, *, permanent: bool = True
    ) -> AddressResolutionFailed:
        return AddressResolutionFailed.new(
            producer=GIS,
            caused_by=message,
            subject_ref=message.subject_ref,
            address_code=message.address_code,
            reason=reason,
            detail=failure_detail(detail),
            permanent=permanent,
        )

    async def close(self) -> None:
        await self.client.close()


def service(client: GisClient, name: str = GIS) -> ServiceSpec:
    """The GIS adapter as a service; it owns ``client`` and closes it when it stops."""
    handler = ResolveAddresses(client)
    return ServiceSpec(name, (handler,), clients=(client,))


__all__ = ["REQUESTS", "ResolveAddresses", "service"]
