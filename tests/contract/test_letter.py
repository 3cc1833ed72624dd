"""Contract of the print-and-post (registered letter) simulator and its client, over HTTP."""

from __future__ import annotations

import asyncio
import base64
import re
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import pytest

from adapters.notify.base import Accepted, Outgoing, Rejected
from adapters.notify.letter import LetterClient, LetterPage, client_from_url
from hub.reliability.retry import InvalidResponse, Refused, UnexpectedAnswer
from simulators.faults import Faults
from simulators.letter.app import RIGA, create_app, tracking_number
from simulators.serving import serving
from tests.contract.common import (
    FAST,
    NO_FAULT,
    PATIENT,
    Clock,
    Simulated,
    each_call_fails,
    every_fault,
    faulted,
)
from tests.contract.common import mocked as mocked_port

ADDRESS = "105163882"
NAME = "Anna Bērziņa"
START = datetime(2026, 5, 4, 9, 30, tzinfo=UTC)


def outgoing(n: int = 1, **changes: Any) -> Outgoing:
    fields: dict[str, Any] = {
        "key": f"offer:riga:{n:04d}:letter",
        "subject": "Piedāvājums bērnudārza vietai",
        "text": f"Jūsu bērnam piedāvāta vieta. Atbildiet līdz 18. maijam. Nr. {n}",
        "reference": f"OF-{n:04d}",
    }
    return Outgoing(**{**fields, **changes})


class Post(Simulated):
    @property
    def letters(self) -> dict[str, Any]:
        return dict(self.app.app.state.letters)  # type: ignore[attr-defined]


@pytest.fixture
async def post() -> AsyncIterator[Post]:
    clock = Clock(START)
    app = create_app(post_after=60, clock=clock)
    async with Post.on_loopback(app, clock, name="letter") as post:
        yield post


@pytest.fixture
async def client(post: Post) -> AsyncIterator[LetterClient]:
    async with client_from_url(post.url, policy=FAST) as port:
        assert isinstance(port, LetterClient)
        yield port


def test_tracking_numbers_carry_the_s10_check_digit() -> None:
    assert tracking_number(47312482) == "RR473124829LV"  # the UPU's worked example
    assert tracking_number(12345678) == "RR123456785LV"
    assert tracking_number(1, service="RA", country="EE") == "RA000000014EE"
    assert tracking_number(0) == "RR000000005LV"  # 11 - 0 = 11 is written 5
    assert tracking_number(50) == "RR000000500LV"  # 11 - 45 % 11 = 10 is written 0
    with pytest.raises(ValueError, match="eight"):
        tracking_number(10**8)


async def test_a_letter_is_accepted_then_posted(post: Post, client: LetterClient) -> None:
    outcome = await client.send(ADDRESS, outgoing(1, addressee=NAME))
    assert isinstance(outcome, Accepted)
    assert outcome.at == START and not outcome.delivered
    page = await client.events(0)
    assert [(e.seq, e.letter_id, e.status) for e in page.events] == [
        (1, outcome.provider_message_id, "accepted")
    ]
    assert page.events[0].tracking_number is None and page.last == 1

    post.clock.now = START + timedelta(seconds=59)
    assert (await client.events(1)).events == ()
    post.clock.now = START + timedelta(seconds=61)
    later = await client.events(1)
    [posted] = later.events
    assert (posted.seq, posted.letter_id, posted.reference, posted.status) == (
        2,
        outcome.provider_message_id,
        "OF-0001",
        "posted",
    )
    assert posted.at == START + timedelta(seconds=60)
    assert posted.tracking_number is not None
    assert re.fullmatch(r"RR\d{9}LV", posted.tracking_number)
    assert later.last == 2
    assert [e.status for e in (await client.events(0)).events] == ["accepted", "posted"]

    async with httpx.AsyncClient(base_url=post.url, headers=NO_FAULT) as http:
        letter = await http.get(f"/v1/letters/{outcome.provider_message_id}")
        missing = await http.get("/v1/letters/L99999999")
        feed = await http.get("/v1/events", params={"after": 0})
        health = await http.get("/health")
    assert letter.json()["status"] == "posted"
    assert letter.json()["tracking_number"] == posted.tracking_number
    assert missing.status_code == 404 and missing.json()["error"] == "not_found"
    for answer in (letter, feed):  # the recipient's name and address stay inside the post
        assert ADDRESS not in answer.text and "Bērziņa" not in answer.text
    assert "tracking_number" not in feed.json()["events"][0]  # only on posted
    assert health.json() == {
        "status": "ok",
        "system": "post",
        "letters": 1,
        "clock": post.clock.now.isoformat(),  # the time it keeps
    }

    again = await client.send(ADDRESS, outgoing(1, addressee=NAME))  # asked again once posted
    assert again == outcome
    assert len(post.letters) == 1


