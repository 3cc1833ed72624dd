"""Notices to parents rendered to PDF from plain-text templates, in Latvian or English.

A template ``templates/<kind>.<lang>.txt`` holds the title on its first line, a blank line,
then the body: paragraphs separated by blank lines, where a single line break is kept as a
line break (so ``Atbildēt līdz: ${respond_by}`` stays on a line of its own). Values are
``string.Template`` placeholders (``${name}``); :func:`required_variables` names those a kind
needs. The page adds the sender, the registration number, the date, the addressee and, for an
administrative act, the appeal instructions the caller gives.

The output is deterministic: the same notice gives the same bytes. No value may hold
anything shaped like a personal code; errors name the variable, never its value.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from functools import cache
from importlib import resources
from io import BytesIO
from pathlib import Path
from typing import Literal

import font_source_sans_pro
from pypdf import PdfReader
from pypdf.errors import PyPdfError
from reportlab.lib.pagesizes import A4
from reportlab.lib.units import mm
from reportlab.lib.utils import simpleSplit
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.ttfonts import TTFont
from reportlab.pdfgen.canvas import Canvas

from hub.errors import PermanentError
from schemas.values import mask_personal_codes

KINDS = ("invitation", "revocation", "annulment", "admission", "refusal")
ADMINISTRATIVE_ACTS = frozenset({"revocation", "annulment", "admission", "refusal"})
"""Kinds that are administrative acts: they must say how to contest them."""
LANGUAGES = ("lv", "en")

Language = Literal["lv", "en"]


class DocumentError(PermanentError, ValueError):
    """A notice cannot be rendered: unknown kind or language, a missing variable, a value
    holding a personal code, or an administrative act without appeal instructions. Fix the
    caller's data; rendering again will not help."""


@dataclass(frozen=True, slots=True)
class Notice:
    """One document to a child's legal representative."""

    kind: str
    """One of :data:`KINDS`."""
    language: Language
    registration_number: str
    """The DVS registration number, printed in the header."""
    issued_on: date
    """The document's date."""
    sender: str
    """The municipality's display name, e.g. ``Rīgas valstspilsēta``."""
    variables: Mapping[str, str]
    """Template values; :func:`required_variables` says which the kind needs."""
    appeal: str | None = None
    """How to contest the decision (from the municipality's rules); required for
    :data:`ADMINISTRATIVE_ACTS`."""


@dataclass(frozen=True, slots=True)
class _Labels:
    registration: str
    addressee: str
    appeal: str


_LABELS = {
    "lv": _Labels("Reģ. Nr. ", "Bērna likumiskajam pārstāvim", "Apstrīdēšanas kārtība"),
    "en": _Labels(
        "Reg. No. ", "To the child's legal representative", "How to contest this decision"
    ),
}
# The fixed label of the invitation's deadline line in each language (the templates hold it).
_RESPOND_BY_LABELS = ("Atbildēt līdz: ", "Answer by: ")

# Page geometry (points): A4 with 25 mm margins.
_WIDTH, _HEIGHT = A4
_MARGIN = 25 * mm
_TEXT_WIDTH = _WIDTH - 2 * _MARGIN
_REGULAR, _BOLD = "SourceSansPro", "SourceSansPro-Bold"
_BODY_SIZE, _LEADING = 11, 15
_DATE_SHAPE = re.compile(r"(\d{2})\.(\d{2})\.(\d{4})\.")


def format_date(day: date) -> str:
    """The date as every document writes it: ``22.12.2026.``."""
    return f"{day.day:02d}.{day.month:02d}.{day.year:04d}."


def parse_date(text: str) -> date:
    """The date :func:`format_date` wrote; :class:`DocumentError` for anything else."""
    match = _DATE_SHAPE.fullmatch(text.strip())
    if match is None:
        raise DocumentError(f"not a document date (DD.MM.YYYY.): {text!r}")
    day, month, year = (int(part) for part in match.groups())
    try:
        return date(year, month, day)
    except ValueError as exc:
        raise DocumentError(f"not a calendar date: {text!r}") from exc


@cache
def _template(kind: str, language: str) -> tuple[string.Template, string.Template]:
    """The kind's title and body templates (read once per process)."""
    source = resources.files("hub.documents") / "templates" / f"{kind}.{language}.txt"
    title, _, body = source.read_text(encoding="utf-8").partition("\n\n")
    return string.Template(title.strip()), string.Template(body.strip())


def required_variables(kind: str, language: Language = "lv") -> frozenset[str]:
    """The variables the template of ``kind`` uses."""
    _check_kind(kind, language)
    title, body = _template(kind, language)
    return frozenset(title.get_identifiers()) | frozenset(body.get_identifiers())


def _check_kind(kind: str, language: str) -> None:
    if kind not in KINDS:
        raise DocumentError(f"unknown notice kind {kind!r} (known: {', '.join(KINDS)})")
    if language not in LANGUAGES:
        raise DocumentError(f"unknown language {language!r} (known: {', '.join(LANGUAGES)})")


