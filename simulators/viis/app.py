"""VIIS simulator: a stand-in for the state education register, over a JSON API of our own.

The real VIIS has no public API, so this one defines it. Its register is seeded
from a :class:`~simulators.municipality.SyntheticMunicipality`: the children
who already attend a pre-school (``town.enrolments``) and the institutions
(``town.institutions``). Everything is held in memory for the life of the app.

Endpoints (JSON; the protocol is versioned under ``/v1``):

- ``GET /health`` — ``{"status": "ok", "system": "VIIS"}``; never faulted.
- ``POST /v1/attendance/search`` — body ``{"personal_codes": [...], "as_of": "YYYY-MM-DD"}``;
  answers ``{"results": [{"personal_code", "institution_id", "group_code"}]}``, one result
  per code asked, in the order asked. A code the register does not know attends nowhere
  (both ids ``null``), as does a child whose enrolment starts after ``as_of``.
- ``POST /v1/enrolments`` — body ``{"personal_code", "institution_id", "group_code",
  "start_date", "request_id"}`` and, for a transfer, ``"transfer_from"``; answers 201
  ``{"enrolment_id", "registered_at"}``.
  An institution the register does not know: 404 ``{"error": "unknown_institution"}``.
  A child already enrolled (seeded, or by an earlier call): 409
  ``{"error": "already_enrolled"}`` — except a repeated ``request_id``, which answers 200
  with the enrolment that request created (an idempotent retry), and a transfer from the
  institution the child is enrolled at, which moves the enrolment.

Magic input (deterministic, for tests of the "never answers properly" path):

- institution id ``PII-999`` — ``POST /v1/enrolments`` always answers 500
  ``{"error": "internal_error"}``, as a broken branch of the register would.

Faults: the app is wrapped in :class:`~simulators.faults.FaultInjection`, so every
endpoint but ``/health`` (and the OpenAPI pages) can be made to fail at the configured
rates or per request with the header ``X-Simulate-Fault: error|rate_limit|timeout|
malformed|latency|none``.

Requests that break the protocol get FastAPI's 422. The simulator logs nothing, so no
personal code is ever written anywhere by it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Annotated

from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from simulators.api import NO_FAULTS, ErrorBody, error, simulator
from simulators.faults import FaultInjection, Faults
from simulators.municipality import SyntheticMunicipality

BROKEN_INSTITUTION = "PII-999"
"""Magic institution id: enrolling there always answers 500."""

PersonalCodeText = Annotated[
    str,
    StringConstraints(pattern=r"^\d{6}-?\d{5}$"),
    Field(description="Personal code, DDMMYY-NNNNN (the hyphen is optional)."),
]
Identifier = Annotated[str, StringConstraints(min_length=1, max_length=64)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)


class AttendanceSearch(_Model):
    """Whom to look up, and the date attendance is asked for."""

    personal_codes: list[PersonalCodeText] = Field(min_length=1, max_length=100)
    as_of: date = Field(description="Attendance on this date.")


class AttendanceResult(_Model):
    """Where one child attends on the date asked; both ids null when nowhere."""

    personal_code: str = Field(description="The code as it was asked.")
    institution_id: str | None = Field(description="Institution attended, or null.")
    group_code: str | None = Field(description="Group attended, or null.")


class AttendanceAnswer(_Model):
    results: list[AttendanceResult] = Field(description="One result per code asked, in order.")


class EnrolmentRequest(_Model):
    """An enrolment to record; ``request_id`` makes retries of one request idempotent."""

    personal_code: PersonalCodeText
    institution_id: Identifier
    group_code: Identifier
    start_date: date = Field(description="First day of attendance.")
    request_id: Identifier = Field(description="Caller's id of this request (idempotency key).")
    transfer_from: Identifier | None = Field(
        default=None,
        description="The institution the child leaves: its enrolment there moves to this one"
        " (without it, an enrolled child answers 409 already_enrolled).",
    )


class EnrolmentAnswer(_Model):
    enrolment_id: str = Field(description="The register's id of the enrolment.")
    registered_at: datetime = Field(description="When the register recorded it (UTC).")


@dataclass(frozen=True)
class _Record:
    enrolment_id: str
    institution_id: str
    group_code: str
    start_date: date | None
    """None for the seeded enrolments: they already attend."""
    registered_at: datetime
    request_id: str | None


def _digits(code: str) -> str:
    return code.replace("-", "")


class Register:
    """The in-memory register: who attends where, and which requests created what."""

    def __init__(self, town: SyntheticMunicipality) -> None:
        self.institutions = {i.institution_id for i in town.institutions}
        self.by_child: dict[str, _Record] = {}
        self.by_request: dict[str, _Record] = {}
        seeded_at = datetime(town.admission_year - 1, 9, 1, tzinfo=UTC)
        for enrolment in town.enrolments.values():
            self.by_child[_digits(enrolment.personal_code)] = _Record(
                self._next_id(),
                enrolment.institution_id,
                enrolment.group_code,
                None,
                seeded_at,
                None,
            )

    def _next_id(self) -> str:
        return f"VIIS-E-{len(self.by_child) + 1:07d}"

    def attending(self, code: str, as_of: date) -> _Record | None:
        record = self.by_child.get(_digits(code))
        if record is None or (record.start_date is not None and record.start_date > as_of):
            return None
        return record

    def enrol(self, request: EnrolmentRequest) -> JSONResponse:
        """The answer to ``request``."""
        if request.institution_id == BROKEN_INSTITUTION:
            return error(500, "internal_error")
        earlier = self.by_request.get(request.request_id)
        if earlier is not None:
            return _answer(earlier, 200)
        if request.institution_id not in self.institutions:
            return error(404, "unknown_institution")
        child = _digits(request.personal_code)
        current = self.by_child.get(child)
        if current is not None and current.institution_id != request.transfer_from:
            return error(409, "already_enrolled")
        record = _Record(
            self._next_id(),
            request.institution_id,
            request.group_code,
            request.start_date,
            datetime.now(UTC),
            request.request_id,
        )
        self.by_child[child] = self.by_request[request.request_id] = record
        return _answer(record, 201)


def _answer(record: _Record, status: int) -> JSONResponse:
    answer = EnrolmentAnswer(enrolment_id=record.enrolment_id, registered_at=record.registered_at)
    return JSONResponse(answer.model_dump(mode="json"), status_code=status)


def create_app(town: SyntheticMunicipality, faults: Faults = NO_FAULTS) -> FaultInjection:
    """The VIIS simulator for ``town``, wrapped in fault injection."""
    register = Register(town)
    app = simulator(
        "VIIS simulator",
        "Attendance and enrolments of the state education register (simulated).",
        "VIIS",
    )
    app.state.register = register

    @app.post("/v1/attendance/search", response_model=AttendanceAnswer)
    async def search_attendance(search: AttendanceSearch) -> AttendanceAnswer:
        """Where each child attends on ``as_of``; unknown children attend nowhere."""
        results = []
        for code in search.personal_codes:
            record = register.attending(code, search.as_of)
            results.append(
                AttendanceResult(
                    personal_code=code,
                    institution_id=record.institution_id if record else None,
                    group_code=record.group_code if record else None,
                )
            )
        return AttendanceAnswer(results=results)

    @app.post(
        "/v1/enrolments",
        status_code=201,
        response_model=EnrolmentAnswer,
        responses={
            200: {"model": EnrolmentAnswer, "description": "A repeated request_id: the same."},
            404: {"model": ErrorBody, "description": "unknown_institution"},
            409: {"model": ErrorBody, "description": "already_enrolled"},
            500: {"model": ErrorBody, "description": "internal_error (institution PII-999)"},
        },
    )
    async def enrol(request: EnrolmentRequest) -> JSONResponse:
        """Record that the child starts at an institution."""
        return register.enrol(request)

    return FaultInjection(app, faults)


__all__ = [
    "BROKEN_INSTITUTION",
    "AttendanceAnswer",
    "AttendanceSearch",
    "EnrolmentAnswer",
    "EnrolmentRequest",
    "Register",
    "create_app",
]
