"""Message texts from Jinja2 templates, in Latvian or English.

A template ``<name>.<lang>.txt`` holds the subject on its first line, a blank
line, then the body. Variables come from the request (``SendNotification.variables``)
plus what the service adds (``reference``, ``portal_url``, ``sender``,
``respond_by`` when the deadline is known at sending). A missing variable is an
error, not an empty gap; a value from the request that holds a personal code is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, TemplateNotFound, UndefinedError

from hub.errors import PermanentError
from schemas.values import mask_personal_codes

_MONTHS_LV = (
    "janvārī", "februārī", "martā", "aprīlī", "maijā", "jūnijā",
    "jūlijā", "augustā", "septembrī", "oktobrī", "novembrī", "decembrī",
)  # fmt: skip


def lv_date(value: str | date) -> str:
    """``2026. gada 1. septembrī``."""
    day = date.fromisoformat(value) if isinstance(value, str) else value
    return f"{day.year}. gada {day.day}. {_MONTHS_LV[day.month - 1]}"


def en_date(value: str | date) -> str:
    """``1 September 2026``."""
    day = date.fromisoformat(value) if isinstance(value, str) else value
    return f"{day.day} {day:%B %Y}"


class TemplateError(PermanentError):
    """The message cannot be rendered: unknown template or language, or a missing value."""


@dataclass(frozen=True, slots=True)
class Rendered:
    subject: str
    text: str


class Templates:
    def __init__(self) -> None:
        self._env = Environment(
            loader=PackageLoader("adapters.notify", "templates"),
            undefined=StrictUndefined,
            autoescape=False,  # plain text, not HTML
            keep_trailing_newline=True,
        )
        self._env.filters["lv_date"] = lv_date
        self._env.filters["en_date"] = en_date

    def render(
        self,
        template: str,
        language: str,
        variables: dict[str, Any],
        *,
        given: dict[str, str] | None = None,
    ) -> Rendered:
        """Render; ``given`` are the values that came with the request, checked for personal
        codes (the values the service adds — ids, links — are its own)."""
        for name, value in (given or {}).items():
            if mask_personal_codes(str(value)) != str(value):
                raise TemplateError(f"template value {name!r} holds a personal code; refused")
        try:
            text = self._env.get_template(f"{template}.{language}.txt").render(**variables)
        except TemplateNotFound:
            raise TemplateError(f"no template {template!r} in language {language!r}") from None
        except UndefinedError as exc:
            raise TemplateError(f"template {template!r}: {exc.message}") from None
        subject, _, body = text.partition("\n")
        return Rendered(subject.strip(), body.lstrip("\n"))


__all__ = ["Rendered", "TemplateError", "Templates", "en_date", "lv_date"]
