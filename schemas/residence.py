"""Declared residence from the population register extract (VPS PERS)."""

from __future__ import annotations

from datetime import date
from typing import Literal, Self

from pydantic import Field, model_validator

from schemas.base import Event, type_name
from schemas.values import AddressCode, ChildRef, MunicipalityCode, TerritoryCode


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
