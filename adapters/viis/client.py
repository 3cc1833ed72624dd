"""The VIIS client: attendance searches and enrolments over the register's JSON API (v1).

Personal codes travel only in request bodies, never in paths, and no error text
built here carries one. Every answer is checked against the protocol with the
models below: a body that is not JSON is retried (:class:`InvalidResponse`), JSON of
the wrong shape is not (:class:`UnexpectedAnswer`). VIIS refusing an enrolment
(404 ``unknown_institution``, 409 ``already_enrolled``) is an answer, not an error:
:meth:`ViisClient.enrol` returns an :class:`EnrolmentRefusal` for it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime
from typing import Literal
from uuid import UUID

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from hub.reliability.retry import HttpPort, Refused, UnexpectedAnswer
from schemas.values import GroupCode, InstitutionId, PersonalCode, mask_personal_codes

SEARCH = "/v1/attendance/search"
ENROLMENTS = "/v1/enrolments"
RefusalReason = Literal["already_enrolled", "unknown_institution"]
_REFUSALS: dict[int, RefusalReason] = {404: "unknown_institution", 409: "already_enrolled"}


@dataclass(frozen=True, slots=True)
class Attendance:
    """Where a child attends."""

    institution_id: str
    group_code: str | None


@dataclass(frozen=True, slots=True)
class Enrolled:
    """VIIS recorded the enrolment (or had recorded it for the same request before)."""

    enrolment_id: str
    registered_at: datetime


@dataclass(frozen=True, slots=True)
class EnrolmentRefusal:
    """VIIS would not record the enrolment; ``detail`` holds no personal data."""

    reason: RefusalReason
    detail: str


EnrolmentOutcome = Enrolled | EnrolmentRefusal


class _Answer(BaseModel):
    # Tolerant of fields added later; never echoes the input in validation errors.
    model_config = ConfigDict(extra="ignore", hide_input_in_errors=True)


class _AttendanceResult(_Answer):
    personal_code: PersonalCode
    institution_id: InstitutionId | None
    group_code: GroupCode | None


class _AttendanceAnswer(_Answer):
    results: list[_AttendanceResult]


class _EnrolmentAnswer(_Answer):
    enrolment_id: str = Field(min_length=1, max_length=64)
    registered_at: AwareDatetime


def _code(value: PersonalCode | str) -> PersonalCode:
    return value if isinstance(value, PersonalCode) else PersonalCode(value)


class ViisClient(HttpPort):
    """VIIS over HTTP, with the timeouts and retries of :class:`HttpPort`."""

    system = "VIIS"

    async def attendance(
        self, personal_codes: Iterable[PersonalCode | str], as_of: date
    ) -> dict[PersonalCode, Attendance | None]:
        """Where each child attends on ``as_of`` (None: nowhere), keyed by the codes asked."""
        codes = list(dict.fromkeys(_code(c) for c in personal_codes))
        if not codes:
            return {}
        body = await self.json(
            "POST",
            SEARCH,
            json={"personal_codes": [c.reveal() for c in codes], "as_of": as_of.isoformat()},
        )
        answer = self.parse(_AttendanceAnswer, body, f"POST {SEARCH}")
        found = {
            r.personal_code: Attendance(r.institution_id, r.group_code)
            if r.institution_id
            else None
            for r in answer.results
        }
        missing = sum(1 for c in codes if c not in found)
        if missing:
            raise UnexpectedAnswer(
                f"VIIS answered POST {SEARCH} without {missing} of the {len(codes)} codes asked"
            )
        return {c: found[c] for c in codes}

    async def enrol(
        self,
        personal_code: PersonalCode | str,
        institution_id: str,
        group_code: str,
        start_date: date,
        request_id: UUID | str,
        *,
        transfer_from: str | None = None,
    ) -> EnrolmentOutcome:
        """Record an enrolment; retrying with the same ``request_id`` cannot enrol twice.

        VIIS answers 201 for a new enrolment and 200 for a ``request_id`` it has seen;
        another 2xx is a broken answer (:class:`InvalidResponse`, retried).
        """
        body = {
            "personal_code": _code(personal_code).reveal(),
            "institution_id": institution_id,
            "group_code": group_code,
            "start_date": start_date.isoformat(),
            "request_id": str(request_id),
        }
        if transfer_from is not None:
            body["transfer_from"] = transfer_from
        try:
            answer = await self.json("POST", ENROLMENTS, json=body, expect=(201, 200))
        except Refused as refused:
            reason = _REFUSALS.get(refused.status)
            if reason is None or refused.error != reason:
                raise  # another 4xx (a wrong URL, say): not a refusal VIIS promises
            if reason == "unknown_institution":
                detail = f"VIIS does not know institution {institution_id}"
            else:
                detail = "VIIS: the child is already enrolled"
            return EnrolmentRefusal(reason, mask_personal_codes(detail))
        enrolled = self.parse(_EnrolmentAnswer, answer, f"POST {ENROLMENTS}")
        return Enrolled(enrolled.enrolment_id, enrolled.registered_at)


client_from_url = ViisClient.at


__all__ = [
    "Attendance",
    "Enrolled",
    "EnrolmentOutcome",
    "EnrolmentRefusal",
    "RefusalReason",
    "ViisClient",
    "client_from_url",
]
