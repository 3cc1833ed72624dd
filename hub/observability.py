"""Logging with structured fields.

Code logs a short message and passes identifiers as ``extra`` fields
(event_id, correlation_id, topic, partition, offset, ...); the formatter
appends them as ``key=value``. Personal codes are never passed: the
:class:`~schemas.values.PersonalCode` type masks itself even if one slips in.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

# Attributes every LogRecord has; anything else came in through `extra`.
_STANDARD = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


class KeyValueFormatter(logging.Formatter):
    """``2026-11-23 14:55:59 INFO hub.embedded: embedded broker ready bootstrap=127.0.0.1:9092``"""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s", "%Y-%m-%d %H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        fields = {k: v for k, v in vars(record).items() if k not in _STANDARD}
        if fields:
            text += " " + " ".join(f"{k}={v}" for k, v in fields.items())
        return text


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is at the time (tests and tools swap it)."""

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _value: Any) -> None:
        pass


def setup_logging(level: str = "INFO") -> None:
    """Send hub logs to stderr with structured fields; idempotent."""
    root = logging.getLogger()
    root.setLevel(level)
    if not any(isinstance(h.formatter, KeyValueFormatter) for h in root.handlers):
        handler = _StderrHandler()
        handler.setFormatter(KeyValueFormatter())
        root.addHandler(handler)
    # aiokafka and FastStream's broker lifecycle (partition assignments, task
    # callbacks) are chatty at INFO, httpx logs every request and aiosmtpd every
    # SMTP command (with addresses); keep their warnings unless debugging.
    quiet = max(logging.WARNING, root.level) if root.level > logging.DEBUG else logging.DEBUG
    for name in ("aiokafka", "hub.broker", "httpx", "httpcore", "mail.log"):
        logging.getLogger(name).setLevel(quiet)
