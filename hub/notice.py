"""When a document counts as notified, and the last day to answer it.

One pure module (no clock, no I/O) for the notification law and the count of terms.
The municipality's rules file may change a channel's rule and correct the working-day
calendar (``[notification]`` and ``[calendar]``, see ``docs/rules.md``).

The law, as read from likumi.lv in December 2026 (Paziņošanas likums, id 212499;
Administratīvā procesa likums, id 55567). Article 8(3) of the Notification Law and
articles 42 and 43 of the Administrative Procedure Law were checked against published
commentary; the other parts come from a copy of the likumi.lv text and should be checked
against the current version there:

- Paziņošanas likums, 9. panta 1.1 daļa: a document sent to the official electronic
  address (e-adrese) is deemed notified on the second working day after sending;
- 9. panta otrā daļa: the same for a document sent by e-mail;
- 8. panta trešā daļa: a registered letter is deemed notified on the seventh day after
  it is handed to the post, whether or not the addressee collects it (calendar days);
- 6. pants: a document handed over at the institution is notified when the addressee
  signs for it (7. pants: the same for delivery by an employee or courier);
- 9. panta trešā daļa: a document sent through the institution's online form (the
  e-service) is deemed notified on the second working day after sending;
- SMS is none of the means of 3. panta pirmā daļa: it can only remind;
- Administratīvā procesa likums, 42. panta pirmā daļa: a term in days starts on the day
  after the event, so ``days`` after notification is the last day; 43. panta otrā daļa:
  a last day that is a Saturday, Sunday or public holiday moves to the next working day.

Working days are those of the ``holidays`` library's calendar of Latvia (which also
knows the days off the Cabinet moves and the Saturdays made working days), corrected by
the municipality (:class:`WorkingCalendar`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from types import MappingProxyType
from typing import Any, Literal, get_args

from hub.calendar import RIGA, latvian_holidays, local_date
from hub.errors import HubError

NoticeChannel = Literal["e_adrese", "email", "letter", "sms", "in_person", "e_service"]
RuleKind = Literal[
    "working_days_after_sending", "days_after_posting", "on_confirmation", "reminder_only"
]

CHANNELS: tuple[str, ...] = get_args(NoticeChannel)
RULE_KINDS: tuple[str, ...] = get_args(RuleKind)
MAX_DAYS = 30
"""The largest number of days a rules file may give a channel."""

_COUNTED = ("working_days_after_sending", "days_after_posting")
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


class NoticeRulesError(HubError, ValueError):
    """The ``[notification]`` or ``[calendar]`` table of a rules file is invalid.

    Fix the key the message names, then reload the rules.
    """

    def __init__(self, where: str, key: str, problem: str) -> None:
        super().__init__(f"{where}: {problem}")
        self.key = key
        """The dotted key at fault, e.g. ``"notification.email.days"``."""
        self.problem = problem
        """The message without the ``where`` prefix."""


@dataclass(frozen=True, slots=True)
class ChannelRule:
    """When a document sent through one channel counts as notified."""

    kind: RuleKind
    days: int = 0
    """Working days (``working_days_after_sending``) or calendar days (``days_after_posting``)."""
    source: str = ""
    """The legal source, e.g. ``"Paziņošanas likums, 9. panta otrā daļa"``."""

    def __post_init__(self) -> None:
        if self.kind not in RULE_KINDS:
            raise ValueError(f"unknown rule {self.kind!r}; known: {', '.join(RULE_KINDS)}")
        if self.days < 0:
            raise ValueError(f"days must not be negative, got {self.days}")


_LAW = "Paziņošanas likums"
DEFAULT_CHANNEL_RULES: Mapping[str, ChannelRule] = MappingProxyType(
    {
        "e_adrese": ChannelRule("working_days_after_sending", 2, f"{_LAW}, 9. panta 1.1 daļa"),
        "email": ChannelRule("working_days_after_sending", 2, f"{_LAW}, 9. panta otrā daļa"),
        "letter": ChannelRule("days_after_posting", 7, f"{_LAW}, 8. panta trešā daļa"),
        "in_person": ChannelRule("on_confirmation", 0, f"{_LAW}, 6. pants"),
        "e_service": ChannelRule("working_days_after_sending", 2, f"{_LAW}, 9. panta trešā daļa"),
        "sms": ChannelRule("reminder_only", 0, f"{_LAW}, 3. panta pirmā daļa (not a means)"),
    }
)
"""The law's rule for each channel. The e-service is the institution's online form
(9(3)): a document put there counts from sending, not from the parent opening it."""


@dataclass(frozen=True)
class WorkingCalendar:
    """Latvian working days from the ``holidays`` library (country "LV": public holidays,
    days off moved by the Cabinet, Saturdays made working days) plus the municipality's
    own corrections.

    The Cabinet moves working days for the next year by 1 July (Darba likums, 133. panta
    ceturtā daļa), and a one-off holiday needs an amendment of the holidays law; until a
    ``holidays`` release knows such a change, list it here.
    """

    days_off: frozenset[date] = frozenset()
    """One-off days off not yet in the library (e.g. a moved day off announced after the
    library's release)."""
    working_days: frozenset[date] = frozenset()
    """Days the library calls days off that are working days (a moved working Saturday not
    yet in the library)."""

    def __post_init__(self) -> None:
        both = self.days_off & self.working_days
        if both:
            listed = ", ".join(sorted(d.isoformat() for d in both))
            raise ValueError(f"days both off and working: {listed}")

    def is_working_day(self, day: date) -> bool:
        if day in self.working_days:
            return True
        if day in self.days_off:
            return False
        return bool(latvian_holidays().is_working_day(day))

    def nth_working_day_after(self, day: date, n: int) -> date:
        """The ``n``-th working day after ``day`` (``day`` itself for 0)."""
        if n < 0:
            raise ValueError(f"n must not be negative, got {n}")
        found = 0
        while found < n:
            day += timedelta(days=1)
            found += self.is_working_day(day)
        return day

    def on_or_next_working_day(self, day: date) -> date:
        while not self.is_working_day(day):
            day += timedelta(days=1)
        return day


@dataclass(frozen=True, slots=True)
class Deadline:
    channel: str
    sent_on: date
    """Day of sending (letters: the day handed to the post), in Latvia."""
    notified_on: date
    """The day the document counts as notified."""
    respond_by: date
    """Last day to answer."""


def _day(sent: datetime | date) -> date:
    if isinstance(sent, datetime):
        if sent.tzinfo is None or sent.utcoffset() is None:
            raise ValueError(f"a sending moment needs a time zone, got {sent!r}")
        return local_date(sent)
    return sent


@dataclass(frozen=True)
class NoticeLaw:
    """The notification rules of each channel and the working-day calendar they count in."""

    channels: Mapping[str, ChannelRule] = field(default_factory=lambda: DEFAULT_CHANNEL_RULES)
    calendar: WorkingCalendar = field(default_factory=WorkingCalendar)

    def __post_init__(self) -> None:
        # A read-only copy: a caller's dict changed later does not change the law.
        object.__setattr__(self, "channels", MappingProxyType(dict(self.channels)))

    def __hash__(self) -> int:
        return hash((tuple(sorted(self.channels.items())), self.calendar))

    def notifies(self, channel: str) -> bool:
        """Whether sending through ``channel`` notifies a document (not for SMS or unknown)."""
        rule = self.channels.get(channel)
        return rule is not None and rule.kind != "reminder_only"

    def deemed_notified(self, channel: str, sent: datetime | date) -> date | None:
        """The day a document sent through ``channel`` counts as notified; None if it does not.

        ``sent`` is the moment (an aware datetime, taken as its date in Latvia) or the day
        of sending: for a letter the day it is handed to the post, for an
        ``on_confirmation`` channel the moment the addressee signed or confirmed.
        """
        rule = self.channels.get(channel)
        day = _day(sent)
        if rule is None or rule.kind == "reminder_only":
            return None
        if rule.kind == "working_days_after_sending":
            return self.calendar.nth_working_day_after(day, rule.days)
        if rule.kind == "days_after_posting":
            # Calendar days: the seventh day counts even when it is a Sunday or a holiday.
            return day + timedelta(days=rule.days)
        return day

    def answer_by(self, notified_on: date, days: int) -> date:
        """The last day of a term of ``days`` calendar days from notification.

        The term starts the day after notification (APL, 42. panta pirmā daļa); a last day
        that is not a working day moves to the next working day (APL, 43. panta otrā daļa).
        """
        if days < 0:
            raise ValueError(f"days must not be negative, got {days}")
        return self.calendar.on_or_next_working_day(notified_on + timedelta(days=days))

    def deadline(self, channel: str, sent: datetime | date, days: int) -> Deadline | None:
        """When a document sent through ``channel`` counts as notified and must be answered."""
        notified = self.deemed_notified(channel, sent)
        if notified is None:
            return None
        return Deadline(channel, _day(sent), notified, self.answer_by(notified, days))

    def schedule(
        self,
        first_day: date,
        horizon: int,
        days: int,
        channels: Iterable[str] | None = None,
    ) -> dict[str, tuple[date, ...]]:
        """For each channel, the last day to answer a document sent on each of ``horizon`` days.

        ``result[channel][i]`` is ``deadline(channel, first_day + i days, days).respond_by``.
        Channels that do not notify are left out; without ``channels``, every notifying
        channel except those that count from the addressee's confirmation.
        """
        if horizon < 0:
            raise ValueError(f"horizon must not be negative, got {horizon}")
        if channels is None:
            channels = [c for c, r in self.channels.items() if r.kind != "on_confirmation"]
        result: dict[str, tuple[date, ...]] = {}
        for channel in channels:
            if not self.notifies(channel):
                continue
            sent = (first_day + timedelta(days=i) for i in range(horizon))
            result[channel] = tuple(
                self.answer_by(self.deemed_notified(channel, d) or d, days) for d in sent
            )
        return result

    @classmethod
    def from_rules(cls, table: Mapping[str, Any], where: str = "rules") -> NoticeLaw:
        """The law with a rules file's ``[notification]`` and ``[calendar]`` tables applied.

        ``table`` is the parsed file (other keys are ignored); ``where`` names it in
        messages. Channels the file leaves out keep the law's rule. Raises
        :class:`NoticeRulesError` naming the key at fault.
        """
        channels = dict(DEFAULT_CHANNEL_RULES)
        for channel, entry in _table(table, "notification", where).items():
            channels[channel] = _channel_rule(channel, entry, where)
        calendar = _table(table, "calendar", where)
        for key in calendar:
            if key not in ("days_off", "working_days"):
                raise NoticeRulesError(
                    where,
                    f"calendar.{key}",
                    f"unknown key calendar.{key}; known keys: days_off, working_days",
                )
        days_off = _dates(calendar, "days_off", where)
        working_days = _dates(calendar, "working_days", where)
        both = days_off & working_days
        if both:
            first = min(both).isoformat()
            raise NoticeRulesError(
                where,
                "calendar.working_days",
                f"calendar.working_days lists {first}, also in calendar.days_off",
            )
        return cls(channels, WorkingCalendar(days_off, working_days))


def _table(data: Mapping[str, Any], key: str, where: str) -> Mapping[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, Mapping):
        raise NoticeRulesError(where, key, f"{key} must be a table, got {value!r}")
    return value


def _channel_rule(channel: str, entry: Any, where: str) -> ChannelRule:
    key = f"notification.{channel}"
    if channel not in CHANNELS:
        raise NoticeRulesError(
            where, key, f"unknown channel {key}; known channels: {', '.join(CHANNELS)}"
        )
    if not isinstance(entry, Mapping):
        raise NoticeRulesError(
            where, key, f'{key} must be a table such as {{ rule = "...", days = 2 }}'
        )
    for name in entry:
        if name not in ("rule", "days"):
            raise NoticeRulesError(where, key, f"unknown key {key}.{name}; known keys: days, rule")
    kind = entry.get("rule")
    if kind not in RULE_KINDS:
        raise NoticeRulesError(
            where, key, f"{key}.rule must be one of {', '.join(RULE_KINDS)}, got {kind!r}"
        )
    if "days" not in entry:
        if kind in _COUNTED:
            raise NoticeRulesError(where, key, f"{key}.days is required for rule {kind}")
        days = 0
    else:
        days = entry["days"]
        if type(days) is not int:
            raise NoticeRulesError(where, key, f"{key}.days must be an integer, got {days!r}")
        if not 0 <= days <= MAX_DAYS:
            raise NoticeRulesError(
                where, key, f"{key}.days must be from 0 to {MAX_DAYS}, got {days}"
            )
        if kind not in _COUNTED and days:
            raise NoticeRulesError(where, key, f"{key}.days is not used by rule {kind}")
    default = DEFAULT_CHANNEL_RULES[channel]
    if (kind, days) == (default.kind, default.days):
        return default
    return ChannelRule(kind, days, f"{where}, [notification] {channel}")


def _dates(calendar: Mapping[str, Any], key: str, where: str) -> frozenset[date]:
    name = f"calendar.{key}"
    values = calendar.get(key, [])
    if not isinstance(values, list):
        raise NoticeRulesError(where, name, f"{name} must be an array of dates, got {values!r}")
    days: set[date] = set()
    for value in values:
        if isinstance(value, date) and not isinstance(value, datetime):
            day = value
        elif isinstance(value, str) and _ISO_DATE.fullmatch(value):
            try:
                day = date.fromisoformat(value)
            except ValueError:
                raise NoticeRulesError(
                    where, name, f"{name}: {value!r} is not a date of the calendar"
                ) from None
        else:
            raise NoticeRulesError(
                where, name, f"{name} must list dates written YYYY-MM-DD, got {value!r}"
            )
        days.add(day)
    return frozenset(days)


def sending_delay(moment: datetime, guard: timedelta) -> timedelta:
    """How long a send at ``moment`` waits so that it does not straddle midnight in Latvia.

    Zero unless ``moment`` (an aware datetime) is within ``guard`` before midnight in Riga;
    then the time until just after that midnight (00:00:00.001 Riga time), so the send
    and its deemed date fall on the same Latvian day. Counted in real time, so a day of
    23 or 25 hours (the last Sunday of March or October) is right.
    """
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"moment needs a time zone, got {moment!r}")
    if guard < timedelta(0):
        raise ValueError(f"guard must not be negative, got {guard}")
    # Aware datetimes in one zone subtract by wall clock: compare in UTC instead.
    now = moment.astimezone(UTC)
    tomorrow = moment.astimezone(RIGA).date() + timedelta(days=1)
    midnight = datetime.combine(tomorrow, time(0), tzinfo=RIGA).astimezone(UTC)
    if midnight - now > guard:
        return timedelta(0)
    return midnight + timedelta(milliseconds=1) - now
