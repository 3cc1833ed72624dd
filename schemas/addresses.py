"""GIS / address register (VZD VARIS): address resolution."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from schemas.base import Command, Event, type_name
from schemas.geo import Lks92Point, Wgs84Point
from schemas.values import (
    AddressCode,
    FailureDetail,
    Permanent,
    Postcode,
    SubjectRef,
    TerritoryCode,
)


class ResolveAddress(Command):
    """Ask the address register for an address's full form, territory and coordinates."""

    event_type: Literal["ResolveAddress"] = type_name("ResolveAddress")
    subject_ref: SubjectRef
    address_code: AddressCode


class AddressResolved(Event):
    """A current (status EKS) address with its territory and coordinates."""

    event_type: Literal["AddressResolved"] = type_name("AddressResolved")
    subject_ref: SubjectRef
    address_code: AddressCode
    full_address: str = Field(
        min_length=1, max_length=300, description="Address as written on letters."
    )
    postcode: Postcode
    territory_code: TerritoryCode = Field(description="ATVK code of the municipality or parish.")
    lks92: Lks92Point = Field(description="Building coordinates in LKS-92 (EPSG:3059).")
    wgs84: Wgs84Point = Field(description="The same point in WGS84 (EPSG:4326).")


class AddressResolutionFailed(Event):
    """The address could not be resolved."""

    event_type: Literal["AddressResolutionFailed"] = type_name("AddressResolutionFailed")
    subject_ref: SubjectRef
    address_code: AddressCode
    reason: Literal["unknown_address", "not_current", "unavailable", "invalid_response"] = Field(
        description="Class of failure; not_current means the address status is not EKS."
    )
    detail: FailureDetail
    permanent: Permanent
