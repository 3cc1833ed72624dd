"""The notification service's handler on a real SQLite store, with fake channel clients.

Each step does what the runtime does: ``fetch`` (the sends), ``apply`` into a fresh
:class:`Unit`, then one commit of its statements and outbox. A restart is a fresh
:class:`NotifyState` and :class:`Requests` loaded from the same store.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from adapters.notify.config import NotifyConfig
from adapters.notify.letter import LetterEvent
from adapters.notify.service import (
    NOTIFYING,
    RECIPIENT_NAME,
    SCHEMA,
    Channels,
    LetterFeed,
    NotifyState,
    Requests,
    SmsReports,
    escalate_due,
    key_for,
    reference_for,
)
from adapters.notify.sms import parse_report
from adapters.notify.templates import TemplateError
from hub.errors import PermanentError, TransientError
from hub.notice import NoticeLaw
from hub.reliability.consumer import Unit
from hub.reliability.store import Store, Writes
from hub.settings import Settings
from schemas.notifications import DeadlineSchedule, Recipient, SendNotification
from schemas.values import mask_personal_codes
from tests.notify_fakes import Crash, FakeChannel, FakePost

NOW = datetime(2026, 4, 30, 10, 0, tzinfo=UTC)
"""A Thursday: 1 May and 4 May 2026 are public holidays in Latvia."""
CODE = "161175-19997"
PHONE = "+37120000001"
EMAIL = "vecaks@example.lv"
ADDRESS = "101234567"
CALLBACK = "http://hub.example:8711/sms/reports"
RECEIPTS = "notify.receipts.v1"
REQUESTS = "notify.requests.v1"


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now


def config(**settings: Any) -> NotifyConfig:
    """The service's configuration from hub settings (``settings`` changed from the defaults)."""
    return NotifyConfig.of(Settings(_env_file=None, notify_callback="hub.example:8711", **settings))


class Hub:
    """The handler, its state and store, and the fake channels behind it."""

    def __init__(self, store: Store, clock: Clock, *, active: bool, email: tuple[str, ...]) -> None:
        self.store, self.clock = store, clock
        self.eadrese = FakeChannel(clock, "ea-{n}", reaches=active)
        self.email = FakeChannel(clock, "<mail-{n}@example.lv>", *email)
        self.sms = FakeChannel(clock, "sms-{n}")
        self.letter = FakePost(clock)
        self.fakes = (self.eadrese, self.email, self.sms, self.letter)
        self.channels = Channels(
            {"e_adrese": self.eadrese, "email": self.email, "sms": self.sms, "letter": self.letter}
        )
        self.config = config()
        self.state = NotifyState()
        self.handler = self.requests(self.config)

    def requests(self, config: NotifyConfig) -> Requests:
        return Requests(self.state, self.channels, config, self.clock)

    async def restart(self) -> None:
        """A new process: state only from what the store holds."""
        self.state = NotifyState()
        await self.state.load(self.store)
        self.handler = self.requests(self.config)

    async def commit(self, unit: Unit) -> list[tuple[str, dict[str, Any]]]:
        await self.store.commit(
            "notify-adapter", Writes(statements=unit.statements, outbox=unit.outbox)
        )
        return [(row.topic, json.loads(row.value)) for row in unit.outbox]

    async def process(self, message: SendNotification) -> list[tuple[str, dict[str, Any]]]:
        fetched = await self.handler.fetch(message)
        unit = Unit()
        self.handler.apply(unit, message, fetched)
        return await self.commit(unit)

    async def step(self, change: Callable[[Unit], None]) -> list[tuple[str, dict[str, Any]]]:
        unit = Unit()
        change(unit)
        return await self.commit(unit)

    async def record(self, request: SendNotification) -> tuple[str, dict[str, Any]]:
        [(status, body)] = await self.store.query(
            "SELECT status, body FROM notifications WHERE notification_id = ?",
            (str(request.notification_id),),
        )
        return status, json.loads(body)

    async def attempts(self, request: SendNotification) -> dict[str, tuple[str, str | None]]:
        rows = await self.store.query(
            "SELECT channel, state, provider_id FROM attempts WHERE notification_id = ?",
            (str(request.notification_id),),
        )
        return {channel: (state, provider) for channel, state, provider in rows}

    def sends(self) -> tuple[int, ...]:
        """How many sends each channel had: e-adrese, e-mail, SMS, letter."""
        return tuple(len(fake.sent) for fake in self.fakes)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    store = await Store.open(tmp_path / "notify.sqlite3", schema=SCHEMA)
    yield store
    await store.close()


