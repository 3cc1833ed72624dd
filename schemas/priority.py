"""The commission's decisions on priority grounds the parents declared.

A ground the parents declare in the application (an out-of-turn ground, a large family, a
parent working at an institution) is a claim: it ranks the child only once the commission
has confirmed it (docs/legal-basis.md, "Priorities"). ``hub priority confirm`` and
``hub priority reject`` publish these decisions; the allocation service re-ranks the child
at once.
"""

from __future__ import annotations

from datetime import date
from typing import Literal, Self

from pydantic import Field, model_validator

from schemas.applications import CommissionGround
from schemas.base import Event, type_name
from schemas.values import ChildRef, InstitutionId

ClaimGround = CommissionGround | Literal["large_family", "staff_child"]
"""A ground a claim is about: an out-of-turn ground, a large family, or a parent on the
staff of an institution (``staff_child``, with the institution)."""

CLAIM_GROUNDS: tuple[str, ...] = (
    *(g.value for g in CommissionGround),
    "large_family",
    "staff_child",
)


class _Decision(Event):
    child_ref: ChildRef
    ground: ClaimGround = Field(description="The ground decided on.")
    institution_id: InstitutionId | None = Field(
        default=None, description="The institution, for a staff_child claim (and only then)."
    )
    decision_number: str = Field(
        min_length=1, max_length=64, description="Number of the commission's decision."
    )
    decided_by: str = Field(
        min_length=1, max_length=64, description="Who recorded it (operator user name)."
    )
    decided_on: date = Field(description="Date of the commission's decision.")

    @model_validator(mode="after")
    def _institution(self) -> Self:
        if (self.ground == "staff_child") != (self.institution_id is not None):
            raise ValueError("institution_id is given exactly when the ground is staff_child")
        return self

    @property
    def claim(self) -> str:
        """The claim's key in a child's record: ``ground`` or ``staff_child:<institution>``."""
        return claim_key(self.ground, self.institution_id)


def claim_key(ground: str, institution_id: str | None = None) -> str:
    """The key of a claim: the ground, with the institution for ``staff_child``."""
    return f"{ground}:{institution_id}" if institution_id else f"{ground}"


class PriorityConfirmed(_Decision):
    """The commission confirmed a declared ground: it ranks the child from now on."""

    event_type: Literal["PriorityConfirmed"] = type_name("PriorityConfirmed")


class PriorityRejected(_Decision):
    """The commission rejected a declared ground: it never ranks the child."""

    event_type: Literal["PriorityRejected"] = type_name("PriorityRejected")
    reason: str = Field(
        min_length=1, max_length=500, description="Why, as told to the parents (no personal codes)."
    )