async def test_letters_are_posted_in_the_order_they_fall_due(
    post: Post, client: LetterClient
) -> None:
    ids = []
    for n in range(3):
        post.clock.now = START + timedelta(seconds=n)
        sent = await client.send(ADDRESS, outgoing(n, addressee=NAME))
        assert isinstance(sent, Accepted)
        ids.append(sent.provider_message_id)
    post.clock.now = START + timedelta(hours=1)
    page = await client.events(3)
    assert [(e.seq, e.letter_id) for e in page.events] == [(4, ids[0]), (5, ids[1]), (6, ids[2])]
    tracking = [e.tracking_number for e in page.events]
    assert len(set(tracking)) == 3
    assert [e.at for e in page.events] == [START + timedelta(seconds=60 + n) for n in range(3)]


PDF = b"%PDF-1.7\n" + bytes(range(256)) * 8


def riga(day: int, hour: int, minute: int = 0, second: int = 0) -> datetime:
    """A moment of May 2026 in Riga (summer time, UTC+3), in UTC."""
    return datetime(2026, 5, day, hour, minute, second, tzinfo=RIGA).astimezone(UTC)


async def test_a_letter_with_a_posting_day_is_posted_that_day(
    post: Post, client: LetterClient
) -> None:
    sent = await client.send(
        ADDRESS, outgoing(1, addressee=NAME, post_on=date(2026, 5, 6), printed=PDF)
    )
    assert isinstance(sent, Accepted)
    [letter] = post.letters.values()
    assert letter.document == PDF and letter.body.post_on == date(2026, 5, 6)
    post.clock.now = riga(5, 23, 59, 59)  # the day before: not yet
    assert [e.status for e in (await client.events(0)).events] == ["accepted"]
    post.clock.now = riga(6, 0, 0, 1)
    [posted] = (await client.events(1)).events
    assert posted.status == "posted" and posted.at == riga(6, 0)
    async with httpx.AsyncClient(base_url=post.url, headers=NO_FAULT) as http:
        feed = (await http.get("/v1/events")).text
        shown = (await http.get(f"/v1/letters/{sent.provider_message_id}")).json()
    assert "document" not in feed and base64.b64encode(PDF).decode()[:20] not in feed
    assert shown["post_on"] == "2026-05-06" and "document_base64" not in shown


async def test_a_letter_accepted_on_its_posting_day_is_posted_that_day(post: Post) -> None:
    post.clock.now = riga(4, 23, 59, 30)  # 30 s before midnight, post_after is 60 s
    late, on_time = (f"L{n:08d}" for n in (1, 2))
    async with client_from_url(post.url, policy=FAST) as client:
        await client.send(ADDRESS, outgoing(1, addressee=NAME, post_on=date(2026, 5, 4)))
        post.clock.now = riga(5, 0, 5)
        await client.send(ADDRESS, outgoing(2, addressee=NAME, post_on=date(2026, 5, 5)))
        post.clock.now = riga(5, 12)
        events = (await client.events(0)).events
    assert [(e.letter_id, e.status, e.at) for e in events] == [
        (late, "accepted", riga(4, 23, 59, 30)),
        (late, "posted", riga(4, 23, 59, 59)),  # still on its day, not 60 s later
        (on_time, "accepted", riga(5, 0, 5)),
        (on_time, "posted", riga(5, 0, 6)),  # post_after (60 s) after it was accepted
    ]


