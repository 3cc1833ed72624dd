"""The e-mail channel: sending one notification to one address over SMTP (aiosmtplib).

The only confirmation this channel has is the recipient's server accepting the message
(``250`` after ``DATA``), so a sent message is :class:`Accepted` with ``delivered=True``.
What the answers mean:

- ``5xx`` to ``RCPT TO`` (or to the message at ``DATA``): :class:`Rejected`; sending again
  cannot help.
- ``4xx`` anywhere (greylisting, ``421`` service not available), a refused, dropped or
  silent connection, a timeout: :class:`UnavailableError`, retried with backoff by the
  client's :class:`RetryPolicy`; it propagates when the policy gives up.
- ``5xx`` to the greeting, ``EHLO``, ``MAIL FROM`` or the login: :class:`Refused` (our
  sender or account is refused, which an operator must fix), not retried.

A message's attachments (``Outgoing.attachments``) are attached as MIME parts (a
``multipart/mixed`` message: the text first, then each file with its media type and name).

SMTP cannot tell a retried message from a new one: the ``Message-ID`` is derived from the
message's key (:func:`message_id_for`) so that the recipient, and the tests, can see
duplicates, but keeping a key from being sent twice is the calling service's job.

E-mail addresses are personal data: error texts and logs name only the recipient's
domain (``…@example.lv``), never the local part.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from email.utils import format_datetime, parseaddr

import aiosmtplib

from adapters.notify.base import (
    Accepted,
    ChannelClient,
    Clock,
    Outcome,
    Outgoing,
    Rejected,
    system_clock,
)
from hub.errors import ConfigurationError, PermanentError
from hub.reliability.retry import InvalidResponse, Refused, RetryPolicy, UnavailableError
from schemas.values import mask_personal_codes

_ENHANCED = re.compile(r"^\s*([245]\.\d{1,3}\.\d{1,3})\b")
_BAD_ADDRESS_CHARS = re.compile(r"[\s<>,;\"\\()\[\]]")


def _domain(address: str) -> str:
    return address.rpartition("@")[2]


def shown_address(address: str) -> str:
    """``address`` as it may appear in logs and errors: only its domain (``…@example.lv``)."""
    domain = _domain(address) if "@" in address else ""
    return f"…@{mask_personal_codes(domain)}" if domain else "…"


def message_id_for(key: str, sender: str) -> str:
    """The ``Message-ID`` of the message with idempotency key ``key``: the same every time.

    ``<{first 32 hex digits of sha256(key)}@{domain of sender}>``; ``sender`` may be a bare
    address or ``Name <address>``.
    """
    domain = _domain(parseaddr(sender)[1]) or "localhost"
    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:32]
    return f"<{digest}@{domain}>"


def _valid_address(address: str) -> bool:
    local, at, domain = address.rpartition("@")
    return bool(at and local and domain and "." in domain.strip(".")) and not (
        _BAD_ADDRESS_CHARS.search(address) or "@" in local
    )


def _media_type(media_type: str) -> tuple[str, str]:
    """``media_type`` as MIME's main type and subtype, its parameters dropped; a type that is
    none is sent as ``application/octet-stream``."""
    maintype, slash, subtype = media_type.partition(";")[0].strip().lower().partition("/")
    if not (slash and maintype and subtype) or _BAD_ADDRESS_CHARS.search(maintype + subtype):
        return "application", "octet-stream"
    return maintype, subtype


def _status(code: int, message: str) -> str:
    """The code and, when the server gave one, the enhanced status: never its free text
    (which often repeats the address)."""
    found = _ENHANCED.match(message or "")
    return f"{code} {found.group(1)}" if found else str(code)


class EmailClient(ChannelClient):
    """Sends :class:`Outgoing` messages to one SMTP server (a relay or the recipient's MX).

    Every message goes over its own connection, with ``timeout`` for each step (so there is
    nothing to close). ``clock`` dates the messages and their acceptance.
    """

    system = "smtp server"

    def __init__(
        self,
        host: str,
        port: int,
        *,
        sender: str,
        timeout: float = 10.0,
        policy: RetryPolicy | None = None,
        use_tls: bool = False,
        username: str | None = None,
        password: str | None = None,
        on_retry: Callable[[BaseException], None] | None = None,
        clock: Clock = system_clock,
    ) -> None:
        envelope_sender = parseaddr(sender)[1]
        if not _valid_address(envelope_sender):
            raise ConfigurationError("the e-mail sender is not an address (name@domain)")
        if (username is None) != (password is None):
            raise ConfigurationError("an SMTP username needs a password, and vice versa")
        self.host = host
        self.port = port
        self.sender = sender
        self.envelope_sender = envelope_sender
        self.timeout = timeout
        self.policy = policy or RetryPolicy()
        self.use_tls = use_tls
        self._username = username
        self._password = password
        self._clock = clock
        self._listeners: list[Callable[[BaseException], None]] = [on_retry] if on_retry else []

    def add_retry_listener(self, listener: Callable[[BaseException], None]) -> None:
        """Call ``listener`` with the error of every retried attempt (metrics count them)."""
        self._listeners.append(listener)

    def _on_retry(self, error: BaseException) -> None:
        for listener in self._listeners:
            listener(error)

    def message_id(self, key: str) -> str:
        return message_id_for(key, self.sender)

    def build(self, to: str, message: Outgoing) -> EmailMessage:
        """The e-mail for ``message``: UTF-8 plain text in ``message.language``, with a stable
        ``Message-ID``, and its attachments after the text (``multipart/mixed``)."""
        mail = EmailMessage()
        mail["From"] = self.sender
        mail["To"] = to
        mail["Subject"] = message.subject
        mail["Date"] = format_datetime(self._clock())
        mail["Message-ID"] = self.message_id(message.key)
        mail["X-Hub-Reference"] = mask_personal_codes(message.reference)
        mail.set_content(message.text, charset="utf-8")  # replaces every Content-* header
        for attachment in message.attachments:
            maintype, subtype = _media_type(attachment.media_type)
            mail.add_attachment(
                attachment.content, maintype=maintype, subtype=subtype, filename=attachment.name
            )
        mail["Content-Language"] = message.language  # after: making it multipart moves Content-*
        return mail

    async def send(self, to: str, message: Outgoing) -> Outcome:
        """Send ``message`` to ``to``, retrying what may pass; see the module docstring."""
        if not _valid_address(to):
            return Rejected("invalid_address")
        mail = self.build(to, message)
        message_id = str(mail["Message-ID"])
        return await self.policy.call(
            lambda: self._once(to, mail, message_id),
            what=f"e-mail to {shown_address(to)}",
            on_retry=self._on_retry,
        )

    async def _once(self, to: str, mail: EmailMessage, message_id: str) -> Outcome:
        shown = f"{self.system} {self.host}:{self.port} for {shown_address(to)}"
        smtp = aiosmtplib.SMTP(
            hostname=self.host,
            port=self.port,
            timeout=self.timeout,
            use_tls=self.use_tls,
            start_tls=False if not self.use_tls and self._username is None else None,
            local_hostname=_domain(self.envelope_sender),
        )
        handed_over = False
        try:
            async with smtp:
                if self._username is not None:
                    await smtp.login(self._username, self._password or "")
                options = ["BODY=8BITMIME"] if smtp.supports_extension("8BITMIME") else []
                await smtp.mail(self.envelope_sender, options=options)
                await smtp.rcpt(to)
                handed_over = True  # from here a lost answer leaves the outcome unknown
                await smtp.data(mail.as_bytes(policy=SMTP_POLICY))
        except (aiosmtplib.SMTPTimeoutError, aiosmtplib.SMTPServerDisconnected, OSError) as exc:
            if handed_over:
                raise OutcomeUnknown(
                    f"{shown}: the answer to the message was lost ({type(exc).__name__})"
                ) from None
            raise UnavailableError(
                f"{shown}: no answer within {self.timeout:g} s or connection lost"
                f" ({type(exc).__name__})"
            ) from None
        except aiosmtplib.SMTPRecipientsRefused as exc:
            codes = [refused.code for refused in exc.recipients]
            worst = min(codes) if codes else 0  # any 4xx: it may pass, so try again
            if 400 <= worst < 500 or not codes:
                raise UnavailableError(
                    f"{shown}: recipient deferred ({_status(worst, exc.recipients[0].message)})"
                    if codes
                    else f"{shown}: recipient deferred"
                ) from None
            return Rejected("recipient_refused")
        except aiosmtplib.SMTPResponseException as exc:
            status = _status(exc.code, exc.message)
            if 400 <= exc.code < 500:
                raise UnavailableError(f"{shown}: temporarily refused ({status})") from None
            if isinstance(exc, aiosmtplib.SMTPRecipientRefused):
                return Rejected("recipient_refused")
            if isinstance(exc, aiosmtplib.SMTPDataError) and 500 <= exc.code < 600:
                return Rejected("message_refused")
            if 500 <= exc.code < 600:
                step = type(exc).__name__.removeprefix("SMTP")
                raise Refused(f"{shown}: refused ({status}, {step})", status=exc.code) from None
            raise InvalidResponse(f"{shown}: unexpected answer ({status})") from None
        except aiosmtplib.SMTPConnectError:
            raise UnavailableError(f"{shown}: connection refused") from None
        except aiosmtplib.SMTPNotSupported:
            return Rejected("recipient_address_unsupported")
        except aiosmtplib.SMTPException as exc:
            raise InvalidResponse(f"{shown}: {type(exc).__name__}") from None
        except ValueError:  # aiosmtplib refuses an address it cannot send safely
            return Rejected("invalid_address")
        return Accepted(provider_message_id=message_id, at=self._clock(), delivered=True)


class OutcomeUnknown(PermanentError):
    """The connection broke after the message was handed to the server (DATA): it may have
    been delivered. Not retried — sending again could deliver it twice."""


__all__ = ["EmailClient", "OutcomeUnknown", "message_id_for", "shown_address"]
