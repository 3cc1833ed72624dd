"""Simulator of an SMS gateway with delivery callbacks; see :mod:`.app`."""

from simulators.sms.app import (
    MAX_TEXT,
    PERMANENT_FAILURE,
    TEMPORARY_FAILURE_ONCE,
    Sent,
    SmsSimulator,
    create_app,
)

__all__ = [
    "MAX_TEXT",
    "PERMANENT_FAILURE",
    "TEMPORARY_FAILURE_ONCE",
    "Sent",
    "SmsSimulator",
    "create_app",
]
