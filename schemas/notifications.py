"""Notifications to parents and their delivery receipts."""

from __future__ import annotations

from datetime import date
from typing import Literal, Self

from pydantic import Field, model_validator

from schemas.base import Command, Event, FrozenModel, type_name
from schemas.values import (
    AddressCode,
    ChildRef,
    DocumentKey,
    EmailAddress,
    NotificationId,
    OfferId,
    Permanent,
    PersonalCode,
    UtcDatetime,
)

Channel = Literal["e_adrese", "email", "sms", "letter"]
NoticeKind = Literal["invitation", "revocation", "annulment", "admission", "refusal"]
"""The documents a parent receives: an offer of a place (invitation), its revocation, the
annulment of an application after an unanswered offer, the admission decision after an
acceptance, and the refusal of an application (or of a change to it)."""


class Recipient(FrozenModel):
    """Where a person can be reached; the channel policy chooses among these."""

    personal_code: PersonalCode | None = Field(
        default=None, description="Personal code: the person's e-adrese if activated."
    )
    email: EmailAddress | None = Field(default=None, description="E-mail address.")
    phone: str | None = Field(
        default=None, pattern=r"^\+371\d{8}$", description="Latvian mobile number for SMS."
    )
    postal_address_code: AddressCode | None = Field(
        default=None, description="Address register code for a registered letter."
    )

    @model_validator(mode="after")
    def _reachable(self) -> Self:
        if not any((self.personal_code, self.email, self.phone, self.postal_address_code)):
            raise ValueError("a recipient needs at least one way to be reached")
        return self


class NoticeDocument(FrozenModel):
    """The document a notification carries: rendered to PDF and sealed by the notification
    service, registered in the DVS beforehand under ``registration_number``."""

    kind: NoticeKind = Field(description="What the document is (see NoticeKind).")
    document_key: DocumentKey = Field(description="The document's key in the DVS.")
    registration_number: str = Field(
        min_length=1, max_length=64, description="The DVS registration number, printed on it."
    )
    issued_on: date = Field(description="The document's date.")
    appeal: str | None = Field(
        default=None,
        max_length=2000,
        description="How to contest it (an administrative act), from the municipality's rules.",
    )


class DeadlineSchedule(FrozenModel):
    """The answer deadline of an offer for each day its notice may be sent on, per channel.

    Computed by the allocation service, the only owner of an offer's deadline
    (:mod:`hub.notice`): the notification service prints the entry of the channel it uses
    and the day it sends (a letter: the day it is handed to the post).
    """

    first_day: date = Field(description="The first sending day covered.")
    respond_by: dict[Channel, tuple[date, ...]] = Field(
        description="Channel → the deadline when sent on first_day + i, for each i."
    )

    def on(self, channel: Channel, day: date) -> date | None:
        """The deadline of a notice sent on ``channel`` on ``day``; None if not covered."""
        days = self.respond_by.get(channel, ())
        index = (day - self.first_day).days
        return days[index] if 0 <= index < len(days) else None


class SendNotification(Command):
    """Notify a person; the adapter picks the channel and reports receipts."""

    event_type: Literal["SendNotification"] = type_name("SendNotification")
    notification_id: NotificationId
    child_ref: ChildRef
    purpose: Literal[
        "offer", "offer_reminder", "decision", "annulment", "revocation", "refusal"
    ] = Field(description="What the message is about; selects the default template.")
    offer_id: OfferId | None = Field(default=None, description="Offer concerned, if any.")
    recipient: Recipient = Field(description="The guardian to notify.")
    language: Literal["lv", "en"] = Field(default="lv", description="Language of the message.")
    template: str = Field(pattern=r"^[a-z][a-z0-9_]{1,63}$", description="Template name.")
    variables: dict[str, str] = Field(
        default_factory=dict, description="Template values; never a personal code."
    )
    channel: Channel | None = Field(
        default=None,
        description="Send on this channel only (an escalation); None: the channel policy picks.",
    )
    document: NoticeDocument | None = Field(
        default=None, description="The sealed document to send (a notice); None: a message only."
    )
    deadlines: DeadlineSchedule | None = Field(
        default=None, description="An offer's answer deadline by channel and sending day."
    )


class _Receipt(Event):
    notification_id: NotificationId
    child_ref: ChildRef
    channel: Channel = Field(description="Channel this receipt is about.")
    provider_message_id: str | None = Field(
        default=None, max_length=128, description="The provider's id of the sent message."
    )
    offer_id: OfferId | None = Field(default=None, description="Offer concerned, if any.")
    document_key: DocumentKey | None = Field(
        default=None, description="The notice's document in the DVS, if the message carried one."
    )


class NotificationSent(_Receipt):
    """The provider accepted the message."""

    event_type: Literal["NotificationSent"] = type_name("NotificationSent")
    sent_at: UtcDatetime = Field(
        description="When the service sent it (the provider accepted it in that call): a"
        " notice's deadline counts from this moment's date in Latvia."
    )


class NotificationDelivered(_Receipt):
    """The provider confirmed delivery."""

    event_type: Literal["NotificationDelivered"] = type_name("NotificationDelivered")
    delivered_at: UtcDatetime = Field(description="When it was delivered.")


class NotificationDeemedNotified(_Receipt):
    """By law the person counts as notified on ``deemed_notified_on``.

    No longer published: the allocation service computes the deemed date from
    ``NotificationSent`` and ``NotificationPosted`` (:mod:`hub.notice`) and publishes it in
    ``OfferDeadlineSet``. Kept so that receipts already in the log can still be read.
    """

    event_type: Literal["NotificationDeemedNotified"] = type_name("NotificationDeemedNotified")
    sent_at: UtcDatetime = Field(description="When the message was sent.")
    deemed_notified_on: date = Field(description="Date the person is deemed notified.")


class NotificationPosted(_Receipt):
    """A registered letter was handed to the post: the legal clock of a letter starts."""

    event_type: Literal["NotificationPosted"] = type_name("NotificationPosted")
    posted_at: UtcDatetime = Field(description="When the post took the letter.")


class NotificationFailed(_Receipt):
    """Sending failed on this channel; ``permanent`` says whether a retry may help."""

    event_type: Literal["NotificationFailed"] = type_name("NotificationFailed")
    permanent: Permanent
    reason: str = Field(max_length=500, description="Provider's reason, without personal data.")
    failed_at: UtcDatetime = Field(description="When the failure was reported.")
