"""Coordinates in the two systems the hub meets: LKS-92 (the address register) and WGS84."""

from __future__ import annotations

from pydantic import Field

from schemas.base import FrozenModel


class Lks92Point(FrozenModel):
    """A point in LKS-92 / Latvia TM (EPSG:3059).

    In the address register KOORD_X is the northing and KOORD_Y the easting;
    this type names them explicitly so they cannot be swapped.
    """

    northing: float = Field(
        ge=150_000, le=450_000, description="KOORD_X: metres north (EPSG:3059)."
    )
    easting: float = Field(ge=290_000, le=780_000, description="KOORD_Y: metres east (EPSG:3059).")


class Wgs84Point(FrozenModel):
    """A point in WGS84 (EPSG:4326), in decimal degrees."""

    latitude: float = Field(ge=55.5, le=58.2, description="Degrees north.")
    longitude: float = Field(ge=20.8, le=28.4, description="Degrees east.")
