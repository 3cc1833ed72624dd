"""Latvia's time zone and the ``holidays`` library's calendar of Latvia.

Public holidays, days off moved by the Cabinet and Saturdays made working days come from
the library (:func:`latvian_holidays`); when a document counts as notified and when an
answer is due is :mod:`hub.notice`'s, which corrects the calendar with the
municipality's own days.
"""

from __future__ import annotations

from datetime import date, datetime
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


def local_date(moment: datetime) -> date:
    """The date in Latvia at ``moment`` (an aware datetime)."""
    return moment.astimezone(RIGA).date()
