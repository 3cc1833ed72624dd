"""Pre-school queue applications, as the VPS queue register publishes them."""

from __future__ import annotations

from datetime import date
from enum import StrEnum
from typing import Literal, Self

from pydantic import Field, model_validator

from schemas.authorisations import Authorisation, RefusalReason
from schemas.base import Event, FrozenModel, type_name
from schemas.values import (
    AddressCode,
    ApplicationId,
    ChildRef,
    EmailAddress,
    FailureDetail,
    InstitutionId,
    LanguageCode,
    PersonalCode,
    UtcDatetime,
)

MAX_RANKED_INSTITUTIONS = 10
"""Hard upper bound on ranked institutions; each municipality's rules set a lower one."""


class CommissionGround(StrEnum):
    """Out-of-turn (commission) grounds seen in municipal binding regulations."""

    PARENT_PRESCHOOL_TEACHER = "parent_preschool_teacher"
    PARENT_PROFESSIONAL_SOLDIER = "parent_professional_soldier"
    WITHOUT_PARENTAL_CARE = "without_parental_care"
    ADOPTED = "adopted"
    PARENT_WITH_DISABILITY = "parent_with_disability"
    TRIPLETS_OR_MORE = "triplets_or_more"
    OFFICIAL_ENTITLED_BY_LAW = "official_entitled_by_law"


class Guardian(FrozenModel):
    """A parent or legal guardian of the child, with how to reach them."""

    personal_code: PersonalCode = Field(
        description="Guardian's personal code (also their e-adrese)."
    )
    role: Literal["parent", "guardian"] = Field(default="parent", description="Legal relation.")
    email: EmailAddress | None = Field(
        default=None, description="E-mail address for notifications."
    )
    phone: str | None = Field(
        default=None,
        pattern=r"^\+371\d{8}$",
        description="Latvian mobile number in E.164 form for SMS, e.g. +37120000000.",
    )
    postal_address_code: AddressCode | None = Field(
        default=None, description="Address register code for registered letters."
    )
    correspondence_language: Literal["lv", "en"] = Field(
        default="lv", description="Language of messages to this guardian."
    )


class PriorityClaims(FrozenModel):
    """Priority grounds the parents declare; the hub verifies what it can (VIIS, VPS)."""

    commission_grounds: tuple[CommissionGround, ...] = Field(
        default=(), description="Out-of-turn grounds claimed, to be confirmed by the commission."
    )
    large_family: bool = Field(
        default=False, description="Three or more children under 18 in the family's care."
    )
    sibling_personal_codes: tuple[PersonalCode, ...] = Field(
        default=(),
        max_length=12,
        description="Siblings whose attendance VIIS is asked about (sibling priority).",
    )
    parent_staff_at: tuple[InstitutionId, ...] = Field(
        default=(),
        max_length=MAX_RANKED_INSTITUTIONS,
        description="Institutions where a parent works (staff-child priority).",
    )


class _Choice(FrozenModel):
    institutions: tuple[InstitutionId, ...] = Field(
        min_length=1,
        max_length=MAX_RANKED_INSTITUTIONS,
        description="Preferred institutions, most wanted first.",
    )
    desired_start_date: date = Field(description="First day the child should attend.")
    language: LanguageCode
    accepts_any_institution: bool = Field(
        default=False,
        description="Parents accept another institution with free seats if none listed has one.",
    )

    @model_validator(mode="after")
    def _distinct_institutions(self) -> Self:
        if len(set(self.institutions)) != len(self.institutions):
            raise ValueError("an institution is listed more than once")
        return self


class ApplicationSubmitted(_Choice, Event):
    """A child was registered in the pre-school queue."""

    event_type: Literal["ApplicationSubmitted"] = type_name("ApplicationSubmitted")
    application_id: ApplicationId
    child_ref: ChildRef
    child_personal_code: PersonalCode = Field(description="The child's personal code.")
    child_birth_date: date = Field(description="The child's date of birth.")
    guardians: tuple[Guardian, ...] = Field(
        min_length=1, max_length=2, description="Parents or guardians; the first is the applicant."
    )
    residence_address_code: AddressCode = Field(
        description="Declared residence of the child as given in the application."
    )
    registered_at: UtcDatetime = Field(
        description="Registration time; it orders children inside a priority group."
    )
    claims: PriorityClaims = Field(
        default_factory=PriorityClaims, description="Priority grounds declared by the parents."
    )
    submitted_via: Literal["e_service", "client_service_centre"] = Field(
        default="e_service", description="Channel of submission."
    )
    power_of_attorney_ref: str | None = Field(
        default=None,
        max_length=64,
        description="Power of attorney when staff submitted on a parent's behalf.",
    )
    authorisation: Authorisation | None = Field(
        default=None,
        description=(
            "Filed by an authorised person, not a parent: the authorisation it names. The"
            " application counts only once the register of authorisations confirms it."
        ),
    )

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        encoded = self.child_personal_code.birth_date
        if encoded is not None and encoded != self.child_birth_date:
            raise ValueError("child_birth_date differs from the date in the child's personal code")
        if self.submitted_via == "client_service_centre" and not self.power_of_attorney_ref:
            raise ValueError("an application made by staff needs power_of_attorney_ref")
        return self


class ApplicationChanged(_Choice, Event):
    """Parents changed the institutions, start date or language.

    The application keeps its original registration time.
    """

    event_type: Literal["ApplicationChanged"] = type_name("ApplicationChanged")
    application_id: ApplicationId
    child_ref: ChildRef
    changed_at: UtcDatetime = Field(description="When the parents made the change.")


class ApplicationWithdrawn(Event):
    """An application left the queue."""

    event_type: Literal["ApplicationWithdrawn"] = type_name("ApplicationWithdrawn")
    application_id: ApplicationId
    child_ref: ChildRef
    reason: Literal["parent_request", "moved_away", "enrolled_elsewhere", "annulled"] = Field(
        description="Why the application left the queue."
    )
    withdrawn_at: UtcDatetime = Field(description="When it left the queue.")


class ApplicationRefused(Event):
    """The hub refused an application before it counted; the e-service tells the parents
    why (``detail`` is written for them)."""

    event_type: Literal["ApplicationRefused"] = type_name("ApplicationRefused")
    application_id: ApplicationId
    child_ref: ChildRef
    reason: Literal["authorisation_refused"] = Field(description="Why it does not count.")
    authorisation_reason: RefusalReason | None = Field(
        default=None, description="The register's reason, for an authorisation refused."
    )
    detail: FailureDetail
    refused_at: UtcDatetime = Field(description="When the hub refused it.")
