"""A fake SMTP server (the recipients' mail server), speaking real SMTP on loopback.

:class:`SmtpSimulator` runs an :mod:`aiosmtpd` server in the current event loop on
``127.0.0.1`` (a free port unless one is given) and keeps every message it accepts in
:attr:`SmtpSimulator.messages`, counted by ``Message-ID`` in
:attr:`SmtpSimulator.by_message_id`; a stored message's attachments are read back with
:meth:`ReceivedMessage.files`. Use it as an async context manager, or call
:meth:`~SmtpSimulator.start` and :meth:`~SmtpSimulator.stop`::

    async with create_server(fault_rate=0.2, seed=7) as smtp:
        ...  # send to smtp.host:smtp.port

Behaviour, chosen at start and by magic recipients (the *local part* is what comes before
the ``@``, compared case-insensitively):

``refuse…`` local part, or an address on ``refuse=[...]``
    ``550 5.1.1 mailbox unavailable`` at ``RCPT TO``: a permanent refusal.
``grey…`` local part, or every recipient with ``greylist_all=True``
    ``451 4.7.1 greylisted, try again later`` at ``RCPT TO`` the first time a given
    sender/recipient pair is seen; accepted from then on.
``drop…`` local part, or a share ``drop_rate`` of connections (seeded random)
    the connection is closed without an answer after the message was sent at ``DATA``;
    nothing is stored (a dropped connection).
``fault_rate`` (seeded random, per ``MAIL FROM``)
    ``421 4.3.2 service not available, closing transmission channel`` at ``MAIL FROM``,
    then the server closes the connection.

Every other message is answered ``250`` at ``DATA`` and stored. :attr:`SmtpSimulator.stats`
counts what happened (``connections``, ``faults``, ``refused``, ``greylisted``,
``dropped``, ``accepted``). The same seed gives the same faults for the same sequence of
commands.
"""

from __future__ import annotations

import asyncio
import random
import weakref
from collections import Counter
from collections.abc import Iterable
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from typing import Any, Self

from aiosmtpd.smtp import SMTP, Envelope, Session

HOST = "127.0.0.1"
HOSTNAME = "mx.simulator.invalid"

REFUSED = "550 5.1.1 mailbox unavailable"
GREYLISTED = "451 4.7.1 greylisted, try again later"
UNAVAILABLE = "421 4.3.2 service not available, closing transmission channel"

REFUSE_PREFIX = "refuse"
GREY_PREFIX = "grey"
DROP_PREFIX = "drop"

_DROP = "_simulator_drop"  # attribute on an aiosmtpd Session: this connection is dropped


class ReceivedMessage(EmailMessage):
    """A message the simulator accepted, with its SMTP envelope and raw bytes."""

    mail_from: str = ""
    """The envelope sender (``MAIL FROM``)."""
    rcpt_tos: list[str]
    """The envelope recipients (``RCPT TO``) that were accepted."""
    raw: bytes = b""
    """The message as it came over the wire (after dot-unstuffing)."""

    def __init__(self, policy: Any = None) -> None:
        super().__init__(policy=policy)
        self.rcpt_tos = []

    @property
    def message_id(self) -> str | None:
        value = self["Message-ID"]
        return None if value is None else str(value).strip()

    def files(self) -> list[tuple[str, str, bytes]]:
        """Each attachment's file name, media type and bytes (its transfer encoding undone),
        in the order they came."""
        found = []
        for part in self.iter_attachments():
            content = part.get_payload(decode=True)
            assert isinstance(content, bytes)
            found.append((part.get_filename() or "", part.get_content_type(), content))
        return found


def _local_part(address: str) -> str:
    return address.rpartition("@")[0].lower()


