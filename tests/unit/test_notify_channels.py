"""The channel port: every real client and every test fake takes the same ``send`` call and
answers with the same outcomes; and the service built from the hub's settings."""

from __future__ import annotations

import base64
import inspect
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import pytest

from adapters.notify.base import (
    Accepted,
    Attachment,
    ChannelClient,
    HttpChannel,
    Outgoing,
    Rejected,
)
from adapters.notify.config import NotifyConfig, from_settings
from adapters.notify.eadrese import EAdreseClient
from adapters.notify.email import EmailClient
from adapters.notify.letter import LetterClient
from adapters.notify.service import LetterFeed, Requests, SmsReports
from adapters.notify.sms import SmsClient
from hub.reliability.retry import RetryPolicy, UnexpectedAnswer
from hub.settings import Settings
from tests.notify_fakes import FakeChannel, FakePost

AT = datetime(2026, 5, 4, 9, 30, tzinfo=UTC)
CODE = "161175-19997"
MESSAGE = Outgoing(
    key="offer-1:x",
    subject="Piedāvājums",
    text="Jums ir piedāvājums.",
    reference="PII-0B7E4C2A",
    callback_url="http://hub.example:8711/sms/reports",
    addressee="Bērna likumiskajam pārstāvim",
)
ONCE = RetryPolicy(attempts=1, initial_wait=0, max_wait=0, max_seconds=1)

Answer = Callable[[httpx.Request], httpx.Response]
"""What the fake provider answers a request with."""

ACCEPTING: dict[type[HttpChannel], tuple[str, str, Answer]] = {
    EAdreseClient: (
        CODE,
        "/v1/messages",
        lambda _: httpx.Response(
            201, json={"message_id": "ea-1", "server_received_at": AT.isoformat()}
        ),
    ),
    SmsClient: (
        "+37120000001",
        "/v1/messages",
        lambda _: httpx.Response(202, json={"sms_id": "sms-1", "accepted_at": AT.isoformat()}),
    ),
    LetterClient: (
        "101234567",
        "/v1/letters",
        lambda _: httpx.Response(
            201,
            json={"letter_id": "letter-1", "status": "accepted", "accepted_at": AT.isoformat()},
        ),
    ),
}
"""Per HTTP channel: an address, the path a message is posted to, and an acceptance."""


def http_client(kind: type[HttpChannel], answer: Answer) -> tuple[HttpChannel, list[Any]]:
    """A real client of ``kind`` whose provider answers with ``answer``; and the request
    bodies it received."""
    bodies: list[Any] = []

    def provider(request: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(request.content) if request.content else None)
        return answer(request)

    client = kind("http://provider.test", policy=ONCE, transport=httpx.MockTransport(provider))
    return client, bodies


def now() -> datetime:
    return AT


@pytest.fixture
async def clients() -> AsyncIterator[list[ChannelClient]]:
    """One of each: the four real clients and the fakes."""
    made: list[ChannelClient] = [
        http_client(kind, answer)[0] for kind, (_, _, answer) in ACCEPTING.items()
    ]
    made.append(EmailClient("127.0.0.1", 9, sender="pii@example.lv", policy=ONCE, clock=now))
    made += [FakeChannel(now, "id-{n}"), FakePost(now)]
    yield made
    for client in made:
        await client.close()


def positional(function: Callable[..., Any]) -> list[str]:
    """The parameters a call must give, and may give by position (after ``self``)."""
    parameters = list(inspect.signature(function).parameters.values())[1:]
    return [
        p.name
        for p in parameters
        if p.default is inspect.Parameter.empty
        and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    ]


async def test_every_client_and_fake_takes_the_ports_calls(clients: list[ChannelClient]) -> None:
    assert len(clients) == 6
    for client in clients:
        kind = type(client)
        assert isinstance(client, ChannelClient), kind
        for name in ("send", "reaches", "close"):
            assert positional(getattr(kind, name)) == positional(getattr(ChannelClient, name)), (
                kind,
                name,
            )
            assert inspect.iscoroutinefunction(getattr(kind, name)), (kind, name)
        inspect.signature(client.send).bind("to", MESSAGE)


@pytest.mark.parametrize("kind", list(ACCEPTING))
async def test_an_http_channel_answers_accepted_or_rejected(kind: type[HttpChannel]) -> None:
    to, path, accept = ACCEPTING[kind]
    client, bodies = http_client(kind, accept)
    async with client:
        sent = await client.send(to, MESSAGE)
    assert isinstance(sent, Accepted) and not sent.delivered
    assert sent.at == AT and sent.provider_message_id.endswith("-1")
    [body] = bodies
    assert body["reference"] == MESSAGE.reference

    refusal = {"error": "idempotency_conflict"}
    client, _ = http_client(kind, lambda _: httpx.Response(409, json=refusal))
    async with client:
        assert await client.send(to, MESSAGE) == Rejected("idempotency_conflict")

    unknown = {"error": "something_else"}
    client, _ = http_client(kind, lambda _: httpx.Response(422, json=unknown))
    async with client:
        with pytest.raises(UnexpectedAnswer, match="unknown reason") as caught:
            await client.send(to, MESSAGE)
    assert path in str(caught.value) and to not in str(caught.value)


