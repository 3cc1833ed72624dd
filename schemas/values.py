"""Domain value types shared by every message.

Identifiers that travel as Kafka keys (child, application, institution and
document references) must start with a letter, so a personal code (eleven
digits) can never be used as one by mistake.
"""

from __future__ import annotations

import operator
import re
import warnings
from datetime import UTC, date, datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import (
    AfterValidator,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    StringConstraints,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import PydanticCustomError, core_schema

# --------------------------------------------------------------------------- personal codes

_WEIGHTS = (1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_CENTURIES = {"0": 1800, "1": 1900, "2": 2000}
_SHAPE = re.compile(r"^(\d{6})-?(\d{5})$")


def personal_code_check_digit(first_ten: str) -> int:
    """Check digit of a Latvian personal code: (1101 − Σ wᵢ·dᵢ) mod 11 mod 10."""
    if len(first_ten) != 10 or not first_ten.isdigit():
        raise ValueError("expected the first ten digits of a personal code")
    total = sum(map(operator.mul, _WEIGHTS, map(int, first_ten)))
    return (1101 - total) % 11 % 10


class PersonalCodeChecksumWarning(UserWarning):
    """A new-format personal code whose last digit is not the usual check digit.

    Public validators disagree on whether new-format codes carry a check
    digit, so such a code is accepted; the warning lets an operator notice a
    possible typo. It never contains the code itself.
    """


class PersonalCode:
    """A Latvian personal code (personas kods), validated and masked.

    Accepts ``DDMMYY-CNNNN`` (the hyphen is optional) where C is the century
    digit (0 → 1800s, 1 → 1900s, 2 → 2000s) and the date must exist, with the
    check digit verified; and the new format (since 2017-07-01) that starts
    with ``3`` and a digit 2–9 and carries no date, whose checksum is only
    warned about. The value is stored as ``DDMMYY-NNNNN``.

    ``str``, ``repr`` and ``format`` show a masked form, so a code cannot
    leak into logs or exception texts by accident. Call :meth:`reveal` where
    the real value is needed (for example when calling the register that
    knows people by code). In JSON the real value is written, because the
    external systems need it.
    """

    __slots__ = ("_value",)
    MASK = "******-*****"

    def __init__(self, raw: str) -> None:
        if not isinstance(raw, str):
            raise TypeError("a personal code must be given as a string")
        match = _SHAPE.match(raw.strip())
        if match is None:
            raise ValueError("a personal code has 11 digits, written DDMMYY-NNNNN")
        digits = match.group(1) + match.group(2)
        if digits[0] == "3" and digits[1] in "23456789":
            if personal_code_check_digit(digits[:10]) != int(digits[10]):
                warnings.warn(
                    "new-format personal code with an unexpected last digit accepted",
                    PersonalCodeChecksumWarning,
                    stacklevel=2,
                )
        else:
            if digits[6] not in _CENTURIES:
                raise ValueError(
                    "the century digit of an old-format personal code must be 0, 1 or 2"
                )
            _birth_date(digits)
            if personal_code_check_digit(digits[:10]) != int(digits[10]):
                raise ValueError("the check digit of the personal code does not match")
        self._value = f"{digits[:6]}-{digits[6:]}"

    @property
    def is_new_format(self) -> bool:
        """True for codes issued since 2017-07-01, which carry no birth date."""
        return self._value[0] == "3" and self._value[1] in "23456789"

    @property
    def birth_date(self) -> date | None:
        """The birth date encoded in an old-format code; None for the new format."""
        return None if self.is_new_format else _birth_date(self._value.replace("-", ""))

    def reveal(self) -> str:
        """The real value, ``DDMMYY-NNNNN``. Never log what this returns."""
        return self._value

    def __str__(self) -> str:
        return self.MASK

    def __repr__(self) -> str:
        return f"PersonalCode('{self.MASK}')"

    def __format__(self, spec: str) -> str:
        return format(self.MASK, spec)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PersonalCode) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("PersonalCode", self._value))

    def __reduce__(self) -> tuple[Any, ...]:
        return (PersonalCode, (self._value,))

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: type[Any], handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        from_str = core_schema.no_info_after_validator_function(
            _parse_personal_code, core_schema.str_schema()
        )
        return core_schema.json_or_python_schema(
            json_schema=from_str,
            python_schema=core_schema.union_schema([core_schema.is_instance_schema(cls), from_str]),
            serialization=core_schema.plain_serializer_function_ser_schema(
                _serialize_personal_code, info_arg=True
            ),
        )

    @classmethod
    def __get_pydantic_json_schema__(
        cls, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return {
            "type": "string",
            "pattern": r"^\d{6}-?\d{5}$",
            "description": (
                "Latvian personal code, DDMMYY-CNNNN (old format, checked) or 3X…"
                " (new format since 2017-07-01). Personal data: never used as a key."
            ),
            "examples": ["161175-19997"],
        }


_CODE_SHAPED = re.compile(r"(?<!\d)\d{6}-?\d{5}(?!\d)")


def mask_personal_codes(text: str) -> str:
    """``text`` with everything shaped like a personal code replaced by ``******-*****``."""
    return _CODE_SHAPED.sub(PersonalCode.MASK, text)


FAILURE_DETAIL_MAX = 500
"""The longest operator-readable cause a failure event carries (:data:`FailureDetail`)."""


def failure_detail(text: str) -> str:
    """``text`` as a failure event may carry it: personal codes masked, at most
    :data:`FAILURE_DETAIL_MAX` characters."""
    return mask_personal_codes(text)[:FAILURE_DETAIL_MAX]


def _birth_date(digits: str) -> date:
    day, month, year = int(digits[0:2]), int(digits[2:4]), int(digits[4:6])
    try:
        return date(_CENTURIES[digits[6]] + year, month, day)
    except ValueError:
        raise ValueError("the date in the personal code does not exist") from None


def _parse_personal_code(raw: str) -> PersonalCode:
    try:
        return PersonalCode(raw)
    except ValueError as exc:
        # The message must not echo the input: pydantic would otherwise put the
        # rejected code into the error text.
        raise PydanticCustomError("personal_code", str(exc)) from None


def _serialize_personal_code(value: PersonalCode, info: core_schema.SerializationInfo) -> Any:
    return value.reveal() if info.mode_is_json() else value


# --------------------------------------------------------------------------- identifiers


def _ref(pattern: str, description: str, example: str) -> Any:
    return Annotated[
        str,
        StringConstraints(pattern=pattern),
        Field(description=description, examples=[example]),
    ]


MunicipalityCode = _ref(
    r"^[a-z][a-z0-9-]{1,31}$",
    "Municipality code used by the hub, lower-case (e.g. riga, liepaja).",
    "riga",
)
InstitutionId = _ref(
    r"^[A-Za-z][A-Za-z0-9._-]{0,39}$",
    "Identifier of an educational institution, unique within a municipality.",
    "PII-012",
)
ChildRef = _ref(
    r"^[A-Za-z][A-Za-z0-9._-]{3,63}$",
    "Pseudonymous reference of a child, issued by the VPS adapter. Never a personal code.",
    "CH-5f2a9c1b7d0e",
)
ApplicationId = _ref(
    r"^[A-Za-z][A-Za-z0-9._-]{3,63}$",
    "Identifier of a pre-school queue application in the VPS register.",
    "APP-2026-000123",
)
SubjectRef = _ref(
    r"^[A-Za-z][A-Za-z0-9._:-]{1,63}$",
    "Reference of the thing an address belongs to: a child reference or an institution id.",
    "CH-5f2a9c1b7d0e",
)
DocumentKey = _ref(
    r"^[A-Za-z][A-Za-z0-9._:-]{3,127}$",
    "Idempotency key of a document: registering the same key twice yields one registration.",
    "admission-list:riga:2026-05-04",
)
ServiceName = _ref(
    r"^[a-z][a-z0-9-]{1,39}$",
    "Name of the hub service or adapter that produced the message.",
    "vps-adapter",
)
AddressCode = _ref(
    r"^\d{9}$",
    "Address register (VZD VARIS) code: nine digits, the last a check digit.",
    "101234567",
)
TerritoryCode = _ref(
    r"^\d{7}$",
    "ATVK territory code (municipality or parish), seven digits.",
    "0010000",
)
Postcode = _ref(r"^LV-\d{4}$", "Latvian postcode.", "LV-1050")
EmailAddress = Annotated[
    str,
    StringConstraints(max_length=254, pattern=r"^[^@\s]{1,64}@[^@\s.]+(\.[^@\s.]+)+$"),
    Field(
        description="E-mail address (checked for shape; delivery is the e-mail adapter's job).",
        examples=["parent@example.lv"],
    ),
]
GroupCode = _ref(
    r"^[A-Za-z0-9][A-Za-z0-9._ -]{0,31}$",
    "Code of a group (age group and language) within an institution.",
    "3-4-lv",
)
LanguageCode = Annotated[
    Literal["lv", "ru", "en", "uk", "pl", "lt", "et", "de", "fr", "other"],
    Field(description="Language of instruction or of correspondence (ISO 639-1)."),
]
Sha256Hex = _ref(r"^[0-9a-f]{64}$", "SHA-256 digest in lower-case hex.", "0" * 64)
RegistrationNumber = _ref(
    r"^\d{11}$", "Registration number of a legal person (11 digits).", "90000012345"
)


def _as_utc(value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("a timestamp must carry a time zone")
    return value.astimezone(UTC)


UtcDatetime = Annotated[datetime, AfterValidator(_as_utc)]
"""A timezone-aware timestamp, normalised to UTC."""


def utcnow() -> datetime:
    return datetime.now(UTC)


# --------------------------------------------------------------------------- shared fields

OfferId = Annotated[UUID, Field(description="Id of the offer, assigned by the allocation service.")]
RoundId = Annotated[UUID, Field(description="Id of the admission round.")]
NotificationId = Annotated[UUID, Field(description="Id of the notification request.")]
FailureDetail = Annotated[
    str,
    Field(
        max_length=FAILURE_DETAIL_MAX,
        description="Operator-readable cause, without personal data.",
    ),
]
Permanent = Annotated[
    bool,
    Field(description="True when repeating the request cannot succeed; false when a retry may."),
]
