"""The VIIS adapter: enrolment checks and registrations, from the bus to VIIS and back.

Two handlers, both thin: ``fetch`` asks VIIS (with the client's retries) and
``apply`` turns the answer into the fact published on ``viis.enrollment.facts.v1``.
Errors are not caught here: transient ones park the message for a later retry,
permanent ones dead-letter it. An enrolment request carries its offer's id as
VIIS's ``request_id``, so a redelivered, retried or re-issued request for one
offer gets the same enrolment rather than a false ``already_enrolled``.

A check that is dead-lettered (retries exhausted, refused, a wrong answer) is
answered with ``EnrollmentCheckFailed``, so the allocation service is not left
waiting for it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TypeVar

from adapters.viis.client import (
    Attendance,
    Enrolled,
    EnrolmentOutcome,
    EnrolmentRefusal,
    ViisClient,
)
from hub.reliability.consumer import Handler, Unit
from hub.reliability.retry import CallFailure
from hub.reliability.service import ServiceSpec
from schemas.base import Message
from schemas.enrollment import (
    CheckEnrollment,
    EnrollmentChecked,
    EnrollmentCheckFailed,
    EnrollmentRefused,
    EnrollmentRegistered,
    RegisterEnrollment,
)
from schemas.topics import VIIS
from schemas.values import PersonalCode

log = logging.getLogger(__name__)
CHECKS = "viis.enrollment.checks.v1"
REGISTRATIONS = "viis.enrollment.registrations.v1"
_M = TypeVar("_M", bound=Message)


class _ViisHandler(Handler[_M]):
    """A handler that calls VIIS for the messages of one municipality (or of all)."""

    def __init__(self, topic: str, client: ViisClient, municipality: str | None) -> None:
        super().__init__(topic)
        self.client = client
        self.municipality = municipality

    def ours(self, message: Message) -> bool:
        if self.municipality is None or message.municipality == self.municipality:
            return True
        log.debug(
            "message of another municipality skipped",
            extra={"event_id": str(message.event_id), "municipality": message.municipality},
        )
        return False

    async def close(self) -> None:
        await self.client.close()  # shared by both handlers; closing twice is harmless


class EnrollmentChecks(_ViisHandler[CheckEnrollment]):
    """``CheckEnrollment`` → ``EnrollmentChecked``: where the child and siblings attend."""

    async def fetch(self, message: CheckEnrollment) -> dict[PersonalCode, Attendance | None]:
        if not self.ours(message):
            return {}
        codes = (message.child_personal_code, *message.sibling_personal_codes)
        return await self.client.attendance(codes, message.as_of)

    def apply(
        self,
        unit: Unit,
        message: CheckEnrollment,
        fetched: dict[PersonalCode, Attendance | None],
    ) -> None:
        if self.municipality is not None and message.municipality != self.municipality:
            return
        child = fetched[message.child_personal_code]
        siblings = (fetched[code] for code in message.sibling_personal_codes)
        unit.emit(
            EnrollmentChecked.new(
                producer=VIIS,
                caused_by=message,
                child_ref=message.child_ref,
                as_of=message.as_of,
                attending_institution_id=child.institution_id if child else None,
                attending_group_code=child.group_code if child else None,
                sibling_institution_ids=tuple(
                    dict.fromkeys(s.institution_id for s in siblings if s is not None)
                ),
            )
        )

    def given_up(self, message: CheckEnrollment, error: BaseException) -> Sequence[Message]:
        """``EnrollmentCheckFailed`` for a check that was dead-lettered."""
        if not self.ours(message):
            return ()
        failure = CallFailure.of(error)
        return (
            EnrollmentCheckFailed.new(
                producer=VIIS,
                caused_by=message,
                child_ref=message.child_ref,
                reason=failure.kind,
                detail=failure.detail,
                permanent=failure.permanent,
            ),
        )


class EnrollmentRegistrations(_ViisHandler[RegisterEnrollment]):
    """``RegisterEnrollment`` → ``EnrollmentRegistered`` or ``EnrollmentRefused``."""

    async def fetch(self, message: RegisterEnrollment) -> EnrolmentOutcome | None:
        if not self.ours(message):
            return None
        return await self.client.enrol(
            message.child_personal_code,
            message.institution_id,
            message.group_code,
            message.start_date,
            request_id=message.offer_id,
            transfer_from=message.transfer_from,
        )

    def apply(
        self, unit: Unit, message: RegisterEnrollment, fetched: EnrolmentOutcome | None
    ) -> None:
        if isinstance(fetched, Enrolled):
            unit.emit(
                EnrollmentRegistered.new(
                    producer=VIIS,
                    caused_by=message,
                    child_ref=message.child_ref,
                    offer_id=message.offer_id,
                    institution_id=message.institution_id,
                    viis_enrollment_id=fetched.enrolment_id,
                    registered_at=fetched.registered_at,
                )
            )
        elif isinstance(fetched, EnrolmentRefusal):
            unit.emit(
                EnrollmentRefused.new(
                    producer=VIIS,
                    caused_by=message,
                    child_ref=message.child_ref,
                    offer_id=message.offer_id,
                    reason=fetched.reason,
                    detail=fetched.detail,
                )
            )


def service(
    client: ViisClient, municipality: str | None = None, name: str = "viis-adapter"
) -> ServiceSpec:
    """The VIIS adapter's spec; with ``municipality``, other municipalities' messages are
    skipped. The service closes ``client`` when it stops."""
    checks = EnrollmentChecks(CHECKS, client, municipality)
    registrations = EnrollmentRegistrations(REGISTRATIONS, client, municipality)
    return ServiceSpec(name, (checks, registrations), clients=(client,))


__all__ = ["CHECKS", "REGISTRATIONS", "EnrollmentChecks", "EnrollmentRegistrations", "service"]
