"""Simulator of the official electronic address (e-adrese, DIV); see :mod:`.app`."""

from simulators.eadrese.app import (
    ALLOWED_EXTENSIONS,
    BROKEN_MAILBOX,
    MAX_ATTACHMENTS,
    MAX_SUBJECT,
    OPENED,
    create_app,
)

__all__ = [
    "ALLOWED_EXTENSIONS",
    "BROKEN_MAILBOX",
    "MAX_ATTACHMENTS",
    "MAX_SUBJECT",
    "OPENED",
    "create_app",
]
