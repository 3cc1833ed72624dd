"""The legal clock with the law's defaults (hub.notice): second working day after sending to an
e-adrese, Latvian working days, and the answer deadline."""

from datetime import UTC, date, datetime

import pytest

from hub.notice import NoticeLaw

LAW = NoticeLaw()


@pytest.mark.parametrize(
    ("sent", "deemed"),
    [
        (datetime(2026, 11, 10, 9, 0, tzinfo=UTC), date(2026, 11, 12)),  # Tue → Thu
        (datetime(2026, 11, 13, 9, 0, tzinfo=UTC), date(2026, 11, 17)),  # Fri → Tue (weekend)
        (datetime(2026, 11, 16, 9, 0, tzinfo=UTC), date(2026, 11, 19)),  # 18 Nov is a holiday
        (datetime(2026, 12, 22, 9, 0, tzinfo=UTC), date(2026, 12, 28)),  # 24–26 Dec, weekend
        (datetime(2026, 12, 30, 9, 0, tzinfo=UTC), date(2027, 1, 5)),  # 31 Dec, 1 Jan, weekend
        (
            datetime(2026, 11, 17, 22, 30, tzinfo=UTC),
            date(2026, 11, 20),
        ),  # already the 18th in Riga
    ],
)
def test_deemed_notified_on_the_second_working_day_after_sending(
    sent: datetime, deemed: date
) -> None:
    assert LAW.deemed_notified("e_adrese", sent) == deemed


def test_saturdays_made_working_days_and_moved_days_off_count() -> None:
    calendar = LAW.calendar
    assert not calendar.is_working_day(date(2026, 1, 2))  # a day off moved from Saturday 17 Jan
    assert calendar.is_working_day(date(2026, 1, 17))  # that Saturday is a working day
    assert calendar.nth_working_day_after(date(2026, 1, 16), 1) == date(2026, 1, 17)


def test_answer_deadline_counts_calendar_days_and_ends_on_a_working_day() -> None:
    assert LAW.answer_by(date(2026, 11, 12), 15) == date(2026, 11, 27)  # a Friday
    assert LAW.answer_by(date(2026, 11, 3), 15) == date(2026, 11, 19)  # 18th is a holiday
    assert LAW.answer_by(date(2026, 12, 10), 15) == date(2026, 12, 28)  # Christmas, weekend
