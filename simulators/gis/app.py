"""HTTP simulator of the GIS / address register (VZD VARIS).

It knows every address of a :class:`~simulators.municipality.SyntheticMunicipality`
plus one fixed reference address, code ``108000001`` (type 108, a building):
Krišjāņa Barona iela 1, Rīga, LV-1050 at LKS-92 N 311789.9 / E 507150.9
(56.949673 N, 24.117556 E).

Endpoints:

- ``GET /health``: ``{"status": "ok", "system": "GIS", "addresses": n}``;
- ``GET /v1/addresses/{code}``: the address with its status, postcode, ATVK
  territory, LKS-92 point (``koord_x`` is the northing, ``koord_y`` the
  easting, as in the register) and the same point in WGS84, computed with
  pyproj; a code that is not nine digits is answered 422, an unknown one 404
  ``{"error": "unknown_address"}``;
- ``GET /v1/addresses/{code}/distances?institution_id=…`` (repeatable; by
  default every institution of the municipality): straight-line LKS-92
  distances in whole metres; an unknown institution is answered 404
  ``{"error": "unknown_institution"}``.

Magic inputs:

- ``199999999`` is a deleted address: it is answered, with status ``DEL``
  (only ``EKS`` is current);
- ``999999999`` is always answered 500, like a register that never answers
  properly.

Every request except ``/health`` and the docs passes through
:class:`~simulators.faults.FaultInjection`.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

from fastapi import Path, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from pyproj import Transformer

from simulators.api import NO_FAULTS, ErrorBody, error, simulator
from simulators.faults import FaultInjection, Faults
from simulators.municipality import Address, SyntheticMunicipality

REFERENCE = Address(
    code="108000001",
    street="Krišjāņa Barona iela",
    house="1",
    town="Rīga",
    postcode="LV-1050",
    territory_code="0001000",
    northing=311_789.9,
    easting=507_150.9,
    in_municipality=True,
)
"""The fixed reference address of DOMAIN.md, served by every simulator instance."""
DELETED_CODE = "199999999"
"""Magic code: an address that exists but is deleted (status DEL)."""
FAILING_CODE = "999999999"
"""Magic code: always answered HTTP 500."""
_DELETED = Address(
    code=DELETED_CODE,
    street="Vecā iela",
    house="7",
    town="Rīga",
    postcode="LV-1001",
    territory_code="0001000",
    northing=312_100.0,
    easting=506_400.0,
    in_municipality=True,
)
# LKS-92 (EPSG:3059) to WGS84; with always_xy the order is (easting, northing) → (lon, lat).
_TO_WGS84 = Transformer.from_crs(3059, 4326, always_xy=True)

Code = Annotated[str, Path(pattern=r"^\d{9}$", description="Nine-digit address code.")]


class Lks92(BaseModel):
    koord_x: float = Field(description="KOORD_X: northing, metres (EPSG:3059).")
    koord_y: float = Field(description="KOORD_Y: easting, metres (EPSG:3059).")


class Wgs84(BaseModel):
    lat: float = Field(description="Latitude, degrees north (EPSG:4326).")
    lon: float = Field(description="Longitude, degrees east (EPSG:4326).")


class AddressOut(BaseModel):
    code: str = Field(description="Nine-digit address code.")
    status: Literal["EKS", "DEL"] = Field(description="EKS: current; DEL: deleted.")
    full_address: str = Field(description="Address as written on letters.")
    postcode: str = Field(description="Postcode, LV-NNNN.")
    territory_code: str = Field(description="ATVK code of the municipality or parish.")
    lks92: Lks92
    wgs84: Wgs84


class Distance(BaseModel):
    institution_id: str
    metres: int = Field(description="Straight-line distance in LKS-92, rounded to 1 m.")


class DistancesOut(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    from_: str = Field(alias="from", description="The address code measured from.")
    distances: list[Distance]


def _answer(address: Address, status: Literal["EKS", "DEL"]) -> AddressOut:
    lon, lat = _TO_WGS84.transform(address.easting, address.northing)
    return AddressOut(
        code=address.code,
        status=status,
        full_address=address.full,
        postcode=address.postcode,
        territory_code=address.territory_code,
        lks92=Lks92(koord_x=address.northing, koord_y=address.easting),
        wgs84=Wgs84(lat=round(lat, 9), lon=round(lon, 9)),
    )


def create_app(town: SyntheticMunicipality, faults: Faults = NO_FAULTS) -> FaultInjection:
    """The simulator of ``town``'s address register, wrapped in fault injection."""
    addresses = {**town.addresses, REFERENCE.code: REFERENCE, DELETED_CODE: _DELETED}
    institutions = {i.institution_id: i.address_code for i in town.institutions}
    app = simulator(
        "GIS / address register simulator",
        (__doc__ or "").split("\n\n")[0],
        "GIS",
        counts=lambda: {"addresses": len(addresses)},
    )
    missing = {404: {"model": ErrorBody}, 500: {"model": ErrorBody}}

    def find(code: str) -> Address | JSONResponse:
        if code == FAILING_CODE:
            return error(500, "internal_error")
        address = addresses.get(code)
        return address if address is not None else error(404, "unknown_address")

    @app.get("/v1/addresses/{code}", response_model=AddressOut, responses=missing)
    async def address(code: Code) -> AddressOut | JSONResponse:
        """One address with its status, territory and coordinates."""
        found = find(code)
        if isinstance(found, JSONResponse):
            return found
        return _answer(found, "DEL" if code == DELETED_CODE else "EKS")

    @app.get("/v1/addresses/{code}/distances", response_model=DistancesOut, responses=missing)
    async def distances(
        code: Code,
        institution_id: Annotated[
            list[str] | None, Query(description="Institutions to measure to (default: all).")
        ] = None,
    ) -> DistancesOut | JSONResponse:
        """Straight-line distances from the address to institutions, in whole metres."""
        found = find(code)
        if isinstance(found, JSONResponse):
            return found
        wanted = institution_id or list(institutions)
        if any(i not in institutions for i in wanted):
            return error(404, "unknown_institution")
        rows = []
        for iid in wanted:
            there = addresses[institutions[iid]]
            metres = math.hypot(there.northing - found.northing, there.easting - found.easting)
            rows.append(Distance(institution_id=iid, metres=round(metres)))
        return DistancesOut(from_=code, distances=rows)

    return FaultInjection(app, faults)


__all__ = ["DELETED_CODE", "FAILING_CODE", "REFERENCE", "create_app"]
