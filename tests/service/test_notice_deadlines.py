"""The deadline the parents read is the deadline the hub enforces: for every channel that
notifies, and any moment the notice is sent.

The allocation service registers an offer's invitation and sends it with the schedule of
its deadline (``SendNotification.deadlines``); the notification service prints the entry
of the channel and the day it sends on, in the message and in the sealed PDF; the receipt
of that send (or of the letter's posting) comes back and the allocation service sets the
deadline it enforces (``OfferDeadlineSet``). Over random sending moments — around midnight
in Riga, on weekends, around public holidays, a day off moved by the rules file, a change
of summer time — the three are the same date.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.notify.config import NotifyConfig
from adapters.notify.service import Channels, NotifyState, Requests
from adapters.notify.templates import en_date, lv_date
from hub.allocation.decisions import Step, decide
from hub.allocation.repository import SCHEMA
from hub.calendar import RIGA, local_date
from hub.documents import format_date, pdf_text, read_fields
from hub.documents.edoc import open_edoc
from hub.notice import NoticeLaw, WorkingCalendar, sending_delay
from hub.reliability.store import Store
from schemas.allocation import OfferDeadlineSet
from schemas.notifications import NotificationPosted, NotificationSent, SendNotification
from tests.allocation_harness import Harness
from tests.seal_kit import SealKit
from tests.service.test_allocation_service import RIGA as RIGA_RULES
from tests.service.test_allocation_steps import season

MOVED_DAY_OFF = date(2026, 11, 20)
"""A Friday the rules file makes a day off (as a moved day off not yet in the library)."""
RULES = dataclasses.replace(
    RIGA_RULES, notice=NoticeLaw(calendar=WorkingCalendar(days_off=frozenset({MOVED_DAY_OFF})))
)
GUARD = timedelta(minutes=5)
CHANNELS = ("e_adrese", "email", "letter")


def config(kit: SealKit) -> NotifyConfig:
    return NotifyConfig(
        portal_url="https://e-pakalpojumi.example.lv/pii",
        sender="Rīgas valstspilsētas pašvaldība",
        escalate_after=timedelta(days=2),
        callback="127.0.0.1:8711",
        seal=kit.seal,
        sending_guard=GUARD,
    )


async def invitation(tmp_path: Path, start: datetime) -> tuple[Harness, SendNotification]:
    """A season whose round runs at ``start``; the first invitation it sends."""
    store = await Store.open(tmp_path / "allocation.sqlite3", schema=SCHEMA)
    h = Harness(store, start, rules=RULES)
    await season(h, children=12)
    sent = [
        m
        for m in h.published
        if isinstance(m, SendNotification) and m.document and m.document.kind == "invitation"
    ]
    assert sent, "the round sent no invitation"
    return h, sent[0]


def moments(first_day: date, made: datetime) -> st.SearchStrategy[datetime]:
    """Sending moments over the schedule's days, many of them close to midnight in Riga."""
    last = datetime.combine(first_day + timedelta(days=13), time(23, 0), RIGA).astimezone(UTC)
    anywhere = st.datetimes(
        min_value=made.replace(tzinfo=None),
        max_value=last.replace(tzinfo=None),
        timezones=st.just(UTC),
    )
    near_midnight = st.builds(
        lambda day, seconds: max(
            made,
            datetime.combine(first_day + timedelta(days=day), time(), RIGA).astimezone(UTC)
            + timedelta(seconds=seconds),
        ),
        st.integers(1, 12),
        st.integers(-900, 900),
    )
    return st.one_of(anywhere, near_midnight)


