"""A municipality's admission rules, read from a TOML file.

The hub ships one file per municipality in ``hub/allocation/rules/``;
``load_rules("riga")`` reads the shipped one, ``load_rules("/etc/hub/riga.toml")``
any other. The format (see also ``docs/rules.md``)::

    municipality = "riga"            # required, lower-case code: ^[a-z][a-z0-9-]{1,31}$
    name = "Rīgas valstspilsēta"     # optional display name
    max_institutions = 3             # required, 1..10 institutions per application
    offer_deadline_days = 15         # required, 1..90 calendar days to answer an offer
    on_expiry = "annul"              # optional: "decline" (default) or "annul"
    late_applications = "next_round" # optional: "next_round" (default) or "join"
    lottery_seed = 20260504          # required, >= 0: published seed of the tie-break lottery
    priorities = ["commission", "mandatory_age", "sibling"]  # required, most important first

    [mandatory_age]                  # optional table
    age = 5                          # default 5, 3..7
    rule = "calendar_year"           # "calendar_year" (default: birth year + age <= round year)
                                     # or "birthday"

    [notification]                   # optional: when a document counts as notified, per channel
    email = { rule = "working_days_after_sending", days = 2 }  # days 0..30; channels left out
                                     # keep the law's rule (hub.notice.DEFAULT_CHANNEL_RULES)

    [calendar]                       # optional: corrections to the holidays library's calendar
    days_off = ["2027-05-03"]        # days off the library does not know yet
    working_days = []                # working days (a Saturday) the library does not know yet

    [documents]                      # optional: printed on the notices that are decisions
    appeal_lv = "…"                  # where and within what time a decision can be contested
    appeal_en = "…"                  # (APL art. 67(2) point 9), in Latvian and English

``priorities`` lists names of :data:`hub.allocation.criteria.CRITERIA`, each
at most once. ``[notification]`` and ``[calendar]`` make the :class:`~hub.notice.NoticeLaw`
of :attr:`MunicipalityRules.notice` (:meth:`hub.notice.NoticeLaw.from_rules`).
Any problem is one :class:`RulesError` whose message starts with
``<source>:<line>:``, the line of the file to fix.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar, cast

from hub.allocation.criteria import CRITERIA
from hub.allocation.model import Rules
from hub.errors import HubError
from hub.notice import NoticeLaw, NoticeRulesError

SHIPPED = resources.files("hub.allocation") / "rules"
"""Folder of the rules files shipped with the hub, one ``<municipality>.toml`` each."""

MUNICIPALITY = re.compile(r"^[a-z][a-z0-9-]{1,31}$")
TOP_LEVEL_KEYS = (
    "municipality",
    "name",
    "max_institutions",
    "offer_deadline_days",
    "on_expiry",
    "late_applications",
    "lottery_seed",
    "priorities",
    "mandatory_age",
    "notification",
    "calendar",
    "documents",
)
MANDATORY_AGE_KEYS = ("age", "rule")
DOCUMENTS_KEYS = ("appeal_lv", "appeal_en")

# tomllib ends its messages with the position of the problem.
_POSITION = re.compile(r"\s*\(at (?:line (\d+), column \d+|end of document)\)$")
_KINDS = {int: "an integer", str: "a string", list: "an array", dict: "a table"}

_T = TypeVar("_T")
_S = TypeVar("_S", bound=str)


class RulesError(HubError):
    """A rules file is invalid. Fix the line of the file that the message names, then reload."""


@dataclass(frozen=True, slots=True)
class MunicipalityRules(Rules):
    """A rules file: the engine's :class:`~hub.allocation.model.Rules` and the notification law.

    The notification law lives here rather than on the engine's ``Rules``: the engine's
    model imports only the standard library (``tests/unit/test_boundaries.py``), and the
    law needs the ``holidays`` library.
    """

    notice: NoticeLaw = field(default_factory=NoticeLaw)
    """When documents count as notified and when answers are due (``[notification]``,
    ``[calendar]``)."""
    appeal: Mapping[str, str] = field(default_factory=dict)
    """How to contest the municipality's decisions, by language (``[documents]``
    ``appeal_lv``, ``appeal_en``): printed on every notice that is an administrative act."""


@dataclass(frozen=True, slots=True)
class _Table:
    """One table of a parsed rules file, with what is needed to point at its lines."""

    values: dict[str, Any]
    lines: list[str]
    source: str
    header: int
    """Line of the table's header; 1 for the top level."""
    prefix: str = ""
    """How key names are qualified in messages, e.g. ``"mandatory_age."``."""

    def error(self, line: int, message: str) -> RulesError:
        return RulesError(f"{self.source}:{line}: {message}")

    def line(self, key: str) -> int:
        """First line from the header on assigning ``key`` or opening ``[key]``; else the header."""
        pattern = re.compile(rf"^\s*(?:{re.escape(key)}\s*=|\[+\s*{re.escape(key)}\s*\])")
        numbered = enumerate(self.lines[self.header - 1 :], self.header)
        return next((n for n, text in numbered if pattern.match(text)), self.header)

    def check_keys(self, known: tuple[str, ...]) -> None:
        for key in self.values:
            if key not in known:
                raise self.error(
                    self.line(key),
                    f"unknown key {self.prefix}{key}; known keys: {', '.join(sorted(known))}",
                )

    def get(self, key: str, kind: type[_T], default: _T | None = None) -> _T:
        """The value of ``key``, of exactly ``kind`` (``true`` is no integer).

        Without a ``default`` the key is required.
        """
        if key not in self.values:
            if default is None:
                raise self.error(self.header, f"missing required key {self.prefix}{key}")
            return default
        value = self.values[key]
        if type(value) is not kind:
            raise self.error(
                self.line(key), f"{self.prefix}{key} must be {_KINDS[kind]}, got {value!r}"
            )
        return value

    def integer(self, key: str, low: int, high: int | None, default: int | None = None) -> int:
        value = self.get(key, int, default)
        if value < low or (high is not None and value > high):
            bounds = f"from {low} to {high}" if high is not None else f"at least {low}"
            raise self.error(self.line(key), f"{self.prefix}{key} must be {bounds}, got {value}")
        return value

    def choice(self, key: str, options: tuple[_S, ...], default: _S) -> _S:
        value = self.get(key, str, default)
        if value not in options:
            raise self.error(
                self.line(key),
                f"{self.prefix}{key} must be one of {', '.join(options)}, got {value!r}",
            )
        return cast(_S, value)

    def criteria(self, key: str) -> tuple[str, ...]:
        """The criterion names listed in ``key``: known, unique, at least one, in file order."""
        names = self.get(key, list)
        start = self.line(key)
        if not names:
            raise self.error(start, f"{key} must list at least one criterion")
        first_lines: dict[str, int] = {}
        for name in names:
            if type(name) is not str:
                raise self.error(start, f"{key} must list criterion names, got {name!r}")
            # The array may span lines: the first occurrence is the first quoted
            # name from the key's line on, a duplicate the second one.
            quoted = re.compile(rf"""(["']){re.escape(name)}\1""")
            found = [
                n
                for n, text in enumerate(self.lines[start - 1 :], start)
                for _ in quoted.finditer(text)
            ]
            occurrence = 1 if name in first_lines else 0
            line = found[occurrence] if occurrence < len(found) else start
            if name not in CRITERIA:
                raise self.error(
                    line,
                    f"unknown criterion {name!r} in {key}; known criteria:"
                    f" {', '.join(sorted(CRITERIA))}",
                )
            if name in first_lines:
                raise self.error(
                    line,
                    f"duplicated criterion {name!r} in {key} on line {line};"
                    f" first listed on line {first_lines[name]}",
                )
            first_lines[name] = line
        return tuple(names)


