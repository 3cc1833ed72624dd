"""Client of the GIS / address register: addresses with coordinates, distances to institutions.

Every answer is validated against the register's protocol: a wrong shape, an
answer about another code, or a WGS84 point more than 1 m from the hub's own
transform of the LKS-92 point raises :class:`UnexpectedAnswer` (permanent).
Only a 404 that says ``unknown_address`` means the register does not know a code;
any other 404 (a wrong base URL, say) is a :class:`Refused`, so a misconfiguration
cannot make every address look unknown.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pyproj import Transformer

from hub.reliability.retry import HttpPort, Refused, UnexpectedAnswer
from schemas.geo import Lks92Point, Wgs84Point
from schemas.values import AddressCode, InstitutionId, Postcode, TerritoryCode

CURRENT = "EKS"
"""The only address status the register calls current."""
TOLERANCE_METRES = 1.0
_METRES_PER_DEGREE = 111_320.0  # along a meridian; enough for a 1 m consistency check
# LKS-92 (EPSG:3059) to WGS84; with always_xy the order is (easting, northing) → (lon, lat).
_TO_WGS84 = Transformer.from_crs(3059, 4326, always_xy=True)


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, hide_input_in_errors=True)


class _Lks92(_Strict):
    koord_x: float
    koord_y: float


class _Wgs84(_Strict):
    lat: float
    lon: float


class _AddressAnswer(_Strict):
    code: AddressCode
    status: str = Field(min_length=1, max_length=10)
    full_address: str = Field(min_length=1, max_length=300)
    postcode: Postcode
    territory_code: TerritoryCode
    lks92: _Lks92
    wgs84: _Wgs84


class _Distance(_Strict):
    institution_id: InstitutionId
    metres: int = Field(ge=0)


class _DistancesAnswer(_Strict):
    from_: AddressCode = Field(alias="from")
    distances: list[_Distance]


class AddressRecord(BaseModel):
    """An address as the register answered it, coordinates checked."""

    model_config = ConfigDict(frozen=True)

    code: str
    status: str
    full_address: str
    postcode: str
    territory_code: str
    lks92: Lks92Point
    wgs84: Wgs84Point

    @property
    def current(self) -> bool:
        return self.status == CURRENT


def to_wgs84(point: Lks92Point) -> Wgs84Point:
    """``point`` in WGS84, by pyproj."""
    lon, lat = _TO_WGS84.transform(point.easting, point.northing)
    return Wgs84Point(latitude=lat, longitude=lon)


def metres_apart(a: Wgs84Point, b: Wgs84Point) -> float:
    """Approximate distance between two nearby WGS84 points, in metres."""
    north = (a.latitude - b.latitude) * _METRES_PER_DEGREE
    east = (a.longitude - b.longitude) * _METRES_PER_DEGREE * math.cos(math.radians(a.latitude))
    return math.hypot(north, east)


class GisClient(HttpPort):
    """The address register over HTTP, with the hub's timeouts and retries."""

    system = "GIS"

    async def __aenter__(self) -> GisClient:
        return self

    async def address(self, code: str) -> AddressRecord | None:
        """The address with ``code``; None when the register does not know it.

        That is a 404 ``{"error": "unknown_address"}``; any other refusal is raised.
        """
        try:
            body = await self.json("GET", f"/v1/addresses/{code}")
        except Refused as refused:
            if refused.status == 404 and refused.error == "unknown_address":
                return None
            raise
        answer = self.parse(_AddressAnswer, body, f"GET /v1/addresses/{code}")
        if answer.code != code:
            raise UnexpectedAnswer(f"GIS answered about another address than {code}")
        try:
            lks92 = Lks92Point(northing=answer.lks92.koord_x, easting=answer.lks92.koord_y)
            wgs84 = Wgs84Point(latitude=answer.wgs84.lat, longitude=answer.wgs84.lon)
        except ValidationError:
            raise UnexpectedAnswer(f"GIS answered coordinates outside Latvia for {code}") from None
        apart = metres_apart(wgs84, to_wgs84(lks92))
        if apart > TOLERANCE_METRES:
            raise UnexpectedAnswer(
                f"GIS answered a WGS84 point {apart:.1f} m from its LKS-92 point for {code}"
            )
        return AddressRecord(
            code=answer.code,
            status=answer.status,
            full_address=answer.full_address,
            postcode=answer.postcode,
            territory_code=answer.territory_code,
            lks92=lks92,
            wgs84=wgs84,
        )

    async def distances(self, code: str, institution_ids: Sequence[str]) -> dict[str, int]:
        """Straight-line metres from the address to each institution.

        An unknown address or institution is refused (:class:`Refused`, 404).
        """
        if not institution_ids:
            return {}
        body = await self.json(
            "GET",
            f"/v1/addresses/{code}/distances",
            params={"institution_id": list(institution_ids)},
        )
        answer = self.parse(_DistancesAnswer, body, f"GET /v1/addresses/{code}/distances")
        found = {d.institution_id: d.metres for d in answer.distances}
        if answer.from_ != code or set(found) != set(institution_ids):
            raise UnexpectedAnswer(f"GIS answered distances for other places than asked ({code})")
        return found


client_from_url = GisClient.at


__all__ = [
    "CURRENT",
    "AddressRecord",
    "GisClient",
    "client_from_url",
    "metres_apart",
    "to_wgs84",
]