@pytest.fixture
def clock() -> Clock:
    return Clock()


async def make_hub(
    store: Store,
    clock: Clock,
    *,
    active: bool = False,
    email: tuple[str, ...] = ("deliver",),
) -> Hub:
    """The service with an empty store: the e-adrese ``active`` or not, the e-mail answering
    ``email`` in turn (the last repeats)."""
    hub = Hub(store, clock, active=active, email=email)
    await hub.restart()
    return hub


def request(
    *,
    code: str | None = CODE,
    email: str | None = EMAIL,
    phone: str | None = PHONE,
    address: str | None = ADDRESS,
    language: str = "lv",
    channel: str | None = None,
    variables: dict[str, str] | None = None,
    days: int | None = None,
) -> SendNotification:
    """A notification of an offer; with ``days``, its deadline schedule from the law's
    rules, for sending from NOW's day on (as the allocation service gives it)."""
    deadlines = None
    if days is not None:
        first = NOW.date()
        deadlines = DeadlineSchedule(
            first_day=first, respond_by=NoticeLaw().schedule(first, 14, days, NOTIFYING)
        )
    return SendNotification.new(
        producer="allocation-service",
        municipality="riga",
        notification_id=uuid.uuid4(),
        child_ref="CH-5f2a9c1b7d0e",
        purpose="offer",
        offer_id=uuid.uuid4(),
        recipient=Recipient(
            personal_code=code, email=email, phone=phone, postal_address_code=address
        ),
        language=language,
        template="offer",
        variables=variables
        or {
            "institution": "PII Saulīte",
            "group": "2023-lv",
            "start_date": "2026-09-01",
            "response_days": "15",
        },
        channel=channel,
        deadlines=deadlines,
    )


def kinds(emitted: list[tuple[str, dict[str, Any]]]) -> list[tuple[str, str]]:
    return [(m["event_type"], m.get("channel") or "") for _, m in emitted]