async def test_a_letter_accepted_after_its_posting_day_is_posted_later(
    post: Post, client: LetterClient
) -> None:
    sent = await client.send(ADDRESS, outgoing(1, addressee=NAME, post_on=date(2026, 5, 3)))
    assert isinstance(sent, Accepted) and sent.at == START
    post.clock.now = START + timedelta(seconds=61)
    [posted] = (await client.events(1)).events
    assert posted.status == "posted" and posted.at == START + timedelta(seconds=60)
    assert posted.at.astimezone(RIGA).date() == date(2026, 5, 4)  # the day it really went


async def test_the_document_and_the_day_are_part_of_the_letter(
    post: Post, client: LetterClient
) -> None:
    first = await client.send(ADDRESS, outgoing(1, addressee=NAME, printed=PDF))
    again = await client.send(ADDRESS, outgoing(1, addressee=NAME, printed=PDF))
    reprinted = await client.send(ADDRESS, outgoing(1, addressee=NAME, printed=PDF + b"\n"))
    unprinted = await client.send(ADDRESS, outgoing(1, addressee=NAME))
    dated = await client.send(
        ADDRESS, outgoing(1, addressee=NAME, printed=PDF, post_on=date(2026, 5, 5))
    )
    assert isinstance(first, Accepted) and again == first
    assert reprinted == unprinted == dated == Rejected("idempotency_conflict")
    assert len(post.letters) == 1
    with pytest.raises(Refused) as caught:
        await client.send(ADDRESS, outgoing(2, addressee=NAME, printed=b"PK\x03\x04 an edoc"))
    assert caught.value.status == 400 and caught.value.error == "invalid_request"
    assert len(post.letters) == 1


async def test_the_feed_is_paged_and_numbered(post: Post, client: LetterClient) -> None:
    for n in range(5):
        await client.send(ADDRESS, outgoing(n, addressee=NAME))
    post.clock.now = START + timedelta(hours=1)
    seen: list[int] = []
    after = 0
    while True:
        page = await client.events(after, limit=3)
        if not page.events:
            break
        seen += [e.seq for e in page.events]
        after = page.events[-1].seq
        assert page.last == 10
    assert seen == list(range(1, 11))
    assert (await client.events(10)).events == ()
    assert (await client.events(25)).last == 10


async def test_a_real_clock_posts_after_the_delay() -> None:
    app = create_app(post_after=0.2)
    async with (
        serving(app, name="letter") as served,
        client_from_url(served.url, policy=FAST) as port,
    ):
        sent = await port.send(ADDRESS, outgoing(1, addressee=NAME))
        assert isinstance(sent, Accepted)
        assert [e.status for e in (await port.events(0)).events] == ["accepted"]
        await asyncio.sleep(0.25)
        assert [e.status for e in (await port.events(0)).events] == ["accepted", "posted"]


async def test_the_same_key_twice_is_one_letter(post: Post, client: LetterClient) -> None:
    first = await client.send(ADDRESS, outgoing(1, addressee=NAME))
    again = await client.send(ADDRESS, outgoing(1, addressee=NAME))
    assert isinstance(first, Accepted)
    assert again == first
    assert len(post.letters) == 1
    assert len((await client.events(0)).events) == 1


async def test_the_same_key_for_another_letter_is_a_conflict(
    post: Post, client: LetterClient
) -> None:
    await client.send(ADDRESS, outgoing(1, addressee=NAME))
    moved = await client.send("105163883", outgoing(1, addressee=NAME))
    reworded = await client.send(ADDRESS, outgoing(1, text="Cits teksts", addressee=NAME))
    assert moved == reworded == Rejected("idempotency_conflict")
    assert len(post.letters) == 1


