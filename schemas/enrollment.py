"""VIIS, the state education register: enrolment checks and registrations."""

from __future__ import annotations

from datetime import date
from typing import Literal

from pydantic import Field

from schemas.base import Command, Event, type_name
from schemas.values import (
    ChildRef,
    FailureDetail,
    GroupCode,
    InstitutionId,
    OfferId,
    Permanent,
    PersonalCode,
    UtcDatetime,
)

FailureReason = Literal["unknown_person", "refused", "unavailable", "invalid_response"]


class CheckEnrollment(Command):
    """Ask VIIS where the child and the child's siblings attend."""

    event_type: Literal["CheckEnrollment"] = type_name("CheckEnrollment")
    child_ref: ChildRef
    child_personal_code: PersonalCode = Field(
        description="The child's personal code, as VIIS knows it."
    )
    sibling_personal_codes: tuple[PersonalCode, ...] = Field(
        default=(), max_length=12, description="Siblings whose attendance is asked about."
    )
    as_of: date = Field(description="Date the facts are needed for (the round date).")


class EnrollmentChecked(Event):
    """What VIIS knows about the child's and siblings' attendance."""

    event_type: Literal["EnrollmentChecked"] = type_name("EnrollmentChecked")
    child_ref: ChildRef
    as_of: date = Field(description="Date the facts hold for.")
    attending_institution_id: InstitutionId | None = Field(
        description="Municipal pre-school the child already attends, if any."
    )
    attending_group_code: GroupCode | None = Field(
        default=None, description="Group the child attends, if any."
    )
    sibling_institution_ids: tuple[InstitutionId, ...] = Field(
        default=(), description="Institutions where at least one sibling attends."
    )


class EnrollmentCheckFailed(Event):
    """VIIS could not answer the check; ``permanent`` says whether asking again may help."""

    event_type: Literal["EnrollmentCheckFailed"] = type_name("EnrollmentCheckFailed")
    child_ref: ChildRef
    reason: FailureReason = Field(description="Class of failure.")
    detail: FailureDetail
    permanent: Permanent


class RegisterEnrollment(Command):
    """Ask VIIS to record that the child starts at an institution."""

    event_type: Literal["RegisterEnrollment"] = type_name("RegisterEnrollment")
    child_ref: ChildRef
    child_personal_code: PersonalCode = Field(
        description="The child's personal code, as VIIS knows it."
    )
    offer_id: OfferId
    institution_id: InstitutionId
    group_code: GroupCode
    start_date: date = Field(description="First day of attendance.")
    transfer_from: InstitutionId | None = Field(
        default=None,
        description=(
            "The institution the child leaves: a place accepted earlier, or where the child"
            " attends now. VIIS moves that enrolment here instead of refusing a second one."
        ),
    )


class EnrollmentRegistered(Event):
    """VIIS recorded the enrolment."""

    event_type: Literal["EnrollmentRegistered"] = type_name("EnrollmentRegistered")
    child_ref: ChildRef
    offer_id: OfferId
    institution_id: InstitutionId
    viis_enrollment_id: str = Field(min_length=1, max_length=64, description="VIIS record id.")
    registered_at: UtcDatetime = Field(description="When VIIS recorded it.")


class EnrollmentRefused(Event):
    """VIIS did not record the enrolment (e.g. the child is already enrolled)."""

    event_type: Literal["EnrollmentRefused"] = type_name("EnrollmentRefused")
    child_ref: ChildRef
    offer_id: OfferId
    reason: Literal["already_enrolled", "unknown_person", "unknown_institution", "other"] = Field(
        description="Why VIIS refused."
    )
    detail: FailureDetail