def on(channel: str, emitted: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    return [m for _, m in emitted if m.get("channel") == channel]


def report(sms_id: str, status: str, at: datetime) -> Any:
    return parse_report(
        {"sms_id": sms_id, "reference": "PII-X", "status": status, "at": at.isoformat()}
    )


def posted(seq: int, letter_id: str, at: datetime) -> LetterEvent:
    return LetterEvent(
        seq=seq,
        letter_id=letter_id,
        reference="PII-X",
        status="posted",
        at=at,
        tracking_number="RR123456785LV",
    )


# --------------------------------------------------------------------------- e-adrese


async def test_an_active_e_adrese_is_the_only_channel_used(store: Store, clock: Clock) -> None:
    hub = await make_hub(store, clock, active=True)
    req = request(days=15)
    emitted = await hub.process(req)

    assert hub.eadrese.checked == [CODE]
    assert [code for code, _ in hub.eadrese.sent] == [CODE]
    assert hub.sends() == (1, 0, 0, 0)
    # When the parents count as notified is the allocation service's to say (hub.notice).
    assert kinds(emitted) == [("NotificationSent", "e_adrese")]
    assert {topic for topic, _ in emitted} == {RECEIPTS}
    [sent] = (m for _, m in emitted)
    assert sent["provider_message_id"] == "ea-1"
    assert sent["notification_id"] == str(req.notification_id)
    assert sent["offer_id"] == str(req.offer_id)
    assert sent["causation_id"] == str(req.event_id)
    assert sent["correlation_id"] == str(req.correlation_id)
    assert datetime.fromisoformat(sent["sent_at"]) == NOW

    [outgoing] = hub.eadrese.messages
    assert outgoing.key == key_for(req, "e_adrese") == f"{req.offer_id}:e_adrese"
    assert outgoing.reference == reference_for(req)
    # The allocation service's deadline for sending on NOW's day: deemed notified on 6 May,
    # 15 days after: 21 May 2026, a Thursday.
    assert "ne vēlāk kā 2026. gada 21. maijā" in outgoing.text
    assert "dienu laikā" not in outgoing.text
    assert "2026. gada 1. septembrī" in outgoing.text

    status, body = await hub.record(req)
    assert (status, body["channel"]) == ("confirmed", "e_adrese")
    assert await hub.attempts(req) == {"e_adrese": ("confirmed", "ea-1")}


async def test_the_e_adrese_deadline_follows_the_request_period_in_english(
    store: Store, clock: Clock
) -> None:
    hub = await make_hub(store, clock, active=True)
    clock.now = datetime(2026, 5, 5, 10, 0, tzinfo=UTC)  # deemed on Thursday 7 May
    variables = {
        "institution": "PII Saulīte",
        "group": "2023-lv",
        "start_date": "2026-09-01",
        "response_days": "10",
    }
    req = request(language="en", variables=variables, days=10)
    req = req.model_copy(
        update={"deadlines": req.deadlines.model_copy(update={"first_day": date(2026, 5, 5)})}
        if req.deadlines
        else {}
    )
    await hub.process(req)
    # Deemed notified on 7 May; 7 May + 10 days = Sunday 17 May: the term ends on Monday 18 May.
    text = hub.eadrese.messages[0].text
    assert "Please accept or decline the offer by 18 May 2026." in text


# --------------------------------------------------------------------------- e-mail, SMS


async def test_without_e_adrese_an_accepted_e_mail_is_delivered_and_sms_unused(
    store: Store, clock: Clock
) -> None:
    hub = await make_hub(store, clock, active=False)
    req = request(language="en")
    emitted = await hub.process(req)

    assert hub.sends() == (0, 1, 0, 0)
    [(to, outgoing)] = hub.email.sent
    assert (to, outgoing.language) == (EMAIL, "en")
    assert outgoing.key == f"{req.offer_id}:email"
    assert "within 15 days of receiving this message" in outgoing.text

    assert [m["event_type"] for m in on("email", emitted)] == [
        "NotificationSent",
        "NotificationDelivered",
    ]
    assert all(m["provider_message_id"] == "<mail-1@example.lv>" for m in on("email", emitted))
    assert {m["event_type"] for m in on("e_adrese", emitted)} == {"NotificationFailed"}
    assert on("sms", emitted) == on("letter", emitted) == []
    status, _ = await hub.record(req)
    assert status == "confirmed"
    assert (await hub.attempts(req))["email"] == ("confirmed", "<mail-1@example.lv>")


async def test_no_personal_code_means_no_e_adrese_lookup(store: Store, clock: Clock) -> None:
    hub = await make_hub(store, clock, active=True)
    emitted = await hub.process(request(code=None))
    assert hub.eadrese.checked == []
    assert hub.sends() == (0, 1, 0, 0)
    assert ("NotificationSent", "email") in kinds(emitted)


async def test_refused_e_mail_then_sms_confirmed_by_its_delivery_report(
    store: Store, clock: Clock
) -> None:
    hub = await make_hub(store, clock, email=("reject",))
    req = request()
    emitted = await hub.process(req)

    assert hub.sends() == (0, 1, 1, 0)
    [(to, outgoing)] = hub.sms.sent
    assert (to, outgoing.callback_url) == (PHONE, CALLBACK)
    assert outgoing.key == f"{req.offer_id}:sms"
    [failed] = on("email", emitted)
    assert failed["event_type"] == "NotificationFailed"
    assert failed["permanent"] is True
    assert failed["reason"] == "recipient_refused"
    assert [m["event_type"] for m in on("sms", emitted)] == ["NotificationSent"]
    assert on("sms", emitted)[0]["provider_message_id"] == "sms-1"

    status, body = await hub.record(req)
    assert (status, body["channel"]) == ("awaiting", "sms")
    assert datetime.fromisoformat(body["escalate_at"]) == NOW + timedelta(days=2)
    assert await hub.attempts(req) == {"email": ("rejected", None), "sms": ("accepted", "sms-1")}

    reports = SmsReports(hub.state)
    delivered_at = NOW + timedelta(minutes=3)
    emitted = await hub.step(lambda u: reports.apply(u, report("sms-1", "delivered", delivered_at)))
    assert kinds(emitted) == [("NotificationDelivered", "sms")]
    [(topic, delivered)] = emitted
    assert topic == RECEIPTS
    assert datetime.fromisoformat(delivered["delivered_at"]) == delivered_at
    assert delivered["notification_id"] == str(req.notification_id)
    assert delivered["provider_message_id"] == "sms-1"
    assert (await hub.record(req))[0] == "confirmed"
    assert (await hub.attempts(req))["sms"] == ("confirmed", "sms-1")

    # The gateway sends the same report again: nothing changes.
    unit = Unit()
    reports.apply(unit, report("sms-1", "delivered", delivered_at))
    assert unit.outbox == [] and unit.statements == []


async def test_a_report_for_an_sms_not_sent_here_is_refused(store: Store, clock: Clock) -> None:
    hub = await make_hub(store, clock)
    reports = SmsReports(hub.state)
    with pytest.raises(PermanentError):
        reports.apply(Unit(), report("sms-unknown", "delivered", NOW))


async def test_a_failed_sms_goes_by_registered_letter_deemed_seven_days_after_posting(
    store: Store, clock: Clock
) -> None:
    hub = await make_hub(store, clock, email=("reject",))
    req = request()
    await hub.process(req)
    reports = SmsReports(hub.state)
    failed_at = NOW + timedelta(minutes=5)
    emitted = await hub.step(
        lambda u: reports.apply(u, report("sms-1", "permanent_failure", failed_at))
    )
    assert kinds(emitted) == [("NotificationFailed", "sms"), ("SendNotification", "letter")]
    (_, failed), (topic, escalated) = emitted
    assert failed["permanent"] is True
    assert topic == REQUESTS
    assert escalated["notification_id"] == str(req.notification_id)
    assert escalated["offer_id"] == str(req.offer_id)
    assert escalated["causation_id"] == str(req.event_id)
    assert escalated["recipient"]["postal_address_code"] == ADDRESS
    assert escalated["variables"] == req.variables
    assert (await hub.attempts(req))["sms"] == ("failed", "sms-1")

    # The escalation comes back through the requests topic.
    letter_request = hub.handler.parse(json.dumps(escalated).encode())
    clock.now = NOW + timedelta(hours=1)
    emitted = await hub.process(letter_request)
    [(address, outgoing)] = hub.letter.sent
    assert (address, outgoing.addressee) == (ADDRESS, RECIPIENT_NAME)
    assert outgoing.key == f"{req.offer_id}:letter"
    assert outgoing.reference == reference_for(req)
    assert hub.sends() == (0, 1, 1, 1)
    assert kinds(emitted) == [("NotificationSent", "letter")]
    status, body = await hub.record(req)
    assert (status, body["channel"]) == ("awaiting", "letter")

    # The escalation timer does not send a second letter.
    assert await hub.step(lambda u: escalate_due(hub.state, u, NOW + timedelta(days=30))) == []

    feed = LetterFeed(hub.state, hub.letter)
    posted_at = datetime(2026, 5, 2, 9, 0, tzinfo=UTC)
    emitted = await hub.step(lambda u: feed.apply(u, posted(1, "letter-1", posted_at)))
    assert kinds(emitted) == [("NotificationPosted", "letter")]
    [(_, posting)] = emitted
    assert datetime.fromisoformat(posting["posted_at"]) == posted_at
    assert posting["provider_message_id"] == "RR123456785LV"
    assert (await hub.record(req))[0] == "confirmed"
    assert (await hub.attempts(req))["letter"] == ("confirmed", "letter-1")

    # The same feed entry read again changes nothing.
    unit = Unit()
    feed.apply(unit, posted(1, "letter-1", posted_at))
    assert unit.outbox == [] and unit.statements == []


async def test_letter_feed_waits_for_an_unknown_posted_letter_for_a_while(
    store: Store, clock: Clock
) -> None:
    """The wait runs on a timer from when the letter is first seen, whatever the service's
    clock (a simulated one may be days from the post office's) or the letter's time say."""
    hub = await make_hub(store, clock)
    seconds = [1000.0]
    feed = LetterFeed(hub.state, hub.letter, timer=lambda: seconds[0])
    clock.now = NOW + timedelta(days=30)  # the service's time is far ahead of the post's
    hub.letter.feed.append(posted(1, "letter-of-a-batch-not-stored-yet", NOW))
    waiting = await feed.poll(None)
    assert (list(waiting.items), waiting.position) == ([], "0")
    seconds[0] += feed.grace - 1
    waiting = await feed.poll(None)
    assert (list(waiting.items), waiting.position) == ([], "0")
    seconds[0] += 1
    page = await feed.poll(None)
    assert [event.seq for event in page.items] == [1] and page.position == "1"


async def test_letter_feed_ignores_letters_of_others_and_events_before_posting(
    store: Store, clock: Clock
) -> None:
    hub = await make_hub(store, clock)
    feed = LetterFeed(hub.state, hub.letter)
    unit = Unit()
    feed.apply(unit, posted(1, "someone-elses", NOW))
    accepted = LetterEvent(
        seq=2, letter_id="letter-1", reference="PII-X", status="accepted", at=NOW
    )
    feed.apply(unit, accepted)
    assert unit.outbox == [] and unit.statements == []


async def test_a_posted_letter_is_reported_with_the_moment_the_post_took_it(
    store: Store, clock: Clock
) -> None:
    hub = await make_hub(store, clock)
    req = request(channel="letter")
    await hub.process(req)
    [(_, outgoing)] = hub.letter.sent
    assert outgoing.post_on == NOW.date()  # the post is asked to post it the day it is sent
    feed = LetterFeed(hub.state, hub.letter)
    posted_at = datetime(2026, 5, 1, 22, 30, tzinfo=UTC)  # 2 May, 01:30 in Riga
    [(_, posting)] = await hub.step(lambda u: feed.apply(u, posted(1, "letter-1", posted_at)))
    assert posting["event_type"] == "NotificationPosted"
    assert datetime.fromisoformat(posting["posted_at"]) == posted_at


# --------------------------------------------------------------------------- escalation


async def test_an_unconfirmed_sms_is_escalated_once_when_due(store: Store, clock: Clock) -> None:
    hub = await make_hub(store, clock, email=("reject",))
    req = request()
    await hub.process(req)

    def tick(at: datetime) -> Callable[[Unit], None]:
        return lambda unit: escalate_due(hub.state, unit, at)

    assert await hub.step(tick(NOW + timedelta(days=2) - timedelta(seconds=1))) == []
    emitted = await hub.step(tick(NOW + timedelta(days=2)))
    assert kinds(emitted) == [("SendNotification", "letter")]
    [(topic, escalated)] = emitted
    assert topic == REQUESTS
    assert escalated["notification_id"] == str(req.notification_id)
    assert escalated["causation_id"] == str(req.event_id)
    assert (await hub.record(req))[1]["escalated"] is True

    assert await hub.step(tick(NOW + timedelta(days=3))) == []
    await hub.restart()  # the flag is stored, not only in memory
    assert await hub.step(tick(NOW + timedelta(days=4))) == []


async def test_escalation_needs_a_postal_address(store: Store, clock: Clock) -> None:
    hub = await make_hub(store, clock, email=("reject",))
    req = request(address=None)
    await hub.process(req)
    assert await hub.step(lambda u: escalate_due(hub.state, u, NOW + timedelta(days=5))) == []
    assert hub.letter.sent == []


async def test_confirmed_notifications_are_not_escalated(store: Store, clock: Clock) -> None:
    hub = await make_hub(store, clock)
    await hub.process(request())  # e-mail delivered
    assert await hub.step(lambda u: escalate_due(hub.state, u, NOW + timedelta(days=5))) == []


# --------------------------------------------------------------------------- idempotency


@pytest.mark.parametrize("active", [True, False])
async def test_a_redelivered_request_sends_nothing_after_a_restart(
    store: Store, clock: Clock, active: bool
) -> None:
    hub = await make_hub(store, clock, active=active, email=("reject",))
    req = request()
    first = await hub.process(req)
    assert ("NotificationSent", "e_adrese" if active else "sms") in kinds(first)
    before = hub.sends()

    await hub.restart()
    clock.now = NOW + timedelta(minutes=10)
    again = await hub.process(req)
    assert hub.sends() == before
    assert not {"NotificationSent", "NotificationDelivered", "NotificationDeemedNotified"} & {
        m["event_type"] for _, m in again
    }
    assert (await hub.record(req))[0] == ("confirmed" if active else "awaiting")


@pytest.mark.parametrize("crash", ["during the send", "before the outcome was stored"])
async def test_an_e_mail_of_unknown_outcome_is_never_sent_again(
    store: Store, clock: Clock, crash: str
) -> None:
    hub = await make_hub(
        store, clock, email=("crash" if crash == "during the send" else "deliver",)
    )
    req = request()
    if crash == "during the send":
        with pytest.raises(Crash):
            await hub.handler.fetch(req)
    else:
        await hub.handler.fetch(req)  # sent, but apply's writes are never committed
    assert len(hub.email.sent) == 1
    assert await hub.attempts(req) == {"email": ("intent", None)}  # committed before the send

    await hub.restart()
    emitted = await hub.process(req)
    assert len(hub.email.sent) == 1
    [failed] = on("email", emitted)
    assert failed["event_type"] == "NotificationFailed"
    assert failed["permanent"] is False
    assert [m["event_type"] for m in on("sms", emitted)] == ["NotificationSent"]
    assert len(hub.sms.sent) == 1
    assert (await hub.attempts(req))["email"] == ("uncertain", None)

    # And once more after another restart: still no second e-mail, nor a second SMS.
    await hub.restart()
    emitted = await hub.process(req)
    assert hub.sends() == (0, 1, 1, 0)
    assert "NotificationSent" not in {m["event_type"] for _, m in emitted}


async def test_an_e_mail_the_server_deferred_is_tried_again(store: Store, clock: Clock) -> None:
    hub = await make_hub(store, clock, email=("greylist", "deliver"))
    req = request()
    with pytest.raises(TransientError):
        await hub.handler.fetch(req)
    assert await hub.attempts(req) == {"email": ("failed", None)}
    assert hub.sms.sent == []

    emitted = await hub.process(req)  # the parked message is tried again
    assert len(hub.email.sent) == 2
    assert [m["event_type"] for m in on("email", emitted)] == [
        "NotificationSent",
        "NotificationDelivered",
    ]
    assert hub.sms.sent == []


# --------------------------------------------------------------------------- given up


async def test_given_up_falls_back_to_a_registered_letter(store: Store, clock: Clock) -> None:
    handler = (await make_hub(store, clock)).handler
    req = request()
    [escalated] = handler.given_up(req, TransientError("all channels down"))
    assert isinstance(escalated, SendNotification)
    assert escalated.channel == "letter"
    assert escalated.notification_id == req.notification_id
    assert escalated.offer_id == req.offer_id
    assert escalated.recipient == req.recipient
    assert (escalated.template, escalated.language, escalated.variables) == (
        req.template,
        req.language,
        req.variables,
    )
    assert escalated.causation_id == req.event_id
    assert escalated.correlation_id == req.correlation_id
    assert escalated.event_id != req.event_id

    sms_only = request(channel="sms")
    assert [m.channel for m in handler.given_up(sms_only, TransientError("x"))] == ["letter"]
    assert handler.given_up(request(channel="letter"), TransientError("x")) == ()
    assert handler.given_up(request(address=None), TransientError("x")) == ()


# --------------------------------------------------------------------------- personal data


async def test_texts_and_references_never_show_the_personal_code(
    store: Store, clock: Clock
) -> None:
    hub = await make_hub(store, clock, email=("reject",))
    req = request()
    await hub.process(req)
    await hub.process(request(channel="letter"))
    messages = hub.email.messages + hub.sms.messages + hub.letter.messages
    assert len(messages) == 3
    for outgoing in messages:
        shown = f"{outgoing.subject}\n{outgoing.text}\n{outgoing.reference}\n{outgoing.key}"
        assert CODE not in shown
        assert CODE.replace("-", "") not in shown
        assert mask_personal_codes(shown) == shown
        assert outgoing.reference in outgoing.text


def test_references_come_from_ids_only() -> None:
    for _ in range(200):
        req = request()
        reference = reference_for(req)
        assert re.fullmatch(r"PII-[0-9A-F]{8}", reference)
        assert reference == f"PII-{str(req.offer_id)[:8].upper()}"
        assert mask_personal_codes(reference) == reference
        assert CODE not in reference
    no_offer = request().model_copy(update={"offer_id": None})
    assert reference_for(no_offer) == f"PII-{str(no_offer.notification_id)[:8].upper()}"


async def test_a_request_value_with_a_personal_code_is_refused_before_any_send(
    store: Store, clock: Clock
) -> None:
    hub = await make_hub(store, clock, active=True)
    variables = {
        "institution": f"PII {CODE}",
        "group": "2023-lv",
        "start_date": "2026-09-01",
    }
    with pytest.raises(TemplateError) as caught:
        await hub.handler.fetch(request(variables=variables))
    assert CODE not in str(caught.value)
    assert hub.sends() == (0, 0, 0, 0)
    assert await store.query("SELECT count(*) FROM attempts") == [(0,)]


async def test_a_text_showing_the_recipients_code_is_refused(store: Store, clock: Clock) -> None:
    hub = await make_hub(store, clock)
    handler = hub.requests(config(notify_portal_url=f"https://dome.example.lv/{CODE}"))
    with pytest.raises(TemplateError, match="personal code") as caught:
        await handler.fetch(request())
    assert CODE not in str(caught.value)
    assert hub.sends() == (0, 0, 0, 0)


async def test_close_closes_the_clients(store: Store, clock: Clock) -> None:
    hub = await make_hub(store, clock)
    await hub.handler.close()
    assert all(fake.closed for fake in hub.fakes)
