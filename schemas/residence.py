"""Declared residence from the population register extract (VPS PERS)."""

from __future__ import annotations

from datetime import date
from typing import Literal, Self

from pydantic import Field, model_validator

from schemas.base import Command, Event, FrozenModel, type_name
from schemas.values import (
    AddressCode,
    ChildRef,
    FailureDetail,
    MunicipalityCode,
    Permanent,
    PersonalCode,
    TerritoryCode,
)


class ResidenceDeclared(Event):
    """The declared residence of a child or of one of the child's guardians.

    Published when the register first reports it and on every change, so the
    latest event per (child, subject, guardian index) is the current fact.
    """

    event_type: Literal["ResidenceDeclared"] = type_name("ResidenceDeclared")
    child_ref: ChildRef
    subject: Literal["child", "guardian"] = Field(description="Whose residence this is.")
    guardian_index: int | None = Field(
        default=None, ge=0, le=1, description="Which guardian of the application (0 or 1)."
    )
    address_code: AddressCode
    territory_code: TerritoryCode
    declared_municipality: MunicipalityCode = Field(
        description="Municipality where the residence is declared."
    )
    declared_from: date = Field(description="Date the declaration took effect.")

    @model_validator(mode="after")
    def _guardian_index(self) -> Self:
        if (self.subject == "guardian") != (self.guardian_index is not None):
            raise ValueError("guardian_index is given exactly when subject is 'guardian'")
        return self


class CheckResidence(Command):
    """Ask the population register (VPS PERS) where the child and its guardians have their
    declared residence on a date: before every admission list, the statuses that rank a
    child are verified again (docs/legal-basis.md, "Priorities")."""

    event_type: Literal["CheckResidence"] = type_name("CheckResidence")
    child_ref: ChildRef
    child_personal_code: PersonalCode = Field(description="The child's personal code.")
    guardian_personal_codes: tuple[PersonalCode, ...] = Field(
        default=(), max_length=2, description="The guardians', in the application's order."
    )
    as_of: date = Field(description="Date the residences are asked for (the round date).")


class Residence(FrozenModel):
    """One person's declared residence, as the register answers it."""

    subject: Literal["child", "guardian"] = Field(description="Whose residence this is.")
    guardian_index: int | None = Field(
        default=None, ge=0, le=1, description="Which guardian of the application (0 or 1)."
    )
    address_code: AddressCode
    territory_code: TerritoryCode
    declared_municipality: MunicipalityCode = Field(
        description="Municipality where the residence is declared."
    )
    declared_from: date = Field(description="Date the declaration took effect.")

    @model_validator(mode="after")
    def _guardian_index(self) -> Self:
        if (self.subject == "guardian") != (self.guardian_index is not None):
            raise ValueError("guardian_index is given exactly when subject is 'guardian'")
        return self


class ResidenceChecked(Event):
    """The register's answer to :class:`CheckResidence`: every declared residence it knows
    of the child and the guardians asked about on ``as_of`` (a person without a declared
    residence is left out)."""

    event_type: Literal["ResidenceChecked"] = type_name("ResidenceChecked")
    child_ref: ChildRef
    as_of: date = Field(description="Date the residences hold for.")
    residences: tuple[Residence, ...] = Field(
        default=(), max_length=3, description="The child's and the guardians' residences."
    )


class ResidenceCheckFailed(Event):
    """The register could not answer :class:`CheckResidence`."""

    event_type: Literal["ResidenceCheckFailed"] = type_name("ResidenceCheckFailed")
    child_ref: ChildRef
    as_of: date = Field(description="Date the residences were asked for.")
    reason: Literal["unknown_person", "unavailable", "invalid_response"] = Field(
        description="Class of failure."
    )
    detail: FailureDetail
    permanent: Permanent