def parse_rules(text: str, source: str = "<rules>") -> MunicipalityRules:
    """The rules in ``text``, TOML in the format of this module's docstring.

    ``source`` names the file in error messages. Raises :class:`RulesError`.
    """
    lines = text.split("\n")  # as tomllib counts lines
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        position = _POSITION.search(str(exc))
        line = int(position[1]) if position and position[1] else text.rstrip().count("\n") + 1
        raise RulesError(f"{source}:{line}: invalid TOML: {_POSITION.sub('', str(exc))}") from None

    top = _Table(data, lines, source, header=1)
    top.check_keys(TOP_LEVEL_KEYS)
    municipality = top.get("municipality", str)
    if not MUNICIPALITY.fullmatch(municipality):
        raise top.error(
            top.line("municipality"),
            f"municipality must be a lower-case code matching {MUNICIPALITY.pattern},"
            f" got {municipality!r}",
        )
    age = _Table(
        top.get("mandatory_age", dict, {}),
        lines,
        source,
        header=top.line("mandatory_age"),
        prefix="mandatory_age.",
    )
    age.check_keys(MANDATORY_AGE_KEYS)
    documents = _Table(
        top.get("documents", dict, {}),
        lines,
        source,
        header=top.line("documents"),
        prefix="documents.",
    )
    documents.check_keys(DOCUMENTS_KEYS)
    appeal = {
        key.removeprefix("appeal_"): " ".join(documents.get(key, str).split())
        for key in DOCUMENTS_KEYS
        if key in documents.values
    }
    try:
        notice = NoticeLaw.from_rules(data, source)
    except NoticeRulesError as exc:
        table, _, entry = exc.key.partition(".")
        header = top.line(table)
        values = data.get(table)
        line = header
        if entry and isinstance(values, dict):
            line = _Table(values, lines, source, header).line(entry.partition(".")[0])
        raise top.error(line, exc.problem) from None
    return MunicipalityRules(
        notice=notice,
        appeal=appeal,
        municipality=municipality,
        name=top.get("name", str, ""),
        max_institutions=top.integer("max_institutions", 1, 10),
        offer_deadline_days=top.integer("offer_deadline_days", 1, 90),
        on_expiry=top.choice("on_expiry", ("decline", "annul"), "decline"),
        late_applications=top.choice("late_applications", ("next_round", "join"), "next_round"),
        lottery_seed=top.integer("lottery_seed", 0, None),
        criteria=top.criteria("priorities"),
        mandatory_age=age.integer("age", 3, 7, 5),
        mandatory_age_rule=age.choice("rule", ("calendar_year", "birthday"), "calendar_year"),
    )


