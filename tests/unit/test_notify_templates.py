"""The notification templates: Latvian and English texts, dates, and what they refuse."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from adapters.notify.templates import Rendered, TemplateError, Templates, en_date, lv_date

TEMPLATE_DIR = Path(__file__).resolve().parents[2] / "adapters" / "notify" / "templates"
OFFER_ID = "0b7e4c2a-1f3d-4e5a-9b8c-7d6e5f4a3b2c"
REQUEST = {
    "institution": "PII Saulīte",
    "group": "2023-lv",
    "start_date": "2026-09-01",
    "response_days": "15",
}
ADDED = {
    "reference": "PII-0B7E4C2A",
    "portal_url": "https://e-pakalpojumi.example.lv/pii",
    "sender": "Rīgas valstspilsētas pašvaldība",
    "offer_id": OFFER_ID,
    "registration_number": None,
}


def render(language: str, respond_by: str | None = None, template: str = "offer") -> Rendered:
    variables = {**REQUEST, **ADDED, "respond_by": respond_by}
    return Templates().render(template, language, variables, given=REQUEST)


def test_dates_in_latvian_and_english() -> None:
    assert lv_date("2026-09-01") == "2026. gada 1. septembrī"
    assert lv_date("2027-01-31") == "2027. gada 31. janvārī"
    assert lv_date("2026-05-21") == "2026. gada 21. maijā"
    assert en_date("2026-09-01") == "1 September 2026"
    assert en_date("2027-01-31") == "31 January 2027"


@dataclass(frozen=True)
class Offer:
    """What the offer says in one language."""

    subject: str
    lines: tuple[str, ...]
    """Shown whether or not the deadline is known."""
    by_date: str
    """The answer is due by a date (known when the message is sent)."""
    by_days: str
    """The answer is due within days of receiving the message."""
    date_only: str
    """A part of :attr:`by_date` only."""
    days_only: str
    """A part of :attr:`by_days` only."""


OFFERS = {
    "lv": Offer(
        subject="Piedāvājums: vieta PII Saulīte (atsauce PII-0B7E4C2A)",
        lines=(
            "iestāde:       PII Saulīte",
            "grupa:         2023-lv",
            "sākums:        2026. gada 1. septembrī",
            f"e-pakalpojumā: https://e-pakalpojumi.example.lv/pii/{OFFER_ID}\n",
            "norādot atsauci PII-0B7E4C2A.",
        ),
        by_date="ne vēlāk kā 2026. gada 21. maijā.",
        by_days="piedāvājumu 15 dienu laikā no šī paziņojuma saņemšanas.",
        date_only="ne vēlāk kā",
        days_only="dienu laikā",
    ),
    "en": Offer(
        subject="Offer: a place at PII Saulīte (reference PII-0B7E4C2A)",
        lines=(
            "institution:   PII Saulīte",
            "group:         2023-lv",
            "starting:      1 September 2026",
            f"in the e-service: https://e-pakalpojumi.example.lv/pii/{OFFER_ID}\n",
            "quoting the reference PII-0B7E4C2A.",
        ),
        by_date="Please accept or decline the offer by 21 May 2026.",
        by_days="within 15 days of receiving this message.",
        date_only="decline the offer by",
        days_only="within",
    ),
}


@pytest.mark.parametrize("language", list(OFFERS))
@pytest.mark.parametrize("deadline", [True, False])
def test_offer_with_a_deadline_or_a_number_of_days(language: str, deadline: bool) -> None:
    offer = OFFERS[language]
    rendered = render(language, respond_by="2026-05-21" if deadline else None)
    assert rendered.subject == offer.subject
    text = rendered.text
    for line in offer.lines:
        assert line in text
    assert (offer.by_date if deadline else offer.by_days) in text
    assert (offer.days_only if deadline else offer.date_only) not in text
    assert text.rstrip().endswith("\nRīgas valstspilsētas pašvaldība")


def test_subject_is_the_first_line_and_not_repeated_in_the_body() -> None:
    rendered = render("lv")
    source = (TEMPLATE_DIR / "offer.lv.txt").read_text(encoding="utf-8")
    assert "\n" not in rendered.subject
    assert source.startswith("Piedāvājums: vieta {{ institution }}")
    assert rendered.text.startswith("Labdien!\n")
    assert rendered.subject not in rendered.text


def test_a_missing_variable_is_an_error_not_a_gap() -> None:
    variables = {**REQUEST, **ADDED, "respond_by": None}
    del variables["group"]
    with pytest.raises(TemplateError, match="group"):
        Templates().render("offer", "lv", variables)


def test_a_missing_response_period_is_an_error_when_no_deadline_is_known() -> None:
    variables = {**REQUEST, **ADDED, "respond_by": None}
    del variables["response_days"]
    with pytest.raises(TemplateError):
        Templates().render("offer", "en", variables)
    # With the deadline known the period is not needed.
    with_deadline = {**variables, "respond_by": "2026-05-21"}
    assert "21 May 2026" in Templates().render("offer", "en", with_deadline).text


@pytest.mark.parametrize(
    ("template", "language"), [("offer", "ru"), ("nonexistent", "lv"), ("offer", "")]
)
def test_unknown_template_or_language(template: str, language: str) -> None:
    with pytest.raises(TemplateError, match="no template"):
        Templates().render(template, language, {**REQUEST, **ADDED, "respond_by": None})


@pytest.mark.parametrize("code", ["161175-19997", "16117519997", "321234-56789"])
def test_a_request_value_holding_a_personal_code_is_refused(code: str) -> None:
    given = {**REQUEST, "institution": f"PII {code}"}
    variables = {**given, **ADDED, "respond_by": None}
    with pytest.raises(TemplateError, match="institution") as caught:
        Templates().render("offer", "lv", variables, given=given)
    assert code not in str(caught.value)


def test_values_the_service_adds_are_not_checked_as_request_values() -> None:
    # ``given`` names what came with the request; the rest is the service's own.
    rendered = render("lv")
    assert OFFER_ID in rendered.text


TEMPLATES = sorted(
    (path.name.split(".")[0], path.name.split(".")[1]) for path in TEMPLATE_DIR.glob("*.txt")
)


def test_every_expected_template_file_exists() -> None:
    expected = [
        (name, language)
        for name in ("annulment", "decision", "offer", "offer_reminder", "refusal", "revocation")
        for language in ("en", "lv")
    ]
    assert expected == TEMPLATES


@pytest.mark.parametrize(("template", "language"), TEMPLATES)
@pytest.mark.parametrize("respond_by", [None, "2026-05-21"])
def test_every_template_renders_with_a_full_set_of_variables(
    template: str, language: str, respond_by: str | None
) -> None:
    rendered = render(language, respond_by=respond_by, template=template)
    assert rendered.subject
    assert "PII-0B7E4C2A" in rendered.subject
    assert rendered.text.strip()
    assert "{{" not in rendered.subject + rendered.text
    assert "{%" not in rendered.subject + rendered.text
    assert "None" not in rendered.text
    assert "Rīgas valstspilsētas pašvaldība" in rendered.text
    assert "https://e-pakalpojumi.example.lv/pii" in rendered.text
    if template.startswith("offer"):
        assert "PII Saulīte" in rendered.subject
        assert f"/pii/{OFFER_ID}" in rendered.text
        if respond_by is not None:
            deadline = "2026. gada 21. maijā" if language == "lv" else "21 May 2026"
            assert deadline in rendered.text


@pytest.mark.parametrize(
    ("template", "language"), [t for t in TEMPLATES if t[0] != "offer_reminder"]
)
def test_a_notice_names_its_attached_document_by_registration_number(
    template: str, language: str
) -> None:
    variables = {**REQUEST, **ADDED, "respond_by": None, "registration_number": "PII/2026/00012"}
    rendered = Templates().render(template, language, variables, given=REQUEST)
    assert "PII/2026/00012" in rendered.text
    assert "None" not in rendered.text