@pytest.mark.parametrize("code", ["000000000", "012345678"])
async def test_an_undeliverable_address_is_rejected(
    post: Post, client: LetterClient, code: str
) -> None:
    outcome = await client.send(code, outgoing(1, addressee=NAME))
    assert outcome == Rejected("undeliverable_address")
    assert post.letters == {}
    assert (await client.events(0)).events == ()
    # the key was not used up: the right address goes out under it
    assert isinstance(await client.send(ADDRESS, outgoing(1, addressee=NAME)), Accepted)


async def test_a_broken_address_code_is_refused_without_showing_it(client: LetterClient) -> None:
    with pytest.raises(Refused) as caught:
        await client.send("10516388", outgoing(1, addressee=NAME))
    assert caught.value.status == 400 and caught.value.error == "invalid_request"
    assert "10516388" not in str(caught.value) and "Bērziņa" not in str(caught.value)


async def test_requests_without_a_key_are_bad(post: Post) -> None:
    body = {
        "recipient_name": NAME,
        "address_code": ADDRESS,
        "subject": "s",
        "text": "t",
        "reference": "OF-1",
    }
    async with httpx.AsyncClient(base_url=post.url, headers=NO_FAULT) as http:
        keyless = await http.post("/v1/letters", json=body)
    assert keyless.status_code == 400
    assert keyless.json()["error"] == "missing_idempotency_key"
    assert post.letters == {}


@every_fault()
async def test_every_fault_fails_transiently(
    faults: Faults, timeout: float, error: type[Exception]
) -> None:
    app = create_app(faults=faults)
    sending, _ = await each_call_fails(
        app,
        LetterClient,
        faults,
        timeout,
        error,
        lambda port: port.send(ADDRESS, outgoing(1, addressee=NAME)),
        lambda port: port.events(0),
        name="letter",
    )
    assert app.app.state.letters == {}  # type: ignore[attr-defined]
    assert ADDRESS not in str(sending) and "Bērziņa" not in str(sending)


async def test_half_faulted_posts_each_letter_exactly_once() -> None:
    faults = Faults.spread(0.5, seed=5, timeout_seconds=0.5, retry_after_seconds=0)
    clock = Clock(START)
    app = create_app(faults, post_after=1, clock=clock)
    async with (
        serving(app, name="letter") as served,
        client_from_url(served.url, timeout=0.3, policy=PATIENT) as port,
    ):
        outcomes = await asyncio.gather(
            *(port.send(ADDRESS, outgoing(n, addressee=NAME)) for n in range(20))
        )
        clock.now = START + timedelta(seconds=5)
        events = []
        after = 0
        while page := (await port.events(after, limit=7)).events:
            events += page
            after = page[-1].seq
    assert all(isinstance(outcome, Accepted) for outcome in outcomes)
    ids = sorted(o.provider_message_id for o in outcomes)  # type: ignore[union-attr]
    assert len(set(ids)) == 20 == len(app.app.state.letters)  # type: ignore[attr-defined]
    assert [e.seq for e in events] == list(range(1, 41))
    assert sorted(e.letter_id for e in events if e.status == "accepted") == ids
    assert sorted(e.letter_id for e in events if e.status == "posted") == ids
    assert faulted(app) > 0


def mocked(*answers: httpx.Response) -> tuple[LetterClient, list[httpx.Request]]:
    return mocked_port(LetterClient, *answers)