async def test_the_message_says_what_each_channel_passes_on() -> None:
    to, _, accept = ACCEPTING[SmsClient]
    sms, sms_bodies = http_client(SmsClient, accept)
    to_post, _, posted = ACCEPTING[LetterClient]
    post, post_bodies = http_client(LetterClient, posted)
    sealed = replace(
        MESSAGE,
        attachments=(Attachment("lemums.edoc", "application/vnd.etsi.asic-e+zip", b"PK\x03\x04"),),
        post_on=date(2026, 5, 6),
        printed=b"%PDF-1.7 lemums",
    )
    async with sms, post:
        await sms.send(to, MESSAGE)
        await sms.send(to, sealed)
        await post.send(to_post, MESSAGE)
        await post.send(to_post, sealed)
        with pytest.raises(ValueError, match="addressee"):
            await post.send(to_post, Outgoing("k", "s", "t", "r"))
    assert sms_bodies[0]["callback_url"] == MESSAGE.callback_url
    assert sms_bodies[1] == sms_bodies[0]  # an SMS carries no document
    assert post_bodies[0]["recipient_name"] == MESSAGE.addressee
    assert "post_on" not in post_bodies[0] and "document_base64" not in post_bodies[0]
    assert post_bodies[1] == {
        **post_bodies[0],
        "post_on": "2026-05-06",
        "document_base64": base64.b64encode(b"%PDF-1.7 lemums").decode(),
    }  # a letter carries what is printed, not the sealed file
    assert len(post_bodies) == 2  # the letter without addressee never left

    mail = EmailClient("127.0.0.1", 9, sender="pii@example.lv", clock=now)
    built = mail.build("vecaks@example.lv", Outgoing("k", "s", "t", "r", language="en"))
    assert built["Content-Language"] == "en"
    # Refused before any connection (nothing listens on port 9).
    assert await mail.send("not an address", MESSAGE) == Rejected("invalid_address")


async def test_only_the_e_adrese_asks_whether_it_reaches_an_address() -> None:
    asked: list[str] = []

    def check(request: httpx.Request) -> httpx.Response:
        asked.append(request.url.path)
        return httpx.Response(200, json={"active": False})

    eadrese, bodies = http_client(EAdreseClient, check)
    sms, sms_bodies = http_client(SmsClient, check)
    async with eadrese, sms:
        assert await eadrese.reaches(CODE) is False
        assert await sms.reaches("+37120000001") is True
    assert asked == ["/v1/addresses/check"]
    assert CODE in json.dumps(bodies[0])  # in the body only, never in the URL
    assert sms_bodies == []


async def test_the_service_from_settings() -> None:
    settings = Settings(
        _env_file=None,
        municipality="valmiera",
        notify_portal_url="https://pakalpojumi.example.lv/pii/",
        notify_escalate_after=60,
        notify_callback="0.0.0.0:8799",
        notify_rate_sms=42,
    )
    moved = AT + timedelta(days=3)
    spec, state = from_settings(settings, clock=lambda: moved)
    [requests] = spec.handlers
    assert isinstance(requests, Requests)
    try:
        clients = requests.channels.clients
        kinds = {channel: type(client) for channel, client in clients.items()}
        assert kinds == {
            "e_adrese": EAdreseClient,
            "email": EmailClient,
            "sms": SmsClient,
            "letter": LetterClient,
        }
        assert requests.channels.rates["sms"] == 42
        assert requests.clock() == moved
        assert clients["email"]._clock() == moved  # type: ignore[attr-defined]
        assert requests.state is state
        assert requests.config == NotifyConfig(
            portal_url="https://pakalpojumi.example.lv/pii",
            sender="Valmiera pašvaldība",
            escalate_after=timedelta(seconds=60),
            callback="0.0.0.0:8799",
        )
        assert requests.config.callback_url == "http://0.0.0.0:8799/sms/reports"
        assert requests.config.callback_address == ("0.0.0.0", 8799)
        [timer] = spec.timers
        assert timer.interval == 15  # a quarter of the delay, at most 30 s
        feeds = {type(poller): poller for poller in spec.pollers}
        assert set(feeds) == {SmsReports, LetterFeed}
        letters = feeds[LetterFeed]
        assert isinstance(letters, LetterFeed)
        assert letters.client is clients["letter"]
        assert len(spec.tasks) == 1  # the webhook of the SMS delivery reports
    finally:
        await requests.close()