@cache
def _register_fonts() -> None:
    """Register Source Sans Pro (regular and bold) with reportlab, once per process."""
    folder = Path(font_source_sans_pro.font_directory)
    pdfmetrics.registerFont(TTFont(_REGULAR, str(folder / "SourceSansPro-Regular.ttf")))
    pdfmetrics.registerFont(TTFont(_BOLD, str(folder / "SourceSansPro-Bold.ttf")))


def _fill(notice: Notice) -> tuple[str, str]:
    """The notice's title and body text, every placeholder filled."""
    _check_kind(notice.kind, notice.language)
    if notice.kind in ADMINISTRATIVE_ACTS and not (notice.appeal and notice.appeal.strip()):
        raise DocumentError(
            f"a {notice.kind} is an administrative act: the notice needs appeal instructions"
        )
    checked = {
        "registration_number": notice.registration_number,
        "sender": notice.sender,
        "appeal": notice.appeal or "",
        **{f"variable {name!r}": value for name, value in notice.variables.items()},
    }
    for name, value in checked.items():
        if mask_personal_codes(value) != value:
            raise DocumentError(f"{name} holds a personal code; documents must not show one")
    title, body = _template(notice.kind, notice.language)
    try:
        return title.substitute(notice.variables), body.substitute(notice.variables)
    except KeyError as exc:
        raise DocumentError(
            f"{notice.kind} notice ({notice.language}): missing variable {exc.args[0]!r}"
        ) from None
    except ValueError as exc:
        raise DocumentError(f"{notice.kind} template ({notice.language}): {exc}") from None


class _Page:
    """A cursor writing wrapped lines down the pages of a canvas."""

    def __init__(self, canvas: Canvas) -> None:
        self.canvas = canvas
        self.y = _HEIGHT - _MARGIN

    def lines(self, text: str, font: str = _REGULAR, size: float = _BODY_SIZE) -> None:
        leading = _LEADING * size / _BODY_SIZE
        for line in text.split("\n"):
            for piece in simpleSplit(line, font, size, _TEXT_WIDTH) or [""]:
                if self.y < _MARGIN + leading:
                    self.canvas.showPage()
                    self.y = _HEIGHT - _MARGIN
                self.y -= leading
                self.canvas.setFont(font, size)
                self.canvas.drawString(_MARGIN, self.y, piece)

    def space(self, points: float = _LEADING * 0.6) -> None:
        self.y -= points


def render_pdf(notice: Notice) -> bytes:
    """The notice as a one-or-more-page A4 PDF; the same notice always gives the same bytes."""
    title, body = _fill(notice)
    _register_fonts()
    labels = _LABELS[notice.language]
    buffer = BytesIO()
    canvas = Canvas(buffer, pagesize=A4, invariant=1, pageCompression=1)
    canvas.setTitle(title)
    canvas.setAuthor(notice.sender)
    canvas.setSubject(f"{labels.registration}{notice.registration_number}")
    canvas.setCreator("municipal-hub")
    page = _Page(canvas)
    page.lines(notice.sender, _BOLD, 16)
    page.space()
    page.lines(format_date(notice.issued_on))
    page.lines(f"{labels.registration}{notice.registration_number}")
    page.space(_LEADING)
    page.lines(labels.addressee)
    page.space(_LEADING)
    page.lines(title, _BOLD, 13)
    for paragraph in body.split("\n\n"):
        page.space()
        page.lines(paragraph.strip())
    if notice.kind in ADMINISTRATIVE_ACTS:
        assert notice.appeal is not None  # _fill refused a missing one
        page.space(_LEADING)
        page.lines(labels.appeal, _BOLD, _BODY_SIZE)
        page.space(_LEADING * 0.3)
        page.lines(notice.appeal.strip())
    canvas.showPage()
    canvas.save()
    return buffer.getvalue()


def pdf_text(pdf: bytes) -> str:
    """The text of every page, in order (pypdf's extraction), for checks and tests."""
    try:
        reader = PdfReader(BytesIO(pdf))
        return "\n".join(page.extract_text() for page in reader.pages)
    except PyPdfError as exc:
        raise DocumentError(f"not a readable PDF: {exc}") from exc


_FIELDS = {
    "registration_number": re.compile(
        r"^(?:" + "|".join(re.escape(label.registration) for label in _LABELS.values()) + r")(.+)$",
        re.MULTILINE,
    ),
    "respond_by": re.compile(
        r"^(?:" + "|".join(re.escape(label) for label in _RESPOND_BY_LABELS) + r")(.+)$",
        re.MULTILINE,
    ),
}


def read_fields(text: str) -> dict[str, str]:
    """``registration_number`` and, when the document has a deadline line, ``respond_by``
    (as printed) read back from :func:`pdf_text` output."""
    found = {}
    for name, pattern in _FIELDS.items():
        match = pattern.search(text)
        if match is not None:
            found[name] = match.group(1).strip()
    return found