class _Handler:
    """aiosmtpd handler hooks: each returns the SMTP status line to answer."""

    def __init__(self, simulator: SmtpSimulator) -> None:
        self.sim = simulator

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        sim = self.sim
        if not hasattr(session, _DROP):  # the first transaction on this connection
            setattr(session, _DROP, sim.drop_rate > 0 and sim.random.random() < sim.drop_rate)
        if sim.fault_rate > 0 and sim.random.random() < sim.fault_rate:
            sim.stats["faults"] += 1
            transport = server.transport
            if transport is not None:  # 421 closes the channel, after the answer is written
                asyncio.get_running_loop().call_soon(transport.close)
            return UNAVAILABLE
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 2.1.0 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        sim = self.sim
        local = _local_part(address)
        if local.startswith(REFUSE_PREFIX) or address.lower() in sim.refuse:
            sim.stats["refused"] += 1
            return REFUSED
        if sim.greylist_all or local.startswith(GREY_PREFIX):
            pair = ((envelope.mail_from or "").lower(), address.lower())
            if pair not in sim._greylist_passed:
                sim._greylist_passed.add(pair)
                sim.stats["greylisted"] += 1
                return GREYLISTED
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(options)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        sim = self.sim
        dropped = getattr(session, _DROP, False) or any(
            _local_part(rcpt).startswith(DROP_PREFIX) for rcpt in envelope.rcpt_tos
        )
        if dropped:
            sim.stats["dropped"] += 1
            transport = server.transport
            if transport is not None:
                transport.close()
            # Closing the transport cancels this handler; no answer is ever written.
            await asyncio.sleep(5)
            return UNAVAILABLE  # pragma: no cover - only if the close did not cancel us
        raw = envelope.original_content or b""
        if isinstance(envelope.content, bytes):
            raw = envelope.content
        message = BytesParser(_class=ReceivedMessage, policy=policy.default).parsebytes(raw)
        assert isinstance(message, ReceivedMessage)
        message.mail_from = envelope.mail_from or ""
        message.rcpt_tos = list(envelope.rcpt_tos)
        message.raw = raw
        sim.messages.append(message)
        if message.message_id is not None:
            sim.by_message_id[message.message_id] += 1
        sim.stats["accepted"] += 1
        return f"250 2.0.0 OK queued as {len(sim.messages)}"


class SmtpSimulator:
    """An SMTP server on loopback that stores what it accepts and injects faults."""

    def __init__(
        self,
        *,
        port: int = 0,
        fault_rate: float = 0.0,
        drop_rate: float = 0.0,
        seed: int = 0,
        greylist_all: bool = False,
        refuse: Iterable[str] = (),
        host: str = HOST,
    ) -> None:
        for name, rate in (("fault_rate", fault_rate), ("drop_rate", drop_rate)):
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1")
        self.host = host
        self.port = port
        self.fault_rate = fault_rate
        self.drop_rate = drop_rate
        self.seed = seed
        self.greylist_all = greylist_all
        self.refuse = {address.lower() for address in refuse}
        self.random = random.Random(seed)
        self.messages: list[ReceivedMessage] = []
        self.by_message_id: Counter[str] = Counter()
        self.stats: Counter[str] = Counter()
        self._greylist_passed: set[tuple[str, str]] = set()
        self._handler = _Handler(self)
        self._server: asyncio.Server | None = None
        self._connections: weakref.WeakSet[SMTP] = weakref.WeakSet()

    @property
    def running(self) -> bool:
        return self._server is not None

    def clear(self) -> None:
        """Forget the stored messages, counters and greylist (the random stream goes on)."""
        self.messages.clear()
        self.by_message_id.clear()
        self.stats.clear()
        self._greylist_passed.clear()

    def _protocol(self) -> SMTP:
        self.stats["connections"] += 1
        protocol = SMTP(
            self._handler,
            hostname=HOSTNAME,
            ident="municipal hub SMTP simulator",
            decode_data=False,
            enable_SMTPUTF8=False,
            timeout=60,
            loop=asyncio.get_running_loop(),
        )
        self._connections.add(protocol)
        return protocol

    async def start(self) -> Self:
        """Listen on ``host:port`` (a free port when 0); returns once connections are taken."""
        if self._server is not None:
            raise RuntimeError("the SMTP simulator is already running")
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._protocol, self.host, self.port or None)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def stop(self) -> None:
        """Stop listening and close every open connection."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for protocol in list(self._connections):
            if protocol.transport is not None:
                protocol.transport.close()
        await server.wait_closed()
        # Let connection_lost run, which cancels each connection's handler task.
        for _ in range(100):
            if all(protocol.transport is None for protocol in list(self._connections)):
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0)

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


def create_server(
    *,
    port: int = 0,
    fault_rate: float = 0.0,
    seed: int = 0,
    greylist_all: bool = False,
    drop_rate: float = 0.0,
    refuse: Iterable[str] = (),
) -> SmtpSimulator:
    """A simulator (not yet started): ``async with create_server(...) as smtp``."""
    return SmtpSimulator(
        port=port,
        fault_rate=fault_rate,
        seed=seed,
        greylist_all=greylist_all,
        drop_rate=drop_rate,
        refuse=refuse,
    )


__all__ = [
    "DROP_PREFIX",
    "GREYLISTED",
    "GREY_PREFIX",
    "HOST",
    "REFUSED",
    "REFUSE_PREFIX",
    "UNAVAILABLE",
    "ReceivedMessage",
    "SmtpSimulator",
    "create_server",
]
