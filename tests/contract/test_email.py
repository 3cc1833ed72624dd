"""Contract of the SMTP simulator and the e-mail client, over real SMTP on loopback."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from adapters.notify.base import Accepted, Attachment, Outgoing, Rejected
from adapters.notify.email import EmailClient, OutcomeUnknown, message_id_for, shown_address
from hub.errors import ConfigurationError, TransientError
from hub.reliability.retry import RetryPolicy, UnavailableError
from simulators.smtp.server import GREYLISTED, REFUSED, SmtpSimulator, create_server

FAST = RetryPolicy(attempts=4, initial_wait=0.01, max_wait=0.05, max_seconds=10)
SENDER = "Rīgas valstspilsētas pašvaldība <pazinojumi@riga.lv>"
LATVIAN = "ā č ē ģ ī ķ ļ ņ š ū ž Ā Č Ē Ģ Ī Ķ Ļ Ņ Š Ū Ž"
SUBJECT = "Piedāvājums: vieta pirmsskolas izglītības iestādē „Ķiršu dārziņš”"
TEXT = (
    "Labdien!\n\n"
    f"Jūsu bērnam piedāvāta vieta. Burti: {LATVIAN}.\n"
    "Lūdzu, atbildiet līdz 2025. gada 1. septembrim.\n"
)


def outgoing(key: str = "offer-1/email", reference: str = "PII-2025-000123") -> Outgoing:
    return Outgoing(key=key, subject=SUBJECT, text=TEXT, reference=reference)


class Errors:
    """Every error the client raised or retried, to check that no address leaks into them."""

    def __init__(self) -> None:
        self.seen: list[BaseException] = []

    def __call__(self, error: BaseException) -> None:
        self.seen.append(error)


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def text(self) -> str:
        return "\n".join(f"{r.getMessage()} {r.__dict__}" for r in self.records)


@pytest.fixture
def retry_log() -> Iterator[Records]:
    handler = Records()
    logger = logging.getLogger("hub.reliability.retry")
    old_level = logger.level
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)


@pytest.fixture
async def smtp() -> AsyncIterator[SmtpSimulator]:
    async with create_server(seed=1) as server:
        yield server


def client_for(
    server: SmtpSimulator, *, policy: RetryPolicy = FAST, timeout: float = 5.0
) -> tuple[EmailClient, Errors]:
    errors = Errors()
    client = EmailClient(
        server.host, server.port, sender=SENDER, timeout=timeout, policy=policy, on_retry=errors
    )
    return client, errors


def assert_no_local_part(error: BaseException, address: str) -> None:
    local, _, domain = address.rpartition("@")
    shown = f"{error} {error.args!r}"
    assert local.lower() not in shown.lower()
    assert address.lower() not in shown.lower()
    assert f"…@{domain}" in str(error)
    assert error.__cause__ is None
    assert error.__suppress_context__


# --- the happy path ---------------------------------------------------------------------


async def test_send_is_accepted_and_stored_once_with_its_message_id(smtp: SmtpSimulator) -> None:
    client, errors = client_for(smtp)
    before = datetime.now(UTC)

    result = await client.send("janis.berzins@example.lv", outgoing())

    assert isinstance(result, Accepted)
    assert result.delivered is True
    assert result.provider_message_id == message_id_for("offer-1/email", SENDER)
    assert before <= result.at <= datetime.now(UTC)
    assert errors.seen == []
    assert len(smtp.messages) == 1
    assert smtp.by_message_id == {result.provider_message_id: 1}
    received = smtp.messages[0]
    assert received.message_id == result.provider_message_id
    assert received.mail_from == "pazinojumi@riga.lv"
    assert received.rcpt_tos == ["janis.berzins@example.lv"]
    assert received["X-Hub-Reference"] == "PII-2025-000123"
    assert received["To"] == "janis.berzins@example.lv"
    assert received["Content-Language"] == "lv"
    assert smtp.stats["accepted"] == 1


async def test_latvian_text_and_subject_survive_and_the_subject_is_encoded(
    smtp: SmtpSimulator,
) -> None:
    client, _ = client_for(smtp)

    await client.send("ilze@example.lv", outgoing())

    received = smtp.messages[0]
    assert received.get_content_type() == "text/plain"
    assert received.get_content_charset() == "utf-8"
    assert received.get_content() == TEXT
    for letter in "āčēģīķļņšūžĀČĒĢĪĶĻŅŠŪŽ":
        assert letter in received.get_content()
    assert received["Subject"] == SUBJECT
    # The server does not offer SMTPUTF8: the header must travel as RFC 2047 encoded words.
    raw_headers = received.raw.split(b"\r\n\r\n", 1)[0]
    subject_line = raw_headers[raw_headers.index(b"Subject:") :].split(b"\r\n")[0]
    assert subject_line.isascii()
    assert b"=?utf-8?" in subject_line.lower()
    assert raw_headers.isascii()
    # The sender's display name (with Latvian letters) survives too.
    assert received["From"].addresses[0].display_name == "Rīgas valstspilsētas pašvaldība"


async def test_attachments_arrive_intact_after_the_text(smtp: SmtpSimulator) -> None:
    client, _ = client_for(smtp)
    edoc = Attachment("lēmums.edoc", "application/vnd.etsi.asic-e+zip", bytes(range(256)) * 40)
    pdf = Attachment("lemums.pdf", "application/pdf", b"%PDF-1.7\n\x00\xff\r\n.\r\n")
    message = replace(outgoing(), attachments=(edoc, pdf))

    result = await client.send("ilze@example.lv", message)

    assert isinstance(result, Accepted)
    received = smtp.messages[0]
    assert received.get_content_type() == "multipart/mixed"
    assert received["Content-Language"] == "lv"
    body = received.get_body(("plain",))
    assert body is not None and body.get_content() == TEXT
    assert received.files() == [
        ("lēmums.edoc", "application/vnd.etsi.asic-e+zip", edoc.content),
        ("lemums.pdf", "application/pdf", pdf.content),
    ]


async def test_message_id_is_stable_per_key_and_depends_on_key_and_sender_domain() -> None:
    first = message_id_for("offer-1/email", SENDER)
    assert first == message_id_for("offer-1/email", SENDER)
    assert first == message_id_for("offer-1/email", "pazinojumi@riga.lv")
    assert first.startswith("<") and first.endswith("@riga.lv>")
    assert len(first.split("@")[0]) == 33  # "<" + 32 hex digits
    assert first != message_id_for("offer-2/email", SENDER)
    assert first != message_id_for("offer-1/email", "info@jelgava.lv")


async def test_the_same_key_sent_twice_is_two_deliveries_with_one_message_id(
    smtp: SmtpSimulator,
) -> None:
    """SMTP cannot deduplicate: guarding a key against a second send is the service's job;
    the stable Message-ID is what lets a recipient (and these tests) see the duplicate."""
    client, _ = client_for(smtp)

    first = await client.send("anna@example.lv", outgoing())
    second = await client.send("anna@example.lv", outgoing())

    assert isinstance(first, Accepted) and isinstance(second, Accepted)
    assert first.provider_message_id == second.provider_message_id
    assert smtp.by_message_id[first.provider_message_id] == 2


# --- refusals and transient failures -------------------------------------------------------


async def test_refused_recipient_is_rejected_without_retry_and_nothing_is_stored(
    smtp: SmtpSimulator,
) -> None:
    client, errors = client_for(smtp)

    result = await client.send("refuse.peteris@example.lv", outgoing())

    assert result == Rejected("recipient_refused")
    assert smtp.messages == []
    assert smtp.stats["refused"] == 1  # a permanent answer is not retried
    assert errors.seen == []


async def test_recipient_on_the_refuse_list_is_rejected() -> None:
    async with SmtpSimulator(refuse=["Karlis@Example.lv"]) as server:
        client, _ = client_for(server)
        assert await client.send("karlis@example.lv", outgoing()) == Rejected("recipient_refused")
        accepted = await client.send("karlis2@example.lv", outgoing(key="other"))
        assert isinstance(accepted, Accepted)
        assert [m.rcpt_tos for m in server.messages] == [["karlis2@example.lv"]]


async def test_greylisted_recipient_is_accepted_after_a_retry(
    smtp: SmtpSimulator, retry_log: Records
) -> None:
    client, errors = client_for(smtp)
    to = "grey.liga@example.lv"

    result = await client.send(to, outgoing())

    assert isinstance(result, Accepted) and result.delivered
    assert smtp.stats["greylisted"] == 1
    assert len(errors.seen) == 1
    assert isinstance(errors.seen[0], UnavailableError)
    assert "451 4.7.1" in str(errors.seen[0])
    assert_no_local_part(errors.seen[0], to)
    assert len(smtp.messages) == 1
    assert smtp.by_message_id == {result.provider_message_id: 1}
    assert "grey.liga" not in retry_log.text()
    assert "…@example.lv" in retry_log.text()


async def test_greylist_all_defers_every_new_pair_once() -> None:
    async with create_server(greylist_all=True) as server:
        client, errors = client_for(server)
        for n in range(3):
            result = await client.send(f"person{n}@example.lv", outgoing(key=f"k{n}"))
            assert isinstance(result, Accepted)
        again = await client.send("person0@example.lv", outgoing(key="k-again"))
        assert isinstance(again, Accepted)
        assert server.stats["greylisted"] == 3  # the known pair passes at once
        assert len(errors.seen) == 3
        assert len(server.messages) == 4


async def test_greylisting_is_a_plain_451_at_rcpt(smtp: SmtpSimulator) -> None:
    """Without retries, the greylisting answer itself surfaces as a transient error."""
    client, _ = client_for(smtp, policy=RetryPolicy(attempts=1))
    with pytest.raises(UnavailableError) as caught:
        await client.send("grey.once@example.lv", outgoing())
    assert GREYLISTED.split()[1] in str(caught.value)
    assert isinstance(caught.value, TransientError)
    assert smtp.messages == []


async def test_a_connection_dropped_after_the_message_is_handed_over_is_never_resent(
    smtp: SmtpSimulator, retry_log: Records
) -> None:
    """Lost at DATA, the outcome is unknown: sending again could deliver twice."""
    client, errors = client_for(smtp)
    to = "drop.martins@example.lv"

    with pytest.raises(OutcomeUnknown) as caught:
        await client.send(to, outgoing())

    assert smtp.stats["dropped"] == 1  # one attempt, no retry
    assert errors.seen == []
    assert not smtp.by_message_id
    assert_no_local_part(caught.value, to)
    assert "drop.martins" not in retry_log.text()


async def test_service_unavailable_at_fault_rate_one_is_unavailable_error() -> None:
    async with create_server(fault_rate=1.0, seed=3) as server:
        client, errors = client_for(server)
        to = "edgars@example.lv"
        with pytest.raises(UnavailableError) as caught:
            await client.send(to, outgoing())
        assert "421" in str(caught.value)
        assert server.stats["faults"] == FAST.attempts
        assert len(errors.seen) == FAST.attempts - 1
        assert server.messages == []
        for error in [*errors.seen, caught.value]:
            assert_no_local_part(error, to)


async def test_at_fault_rate_one_half_every_message_arrives_exactly_once() -> None:
    patient = RetryPolicy(attempts=25, initial_wait=0.005, max_wait=0.02, max_seconds=10)
    async with create_server(fault_rate=0.5, seed=20) as server:
        client, errors = client_for(server, policy=patient)
        recipients = [f"vecaks{n:02}@example.lv" for n in range(20)]
        results = await asyncio.gather(
            *(client.send(to, outgoing(key=f"offer-{n}/email")) for n, to in enumerate(recipients))
        )

        assert all(isinstance(r, Accepted) and r.delivered for r in results)
        assert server.stats["faults"] > 0  # faults did happen, and were retried
        assert len(errors.seen) == server.stats["faults"]
        expected = {message_id_for(f"offer-{n}/email", SENDER) for n in range(20)}
        assert set(server.by_message_id) == expected
        assert all(count == 1 for count in server.by_message_id.values())
        assert sorted(to for m in server.messages for to in m.rcpt_tos) == recipients


async def test_dropped_connections_never_deliver_a_message_twice() -> None:
    async with create_server(seed=1, drop_rate=0.5) as server:
        client, _ = client_for(
            server, policy=RetryPolicy(attempts=25, initial_wait=0.005, max_wait=0.02)
        )
        outcomes = []
        for n in range(12):
            try:
                outcomes.append(await client.send(f"p{n}@example.lv", outgoing(key=f"d{n}")))
            except OutcomeUnknown:
                outcomes.append(None)
        delivered = [o for o in outcomes if isinstance(o, Accepted)]
        assert server.stats["dropped"] == outcomes.count(None) > 0
        assert len(server.messages) == len(delivered) > 0
        assert all(count == 1 for count in server.by_message_id.values())


async def test_a_server_that_never_answers_times_out_as_unavailable() -> None:
    connections = 0

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await reader.read()  # until the client gives up and closes
        writer.close()
        await writer.wait_closed()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    errors = Errors()
    client = EmailClient(
        "127.0.0.1",
        port,
        sender=SENDER,
        timeout=0.3,
        policy=RetryPolicy(attempts=2, initial_wait=0.01, max_wait=0.02),
        on_retry=errors,
    )
    to = "silent.sanita@example.lv"
    try:
        started = asyncio.get_running_loop().time()
        with pytest.raises(UnavailableError) as caught:
            await client.send(to, outgoing())
        elapsed = asyncio.get_running_loop().time() - started
    finally:
        server.close()
        await server.wait_closed()
    assert connections == 2
    assert 0.55 <= elapsed < 3.0
    assert "0.3 s" in str(caught.value)
    for error in [*errors.seen, caught.value]:
        assert_no_local_part(error, to)


async def test_nobody_listening_is_unavailable() -> None:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    client = EmailClient("127.0.0.1", port, sender=SENDER, timeout=1.0, policy=FAST)
    to = "nobody.home@example.lv"
    with pytest.raises(UnavailableError) as caught:
        await client.send(to, outgoing())
    assert_no_local_part(caught.value, to)


# --- input checks ---------------------------------------------------------------------------


async def test_an_address_that_is_not_one_is_rejected_without_a_connection(
    smtp: SmtpSimulator,
) -> None:
    client, _ = client_for(smtp)
    for bad in ["", "no-at-sign", "two@@example.lv", "a b@example.lv", "x@localhost", "@x.lv"]:
        assert await client.send(bad, outgoing()) == Rejected("invalid_address")
    assert smtp.stats["connections"] == 0


def test_the_sender_must_be_an_address() -> None:
    with pytest.raises(ConfigurationError):
        EmailClient("127.0.0.1", 25, sender="Rīgas dome")
    with pytest.raises(ConfigurationError):
        EmailClient("127.0.0.1", 25, sender="a@b.lv", username="user")


def test_shown_address_keeps_only_the_domain() -> None:
    assert shown_address("janis.berzins@example.lv") == "…@example.lv"
    assert "janis" not in shown_address("janis")


async def test_simulator_answers_are_the_documented_ones() -> None:
    assert REFUSED.startswith("550 5.1.1")
    assert GREYLISTED.startswith("451 4.7.1")
    server = create_server()
    assert not server.running
    async with server:
        assert server.running and server.port > 0
    assert not server.running
    with pytest.raises(ValueError):
        SmtpSimulator(fault_rate=1.5)
