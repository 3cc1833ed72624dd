"""Notices rendered to PDF and sealed as .edoc containers (hub.documents)."""

from __future__ import annotations

import io
import re
import zipfile
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, date, datetime

import pytest
from cryptography.hazmat.primitives.serialization import Encoding
from hypothesis import given, settings
from hypothesis import strategies as st

from hub.documents import (
    ADMINISTRATIVE_ACTS,
    EDOC_MEDIA_TYPE,
    KINDS,
    DocumentError,
    EdocError,
    Notice,
    SealKey,
    format_date,
    open_edoc,
    parse_date,
    pdf_text,
    read_fields,
    render_pdf,
    required_variables,
    seal,
)
from hub.documents.edoc import SIGNATURES
from tests.seal_kit import SealKit, make_ca

VARIABLES = {
    "reference": "PII-1A2B3C4D",
    "institution": "Žaņa Lipkes PII „Pīļuks”, Ķīpsalas iela 5",
    "group": "Čiekuriņi (3–4 gadi)",
    "start_date": "01.09.2027.",
    "respond_by": "22.12.2026.",
    "response_days": "14",
    "notified_rule": "Paziņojums uzskatāms par paziņotu otrajā darba dienā pēc nosūtīšanas.",
    "reason": "Bērns ir uzņemts iestādē, kuru pieteikumā norādījāt augstāk; vieta atbrīvota.",
    "portal_url": "https://e-pakalpojumi.example.lv/pii",
}
APPEAL = (
    "Lēmumu var apstrīdēt Rīgas valstspilsētas pašvaldības Izglītības, kultūras un sporta "
    "departamentā viena mēneša laikā no tā spēkā stāšanās dienas."
)
AT = datetime(2026, 12, 8, 9, 30, tzinfo=UTC)


