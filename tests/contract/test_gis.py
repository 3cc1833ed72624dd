"""Contract of the GIS adapter with the address register simulator, served for real."""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
import pytest_asyncio

from adapters.gis import GisClient, client_from_url, service
from hub.errors import PermanentError, TransientError
from hub.reliability.consumer import Unit
from hub.reliability.retry import (
    InvalidResponse,
    Refused,
    RetryPolicy,
    UnavailableError,
    UnexpectedAnswer,
)
from schemas.addresses import AddressResolutionFailed, AddressResolved, ResolveAddress
from schemas.topics import BY_NAME, GIS
from simulators.faults import Faults
from simulators.gis.app import DELETED_CODE, FAILING_CODE, REFERENCE, create_app
from simulators.municipality import SyntheticMunicipality
from simulators.serving import serving
from tests.contract.common import FAST, every_fault, faulted
from tests.contract.common import mocked as mocked_port

RESOLVED = BY_NAME["gis.address.resolved.v1"]
UNKNOWN = "123456789"


@pytest.fixture(scope="module")
def town() -> SyntheticMunicipality:
    town = SyntheticMunicipality("riga", seed=11, children=40)
    assert UNKNOWN not in town.addresses
    return town


@pytest_asyncio.fixture(scope="module")
async def url(town: SyntheticMunicipality) -> AsyncIterator[str]:
    async with serving(create_app(town), name="gis") as served:
        yield served.url


@pytest_asyncio.fixture
async def client(url: str) -> AsyncIterator[GisClient]:
    async with client_from_url(url, timeout=2.0, policy=FAST) as client:
        yield client


def request(code: str) -> ResolveAddress:
    return ResolveAddress.new(
        producer="allocation", municipality="riga", subject_ref="CH-0a1b2c3d4e5f", address_code=code
    )


async def handle(client: GisClient, message: ResolveAddress) -> list[dict[str, Any]]:
    """Run the adapter's handler on ``message``; the messages it emitted, as published."""
    (handler,) = service(client).handlers
    fetched = await handler.fetch(message)
    unit = Unit()
    handler.apply(unit, message, fetched)
    assert not unit.statements
    assert all(row.topic == RESOLVED.name for row in unit.outbox)
    assert all(row.key == message.subject_ref.encode() for row in unit.outbox)
    return [json.loads(row.value) for row in unit.outbox]


# --------------------------------------------------------------------------- the register


async def test_reference_point_agrees_with_domain(client: GisClient) -> None:
    record = await client.address(REFERENCE.code)
    assert record is not None and record.current
    assert record.full_address == "Krišjāņa Barona iela 1, Rīga, LV-1050"
    assert record.postcode == "LV-1050"
    assert (record.lks92.northing, record.lks92.easting) == (311_789.9, 507_150.9)
    assert record.wgs84.latitude == pytest.approx(56.949673, abs=1e-6)
    assert record.wgs84.longitude == pytest.approx(24.117556, abs=1e-6)


async def test_an_address_of_the_town(town: SyntheticMunicipality, client: GisClient) -> None:
    address = next(a for a in town.addresses.values() if a.in_municipality)
    record = await client.address(address.code)
    assert record is not None and record.status == "EKS"
    assert record.full_address == address.full
    assert record.territory_code == address.territory_code == town.territory
    assert (record.lks92.northing, record.lks92.easting) == (address.northing, address.easting)
    n_from, n_to, e_from, e_to = town.box
    assert n_from <= record.lks92.northing <= n_to and e_from <= record.lks92.easting <= e_to
    assert 56.8 < record.wgs84.latitude < 57.1 and 23.8 < record.wgs84.longitude < 24.4


async def test_unknown_address(client: GisClient) -> None:
    assert await client.address(UNKNOWN) is None
    message = request(UNKNOWN)
    (emitted,) = await handle(client, message)
    failed = AddressResolutionFailed.model_validate(emitted)
    assert failed.reason == "unknown_address" and failed.permanent
    assert failed.address_code == UNKNOWN and failed.detail
    assert failed.correlation_id == message.correlation_id
    assert failed.causation_id == message.event_id and failed.producer == GIS


async def test_deleted_address_is_not_current(client: GisClient) -> None:
    record = await client.address(DELETED_CODE)
    assert record is not None and record.status == "DEL" and not record.current
    (emitted,) = await handle(client, request(DELETED_CODE))
    failed = AddressResolutionFailed.model_validate(emitted)
    assert failed.reason == "not_current" and failed.permanent and "DEL" in failed.detail


async def test_failing_address_is_unavailable(client: GisClient) -> None:
    with pytest.raises(UnavailableError, match="500"):
        await client.address(FAILING_CODE)
    (handler,) = service(client).handlers
    with pytest.raises(TransientError):  # the runtime parks the request and tries again
        await handler.fetch(request(FAILING_CODE))


