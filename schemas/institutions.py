"""Institutions and their seats, as the VPS register publishes them."""

from __future__ import annotations

from datetime import date
from typing import Literal, Self

from pydantic import Field, model_validator

from schemas.base import Event, FrozenModel, type_name
from schemas.geo import Lks92Point
from schemas.values import (
    AddressCode,
    GroupCode,
    InstitutionId,
    LanguageCode,
    RegistrationNumber,
    UtcDatetime,
)


class SeatPool(FrozenModel):
    """Seats of one group: an age band and a language, with a capacity.

    A child fits the pool when born within the birth-year band (if given) and
    at least ``min_age_months`` old on the start date.
    """

    group_code: GroupCode
    language: LanguageCode
    min_age_months: int = Field(
        ge=0, le=96, description="Programme starting age in months (e.g. 18 for 1.5 years)."
    )
    birth_year_from: int | None = Field(
        default=None, ge=2000, le=2100, description="Earliest birth year admitted, if banded."
    )
    birth_year_to: int | None = Field(
        default=None, ge=2000, le=2100, description="Latest birth year admitted, if banded."
    )
    capacity: int = Field(ge=0, le=1000, description="Seats available for new children.")

    @model_validator(mode="after")
    def _band(self) -> Self:
        if (
            self.birth_year_from is not None
            and self.birth_year_to is not None
            and self.birth_year_from > self.birth_year_to
        ):
            raise ValueError("birth_year_from is after birth_year_to")
        return self


class _Pools(FrozenModel):
    pools: tuple[SeatPool, ...] = Field(max_length=64, description="All groups taking children.")

    @model_validator(mode="after")
    def _distinct_groups(self) -> Self:
        codes = [p.group_code for p in self.pools]
        if len(set(codes)) != len(codes):
            raise ValueError("a group code is listed more than once")
        return self


class InstitutionRegistered(_Pools, Event):
    """An institution takes part in admission, with its current seats."""

    event_type: Literal["InstitutionRegistered"] = type_name("InstitutionRegistered")
    institution_id: InstitutionId
    name: str = Field(min_length=1, max_length=200, description="Official name.")
    address_code: AddressCode
    location: Lks92Point | None = Field(default=None, description="Building coordinates, if known.")
    registration_number: RegistrationNumber | None = Field(
        default=None, description="Registration number; its e-adrese is _DEFAULT@<number>."
    )


class SeatCapacityChanged(_Pools, Event):
    """The seats of an institution changed; ``pools`` replaces the previous list."""

    event_type: Literal["SeatCapacityChanged"] = type_name("SeatCapacityChanged")
    institution_id: InstitutionId
    effective_from: date = Field(description="First day the new seats apply.")


class PlaceReleased(Event):
    """Seats in a group became free (a child left, a group was enlarged)."""

    event_type: Literal["PlaceReleased"] = type_name("PlaceReleased")
    institution_id: InstitutionId
    group_code: GroupCode
    count: int = Field(ge=1, le=100, description="Number of seats released.")
    reason: Literal["child_left", "group_enlarged", "other"] = Field(
        description="Why they are free."
    )
    released_at: UtcDatetime = Field(description="When the seats became free.")