def shipped_rules() -> list[str]:
    """Names of the municipalities whose rules ship with the hub, sorted."""
    return sorted(
        f.name.removesuffix(".toml") for f in SHIPPED.iterdir() if f.name.endswith(".toml")
    )


def load_rules(path_or_name: str | os.PathLike[str]) -> MunicipalityRules:
    """The rules of a shipped municipality (``"riga"``) or of a ``.toml`` file at a path.

    A string that is a municipality code names a shipped file; anything else is
    a path. Raises :class:`RulesError`.
    """
    if isinstance(path_or_name, str) and MUNICIPALITY.fullmatch(path_or_name):
        if path_or_name not in shipped_rules():
            raise RulesError(
                f"no shipped rules for {path_or_name!r}; shipped: {', '.join(shipped_rules())}"
                " (or give the path of a .toml file)"
            )
        shipped = SHIPPED / f"{path_or_name}.toml"
        return parse_rules(shipped.read_text(encoding="utf-8"), str(shipped))
    path = Path(path_or_name)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RulesError(f"{path}: cannot read the rules file: {exc}") from None
    return parse_rules(text, str(path))


def criteria_markdown() -> str:
    """The Markdown table of every criterion a rules file may list, for ``docs/rules.md``."""
    rows = [f"| `{c.name}` | {c.scope} | {c.description} |" for c in CRITERIA.values()]
    return "\n".join(["| criterion | scope | description |", "|---|---|---|", *rows]) + "\n"