async def test_resolved_address_keeps_the_flow(
    town: SyntheticMunicipality, client: GisClient
) -> None:
    code = town.children[0].address_code
    address = town.addresses[code]
    message = request(code)
    (emitted,) = await handle(client, message)
    resolved = AddressResolved.model_validate(emitted)
    assert resolved.correlation_id == message.correlation_id
    assert resolved.causation_id == message.event_id
    assert resolved.subject_ref == message.subject_ref and resolved.municipality == "riga"
    assert resolved.full_address == address.full and resolved.postcode == address.postcode
    assert resolved.territory_code == address.territory_code
    assert resolved.lks92.northing == address.northing
    assert resolved.lks92.easting == address.easting
    assert RESOLVED.parse(json.dumps(emitted)) == resolved


async def test_code_that_is_not_nine_digits_is_refused(url: str) -> None:
    async with httpx.AsyncClient(base_url=url) as http:
        assert (await http.get("/v1/addresses/12345")).status_code == 422
        unknown = await http.get(f"/v1/addresses/{UNKNOWN}")
        assert unknown.status_code == 404 and unknown.json() == {"error": "unknown_address"}
        schema = (await http.get("/openapi.json")).json()
    assert schema["info"]["title"] == "GIS / address register simulator"
    assert "/v1/addresses/{code}/distances" in schema["paths"]
    assert {"AddressOut", "DistancesOut", "ErrorBody"} <= set(schema["components"]["schemas"])


async def test_distances_to_institutions(
    town: SyntheticMunicipality, client: GisClient, url: str
) -> None:
    first, second = town.institutions[:2]
    metres = await client.distances(REFERENCE.code, [first.institution_id, second.institution_id])
    assert set(metres) == {first.institution_id, second.institution_id}
    there = town.addresses[first.address_code]
    by_hand = math.sqrt(
        (there.northing - REFERENCE.northing) ** 2 + (there.easting - REFERENCE.easting) ** 2
    )
    assert metres[first.institution_id] == round(by_hand)
    # An institution is 0 m from its own address.
    assert await client.distances(first.address_code, [first.institution_id]) == {
        first.institution_id: 0
    }
    async with httpx.AsyncClient(base_url=url) as http:
        every = (await http.get(f"/v1/addresses/{REFERENCE.code}/distances")).json()
    assert every["from"] == REFERENCE.code
    assert [d["institution_id"] for d in every["distances"]] == [
        i.institution_id for i in town.institutions
    ]
    with pytest.raises(Refused) as refused:
        await client.distances(REFERENCE.code, ["PII-999"])
    assert refused.value.status == 404


# --------------------------------------------------------------------------- injected faults


@every_fault(client_timeout=2.0)
async def test_every_fault_is_transient(
    town: SyntheticMunicipality, faults: Faults, timeout: float, error: type[Exception]
) -> None:
    app = create_app(town, faults)
    retried: list[BaseException] = []
    async with (
        serving(app, name="gis") as served,
        GisClient(served.url, timeout=timeout, policy=FAST, on_retry=retried.append) as client,
    ):
        with pytest.raises(error) as caught:
            await client.address(REFERENCE.code)
        async with httpx.AsyncClient(base_url=served.url) as http:  # never faulted
            health = await http.get("/health")
    assert health.status_code == 200
    assert health.json() == {"status": "ok", "system": "GIS", "addresses": len(town.addresses) + 2}
    assert isinstance(caught.value, TransientError)
    assert len(retried) == FAST.attempts - 1
    assert faulted(app) == FAST.attempts
    if faults.rate_limit_rate:
        assert caught.value.retry_after == 0  # type: ignore[attr-defined]


async def test_half_of_requests_faulted_still_resolves(town: SyntheticMunicipality) -> None:
    app = create_app(town, Faults.spread(0.5, seed=5, timeout_seconds=2))
    patient = RetryPolicy(attempts=10, initial_wait=0.01, max_wait=0.05, max_seconds=15)
    codes = [REFERENCE.code, *list(town.addresses)[:5]]
    async with (
        serving(app, name="gis") as served,
        client_from_url(served.url, timeout=0.3, policy=patient) as client,
    ):
        records = [await client.address(code) for code in codes]
        metres = await client.distances(REFERENCE.code, [town.institutions[0].institution_id])
    assert [r.code for r in records if r is not None] == codes
    assert len(metres) == 1
    assert app.injected["none"] == len(codes) + 1
    assert sum(app.injected.values()) > len(codes) + 1  # some were faulted and retried


# --------------------------------------------------------------------------- broken answers


def mocked(
    answer: Callable[[httpx.Request], httpx.Response],
) -> tuple[GisClient, list[httpx.Request]]:
    return mocked_port(GisClient, answer)


def reference_answer(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "code": REFERENCE.code,
        "status": "EKS",
        "full_address": REFERENCE.full,
        "postcode": REFERENCE.postcode,
        "territory_code": REFERENCE.territory_code,
        "lks92": {"koord_x": REFERENCE.northing, "koord_y": REFERENCE.easting},
        "wgs84": {"lat": 56.949673, "lon": 24.117556},
    }
    body.update(changes)
    return {k: v for k, v in body.items() if v is not None}


