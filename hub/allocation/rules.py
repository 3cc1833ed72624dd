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
    priorities = [                   # required, most important first: criterion names
        "commission",                # or composites of them (all_of / any_of, two or more)
        { name = "child_and_parent_resident", all_of = ["child_resident", "parent_resident"] },
        "sibling",
    ]

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

``priorities`` lists names of :data:`hub.allocation.criteria.CRITERIA` and
composites of them (:class:`hub.allocation.criteria.Composite`, kept in
:attr:`~hub.allocation.model.Rules.composites`), each name at most once.
``[notification]`` and ``[calendar]`` make the :class:`~hub.notice.NoticeLaw` of
:attr:`MunicipalityRules.notice` (:meth:`hub.notice.NoticeLaw.from_rules`).
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

from hub.allocation.criteria import COMPOSITE_KINDS, CRITERIA, Composite
from hub.allocation.model import Rules
from hub.errors import HubError
from hub.notice import NoticeLaw, NoticeRulesError

SHIPPED = resources.files("hub.allocation") / "rules"
"""Folder of the rules files shipped with the hub, one ``<municipality>.toml`` each."""

MUNICIPALITY = re.compile(r"^[a-z][a-z0-9-]{1,31}$")
COMPOSITE_NAME = re.compile(r"^[a-z][a-z0-9_]{1,47}$")
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
_KNOWN = f"known criteria: {', '.join(sorted(CRITERIA))}"

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

    def priorities(self, key: str) -> tuple[tuple[str, ...], tuple[Composite, ...]]:
        """The priorities listed in ``key``, in file order, and the composites among them.

        Each entry is a criterion name or a composite table, and each name is listed once.
        """
        entries = self.get(key, list)
        start = self.line(key)
        if not entries:
            raise self.error(start, f"{key} must list at least one criterion")
        lines = _element_lines(self.lines, start, len(entries))
        names: list[str] = []
        composites: dict[str, tuple[Composite, int]] = {}
        first_lines: dict[str, int] = {}
        for entry, line in zip(entries, lines, strict=True):
            found = self._composite(key, entry, line) if type(entry) is dict else None
            if found is None and type(entry) is not str:
                raise self.error(
                    line, f"{key} must list criterion names or composite tables, got {entry!r}"
                )
            name = entry if found is None else found.name
            if name in first_lines:
                raise self.error(
                    line,
                    f"duplicated criterion {name!r} in {key} on line {line};"
                    f" first listed on line {first_lines[name]}",
                )
            if found is not None:
                composites[name] = (found, line)
            elif name not in CRITERIA:
                raise self.error(line, f"unknown criterion {name!r} in {key}; {_KNOWN}")
            first_lines[name] = line
            names.append(name)
        for found, line in composites.values():
            for part in found.parts:
                if part in composites:
                    raise self.error(
                        line,
                        f"composite {found.name!r} lists the composite {part!r}:"
                        " a composite combines criteria, not other composites",
                    )
                if part not in CRITERIA:
                    raise self.error(
                        line, f"unknown criterion {part!r} in composite {found.name!r}; {_KNOWN}"
                    )
        return tuple(names), tuple(found for found, _ in composites.values())

    def _composite(self, key: str, entry: dict[str, Any], line: int) -> Composite:
        """One composite table of ``key``, e.g. ``{ name = "x", all_of = ["a", "b"] }``."""
        name = entry.get("name")
        if name is None:
            raise self.error(
                line, f'a composite in {key} needs a name: {{ name = "...", all_of = [...] }}'
            )
        if type(name) is not str or not COMPOSITE_NAME.fullmatch(name):
            raise self.error(
                line,
                "a composite's name must be a lower-case name matching"
                f" {COMPOSITE_NAME.pattern}, got {name!r}",
            )
        if name in CRITERIA:
            raise self.error(
                line,
                f"composite {name!r} has the name of a criterion;"
                " give the combination a name of its own",
            )
        known = ("name", *COMPOSITE_KINDS)
        for unknown in sorted(entry.keys() - set(known)):
            raise self.error(
                line,
                f"unknown key {unknown} in composite {name!r};"
                f" known keys: {', '.join(sorted(known))}",
            )
        kinds = [kind for kind in COMPOSITE_KINDS if kind in entry]
        if len(kinds) != 1:
            raise self.error(
                line, f"composite {name!r} needs exactly one of {', '.join(COMPOSITE_KINDS)}"
            )
        kind = kinds[0]
        parts = entry[kind]
        if type(parts) is not list or any(type(part) is not str for part in parts):
            raise self.error(
                line, f"composite {name!r}: {kind} must be an array of criterion names"
            )
        if len(parts) < 2:
            raise self.error(
                line, f"composite {name!r}: {kind} must list at least two criteria, got {parts!r}"
            )
        twice = next((part for n, part in enumerate(parts) if part in parts[:n]), None)
        if twice is not None:
            raise self.error(line, f"duplicated criterion {twice!r} in composite {name!r}")
        return Composite(name, kind, tuple(parts))


def _element_lines(lines: list[str], start: int, count: int) -> list[int]:
    """The line on which each of the ``count`` elements of the array assigned on line
    ``start`` begins.

    Reads the TOML text itself (tomllib keeps no positions), skipping strings, comments and
    what nested arrays and tables hold. If it cannot tell, every element gets ``start``.
    """
    found: list[int] = []
    depth = 0  # 1 inside the array itself
    expecting = False  # the next character that is not blank, a comma or a comment starts one
    quote = ""
    for number, text in enumerate(lines[start - 1 :], start):
        if len(quote) == 1:  # only multi-line strings go on past the end of a line
            quote = ""
        i = text.index("=") + 1 if depth == 0 and number == start and "=" in text else 0
        while i < len(text):
            char = text[i]
            if quote:
                if text.startswith(quote, i):
                    i += len(quote)
                    quote = ""
                else:
                    i += 2 if char == "\\" and quote[0] == '"' else 1
                continue
            if char == "#":
                break
            if expecting and char not in " \t\r,]":
                found.append(number)
                expecting = False
            if char in "\"'":
                quote = char * 3 if text.startswith(char * 3, i) else char
                i += len(quote)
                continue
            if char in "[{":
                depth += 1
                expecting = depth == 1
            elif char in "]}":
                depth -= 1
                if depth == 0:
                    return found if len(found) == count else [start] * count
            elif char == "," and depth == 1:
                expecting = True
            i += 1
    return [start] * count


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
    criteria, composites = top.priorities("priorities")
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
        criteria=criteria,
        composites=composites,
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
