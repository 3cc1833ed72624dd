"""The documents the allocation service sends to parents: every decision that reaches them.

- **invitation**: a place is offered (:meth:`~hub.allocation.decisions.Step.offer`);
- **revocation**: an offer the parents were sent is revoked (a place they ranked higher was
  offered, the seat was withdrawn, the application was withdrawn) or, where the rules do
  not annul the application, went unanswered;
- **annulment**: an unanswered offer annuls the application (``on_expiry = "annul"``);
- **admission**: the decision after the parents accepted;
- **refusal**: a change to an application already on the admission list is refused, or an
  application filed under an authorisation the register does not confirm.

A notice goes out in two steps. It is registered in the DVS first (``RegisterDocument``:
the registration number is printed on the document), and kept here as *registering*; when
the DVS answers, it is sent (``SendNotification`` with the document and, for an invitation,
the schedule of its answer deadline by channel and sending day, computed here from the
municipality's notification rules, :mod:`hub.notice`: this service is the only owner of an
offer's deadline). The notification service renders it to PDF, seals it, delivers it, and
stores the sealed document in the DVS. An invitation whose offer closed before the DVS
answered is not sent at all, and then needs no revocation either.

Which documents are administrative acts, and so carry the municipality's appeal
instructions: docs/legal-basis.md, "Notices".
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Literal

from hub.allocation.records import stable_id
from hub.calendar import local_date
from schemas.documents import DocumentRegistered, DocumentRegistrationFailed, RegisterDocument
from schemas.notifications import (
    DeadlineSchedule,
    NoticeDocument,
    NoticeKind,
    Recipient,
    SendNotification,
)

if TYPE_CHECKING:
    from hub.allocation.decisions import Step
    from hub.allocation.records import Offer

SCHEDULE_DAYS = 14
"""Sending days an invitation's deadline schedule covers, from the day it is sent for
delivery: a notice the notification service could not send within them is not sent on a
deadline nobody computed (it fails, and is seen in the service's receipts)."""
NOTIFYING_CHANNELS = ("e_adrese", "email", "letter")
"""The channels a notice can be delivered on (an SMS only reminds)."""
AUTHOR_UNIT = "Izglītības pārvalde"
"""The municipal unit the notices are registered under in the DVS."""

DVS_TYPE: dict[str, str] = {
    "invitation": "invitation",
    "revocation": "offer_revocation",
    "annulment": "annulment",
    "admission": "decision",
    "refusal": "refusal",
}
"""Notice kind → the DVS's classification of the document."""
TITLE: dict[str, str] = {
    "invitation": "Uzaicinājums uz vietu pirmsskolas izglītības iestādē",
    "revocation": "Paziņojums par uzaicinājuma atsaukšanu",
    "annulment": "Lēmums par pieteikuma anulēšanu",
    "admission": "Lēmums par uzņemšanu pirmsskolas izglītības iestādē",
    "refusal": "Lēmums par pieteikuma vai tā maiņas atteikumu",
}
"""Notice kind → its title in the DVS register (no personal data)."""
PURPOSE: dict[str, Literal["offer", "revocation", "annulment", "decision", "refusal"]] = {
    "invitation": "offer",
    "revocation": "revocation",
    "annulment": "annulment",
    "admission": "decision",
    "refusal": "refusal",
}
"""Notice kind → the notification's purpose (and message template)."""

NoticeStatus = Literal["registering", "sent", "dropped", "unregistered"]


@dataclass
class Notice:
    """A document for a child's parents, from its registration until it is sent."""

    document_key: str
    kind: NoticeKind
    child_ref: str
    offer_id: str | None
    variables: dict[str, str] = field(default_factory=dict)
    issued_at: str = ""
    status: NoticeStatus = "registering"
    registration_number: str | None = None
    failure: str | None = None

    def dump(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def load(cls, text: str) -> Notice:
        return cls(**json.loads(text))


def key_of(kind: str, subject: str) -> str:
    """The notice's document key: one notice of a kind per offer (or per refused change)."""
    return f"decision:{subject}" if kind == "admission" else f"{kind}:{subject}"


def offer_variables(step: Step, offer: Offer) -> dict[str, str]:
    """What a notice about ``offer`` says of the place."""
    institution = step.state.institutions.get(offer.institution_id)
    start = step.state.start_date(step.state.children[offer.child_ref].application)
    return {
        "institution": institution.name if institution else offer.institution_id,
        "group": offer.group_code,
        "start_date": start.isoformat(),
        "response_days": str(step.state.rules.offer_deadline_days),
    }


def issue(
    step: Step,
    kind: NoticeKind,
    child_ref: str,
    *,
    offer: Offer | None = None,
    subject: str | None = None,
    variables: dict[str, str] | None = None,
) -> Notice:
    """Register a notice in the DVS; it is sent when the DVS answers (:func:`registered`)."""
    key = key_of(kind, subject or (offer.offer_id if offer else child_ref))
    values = offer_variables(step, offer) if offer is not None else {}
    notice = Notice(
        key,
        kind,
        child_ref,
        offer.offer_id if offer else None,
        {**values, **(variables or {})},
        issued_at=step.at.isoformat(),
    )
    step.state.notices[key] = notice
    step.changed("notices", key)
    step.emit(
        RegisterDocument,
        document_key=key,
        document_type=DVS_TYPE[kind],
        title=TITLE[kind],
        author_unit=AUTHOR_UNIT,
        related_document_keys=(key_of("invitation", offer.offer_id),)
        if offer is not None and kind != "invitation"
        else (),
        child_ref=child_ref,
    )
    return notice


def offer_closed(step: Step, offer: Offer, reason: str) -> None:
    """The offer was revoked (or expired where the rules do not annul): the parents get a
    revocation if their invitation was sent; an invitation still being registered is not
    sent at all."""
    invitation = step.state.notices.get(key_of("invitation", offer.offer_id))
    if invitation is None:
        return  # an offer made before the service sent notices
    if invitation.status == "registering":
        invitation.status = "dropped"
        step.changed("notices", invitation.document_key)
        return
    if invitation.status == "sent":
        issue(step, "revocation", offer.child_ref, offer=offer, variables={"reason": reason})


def registered(step: Step, message: DocumentRegistered | DocumentRegistrationFailed) -> bool:
    """The DVS answered about a notice: send it (or record why it cannot be sent). False if
    ``message`` is about no notice."""
    notice = step.state.notices.get(message.document_key)
    if notice is None:
        return False
    if notice.status != "registering":
        return True  # a repeated answer, or an invitation dropped meanwhile
    step.changed("notices", notice.document_key)
    if isinstance(message, DocumentRegistrationFailed):
        notice.status, notice.failure = "unregistered", message.reason
        return True
    notice.status, notice.registration_number = "sent", message.registration_number
    _send(step, notice, message.registration_number)
    return True


def _send(step: Step, notice: Notice, registration_number: str) -> None:
    state = step.state
    app = state.children[notice.child_ref].application
    guardian = app.guardians[0]
    rules = state.rules
    deadlines = None
    if notice.kind == "invitation":
        days = rules.offer_deadline_days
        first = local_date(step.at)
        deadlines = DeadlineSchedule(
            first_day=first,
            respond_by=state.notice_law.schedule(  # type: ignore[arg-type]
                first, SCHEDULE_DAYS, days, NOTIFYING_CHANNELS
            ),
        )
    language = guardian.correspondence_language
    step.emit(
        SendNotification,
        notification_id=_notification_id(notice),
        child_ref=notice.child_ref,
        purpose=PURPOSE[notice.kind],
        offer_id=notice.offer_id,
        recipient=Recipient(
            personal_code=guardian.personal_code,
            email=guardian.email,
            phone=guardian.phone,
            # A registered letter goes to the guardian's postal address, else home.
            postal_address_code=guardian.postal_address_code or app.residence_address_code,
        ),
        language=language,
        template=PURPOSE[notice.kind],
        variables=notice.variables,
        document=NoticeDocument(
            kind=notice.kind,
            document_key=notice.document_key,
            registration_number=registration_number,
            issued_on=local_date(step.at),
            appeal=state.appeal.get(language) or state.appeal.get("lv"),
        ),
        deadlines=deadlines,
    )


def _notification_id(notice: Notice) -> str:
    return str(stable_id("notify", notice.document_key))


__all__ = [
    "NOTIFYING_CHANNELS",
    "SCHEDULE_DAYS",
    "Notice",
    "issue",
    "key_of",
    "offer_closed",
    "registered",
]
