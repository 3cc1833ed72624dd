"""Notifications to parents and their delivery receipts."""

from __future__ import annotations

from datetime import date
from typing import Literal, Self

from pydantic import Field, model_validator

from schemas.base import Command, Event, FrozenModel, type_name
from schemas.values import (
    AddressCode,
    ChildRef,
    EmailAddress,
    NotificationId,
    OfferId,
    Permanent,
    PersonalCode,
    UtcDatetime,
)

Channel = Literal["e_adrese", "email", "sms", "letter"]


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


class SendNotification(Command):
    """Notify a person; the adapter picks the channel and reports receipts."""

    event_type: Literal["SendNotification"] = type_name("SendNotification")
    notification_id: NotificationId
    child_ref: ChildRef
    purpose: Literal["offer", "offer_reminder", "decision", "annulment"] = Field(
        description="What the message is about; selects the default template."
    )
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


class _Receipt(Event):
    notification_id: NotificationId
    child_ref: ChildRef
    channel: Channel = Field(description="Channel this receipt is about.")
    provider_message_id: str | None = Field(
        default=None, max_length=128, description="The provider's id of the sent message."
    )
    offer_id: OfferId | None = Field(default=None, description="Offer concerned, if any.")


class NotificationSent(_Receipt):
    """The provider accepted the message."""

    event_type: Literal["NotificationSent"] = type_name("NotificationSent")
    sent_at: UtcDatetime = Field(description="When the provider accepted it.")


class NotificationDelivered(_Receipt):
    """The provider confirmed delivery."""

    event_type: Literal["NotificationDelivered"] = type_name("NotificationDelivered")
    delivered_at: UtcDatetime = Field(description="When it was delivered.")


class NotificationDeemedNotified(_Receipt):
    """By law the person counts as notified on ``deemed_notified_on``.

    For e-adrese that is the second working day after sending.
    """

    event_type: Literal["NotificationDeemedNotified"] = type_name("NotificationDeemedNotified")
    sent_at: UtcDatetime = Field(description="When the message was sent.")
    deemed_notified_on: date = Field(description="Date the person is deemed notified.")


class NotificationFailed(_Receipt):
    """Sending failed on this channel; ``permanent`` says whether a retry may help."""

    event_type: Literal["NotificationFailed"] = type_name("NotificationFailed")
    permanent: Permanent
    reason: str = Field(max_length=500, description="Provider's reason, without personal data.")
    failed_at: UtcDatetime = Field(description="When the failure was reported.")