@pytest.mark.parametrize(
    "start",
    [
        datetime(2026, 11, 12, 9, 0, tzinfo=UTC),  # Proclamation Day, then a moved day off
        datetime(2026, 12, 18, 9, 0, tzinfo=UTC),  # Christmas and New Year
        datetime(2026, 3, 24, 9, 0, tzinfo=UTC),  # summer time begins on 29 March
    ],
)
async def test_the_deadline_printed_is_the_deadline_enforced(
    tmp_path: Path, test_seal: SealKit, start: datetime
) -> None:
    h, request = await invitation(tmp_path, start)
    assert request.deadlines is not None and request.document is not None
    offer = h.state.offers[str(request.offer_id)]
    made = datetime.fromisoformat(offer.made_at)
    first_day = request.deadlines.first_day
    assert first_day == local_date(start)
    checked: list[str] = []

    @settings(
        max_examples=40,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture],
    )
    @given(moment=moments(first_day, made), channel=st.sampled_from(CHANNELS), data=st.data())
    def the_same_date(moment: datetime, channel: str, data: st.DataObject) -> None:
        # The notification service: waits out the last minutes before midnight, then prints
        # the deadline of the channel and the day it sends on.
        sent = moment + sending_delay(moment, GUARD)
        notify = Requests(NotifyState(), Channels({}), config(test_seal), lambda: sent)
        message, sealed = notify.outgoing(request, channel, sent)  # type: ignore[arg-type]
        assert sealed is not None and sealed.respond_by is not None
        printed = sealed.respond_by

        # The receipt of the send (a letter: the post takes it on the day it was asked to).
        if channel == "letter":
            assert message.post_on == local_date(sent)
            day_ends = datetime.combine(local_date(sent), time(23, 59, 59), RIGA)
            posted = data.draw(
                st.datetimes(
                    min_value=sent.replace(tzinfo=None),
                    max_value=max(sent, day_ends.astimezone(UTC)).replace(tzinfo=None),
                    timezones=st.just(UTC),
                )
            )
            receipt = NotificationPosted.new(
                producer="notify-adapter",
                municipality="riga",
                notification_id=request.notification_id,
                child_ref=request.child_ref,
                channel="letter",
                offer_id=request.offer_id,
                posted_at=posted,
            )
        else:
            receipt = NotificationSent.new(
                producer="notify-adapter",
                municipality="riga",
                notification_id=request.notification_id,
                child_ref=request.child_ref,
                channel=channel,
                offer_id=request.offer_id,
                sent_at=sent,
            )

        # The allocation service: the deadline it enforces, from that receipt.
        offer.notified_on = offer.respond_by = None
        step = Step(h.state, sent, receipt)
        decide(step, receipt)
        [deadline] = [m for m in step.effects.messages if isinstance(m, OfferDeadlineSet)]
        offer.notified_on = offer.respond_by = None

        assert printed == deadline.respond_by
        said = lv_date(printed) if request.language == "lv" else en_date(printed)
        assert said in message.text
        fields = read_fields(pdf_text(sealed.pdf))
        assert fields["respond_by"] == format_date(deadline.respond_by)
        assert fields["registration_number"] == request.document.registration_number
        checked.append(channel)

    the_same_date()
    assert set(checked) == set(CHANNELS)
    await h.store.close()


async def test_a_delivered_notice_opens_with_a_valid_seal(
    tmp_path: Path, test_seal: SealKit
) -> None:
    """The .edoc a parent receives: sealed by the municipality's seal, its PDF saying the
    registration number and the deadline the hub enforces."""
    h, request = await invitation(tmp_path, datetime(2026, 11, 12, 9, 0, tzinfo=UTC))
    sent = datetime(2026, 11, 12, 10, 0, tzinfo=UTC)
    notify = Requests(NotifyState(), Channels({}), config(test_seal), lambda: sent)
    message, sealed = notify.outgoing(request, "e_adrese", sent)
    [attachment] = message.attachments
    assert attachment.name.endswith(".edoc") and sealed is not None
    opened = open_edoc(attachment.content, trusted=[test_seal.ca])
    assert opened.signer == "Test e-seal" and opened.media_type == "application/pdf"
    fields = read_fields(pdf_text(opened.content))
    assert request.document is not None
    assert fields["registration_number"] == request.document.registration_number
    # Sent on Thursday 12 November: notified on the second working day, Monday 16
    # November; 15 days later is 1 December, a Tuesday.
    assert fields["respond_by"] == format_date(date(2026, 12, 1))
    await h.store.close()
