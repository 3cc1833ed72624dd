"""Latvian working days and the legal clock of an offer.

A document sent to an official electronic address (e-adrese) is deemed
notified on the second working day after it was sent; public holidays,
days off moved by the Cabinet and Saturdays made working days come from the
``holidays`` library's calendar of Latvia. The parents then have the
municipality's number of calendar days to answer; a term whose last day is
not a working day ends on the next working day, as Latvian procedural law
counts terms.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

import holidays

RIGA = ZoneInfo("Europe/Riga")


@lru_cache(maxsize=1)
def latvian_holidays() -> holidays.HolidayBase:
    """The ``holidays`` library's calendar of Latvia, built once per process.

    It fills in each year the first time a day of it is asked about; nothing is read
    from disk or the network.
    """
    return holidays.country_holidays("LV")


def is_working_day(day: date) -> bool:
    return bool(latvian_holidays().is_working_day(day))


def working_days_after(day: date, count: int) -> date:
    """The ``count``-th working day after ``day``."""
    return latvian_holidays().get_nth_working_day(day, count)  # type: ignore[no-any-return]


def local_date(moment: datetime) -> date:
    """The date in Latvia at ``moment`` (an aware datetime)."""
    return moment.astimezone(RIGA).date()


def deemed_notified(sent_at: datetime) -> date:
    """When a document sent to an e-adrese at ``sent_at`` counts as notified."""
    return working_days_after(local_date(sent_at), 2)


def answer_deadline(notified_on: date, days: int) -> date:
    """Last day to answer: ``days`` calendar days after notification, moved off non-working days."""
    last = notified_on + timedelta(days=days)
    while not is_working_day(last):
        last += timedelta(days=1)
    return last
