"""The register of authorisations' client: does a power of attorney hold (JSON API v1)?

Personal codes travel only in the request body, never in the path, and no error text built
here carries one. Every answer is checked against the protocol: a body that is not JSON is
retried (:class:`InvalidResponse`); JSON of the wrong shape, a status the protocol does
not have, or a ``valid`` answer whose period leaves out the day asked is not
(:class:`UnexpectedAnswer`). The register saying an authorisation does not hold is an
answer, not an error: :meth:`AuthorisationsClient.verify` returns it as a
:class:`Verification` whose ``status`` names the reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from hub.reliability.retry import HttpPort, UnexpectedAnswer
from schemas.authorisations import AuthorisationIssuer
from schemas.values import PersonalCode

VERIFY = "/v1/authorisations/verify"
PRESCHOOL = "preschool"
"""The matter the hub asks about: pre-school education."""
Status = Literal[
    "valid",
    "unknown",
    "revoked",
    "expired",
    "not_yet_valid",
    "other_person",
    "other_child",
    "other_scope",
]
"""The register's answer: ``valid``, or one of the refusal reasons of the contract."""


@dataclass(frozen=True, slots=True)
class Verification:
    """The register's answer about one authorisation on one day."""

    status: Status
    """``valid``, or why not (the refusal reasons of ``schemas.authorisations``)."""
    issuer_name: str | None
    valid_from: date | None
    valid_until: date | None
    """The last day it is valid, revocation included; None: until revoked (or not told)."""
    revoked_on: date | None

    @property
    def valid(self) -> bool:
        return self.status == "valid"


class _VerificationAnswer(BaseModel):
    # Tolerant of fields added later; never echoes the input in validation errors.
    model_config = ConfigDict(extra="ignore", hide_input_in_errors=True)

    status: Status
    issuer_name: str | None = Field(default=None, max_length=200)
    valid_from: date | None = None
    valid_until: date | None = None
    revoked_on: date | None = None

    @model_validator(mode="after")
    def _period(self) -> Self:
        if self.valid_from and self.valid_until and self.valid_until < self.valid_from:
            raise ValueError("valid_until is before valid_from")
        return self


def _code(value: PersonalCode | str) -> PersonalCode:
    return value if isinstance(value, PersonalCode) else PersonalCode(value)


class AuthorisationsClient(HttpPort):
    """The register of authorisations over HTTP, with the timeouts and retries of
    :class:`HttpPort`."""

    system = "the register of authorisations"

    async def verify(
        self,
        *,
        issuer: AuthorisationIssuer,
        number: str,
        child_personal_code: PersonalCode | str,
        agent_personal_code: PersonalCode | str,
        on: date,
        matter: str = PRESCHOOL,
    ) -> Verification:
        """Whether authorisation ``number`` of ``issuer`` lets the agent act for the child in
        ``matter`` on the day ``on``."""
        body = await self.json(
            "POST",
            VERIFY,
            json={
                "issuer": issuer,
                "number": number,
                "child_personal_code": _code(child_personal_code).reveal(),
                "agent_personal_code": _code(agent_personal_code).reveal(),
                "matter": matter,
                "on": on.isoformat(),
            },
            expect=(200,),
        )
        answer = self.parse(_VerificationAnswer, body, f"POST {VERIFY}")
        if answer.status == "valid" and not (
            (answer.valid_from is None or answer.valid_from <= on)
            and (answer.valid_until is None or on <= answer.valid_until)
        ):
            raise UnexpectedAnswer(
                f"{self.system} answered POST {VERIFY} valid for {on.isoformat()} with a period"
                f" that leaves that day out ({answer.valid_from} to {answer.valid_until})"
            )
        return Verification(
            answer.status,
            answer.issuer_name,
            answer.valid_from,
            answer.valid_until,
            answer.revoked_on,
        )


client_from_url = AuthorisationsClient.at


__all__ = ["PRESCHOOL", "VERIFY", "AuthorisationsClient", "Verification", "client_from_url"]