@pytest.mark.parametrize(
    "body",
    [
        reference_answer(lks92=None),
        reference_answer(postcode="1050"),
        reference_answer(code="100000002"),
        reference_answer(wgs84={"lat": 56.950673, "lon": 24.117556}),  # about 111 m north
        # KOORD_X and KOORD_Y swapped: outside Latvia's LKS-92 range.
        reference_answer(lks92={"koord_x": REFERENCE.easting, "koord_y": REFERENCE.northing}),
        [1, 2, 3],
    ],
    ids=["no-lks92", "bad-postcode", "other-code", "wgs84-apart", "axes-swapped", "list"],
)
async def test_answer_that_breaks_the_protocol_is_unexpected(body: Any) -> None:
    client, seen = mocked(lambda _request: httpx.Response(200, json=body))
    async with client:
        with pytest.raises(UnexpectedAnswer) as caught:
            await client.address(REFERENCE.code)
    assert isinstance(caught.value, PermanentError)
    assert len(seen) == 1  # not retried


async def test_a_404_that_is_not_unknown_address_is_refused() -> None:
    """A wrong base URL answers 404 for everything: that must not make addresses unknown."""
    client, seen = mocked(lambda _request: httpx.Response(404, json={"detail": "Not Found"}))
    async with client:
        with pytest.raises(Refused) as caught:
            await client.address(REFERENCE.code)
        (handler,) = service(client).handlers
        with pytest.raises(Refused):  # dead-lettered, not published as unknown_address
            await handler.fetch(request(REFERENCE.code))
    assert caught.value.status == 404 and caught.value.error is None
    assert len(seen) == 2  # permanent: not retried


async def test_a_404_unknown_address_is_none() -> None:
    client, _ = mocked(lambda _request: httpx.Response(404, json={"error": "unknown_address"}))
    async with client:
        assert await client.address(UNKNOWN) is None


async def test_the_service_counts_retries_with_the_runners_counter() -> None:
    client, seen = mocked(lambda _request: httpx.Response(503, json={}))
    spec = service(client)
    (handler,) = spec.handlers
    assert spec.clients == (client,)
    counted: list[BaseException] = []
    client.add_retry_listener(counted.append)  # what the runner does once the service starts
    async with client:
        with pytest.raises(UnavailableError):
            await handler.fetch(request(REFERENCE.code))
    assert len(seen) == FAST.attempts and len(counted) == FAST.attempts - 1


async def test_consistent_mocked_answer_is_accepted() -> None:
    client, _ = mocked(lambda _request: httpx.Response(200, json=reference_answer()))
    async with client:
        record = await client.address(REFERENCE.code)
    assert record is not None and record.current


async def test_distances_that_break_the_protocol_are_unexpected() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        assert request.url.params.get_list("institution_id") == ["PII-001", "PII-002"]
        return httpx.Response(
            200,
            json={
                "from": REFERENCE.code,
                "distances": [{"institution_id": "PII-001", "metres": 12}],
            },
        )

    client, _ = mocked(answer)
    async with client:
        with pytest.raises(UnexpectedAnswer):
            await client.distances(REFERENCE.code, ["PII-001", "PII-002"])


# --------------------------------------------------------------------------- given up


@pytest.mark.parametrize(
    ("error", "reason", "permanent"),
    [
        (UnavailableError("GIS answered 503"), "unavailable", False),
        (InvalidResponse("GIS answered with no JSON"), "invalid_response", False),
        (UnexpectedAnswer("GIS answered with wrong fields"), "invalid_response", True),
        (Refused("GIS refused with 404", status=404), "unavailable", True),
    ],
    ids=["unavailable", "broken", "wrong-shape", "refused"],
)
def test_a_request_given_up_publishes_resolution_failed(
    error: BaseException, reason: str, permanent: bool
) -> None:
    (handler,) = service(GisClient("http://gis.test")).handlers
    message = request(REFERENCE.code)
    (failed,) = handler.given_up(message, error)
    assert isinstance(failed, AddressResolutionFailed)
    assert (failed.reason, failed.permanent) == (reason, permanent)
    assert failed.address_code == REFERENCE.code and failed.subject_ref == message.subject_ref
    assert failed.causation_id == message.event_id
    assert failed.correlation_id == message.correlation_id and failed.producer == GIS
    assert str(error) in failed.detail


def test_a_request_given_up_masks_personal_codes() -> None:
    (handler,) = service(GisClient("http://gis.test")).handlers
    error = UnexpectedAnswer("GIS answered for 161175-19997 " + "x" * 600)
    (failed,) = handler.given_up(request(REFERENCE.code), error)
    assert "161175-19997" not in failed.model_dump_json()
    assert "******-*****" in failed.detail and len(failed.detail) == 500
