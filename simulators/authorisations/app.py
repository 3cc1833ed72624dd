"""Register of authorisations simulator: powers of attorney, over a JSON API of our own.

Orphans' courts and notaries record the authorisations they give; no public API lets a
municipality ask about them, so this one defines it. Its register is seeded from a
:class:`~simulators.municipality.SyntheticMunicipality` by
:func:`simulators.authorisations.register.seeded`: valid, revoked, expired and not yet
valid authorisations, for pre-school matters, for every matter or for other ones, each
given to one agent for one child. Everything is held in memory for the life of the app.

Endpoints (JSON; the protocol is versioned under ``/v1``):

- ``GET /health`` — ``{"status": "ok", "system": "authorisations", "authorisations": N}``;
  never faulted.
- ``POST /v1/authorisations/verify`` — body ``{"issuer", "number", "child_personal_code",
  "agent_personal_code", "matter", "on"}``: does the authorisation ``number`` of ``issuer``
  (``orphans_court`` or ``notary``) let the agent act for the child in ``matter`` on the day
  ``on``? Answers 200 ``{"status", "issuer_name", "valid_from", "valid_until",
  "revoked_on"}``; ``status`` is ``valid`` or why not: ``unknown``, ``other_child``,
  ``other_person``, ``other_scope``, ``revoked``, ``not_yet_valid``, ``expired`` (the first
  that applies, in this order). ``valid_until`` is the last day it is valid, revocation
  included (null: until revoked). For ``unknown``, ``other_child`` and ``other_person``
  every field but ``status`` is null: the register tells nothing of an authorisation to
  whoever is not its agent for its child. The number is matched regardless of letter
  case; personal codes travel only in this body.
- ``GET /v1/authorisations/examples`` — for tests and the demo, not part of the register's
  protocol: the applications an agent could file against the seeded register, each with the
  status the register answers on its filing day ``on`` for pre-school matters.

Magic input (deterministic, for tests of the "never answers properly" path):

- number ``BROKEN-500`` — ``POST /v1/authorisations/verify`` always answers 500
  ``{"error": "internal_error"}``.

Faults: the app is wrapped in :class:`~simulators.faults.FaultInjection`, so every
endpoint but ``/health`` (and the OpenAPI pages) can be made to fail at the configured
rates or per request with the header ``X-Simulate-Fault: error|rate_limit|timeout|
malformed|latency|none``.

Requests that break the protocol get FastAPI's 422. The simulator logs nothing, so no
personal code is ever written anywhere by it.
"""

from __future__ import annotations

from datetime import date
from typing import Annotated

from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from simulators.api import NO_FAULTS, ErrorBody, error, simulator
from simulators.authorisations.register import (
    Issuer,
    Register,
    Scope,
    Seeded,
    Status,
    seeded,
)
from simulators.faults import FaultInjection, Faults
from simulators.municipality import SyntheticMunicipality

BROKEN_NUMBER = "BROKEN-500"
"""Magic authorisation number: verifying it always answers 500."""
_NOT_THEIRS: frozenset[Status] = frozenset({"unknown", "other_child", "other_person"})
"""Answers that tell nothing of the authorisation: it is not this agent's for this child."""

PersonalCodeText = Annotated[
    str,
    StringConstraints(pattern=r"^\d{6}-?\d{5}$"),
    Field(description="Personal code, DDMMYY-NNNNN (the hyphen is optional)."),
]
Number = Annotated[
    str,
    StringConstraints(min_length=1, max_length=40, pattern=r"^[0-9A-Za-z/.\-]+$"),
    Field(description="The authorisation's number, as its issuer gave it."),
]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)


