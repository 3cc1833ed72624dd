"""The notification service: picks a channel, sends once per channel, reports every receipt.

Channel policy (per request, in order):
1. **e-adrese** when the guardian has an active one — the law requires it;
2. otherwise **e-mail**, then (a message without a document only) **SMS**: the first the
   provider accepts; e-mail counts as delivered when the recipient's server accepts it, SMS
   when the gateway's delivery report says so;
3. a **registered letter** when nothing electronic worked, or nothing electronic was confirmed
   within ``escalate_after``.

A request that carries a document (a notice: ``SendNotification.document``) is rendered to
PDF with the deadline the allocation service computed for the channel and the day it is
sent (``SendNotification.deadlines``), sealed as an ``.edoc`` (:mod:`adapters.notify.documents`)
and sent as an attachment (a letter prints the PDF and is posted the day it is sent); an SMS
cannot carry it. The sealed document first sent goes to the DVS (``StoreDocumentContent``).
A notice is not sent in the last minutes before midnight in Latvia
(``NotifyConfig.sending_guard``): the day it is sent on is the day its deadline counts from.
When a document counts as notified is not decided here: the allocation service computes it
from the receipts (:mod:`hub.notice`).

Exactly one message per channel: every attempt has an idempotency key, ``<offer or
notification id>:<channel>``. The HTTP providers take it as ``Idempotency-Key`` and answer
a repeat with the first message. SMTP cannot: before an e-mail is handed to the server the
key is recorded; if the service dies before the outcome is stored, or the connection breaks
after the message was handed over, the e-mail is *uncertain* and never sent again — the
request moves on to the next channel instead.

Receipts on ``notify.receipts.v1``: ``NotificationSent``, ``NotificationDelivered``,
``NotificationPosted`` (a registered letter handed to the post) and ``NotificationFailed``
(``permanent`` true for a refusal, false for an uncertain or temporary failure), each with
the channel and provider id.

Every channel is reached through the same port, :class:`~adapters.notify.base.ChannelClient`;
:func:`adapters.notify.config.from_settings` builds the service as the hub's settings say.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import date, datetime
from typing import TYPE_CHECKING, Any, Literal, Protocol

from aiolimiter import AsyncLimiter
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from adapters.notify import documents
from adapters.notify.base import (
    Accepted,
    Attachment,
    ChannelClient,
    Clock,
    Outcome,
    Outgoing,
    Rejected,
    system_clock,
)
from adapters.notify.documents import Sealed
from adapters.notify.email import OutcomeUnknown
from adapters.notify.letter import LetterEvent, LetterPage
from adapters.notify.sms import DeliveryReport, parse_report
from adapters.notify.templates import TemplateError, Templates
from hub.calendar import local_date
from hub.errors import PermanentError, TransientError
from hub.http import http_task
from hub.notice import sending_delay
from hub.reliability.consumer import Handler, Unit
from hub.reliability.poller import Page, Poller
from hub.reliability.retry import HttpPort, UnexpectedAnswer
from hub.reliability.service import ServiceSpec, Timer
from hub.reliability.store import Store, Writes
from schemas.base import Message
from schemas.documents import StoreDocumentContent
from schemas.notifications import (
    Channel,
    NotificationDelivered,
    NotificationFailed,
    NotificationPosted,
    NotificationSent,
    Recipient,
    SendNotification,
)
from schemas.topics import NOTIFY
from schemas.values import failure_detail

if TYPE_CHECKING:
    from adapters.notify.config import NotifyConfig

log = logging.getLogger(__name__)

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS notifications ("
    " notification_id TEXT PRIMARY KEY, status TEXT NOT NULL, body TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS attempts ("
    " key TEXT PRIMARY KEY, notification_id TEXT NOT NULL, channel TEXT NOT NULL,"
    " state TEXT NOT NULL, provider_id TEXT, at TEXT NOT NULL)",
)
ELECTRONIC: tuple[Channel, ...] = ("e_adrese", "email", "sms")
NOTIFYING: tuple[Channel, ...] = ("e_adrese", "email", "letter")
"""The channels a document is notified on, in the order tried (an SMS only reminds)."""
RESPONSE_DAYS = 15
"""Days to answer an offer, unless the request says otherwise (``response_days``)."""
RECIPIENT_NAME = "Bērna likumiskajam pārstāvim"
"""The addressee of a registered letter: the child's legal representative (the service
knows no names)."""
UNREACHABLE: Mapping[Channel, str] = {"e_adrese": "no active e-adrese"}
"""Why a channel whose client does not reach the address was passed over."""
AttemptState = Literal["intent", "accepted", "confirmed", "rejected", "failed", "uncertain"]


# --------------------------------------------------------------------------- state


@dataclass
class Attempt:
    key: str
    notification_id: str
    channel: Channel
    state: AttemptState
    provider_id: str | None = None
    at: str = ""


@dataclass
class Record:
    """One notification request and where it stands."""

    request: SendNotification
    status: Literal["open", "awaiting", "confirmed", "failed"] = "open"
    channel: Channel | None = None
    """The channel awaiting confirmation or confirmed."""
    sent_at: str | None = None
    escalate_at: str | None = None
    escalated: bool = False
    respond_by: str | None = None
    """The deadline printed on the notice first sent (an escalation prints the same)."""
    stored: bool = False
    """The sealed document was handed to the DVS."""

    def dump(self) -> str:
        data = asdict(self)
        data["request"] = json.loads(self.request.model_dump_json())
        return json.dumps(data, sort_keys=True)

    @classmethod
    def load(cls, body: str) -> Record:
        data = json.loads(body)
        data.setdefault("respond_by", None)
        data.setdefault("stored", False)
        data["request"] = SendNotification.model_validate(data["request"])
        return cls(**data)


@dataclass
class NotifyState:
    """The requests and attempts, in memory and in the service's store.

    Changes are written by a batch (:meth:`save_attempt`, :meth:`save_record` on its unit);
    the one write that cannot wait for a batch, an e-mail's intent, goes to the store the
    state was loaded from (:meth:`commit_attempt`).
    """

    records: dict[str, Record] = field(default_factory=dict)
    attempts: dict[str, Attempt] = field(default_factory=dict)
    by_provider: dict[str, str] = field(default_factory=dict)
    """(channel, provider id) as ``channel:id`` → attempt key."""
    store: Store | None = field(default=None, repr=False)
    """The store this state was loaded from (the runner opens it when the service starts)."""

    async def load(self, store: Store) -> None:
        """Read what ``store`` holds; later writes outside a batch go there too."""
        self.store = store
        for (body,) in await store.query("SELECT body FROM notifications"):
            record = Record.load(body)
            self.records[str(record.request.notification_id)] = record
        for row in await store.query(
            "SELECT key, notification_id, channel, state, provider_id, at FROM attempts"
        ):
            self.remember(Attempt(*row))

    def remember(self, attempt: Attempt) -> None:
        self.attempts[attempt.key] = attempt
        if attempt.provider_id:
            self.by_provider[f"{attempt.channel}:{attempt.provider_id}"] = attempt.key

    def save_attempt(self, unit: Unit, attempt: Attempt) -> None:
        self.remember(attempt)
        unit.execute(
            # A confirmation is never undone by a write that was applied before it but
            # committed after it (a delivery report overtaking its send's batch).
            "INSERT INTO attempts (key, notification_id, channel, state, provider_id, at)"
            " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (key) DO UPDATE SET state = excluded.state,"
            " provider_id = coalesce(excluded.provider_id, attempts.provider_id),"
            " at = excluded.at WHERE attempts.state != 'confirmed'",
            (
                attempt.key,
                attempt.notification_id,
                attempt.channel,
                attempt.state,
                attempt.provider_id,
                attempt.at,
            ),
        )

    async def commit_attempt(self, service: str, attempt: Attempt) -> None:
        """Store ``attempt`` at once, in a transaction of its own."""
        if self.store is None:
            raise RuntimeError("the notification state is used before it was loaded")
        unit = Unit()
        self.save_attempt(unit, attempt)
        await self.store.commit(service, Writes(statements=unit.statements))

    def save_record(self, unit: Unit, record: Record) -> None:
        self.records[str(record.request.notification_id)] = record
        unit.execute(
            "INSERT INTO notifications (notification_id, status, body) VALUES (?, ?, ?)"
            " ON CONFLICT (notification_id) DO UPDATE SET status = excluded.status,"
            " body = excluded.body WHERE notifications.status != 'confirmed'",
            (str(record.request.notification_id), record.status, record.dump()),
        )


# --------------------------------------------------------------------------- outcomes


@dataclass(frozen=True)
class Tried:
    """What one channel did with the request."""

    channel: Channel
    key: str
    result: Outcome | None = None
    reason: str | None = None
    """Why the channel was passed over without a send (no address, uncertain, inactive)."""
    permanent: bool = True
    earlier: Attempt | None = None
    """The attempt already recorded for this key (nothing new was sent)."""
    sealed: Sealed | None = None
    """The sealed document sent (a notice)."""
    at: datetime | None = None
    """When it was sent: the moment its text (and deadline) was rendered for."""


def key_for(request: SendNotification, channel: Channel) -> str:
    """The idempotency key of ``request`` on ``channel``: one message per channel per
    notice (a document's key: an offer has several, its invitation, its revocation…), else
    per offer or notification."""
    subject = request.document.document_key if request.document else None
    return f"{subject or request.offer_id or request.notification_id}:{channel}"


def reference_for(request: SendNotification) -> str:
    """Shown to the guardian and in provider logs: from the offer or notification id only."""
    return f"PII-{str(request.offer_id or request.notification_id)[:8].upper()}"


def address_on(recipient: Recipient, channel: Channel) -> str | None:
    """The recipient's address as ``channel`` knows it (None: there is none)."""
    if channel == "e_adrese":
        code = recipient.personal_code
        return None if code is None else code.reveal()
    if channel == "email":
        return recipient.email
    return recipient.phone if channel == "sms" else recipient.postal_address_code


def receipt(
    request: SendNotification, channel: Channel, provider_message_id: str | None = None
) -> dict[str, Any]:
    """The fields every receipt about ``request`` on ``channel`` shares."""
    return {
        "producer": NOTIFY,
        "caused_by": request,
        "notification_id": request.notification_id,
        "child_ref": request.child_ref,
        "channel": channel,
        "provider_message_id": provider_message_id,
        "offer_id": request.offer_id,
        "document_key": request.document.document_key if request.document else None,
    }


@dataclass
class Channels:
    """The configured channels' clients and their rate limits; a channel without a client
    is not used."""

    clients: Mapping[Channel, ChannelClient]
    rates: Mapping[Channel, int] = field(default_factory=dict)
    """Messages a minute per channel (none: no limit)."""

    def __post_init__(self) -> None:
        self.limits = {
            channel: AsyncLimiter(per_minute, 60) for channel, per_minute in self.rates.items()
        }

    @contextlib.asynccontextmanager
    async def slot(self, channel: Channel) -> AsyncIterator[None]:
        """Wait for ``channel``'s rate limit, if it has one."""
        limiter = self.limits.get(channel)
        if limiter is None:
            yield
        else:
            async with limiter:
                yield

    async def close(self) -> None:
        for client in self.clients.values():
            await client.close()


class Requests(Handler[SendNotification]):
    """Sends a notification on the first channel that takes it; records every attempt."""

    def __init__(
        self,
        state: NotifyState,
        channels: Channels,
        config: NotifyConfig,
        clock: Clock,
        *,
        service: str = NOTIFY,
    ) -> None:
        super().__init__("notify.requests.v1")
        self.state, self.channels, self.config, self.clock = state, channels, config, clock
        self.service = service
        """The service's name: the consumer its own writes are committed as."""
        self.templates = Templates()

    def candidates(self, request: SendNotification) -> list[Channel]:
        if request.channel is not None:
            return [request.channel]
        if request.document is not None:
            return list(NOTIFYING)  # an SMS cannot carry a document: it only reminds
        return [*ELECTRONIC, "letter"]

    def deadline(self, request: SendNotification, channel: Channel, sent: datetime) -> date | None:
        """The answer deadline the notice prints: the allocation service's, for ``channel``
        and the day it is sent (a letter: handed to the post, which is asked to post it that
        day); an escalation prints the deadline of the notice first sent."""
        schedule = request.deadlines
        if schedule is None:
            return None
        record = self.state.records.get(str(request.notification_id))
        if record is not None and record.respond_by:
            return date.fromisoformat(record.respond_by)
        respond_by = schedule.on(channel, local_date(sent))
        if respond_by is None:
            raise PermanentError(
                f"the deadline schedule does not cover sending on {channel} on"
                f" {local_date(sent)}: the notice is not sent with a deadline nobody computed"
            )
        return respond_by

    def outgoing(
        self, request: SendNotification, channel: Channel, sent: datetime
    ) -> tuple[Outgoing, Sealed | None]:
        """The message for ``channel`` sent at ``sent``, with its sealed document if any."""
        respond_by = self.deadline(request, channel, sent)
        document = request.document
        variables: dict[str, Any] = {
            "response_days": str(RESPONSE_DAYS),
            **request.variables,
            "reference": reference_for(request),
            "portal_url": self.config.portal_url,
            "sender": self.config.sender,
            "offer_id": str(request.offer_id or ""),
            "respond_by": respond_by.isoformat() if respond_by else None,
            "registration_number": document.registration_number if document else None,
        }
        rendered = self.templates.render(
            request.template, request.language, variables, given=request.variables
        )
        code = request.recipient.personal_code
        if code is not None and code.reveal() in rendered.text + rendered.subject:
            raise TemplateError("the message would show the recipient's personal code; refused")
        sealed = None
        if document is not None:
            sealed = documents.make(
                request,
                seal_key=self.config.seal,
                sender=self.config.sender,
                reference=reference_for(request),
                portal_url=self.config.portal_url,
                respond_by=respond_by,
                at=sent,
            )
        message = Outgoing(
            key=key_for(request, channel),
            subject=rendered.subject,
            text=rendered.text,
            reference=reference_for(request),
            language=request.language,
            callback_url=self.config.callback_url,
            addressee=RECIPIENT_NAME,
            attachments=(Attachment(sealed.file_name, sealed.media_type, sealed.edoc),)
            if sealed
            else (),
            printed=sealed.pdf if sealed else None,
            post_on=local_date(sent) if channel == "letter" else None,
        )
        return message, sealed

    async def fetch(self, message: SendNotification) -> list[Tried]:
        record = self.state.records.get(str(message.notification_id))
        if record is not None and record.status == "confirmed":
            return []  # a repeat of a request already confirmed
        tried: list[Tried] = []
        for channel in self.candidates(message):
            outcome = await self._try(message, channel)
            tried.append(outcome)
            if isinstance(outcome.result, Accepted) or (
                outcome.earlier is not None and outcome.earlier.state in ("accepted", "confirmed")
            ):
                break
        return tried

    async def _try(self, request: SendNotification, channel: Channel) -> Tried:
        key = key_for(request, channel)
        earlier = self.state.attempts.get(key)
        if earlier is not None and earlier.state in ("accepted", "confirmed", "rejected"):
            return Tried(channel, key, earlier=earlier)
        if earlier is not None and earlier.state in ("intent", "uncertain"):
            return Tried(
                channel,
                key,
                reason="the outcome of an earlier send is unknown: not sent again",
                permanent=False,
            )
        client = self.channels.clients.get(channel)
        to = address_on(request.recipient, channel)
        if client is None or to is None:
            why = "channel not configured" if client is None else "no address for this channel"
            return Tried(channel, key, reason=why)
        if not await client.reaches(to):
            return Tried(channel, key, reason=UNREACHABLE.get(channel, "address not reached"))
        async with self.channels.slot(channel):
            if request.document is not None:
                # Not sent across midnight in Latvia: its deadline is the sending day's.
                wait = sending_delay(self.clock(), self.config.sending_guard)
                if wait:
                    await asyncio.sleep(wait.total_seconds())
            moment = self.clock()
            message, sealed = self.outgoing(request, channel, moment)
            if channel == "email":
                tried = await self._email(request, client, to, message)
            else:
                tried = Tried(channel, key, await client.send(to, message))
        return replace(tried, sealed=sealed, at=moment)

    async def _email(
        self, request: SendNotification, client: ChannelClient, to: str, message: Outgoing
    ) -> Tried:
        """SMTP cannot take an idempotency key: record the intent first (see the module)."""
        await self._record("intent", request, message)
        try:
            result = await client.send(to, message)
        except OutcomeUnknown:
            # Handed over, answer lost: it may have arrived. The intent stays (uncertain).
            return Tried(
                "email",
                message.key,
                reason="the mail server's answer was lost after the message was handed over:"
                " not sent again",
                permanent=False,
            )
        except TransientError:
            # The server said no (4xx, dropped): nothing was delivered; it may be tried again.
            await self._record("failed", request, message)
            raise
        return Tried("email", message.key, result)

    async def _record(
        self, state: AttemptState, request: SendNotification, message: Outgoing
    ) -> None:
        """Store the e-mail attempt's ``state`` at once."""
        attempt = Attempt(
            message.key, str(request.notification_id), "email", state, at=self.clock().isoformat()
        )
        await self.state.commit_attempt(self.service, attempt)

    def apply(self, unit: Unit, message: SendNotification, fetched: list[Tried]) -> None:
        state = self.state
        nid = str(message.notification_id)
        record = state.records.get(nid) or Record(message)
        if record.status == "confirmed":
            return
        now = self.clock()
        for tried in fetched:
            if tried.earlier is not None:
                continue  # recorded (and reported) when it happened
            if tried.result is None:
                earlier = state.attempts.get(tried.key)
                if earlier is not None and earlier.state == "intent":
                    state.save_attempt(unit, replace(earlier, state="uncertain"))
                unit.emit(
                    self._failed(message, tried.channel, tried.reason or "", tried.permanent, now)
                )
                continue
            if isinstance(tried.result, Rejected):
                state.save_attempt(
                    unit, Attempt(tried.key, nid, tried.channel, "rejected", at=now.isoformat())
                )
                unit.emit(self._failed(message, tried.channel, tried.result.reason, True, now))
                continue
            accepted = tried.result
            confirmed = tried.channel == "e_adrese" or accepted.delivered
            state.save_attempt(
                unit,
                Attempt(
                    tried.key,
                    nid,
                    tried.channel,
                    "confirmed" if confirmed else "accepted",
                    accepted.provider_message_id,
                    accepted.at.isoformat(),
                ),
            )
            sent = receipt(message, tried.channel, accepted.provider_message_id)
            unit.emit(NotificationSent.new(**sent, sent_at=tried.at or accepted.at))
            if accepted.delivered:
                unit.emit(NotificationDelivered.new(**sent, delivered_at=accepted.at))
            record.channel, record.sent_at = tried.channel, accepted.at.isoformat()
            if tried.sealed is not None:
                self._store(unit, message, record, tried.sealed)
            if confirmed:
                record.status = "confirmed"
            else:
                record.status = "awaiting"
                if tried.channel != "letter":
                    record.escalate_at = (now + self.config.escalate_after).isoformat()
            break
        else:  # no channel took it
            if record.status == "open":
                record.status = "failed"
        state.save_record(unit, record)

    @staticmethod
    def _store(unit: Unit, request: SendNotification, record: Record, sealed: Sealed) -> None:
        """The first document sent is the one the DVS keeps (an escalation prints the same
        text under the same number)."""
        if record.respond_by is None and sealed.respond_by is not None:
            record.respond_by = sealed.respond_by.isoformat()
        if record.stored or request.document is None:
            return
        record.stored = True
        document = request.document
        unit.emit(
            StoreDocumentContent.new(
                producer=NOTIFY,
                caused_by=request,
                document_key=document.document_key,
                registration_number=document.registration_number,
                file_name=sealed.file_name,
                media_type=sealed.media_type,
                content=sealed.edoc,
                content_sha256=sealed.sha256,
                child_ref=request.child_ref,
            )
        )

    @staticmethod
    def _failed(
        request: SendNotification,
        channel: Channel,
        reason: str,
        permanent: bool,
        failed_at: datetime,
    ) -> NotificationFailed:
        return NotificationFailed.new(
            **receipt(request, channel),
            permanent=permanent,
            reason=failure_detail(reason) or "failed",
            failed_at=failed_at,
        )

    def given_up(self, message: SendNotification, error: BaseException) -> Sequence[Message]:
        """Electronic channels kept failing: the last resort is a registered letter."""
        if message.channel == "letter" or message.recipient.postal_address_code is None:
            return ()
        return [escalation(message)]

    async def close(self) -> None:
        await self.channels.close()


def escalation(request: SendNotification) -> SendNotification:
    """The same notification, by registered letter."""
    fields = {**request.payload(), "channel": "letter"}
    return SendNotification.new(producer=NOTIFY, caused_by=request, **fields)


def escalate_due(state: NotifyState, unit: Unit, now: datetime) -> None:
    """Requests sent but not confirmed in time go by registered letter (once)."""
    for record in state.records.values():
        due = record.escalate_at and datetime.fromisoformat(record.escalate_at) <= now
        if record.status == "awaiting" and due and not record.escalated:
            record.escalated = True
            state.save_record(unit, record)
            if record.request.recipient.postal_address_code is not None:
                unit.emit(escalation(record.request))


# --------------------------------------------------------------------------- reports


class NotSentYet(TransientError):
    """A delivery report for an SMS whose send is not recorded yet."""


class SmsReports(Poller):
    """SMS delivery reports, taken by the webhook and committed like feed entries.

    The webhook answers the gateway only once the report is stored, so a report
    the service did not keep is sent again by the gateway.
    """

    feed = "sms-reports"
    interval = 0.2

    def __init__(
        self, state: NotifyState, parse: Callable[[Any], DeliveryReport] = parse_report
    ) -> None:
        self.state, self.parse = state, parse
        self._queue: asyncio.Queue[tuple[DeliveryReport, asyncio.Future[None]]] = asyncio.Queue()
        self._waiting: list[asyncio.Future[None]] = []

    async def receive(self, body: Any) -> None:
        """Queue a report and wait until it is stored; :class:`NotSentYet` if its SMS is not
        recorded yet (the gateway was faster than the send's batch: it will try again)."""
        report = self.parse(body)  # UnexpectedAnswer for a wrong shape
        if f"sms:{report.sms_id}" not in self.state.by_provider:
            raise NotSentYet(report.sms_id)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        await self._queue.put((report, done))
        await asyncio.wait_for(done, 30)

    async def poll(self, position: str | None) -> Page:
        items = []
        with contextlib.suppress(TimeoutError):
            items.append(await asyncio.wait_for(self._queue.get(), self.interval))
        while not self._queue.empty() and len(items) < 500:
            items.append(self._queue.get_nowait())
        self._waiting = [done for _, done in items]
        return Page([report for report, _ in items], str(int(position or 0) + len(items)))

    def committed(self, page: Page) -> None:
        for done in self._waiting:
            if not done.done():
                done.set_result(None)

    def apply(self, unit: Unit, item: DeliveryReport) -> None:
        key = self.state.by_provider.get(f"sms:{item.sms_id}")
        if key is None:
            raise PermanentError("delivery report for an SMS this service did not send")
        attempt = self.state.attempts[key]
        record = self.state.records[attempt.notification_id]
        request = record.request
        if attempt.state == "confirmed" or record.status == "confirmed":
            return  # a repeated report
        about = receipt(request, "sms", item.sms_id)
        if item.status == "delivered":
            self.state.save_attempt(unit, replace(attempt, state="confirmed"))
            record.status = "confirmed"
            unit.emit(NotificationDelivered.new(**about, delivered_at=item.at))
        else:
            permanent = item.status == "permanent_failure"
            self.state.save_attempt(unit, replace(attempt, state="failed"))
            unit.emit(
                NotificationFailed.new(
                    **about,
                    permanent=permanent,
                    reason=f"SMS {item.status.replace('_', ' ')}",
                    failed_at=item.at,
                )
            )
            if not record.escalated and request.recipient.postal_address_code is not None:
                record.escalated = True
                unit.emit(escalation(request))
        self.state.save_record(unit, record)


class LetterEvents(Protocol):
    """The print-and-post service's feed of letters' status changes."""

    async def events(self, after: int) -> LetterPage: ...


class LetterFeed(Poller):
    """The print-and-post service's status changes: a posted letter starts the legal clock."""

    feed = "letters"
    interval = 1.0
    grace = 600.0
    """Seconds a posted letter whose send is not recorded yet is waited for: measured on a
    monotonic timer from when the feed first shows it, not on the service's clock (that
    may be a simulated one far from the post office's) nor on the post office's."""

    def __init__(
        self,
        state: NotifyState,
        client: LetterEvents,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        self.state, self.client, self.timer = state, client, timer
        self._unknown_since: dict[str, float] = {}

    async def poll(self, position: str | None) -> Page:
        after = int(position or 0)
        page = await self.client.events(after)
        items = []
        for event in page.events:
            if (
                event.status == "posted"
                and f"letter:{event.letter_id}" not in self.state.by_provider
            ):
                since = self._unknown_since.setdefault(event.letter_id, self.timer())
                if self.timer() - since < self.grace:
                    break  # the batch that sent it is not stored yet: read it again next time
                del self._unknown_since[event.letter_id]  # another service's letter
            items.append(event)
        last = items[-1].seq if items else after
        return Page(items, str(last), more=len(items) == len(page.events) and last < page.last)

    def apply(self, unit: Unit, item: LetterEvent) -> None:
        if item.status != "posted":
            return
        key = self.state.by_provider.get(f"letter:{item.letter_id}")
        if key is None:
            return  # a letter another service sent through the same post office
        attempt = self.state.attempts[key]
        record = self.state.records[attempt.notification_id]
        if attempt.state == "confirmed":
            return
        request = record.request
        self.state.save_attempt(unit, replace(attempt, state="confirmed"))
        if record.status == "confirmed":
            return  # an escalation overtaken by the SMS it replaced: notified already
        record.status, record.channel = "confirmed", "letter"
        self.state.save_record(unit, record)
        unit.emit(
            NotificationPosted.new(
                **receipt(request, "letter", item.tracking_number or item.letter_id),
                posted_at=item.at,
            )
        )


def webhook(reports: SmsReports) -> Starlette:
    async def sms(request: Request) -> Response:
        try:
            body = await request.json()
            await reports.receive(body)
        except (ValueError, UnexpectedAnswer):
            return JSONResponse({"error": "not a delivery report"}, status_code=400)
        except (TimeoutError, NotSentYet):
            return JSONResponse({"error": "not stored yet"}, status_code=503)
        return Response(status_code=204)

    return Starlette(routes=[Route("/sms/reports", sms, methods=["POST"])])


def service(
    channels: Channels,
    config: NotifyConfig,
    *,
    letters: LetterEvents | None = None,
    clock: Clock = system_clock,
    name: str = NOTIFY,
) -> tuple[ServiceSpec, NotifyState]:
    """The notification service and its state (for tests and the operations view).

    With an SMS channel, the webhook taking its delivery reports listens at
    ``config.callback``; with ``letters``, their feed is polled for posted letters.
    """
    state = NotifyState()
    requests = Requests(state, channels, config, clock, service=name)
    pollers: list[Poller] = []
    tasks = []
    if "sms" in channels.clients:
        reports = SmsReports(state)
        host, port = config.callback_address
        pollers.append(reports)
        tasks.append(http_task(webhook(reports), port, host))
    if letters is not None:
        pollers.append(LetterFeed(state, letters))
    spec = ServiceSpec(
        name,
        (requests,),
        schema=SCHEMA,
        on_start=state.load,
        timers=(
            Timer(config.escalation_interval, lambda unit: escalate_due(state, unit, clock())),
        ),
        clients=tuple(c for c in channels.clients.values() if isinstance(c, HttpPort)),
        tasks=tuple(tasks),
        pollers=tuple(pollers),
    )
    return spec, state


__all__ = [
    "Channels",
    "LetterFeed",
    "NotifyState",
    "Requests",
    "SmsReports",
    "escalate_due",
    "key_for",
    "service",
]
