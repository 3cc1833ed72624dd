"""Hypothesis strategies that build any message of the catalogue from its pydantic fields.

The builder reads each field's type and constraints (lengths, bounds,
patterns) so generated values are valid by construction; cross-field rules
that no single field expresses are satisfied by small fix-ups per model.
"""

from __future__ import annotations

import enum
import random
import types
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Annotated, Any, Literal, Union, get_args, get_origin
from uuid import UUID

from hypothesis import strategies as st
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from schemas.applications import ApplicationSubmitted
from schemas.authorisations import Authorisation
from schemas.priority import PriorityConfirmed, PriorityRejected
from schemas.residence import Residence, ResidenceDeclared
from schemas.values import PersonalCode
from simulators.municipality import new_format_code, old_format_code

ZONES = st.sampled_from([UTC, timezone(timedelta(hours=2)), timezone(timedelta(hours=3))])


@st.composite
def personal_code_texts(draw: st.DrawFn, *, born: date | None = None) -> str:
    rng = random.Random(draw(st.integers(0, 2**32)))
    if born is None and draw(st.booleans()):
        return new_format_code(rng)
    born = born or draw(st.dates(date(1900, 1, 1), date(2017, 6, 30)))
    text = old_format_code(born, rng)
    return text.replace("-", "") if draw(st.booleans()) else text


personal_codes = personal_code_texts().map(PersonalCode)


def _constraints(metadata: tuple[Any, ...]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for item in metadata:
        for name in ("ge", "gt", "le", "lt", "min_length", "max_length", "pattern"):
            value = getattr(item, name, None)
            if value is not None:
                found[name] = value
    return found


def for_type(tp: Any, metadata: tuple[Any, ...] = ()) -> st.SearchStrategy[Any]:
    origin = get_origin(tp)
    if origin is Annotated:
        inner, *extra = get_args(tp)
        return for_type(inner, metadata + tuple(extra))
    if isinstance(tp, FieldInfo):
        return for_type(tp.annotation, metadata + tuple(tp.metadata))
    c = _constraints(metadata)
    if tp is PersonalCode:
        return personal_codes
    if origin is Literal:
        return st.sampled_from(get_args(tp))
    if origin in (Union, types.UnionType):
        return st.one_of(*(st.none() if a is type(None) else for_type(a) for a in get_args(tp)))
    if origin is tuple:
        element = get_args(tp)[0]
        unique_by = None
        if isinstance(element, type) and issubclass(element, BaseModel):
            first = next(iter(element.model_fields))
            unique_by = lambda m: getattr(m, first)  # noqa: E731
        return st.lists(
            for_type(element),
            min_size=c.get("min_length", 0),
            max_size=min(c.get("max_length", 4), 4),
            unique_by=unique_by,
            unique=unique_by is None,
        ).map(tuple)
    if origin is dict:
        keys = st.from_regex(r"[a-z_]{1,12}", fullmatch=True)
        return st.dictionaries(keys, st.text(max_size=20), max_size=4)
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return for_model(tp)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return st.sampled_from(tp)
    if tp is bool:
        return st.booleans()
    if tp is bytes:
        return st.binary(min_size=c.get("min_length", 0), max_size=min(c.get("max_length", 64), 64))
    if tp is int:
        low = c.get("ge", c["gt"] + 1 if "gt" in c else -(2**31))
        high = c.get("le", c["lt"] - 1 if "lt" in c else 2**31)
        return st.integers(low, high)
    if tp is float:
        return st.floats(c.get("ge"), c.get("le"), allow_nan=False, allow_infinity=False)
    if tp is str:
        if "pattern" in c:
            return st.from_regex(c["pattern"], fullmatch=True)
        return st.text(min_size=c.get("min_length", 0), max_size=min(c.get("max_length", 40), 40))
    if tp is datetime:
        return st.datetimes(datetime(2000, 1, 1), datetime(2100, 1, 1), timezones=ZONES)
    if tp is date:
        return st.dates(date(2000, 1, 1), date(2100, 1, 1))
    if tp is UUID:
        return st.uuids()
    if getattr(tp, "__name__", "") == "EmailStr":
        return _emails
    raise NotImplementedError(f"no strategy for {tp!r}")


_emails = st.from_regex(r"[a-z][a-z0-9.]{0,10}[a-z0-9]@[a-z]{2,10}\.(lv|eu|com)", fullmatch=True)


def _fix_application(fields: dict[str, Any]) -> dict[str, Any]:
    born = fields["child_personal_code"].birth_date
    if born is not None:
        fields["child_birth_date"] = born
    if fields["submitted_via"] == "client_service_centre" and not fields["power_of_attorney_ref"]:
        fields["power_of_attorney_ref"] = "PA-1"
    return fields


def _fix_residence(fields: dict[str, Any]) -> dict[str, Any]:
    fields["guardian_index"] = (
        (fields["guardian_index"] or 0) if fields["subject"] == "guardian" else None
    )
    return fields


def _fix_authorisation(fields: dict[str, Any]) -> dict[str, Any]:
    if fields["valid_until"] is not None and fields["valid_until"] < fields["valid_from"]:
        fields["valid_from"], fields["valid_until"] = fields["valid_until"], fields["valid_from"]
    return fields


def _fix_decision(fields: dict[str, Any]) -> dict[str, Any]:
    staff = fields["ground"] == "staff_child"
    fields["institution_id"] = (fields["institution_id"] or "PII-001") if staff else None
    return fields


FIXUPS: dict[type[BaseModel], Callable[[dict[str, Any]], dict[str, Any]]] = {
    ApplicationSubmitted: _fix_application,
    ResidenceDeclared: _fix_residence,
    Residence: _fix_residence,
    Authorisation: _fix_authorisation,
    PriorityConfirmed: _fix_decision,
    PriorityRejected: _fix_decision,
}


def _try_build(model: type[BaseModel], fields: dict[str, Any]) -> BaseModel | None:
    try:
        return model(**FIXUPS.get(model, lambda f: f)(fields))
    except ValueError:  # pydantic.ValidationError is a ValueError
        return None


def for_model(model: type[BaseModel]) -> st.SearchStrategy[Any]:
    fields = {
        name: for_type(info.annotation, tuple(info.metadata))
        for name, info in model.model_fields.items()
        if name != "event_type"
    }
    return (
        st.fixed_dictionaries(fields)
        .map(lambda values: _try_build(model, values))
        .filter(lambda built: built is not None)
    )