def notice(kind: str = "invitation", language: str = "lv", **changes: object) -> Notice:
    base = Notice(
        kind=kind,
        language="en" if language == "en" else "lv",
        registration_number="PII/2026/000123",
        issued_on=date(2026, 12, 8),
        sender="Rīgas valstspilsēta",
        variables=VARIABLES,
        appeal=APPEAL if kind in ADMINISTRATIVE_ACTS else None,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def invitation_pdf() -> bytes:
    return render_pdf(notice())


@pytest.mark.parametrize("language", ["lv", "en"])
@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_renders_in_both_languages(kind: str, language: str) -> None:
    text = pdf_text(render_pdf(notice(kind, language)))
    fields = read_fields(text)
    assert fields["registration_number"] == "PII/2026/000123"
    assert "${" not in text and "$" not in text
    assert "Rīgas valstspilsēta" in text
    assert VARIABLES["reference"] in text
    addressee = "Bērna likumiskajam pārstāvim" if language == "lv" else "legal representative"
    assert addressee in text
    appeal_heading = "Apstrīdēšanas kārtība" if language == "lv" else "How to contest"
    assert (appeal_heading in text) == (kind in ADMINISTRATIVE_ACTS)
    if kind == "invitation":
        assert fields["respond_by"] == "22.12.2026."
        assert parse_date(fields["respond_by"]) == date(2026, 12, 22)
    else:
        assert "respond_by" not in fields


def test_latvian_letters_survive(invitation_pdf: bytes) -> None:
    text = pdf_text(invitation_pdf)
    for letter in "āēīūčšžģķļņ":
        assert letter in text.lower(), letter
    assert VARIABLES["institution"] in text


def test_same_notice_same_bytes(invitation_pdf: bytes) -> None:
    assert render_pdf(notice()) == invitation_pdf
    assert render_pdf(notice(registration_number="PII/2026/000124")) != invitation_pdf


def test_a_missing_variable_is_named() -> None:
    variables = {k: v for k, v in VARIABLES.items() if k != "respond_by"}
    with pytest.raises(DocumentError, match="'respond_by'"):
        render_pdf(notice(variables=variables))
    assert "respond_by" in required_variables("invitation")
    assert "respond_by" not in required_variables("admission")


@pytest.mark.parametrize("kind", sorted(ADMINISTRATIVE_ACTS))
def test_an_administrative_act_needs_appeal_instructions(kind: str) -> None:
    with pytest.raises(DocumentError, match="administrative act"):
        render_pdf(notice(kind, appeal=None))
    with pytest.raises(DocumentError, match="administrative act"):
        render_pdf(notice(kind, appeal="  "))


def test_unknown_kind_and_language_are_refused() -> None:
    with pytest.raises(DocumentError, match="unknown notice kind"):
        render_pdf(notice("reminder"))
    with pytest.raises(DocumentError, match="unknown language"):
        render_pdf(replace(notice(), language="de"))  # type: ignore[arg-type]


def test_a_personal_code_is_refused_and_not_repeated() -> None:
    variables = {**VARIABLES, "reason": "Bērns 161175-19997 jau ir uzņemts."}
    with pytest.raises(DocumentError, match="'reason' holds a personal code") as raised:
        render_pdf(notice("refusal", variables=variables))
    assert "161175" not in str(raised.value)


def test_dates_round_trip_and_bad_ones_are_refused() -> None:
    assert format_date(date(2026, 1, 2)) == "02.01.2026."
    assert parse_date("02.01.2026.") == date(2026, 1, 2)
    for bad in ("2026-01-02", "02.01.2026", "31.02.2026."):
        with pytest.raises(DocumentError):
            parse_date(bad)


@settings(max_examples=25, deadline=None)
@given(
    number=st.builds(
        "{}/{}/{:06d}".format,
        st.sampled_from(["PII", "IKSD", "LD"]),
        st.integers(2024, 2040),
        st.integers(1, 999_999),
    ),
    issued=st.dates(date(2024, 1, 1), date(2040, 12, 31)),
    deadline=st.dates(date(2024, 1, 1), date(2040, 12, 31)),
    language=st.sampled_from(["lv", "en"]),
)
def test_fields_read_back_equal_those_rendered(
    number: str, issued: date, deadline: date, language: str
) -> None:
    variables = {**VARIABLES, "respond_by": format_date(deadline)}
    pdf = render_pdf(
        notice(language=language, registration_number=number, issued_on=issued, variables=variables)
    )
    text = pdf_text(pdf)
    fields = read_fields(text)
    assert fields["registration_number"] == number
    assert parse_date(fields["respond_by"]) == deadline
    assert format_date(issued) in text


# --- .edoc -------------------------------------------------------------------------------


def rezip(data: bytes, change: Callable[[str, bytes], bytes]) -> bytes:
    """The container with each entry passed through ``change``, entries and order kept."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as source, zipfile.ZipFile(out, "w") as target:
        for info in source.infolist():
            target.writestr(info, change(info.filename, source.read(info)))
    return out.getvalue()


@pytest.fixture(scope="module")
def sealed(test_seal: SealKit, invitation_pdf: bytes) -> bytes:
    return seal(test_seal.seal, "pazinojums.pdf", invitation_pdf, at=AT)


def test_seal_and_open(test_seal: SealKit, invitation_pdf: bytes, sealed: bytes) -> None:
    opened = open_edoc(sealed, trusted=[test_seal.ca])
    assert opened.name == "pazinojums.pdf"
    assert opened.content == invitation_pdf
    assert opened.media_type == "application/pdf"
    assert opened.signed_at == AT
    assert opened.signer == "Test e-seal"
    assert opened.certificate == test_seal.seal.certificate
    # the seal certificate itself may be the trusted one, too
    assert open_edoc(sealed, trusted=[test_seal.seal.certificate]).content == invitation_pdf
    # an RSA seal gives the same container for the same inputs
    assert seal(test_seal.seal, "pazinojums.pdf", invitation_pdf, at=AT) == sealed


def test_the_seal_loads_from_its_files(test_seal: SealKit) -> None:
    loaded = SealKey.from_files(test_seal.key_path, test_seal.cert_path)
    assert loaded.certificate == test_seal.seal.certificate
    with pytest.raises(EdocError, match="does not belong"):
        SealKey.load(
            test_seal.key_path.read_bytes(), make_ca().certificate.public_bytes(Encoding.PEM)
        )


def test_an_ec_seal_works_too(invitation_pdf: bytes) -> None:
    ca = make_ca()
    opened = open_edoc(seal(ca, "a b.pdf", invitation_pdf, at=AT), trusted=[ca.certificate])
    assert (opened.name, opened.content) == ("a b.pdf", invitation_pdf)


def test_mimetype_comes_first_and_stored(sealed: bytes) -> None:
    assert sealed[30:38] == b"mimetype"
    assert sealed[38 : 38 + len(EDOC_MEDIA_TYPE)] == EDOC_MEDIA_TYPE.encode()
    with zipfile.ZipFile(io.BytesIO(sealed)) as archive:
        first = archive.infolist()[0]
        assert (first.filename, first.compress_type, first.extra) == ("mimetype", 0, b"")
        assert archive.namelist() == [
            "mimetype",
            "pazinojums.pdf",
            "META-INF/manifest.xml",
            SIGNATURES,
        ]
        assert b"http://uri.etsi.org/02918/v1.2.1#" in archive.read(SIGNATURES)


def test_a_changed_document_byte_is_caught(sealed: bytes) -> None:
    def flip(name: str, data: bytes) -> bytes:
        if name != "pazinojums.pdf":
            return data
        return data[:100] + bytes([data[100] ^ 1]) + data[101:]

    with pytest.raises(EdocError, match=r"pazinojums\.pdf was changed after it was sealed"):
        open_edoc(rezip(sealed, flip))


def test_a_changed_signature_is_caught(sealed: bytes) -> None:
    def flip(name: str, data: bytes) -> bytes:
        if name != SIGNATURES:
            return data
        value = re.search(rb"<ds:SignatureValue>(.)", data)
        assert value is not None
        at = value.start(1)
        return data[:at] + (b"B" if data[at : at + 1] != b"B" else b"C") + data[at + 1 :]

    with pytest.raises(EdocError, match="signature is not valid"):
        open_edoc(rezip(sealed, flip))


def test_a_changed_signing_time_is_caught(sealed: bytes) -> None:
    def later(name: str, data: bytes) -> bytes:
        return (
            data.replace(b"2026-12-08T09:30", b"2026-12-07T09:30") if name == SIGNATURES else data
        )

    with pytest.raises(EdocError, match="signed properties were changed"):
        open_edoc(rezip(sealed, later))


def test_an_untrusted_signer_is_refused(sealed: bytes) -> None:
    with pytest.raises(EdocError, match="untrusted certificate"):
        open_edoc(sealed, trusted=[make_ca().certificate])


def test_not_a_container_is_refused(sealed: bytes) -> None:
    for data in (b"%PDF-1.4 not a zip", b"", sealed[:200]):
        with pytest.raises(EdocError):
            open_edoc(data)

    extra = io.BytesIO(sealed)
    with zipfile.ZipFile(extra, "a") as archive:
        archive.writestr("other.pdf", b"%PDF")
    with pytest.raises(EdocError, match="exactly one document, not 2"):
        open_edoc(extra.getvalue())


def test_bad_names_and_naive_times_are_refused(test_seal: SealKit) -> None:
    for name in ("", "META-INF/x.pdf", "mimetype", "../x.pdf"):
        with pytest.raises(EdocError, match="plain file name"):
            seal(test_seal.seal, name, b"x", at=AT)
    with pytest.raises(EdocError, match="time zone"):
        seal(test_seal.seal, "x.pdf", b"x", at=datetime(2026, 12, 8, 9, 30))
