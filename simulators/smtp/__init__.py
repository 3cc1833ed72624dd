"""Simulator of the recipients' mail server (SMTP, with fault injection); see :mod:`.server`."""

from simulators.smtp.server import (
    DROP_PREFIX,
    GREY_PREFIX,
    GREYLISTED,
    REFUSE_PREFIX,
    REFUSED,
    UNAVAILABLE,
    ReceivedMessage,
    SmtpSimulator,
    create_server,
)

__all__ = [
    "DROP_PREFIX",
    "GREYLISTED",
    "GREY_PREFIX",
    "REFUSED",
    "REFUSE_PREFIX",
    "UNAVAILABLE",
    "ReceivedMessage",
    "SmtpSimulator",
    "create_server",
]
