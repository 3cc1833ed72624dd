"""Stand-ins for the VIIS, GIS and DVS adapters that answer every request at once.

They close the allocation service's enrichment and registration loops where the real
adapters (and the systems behind them) are not wanted: the benchmarks and the tests.
VIIS answers that the child attends nowhere yet; GIS places the address on a grid over
Riga derived from its code, so distances differ from address to address but need no
register; the DVS registers every document under a number derived from its key.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

from hub.kafka import ensure_topics
from hub.reliability.consumer import Handler, Unit
from hub.reliability.service import ServiceRunner, ServiceSpec
from hub.settings import Settings
from schemas.addresses import AddressResolved, ResolveAddress
from schemas.base import Message
from schemas.documents import DocumentRegistered, RegisterDocument
from schemas.enrollment import CheckEnrollment, EnrollmentChecked
from schemas.residence import CheckResidence, Residence, ResidenceChecked, ResidenceDeclared
from schemas.topics import DVS, GIS, VIIS, VPS

# LKS-92 (EPSG:3059) near the centre of Riga, and a 10 km square around it.
_NORTHING, _EASTING, _SPAN = 308_000, 506_000, 10_000


class Population:
    """A stand-in for the population register: it answers a residence check with the
    residences it was told of (:meth:`learn`), as the register reported them."""

    def __init__(self) -> None:
        self.known: dict[str, dict[str, Residence]] = {}

    def learn(self, message: Message) -> None:
        if isinstance(message, ResidenceDeclared):
            residence = Residence.model_validate(
                message.model_dump(include=set(Residence.model_fields))
            )
            slot = f"{message.subject}:{message.guardian_index or 0}"
            self.known.setdefault(message.child_ref, {})[slot] = residence

    def check(self, message: CheckResidence, at: datetime | None = None) -> ResidenceChecked:
        """The answer, with an id derived from the request's flow, child and date and the
        request's time: the same request answered again (a replay, a test run twice) gives
        the same answer."""
        answer = ResidenceChecked.new(
            producer=VPS,
            caused_by=message,
            child_ref=message.child_ref,
            as_of=message.as_of,
            residences=tuple(
                r
                for _, r in sorted(self.known.get(message.child_ref, {}).items())
                if r.declared_from <= message.as_of
            ),
        )
        name = f"pers:{message.correlation_id}:{message.child_ref}:{message.as_of}"
        return answer.model_copy(
            update={
                "event_id": uuid.uuid5(uuid.NAMESPACE_URL, name),
                "occurred_at": at or message.occurred_at,
            }
        )


def answer(message: Message) -> Message | None:
    """The stand-ins' answer to a request (None for anything else); a residence check is
    answered as a register that knows of no declared residence does."""
    if isinstance(message, CheckResidence):
        return Population().check(message)
    if isinstance(message, CheckEnrollment):
        return EnrollmentChecked.new(
            producer=VIIS,
            caused_by=message,
            child_ref=message.child_ref,
            as_of=message.as_of,
            attending_institution_id=None,
        )
    if isinstance(message, ResolveAddress):
        n = int(message.address_code)
        northing = _NORTHING - _SPAN // 2 + n * 7_919 % _SPAN
        easting = _EASTING - _SPAN // 2 + n * 104_729 % _SPAN
        return AddressResolved.new(
            producer=GIS,
            caused_by=message,
            subject_ref=message.subject_ref,
            address_code=message.address_code,
            full_address=f"Address {message.address_code}, Rīga",
            postcode="LV-1050",
            territory_code="0010000",
            lks92={"northing": northing, "easting": easting},
            wgs84={"latitude": 56.95, "longitude": 24.1},
        )
    if isinstance(message, RegisterDocument):
        digest = hashlib.sha256(message.document_key.encode()).hexdigest()[:10].upper()
        return DocumentRegistered.new(
            producer=DVS,
            caused_by=message,
            document_key=message.document_key,
            registration_number=f"INST/{message.occurred_at.year}/{digest}",
            registered_at=message.occurred_at,
        )
    return None


class Answering(Handler[Any]):
    """Answers the requests of one municipality on ``topic``."""

    def __init__(self, topic: str, municipality: str) -> None:
        super().__init__(topic)
        self.municipality = municipality

    def apply(self, unit: Unit, message: Any, fetched: Any) -> None:
        if message.municipality == self.municipality and (reply := answer(message)) is not None:
            unit.emit(reply)


def stand_ins(municipality: str, prefix: str = "instant") -> list[ServiceSpec]:
    """The VIIS, GIS, DVS and population register stand-ins as services named
    ``<prefix>-viis``, ``<prefix>-gis``, ``<prefix>-dvs`` and ``<prefix>-pers``.

    Their retry topics (``retry_topic(name)``) must exist before they start.
    """
    return [
        ServiceSpec(f"{prefix}-viis", (Answering("viis.enrollment.checks.v1", municipality),)),
        ServiceSpec(f"{prefix}-gis", (Answering("gis.address.requests.v1", municipality),)),
        ServiceSpec(f"{prefix}-dvs", (Answering("dvs.documents.requests.v1", municipality),)),
        ServiceSpec(f"{prefix}-pers", (Answering("vps.population.checks.v1", municipality),)),
    ]


@contextlib.asynccontextmanager
async def running(
    settings: Settings, bootstrap: str, municipality: str, prefix: str = "instant"
) -> AsyncIterator[list[ServiceSpec]]:
    """Run the stand-ins (their retry topics created first) until the block ends."""
    specs = stand_ins(municipality, prefix)
    await ensure_topics(settings, bootstrap, services=[s.name for s in specs])
    stop = asyncio.Event()
    tasks = [asyncio.create_task(ServiceRunner(s, settings, bootstrap).run(stop)) for s in specs]
    try:
        yield specs
    finally:
        stop.set()
        await asyncio.gather(*tasks)
