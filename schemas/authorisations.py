"""Authorisations of a person who applies on behalf of a child's parents.

An application filed by an authorised person names the authorisation (who issued it, its
number, its validity); the allocation service asks the register of authorisations whether it
holds before the application counts (Riga binding regulations Nr. 191, point 7.2:
docs/legal-basis.md, "Priorities and intake").
"""

from __future__ import annotations

from datetime import date
from typing import Literal, Self

from pydantic import Field, model_validator

from schemas.base import Command, Event, FrozenModel, type_name
from schemas.values import ApplicationId, ChildRef, FailureDetail, Permanent, PersonalCode

AuthorisationIssuer = Literal["orphans_court", "notary"]

RefusalReason = Literal[
    "unknown",
    "revoked",
    "expired",
    "not_yet_valid",
    "other_person",
    "other_child",
    "other_scope",
]
"""Why the register does not confirm an authorisation: it has no such number from that
issuer; it was revoked; its validity ended or has not begun on the day of filing; it was
given to another person, for another child, or not for pre-school matters."""


class Authorisation(FrozenModel):
    """The authorisation an application names: as the person filing it states it."""

    issuer: AuthorisationIssuer = Field(description="An orphans' court or a notary.")
    issuer_name: str = Field(min_length=1, max_length=120, description="Which court or notary.")
    number: str = Field(
        min_length=1, max_length=40, pattern=r"^[0-9A-Za-z/.\-]+$", description="Its number."
    )
    valid_from: date = Field(description="First day it is valid.")
    valid_until: date | None = Field(default=None, description="Last day; None: until revoked.")
    agent_personal_code: PersonalCode = Field(description="The authorised person's code.")

    @model_validator(mode="after")
    def _period(self) -> Self:
        if self.valid_until is not None and self.valid_until < self.valid_from:
            raise ValueError("valid_until is before valid_from")
        return self


class CheckAuthorisation(Command):
    """Ask the register of authorisations whether an application's authorisation holds."""

    event_type: Literal["CheckAuthorisation"] = type_name("CheckAuthorisation")
    child_ref: ChildRef
    application_id: ApplicationId
    child_personal_code: PersonalCode = Field(description="The child it must be for.")
    authorisation: Authorisation = Field(description="As the application names it.")
    on: date = Field(description="The day the application was filed.")


class AuthorisationVerified(Event):
    """The register confirms the authorisation for this child on the day of filing."""

    event_type: Literal["AuthorisationVerified"] = type_name("AuthorisationVerified")
    child_ref: ChildRef
    application_id: ApplicationId
    valid_until: date | None = Field(default=None, description="As the register has it.")


class AuthorisationRefused(Event):
    """The register does not confirm the authorisation: the application does not count."""

    event_type: Literal["AuthorisationRefused"] = type_name("AuthorisationRefused")
    child_ref: ChildRef
    application_id: ApplicationId
    reason: RefusalReason = Field(description="Why it does not hold.")
    detail: FailureDetail


class AuthorisationCheckFailed(Event):
    """The register could not be asked or answered nonsense; ``permanent`` says whether asking
    again may help. The application waits (it neither counts nor is refused)."""

    event_type: Literal["AuthorisationCheckFailed"] = type_name("AuthorisationCheckFailed")
    child_ref: ChildRef
    application_id: ApplicationId
    reason: Literal["unavailable", "invalid_response"] = Field(description="Class of failure.")
    detail: FailureDetail
    permanent: Permanent