@pytest.mark.parametrize(
    "answer",
    [
        httpx.Response(201, json={"letter_id": "L1", "status": "accepted"}),
        httpx.Response(
            201, json={"letter_id": "L1", "status": "lost", "accepted_at": "2026-05-04T09:30:00Z"}
        ),
        httpx.Response(201, json=["L1"]),
        httpx.Response(422, json={"error": "no_idea"}),
    ],
    ids=["missing-field", "unknown-status", "not-an-object", "unknown-refusal"],
)
async def test_wrong_shape_is_unexpected_and_not_retried(answer: httpx.Response) -> None:
    port, seen = mocked(answer)
    async with port:
        with pytest.raises(UnexpectedAnswer) as caught:
            await port.send(ADDRESS, outgoing(1, addressee=NAME))
    assert len(seen) == 1
    assert seen[0].headers["Idempotency-Key"] == "offer:riga:0001:letter"
    assert ADDRESS not in str(seen[0].url) and ADDRESS not in str(caught.value)


async def test_another_2xx_is_broken_and_retried() -> None:
    answer = {"letter_id": "L1", "status": "accepted", "accepted_at": "2026-05-04T09:30:00Z"}
    port, seen = mocked(httpx.Response(202, json=answer))
    async with port:
        with pytest.raises(InvalidResponse, match="202"):
            await port.send(ADDRESS, outgoing(1, addressee=NAME))
    assert len(seen) == FAST.attempts


async def test_mocked_acceptance_is_read() -> None:
    answer = {"letter_id": "L7", "status": "posted", "accepted_at": "2026-05-04T12:30:00+03:00"}
    port, seen = mocked(httpx.Response(200, json=answer))
    async with port:
        outcome = await port.send(ADDRESS, outgoing(1, addressee=NAME))
    assert outcome == Accepted("L7", START)
    sent = httpx.Response(200, content=seen[0].content).json()
    assert sent == {
        "recipient_name": NAME,
        "address_code": ADDRESS,
        "subject": "Piedāvājums bērnudārza vietai",
        "text": outgoing(1).text,
        "reference": "OF-0001",
    }


def event(seq: int, **changes: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "seq": seq,
        "letter_id": f"L{seq}",
        "reference": f"OF-{seq}",
        "status": "accepted",
        "at": "2026-05-04T09:30:00Z",
    }
    return {**fields, **changes}


async def test_a_good_page_is_read() -> None:
    body = {
        "events": [event(4), event(5, status="posted", tracking_number="RR123456785LV")],
        "last": 9,
    }
    port, seen = mocked(httpx.Response(200, json=body))
    async with port:
        page = await port.events(3, limit=2)
    assert isinstance(page, LetterPage)
    assert [e.seq for e in page.events] == [4, 5] and page.last == 9
    assert page.events[1].tracking_number == "RR123456785LV"
    assert dict(seen[0].url.params) == {"after": "3", "limit": "2"}


@pytest.mark.parametrize(
    ("body", "limit"),
    [
        ({"events": [event(4), event(6)], "last": 6}, 200),
        ({"events": [event(3), event(4)], "last": 4}, 200),
        ({"events": [event(5)], "last": 5}, 200),
        ({"events": [], "last": 8}, 200),
        ({"events": [event(4), event(5)], "last": 5}, 1),
        ({"events": [event(4)], "last": 2}, 200),
        ({"events": [event(4, status="posted")], "last": 4}, 200),
        ({"events": [event(4, status="posted", tracking_number="123")], "last": 4}, 200),
        ({"events": [event(4, status="lost")], "last": 4}, 200),
        ({"events": [event(4, at="2026-05-04T09:30:00")], "last": 4}, 200),
        ({"events": [event(4)]}, 200),
        ([event(4)], 200),
    ],
    ids=[
        "gap",
        "repeat",
        "skip-first",
        "empty-but-more",
        "over-limit",
        "last-behind",
        "posted-untracked",
        "bad-tracking",
        "unknown-status",
        "naive-time",
        "no-last",
        "not-an-object",
    ],
)
async def test_a_wrong_page_is_unexpected_and_not_retried(body: Any, limit: int) -> None:
    port, seen = mocked(httpx.Response(200, json=body))
    async with port:
        with pytest.raises(UnexpectedAnswer):
            await port.events(3, limit=limit)
    assert len(seen) == 1
