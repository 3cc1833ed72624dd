"""A notice as the parents receive it: the PDF of the document, sealed as an ``.edoc``.

The allocation service decides what a notice says (its kind, the place, the reason, the
deadline schedule, the appeal instructions) and registers it in the DVS; this module turns
that into the document (:mod:`hub.documents`) with the deadline of the channel and the day
it is sent, seals it with the municipality's e-seal, and names the file after its
registration number. The reasons' and the notification rule's wording are here: how the
parents read the hub's codes.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import date, datetime

from hub.documents import Notice, format_date, render_pdf
from hub.documents.edoc import EDOC_MEDIA_TYPE, SealKey, seal
from hub.errors import PermanentError
from schemas.notifications import SendNotification

REASONS: dict[str, dict[str, str]] = {
    "superseded": {
        "lv": "Jūsu bērnam ir piedāvāta vieta iestādē, kuru pieteikumā norādījāt augstāk.",
        "en": "Your child has been offered a place at an institution you ranked higher.",
    },
    "capacity_reduced": {
        "lv": "Iestādē ir samazināts vietu skaits grupā, un šī vieta vairs nav pieejama.",
        "en": "The number of places in the group has been reduced; this place is no longer"
        " available.",
    },
    "application_withdrawn": {
        "lv": "Pieteikums ir atsaukts.",
        "en": "The application has been withdrawn.",
    },
    "expired": {
        "lv": "Piedāvājums netika apstiprināts vai atteikts noteiktajā termiņā.",
        "en": "The offer was neither accepted nor declined by its deadline.",
    },
    "on_list": {
        "lv": "Bērns jau ir iekļauts uzņemšanas sarakstā; pēc tam pieteikumu mainīt vairs nevar"
        " (Rīgas domes saistošo noteikumu Nr. 191 16. punkts).",
        "en": "The child is already on the admission list; after that the application can no"
        " longer be changed (Riga City Council binding regulations Nr. 191, point 16).",
    },
    "authorisation_refused": {
        "lv": "Pieteikumu iesniedza pilnvarota persona, bet pilnvaru reģistrs neapstiprina, ka"
        " pilnvara šim bērnam un pirmsskolas izglītības jautājumiem bija derīga iesniegšanas"
        " dienā (Rīgas domes saistošo noteikumu Nr. 191 7.2. apakšpunkts). Pieteikumu var"
        " iesniegt vecāks vai persona ar derīgu bāriņtiesas vai notāra izsniegtu pilnvaru.",
        "en": "The application was filed by an authorised person, but the register of"
        " authorisations does not confirm that the authorisation was valid for this child and"
        " pre-school matters on the day of filing (Riga City Council binding regulations"
        " Nr. 191, point 7.2). A parent, or a person with a valid authorisation from an"
        " orphans' court or a notary, may apply.",
    },
}
"""A notice's reason code (from the allocation service) → the sentence the parents read."""

NOTIFIED_RULE = {
    "lv": "Termiņu skaita no dienas, kad šis dokuments uzskatāms par paziņotu saskaņā ar"
    " Paziņošanas likumu; šim dokumentam tā ir augstāk norādītā atbildes diena.",
    "en": "The period runs from the day this document counts as notified under the"
    " Notification Law; for this document that gives the answer date above.",
}


class NoSeal(PermanentError):
    """A document cannot be sent: no e-seal is configured (HUB_SEAL_KEY, HUB_SEAL_CERTIFICATE)."""


@dataclass(frozen=True, slots=True)
class Sealed:
    """A notice's document, ready to send and to store."""

    pdf: bytes
    edoc: bytes
    file_name: str
    """``<registration number>.edoc``, made safe for a file name."""
    sha256: str
    """SHA-256 of the ``.edoc``, hex."""
    respond_by: date | None
    """The deadline printed on it (an invitation)."""

    @property
    def media_type(self) -> str:
        return EDOC_MEDIA_TYPE


def file_stem(registration_number: str) -> str:
    """``RD/2026/00012`` → ``RD-2026-00012``."""
    return re.sub(r"[^A-Za-z0-9]+", "-", registration_number).strip("-") or "document"


def pdf_variables(
    request: SendNotification, reference: str, portal_url: str, respond_by: date | None
) -> dict[str, str]:
    """The values the document templates read, dates in the documents' format."""
    language = request.language
    given = request.variables
    reason = given.get("reason", "")
    variables = {
        "reference": reference,
        "institution": given.get("institution", ""),
        "group": given.get("group", ""),
        "start_date": _formatted(given.get("start_date")),
        "response_days": given.get("response_days", ""),
        "respond_by": format_date(respond_by)
        if respond_by
        else _formatted(given.get("respond_by")),
        "notified_rule": NOTIFIED_RULE[language],
        "reason": REASONS.get(reason, {}).get(language, reason),
        "portal_url": portal_url,
    }
    return variables


def _formatted(iso: str | None) -> str:
    return format_date(date.fromisoformat(iso)) if iso else ""


def make(
    request: SendNotification,
    *,
    seal_key: SealKey | None,
    sender: str,
    reference: str,
    portal_url: str,
    respond_by: date | None,
    at: datetime,
) -> Sealed:
    """The sealed document of ``request`` (which carries one), with ``respond_by``."""
    document = request.document
    if document is None:
        raise ValueError("the request carries no document")
    if seal_key is None:
        raise NoSeal("no e-seal is configured (HUB_SEAL_KEY, HUB_SEAL_CERTIFICATE)")
    notice = Notice(
        kind=document.kind,
        language=request.language,
        registration_number=document.registration_number,
        issued_on=document.issued_on,
        sender=sender,
        variables=pdf_variables(request, reference, portal_url, respond_by),
        appeal=document.appeal,
    )
    try:
        pdf = render_pdf(notice)
    except ValueError as exc:  # DocumentError: a missing value or appeal text
        raise PermanentError(f"document {document.document_key}: {exc}") from None
    stem = file_stem(document.registration_number)
    edoc = seal(seal_key, f"{stem}.pdf", pdf, media_type="application/pdf", at=at)
    return Sealed(pdf, edoc, f"{stem}.edoc", hashlib.sha256(edoc).hexdigest(), respond_by)


__all__ = ["REASONS", "NoSeal", "Sealed", "file_stem", "make", "pdf_variables"]