class VerificationRequest(_Model):
    """Which authorisation, for whom, for what, and on which day."""

    issuer: Issuer = Field(description="orphans_court (bāriņtiesa) or notary.")
    number: Number
    child_personal_code: PersonalCodeText = Field(description="The child it must be for.")
    agent_personal_code: PersonalCodeText = Field(description="The person acting on it.")
    matter: Scope = Field(
        description="The matter it must cover: preschool (pre-school education), school,"
        " healthcare, property; an authorisation for general matters covers every one."
    )
    on: date = Field(description="The day it must hold (the day the application was filed).")


class Verification(_Model):
    """The register's answer: ``valid``, or the first reason it does not hold."""

    status: Status = Field(
        description="valid, or unknown, other_child, other_person, other_scope, revoked,"
        " not_yet_valid, expired (the first that applies, in this order)."
    )
    issuer_name: str | None = Field(
        description="The court or notary; null for unknown, other_child and other_person"
        " (as are the dates)."
    )
    valid_from: date | None = Field(description="First day it is valid.")
    valid_until: date | None = Field(
        description="Last day it is valid, revocation included; null: valid until revoked."
    )
    revoked_on: date | None = Field(description="The day it was revoked, if it was.")


class FiledAuthorisation(_Model):
    """An authorisation as an application names it."""

    issuer: Issuer
    issuer_name: str
    number: str
    valid_from: date
    valid_until: date | None
    agent_personal_code: str


class Example(_Model):
    """An application an agent could file, and what the register answers about it."""

    expected: Status = Field(description="The register's answer on ``on``, for preschool.")
    child_ref: str = Field(description="The synthetic municipality's reference of the child.")
    application_id: str = Field(description="The child's application in the town.")
    child_personal_code: str
    on: date = Field(description="The day the application is filed.")
    authorisation: FiledAuthorisation


class Examples(_Model):
    examples: list[Example]


def _examples(seed: Seeded) -> Examples:
    return Examples(
        examples=[
            Example(
                expected=case.expected,
                child_ref=case.child.ref,
                application_id=case.child.application_id,
                child_personal_code=case.child.personal_code,
                on=case.on,
                authorisation=FiledAuthorisation.model_validate(case.authorisation()),
            )
            for case in seed.cases
        ]
    )


def create_app(town: SyntheticMunicipality, faults: Faults = NO_FAULTS) -> FaultInjection:
    """The register of authorisations simulator for ``town``, wrapped in fault injection."""
    seed = seeded(town)
    register = Register(seed.authorisations)
    app = simulator(
        "Register of authorisations simulator",
        "Powers of attorney given by orphans' courts and notaries (simulated).",
        "authorisations",
        counts=lambda: {"authorisations": len(register.by_number)},
    )
    app.state.register = register
    app.state.seeded = seed

    @app.post(
        "/v1/authorisations/verify",
        response_model=Verification,
        responses={500: {"model": ErrorBody, "description": "internal_error (BROKEN-500)"}},
    )
    async def verify(request: VerificationRequest) -> Verification | JSONResponse:
        """Whether an authorisation lets the agent act for the child in a matter on a day."""
        if request.number.upper() == BROKEN_NUMBER:
            return error(500, "internal_error")
        status, found = register.verify(
            request.issuer,
            request.number,
            child=request.child_personal_code,
            agent=request.agent_personal_code,
            matter=request.matter,
            on=request.on,
        )
        if found is None or status in _NOT_THEIRS:
            return Verification(
                status=status, issuer_name=None, valid_from=None, valid_until=None, revoked_on=None
            )
        return Verification(
            status=status,
            issuer_name=found.issuer_name,
            valid_from=found.valid_from,
            valid_until=found.last_day,
            revoked_on=found.revoked_on,
        )

    @app.get("/v1/authorisations/examples", response_model=Examples)
    async def examples() -> Examples:
        """Simulator only: applications to file against the seeded register, and its answers."""
        return _examples(seed)

    return FaultInjection(app, faults)


__all__ = [
    "BROKEN_NUMBER",
    "Example",
    "Examples",
    "Verification",
    "VerificationRequest",
    "create_app",
]
