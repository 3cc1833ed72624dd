"""The notification law: each channel's deemed day, answer deadlines, calendar corrections."""

from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hub.calendar import RIGA
from hub.notice import (
    CHANNELS,
    DEFAULT_CHANNEL_RULES,
    ChannelRule,
    Deadline,
    NoticeLaw,
    NoticeRulesError,
    WorkingCalendar,
    sending_delay,
)

LAW = NoticeLaw()


def test_the_library_calendar_the_dates_below_rely_on() -> None:
    calendar = WorkingCalendar()
    assert date(2026, 11, 18).weekday() == 2  # Proclamation Day 2026 is a Wednesday
    assert not calendar.is_working_day(date(2026, 11, 18))
    assert calendar.is_working_day(date(2026, 11, 19))
    assert not calendar.is_working_day(date(2026, 11, 14))  # Saturday
    assert not calendar.is_working_day(date(2026, 12, 26))  # Second Day of Christmas


def test_every_channel_has_a_rule_with_its_source() -> None:
    assert set(DEFAULT_CHANNEL_RULES) == set(CHANNELS)
    assert all(rule.source.startswith("Paziņošanas likums") for rule in LAW.channels.values())


@pytest.mark.parametrize(
    ("channel", "sent", "notified"),
    [
        ("e_adrese", date(2026, 11, 13), date(2026, 11, 17)),  # Fri → Tue over the weekend
        ("e_adrese", date(2026, 11, 16), date(2026, 11, 19)),  # Mon → Thu: 18 Nov is off
        ("email", date(2026, 11, 17), date(2026, 11, 20)),  # Tue → Fri: 18 Nov is off
        ("e_service", date(2026, 12, 30), date(2027, 1, 5)),  # 31 Dec, 1 Jan, weekend
        ("letter", date(2026, 11, 11), date(2026, 11, 18)),  # the 7th day, a holiday
        ("letter", date(2026, 11, 14), date(2026, 11, 21)),  # posted on a Saturday
        ("letter", date(2026, 12, 19), date(2026, 12, 26)),  # Sat → Sat, Second Christmas Day
        ("in_person", date(2026, 11, 14), date(2026, 11, 14)),  # the day of signing
    ],
)
def test_each_channel_counts_as_the_law_says(channel: str, sent: date, notified: date) -> None:
    assert LAW.notifies(channel)
    assert LAW.deemed_notified(channel, sent) == notified


def test_an_sms_or_an_unknown_channel_notifies_nothing() -> None:
    for channel in ("sms", "fax"):
        assert not LAW.notifies(channel)
        assert LAW.deemed_notified(channel, date(2026, 11, 13)) is None
        assert LAW.deadline(channel, date(2026, 11, 13), 15) is None


def test_a_sending_moment_counts_by_its_date_in_latvia() -> None:
    late = datetime(2026, 11, 12, 23, 30, tzinfo=UTC)  # already Friday the 13th in Riga
    assert LAW.deemed_notified("e_adrese", late) == date(2026, 11, 17)
    assert LAW.deemed_notified("e_adrese", datetime(2026, 11, 12, 21, 30, tzinfo=UTC)) == date(
        2026, 11, 16
    )
    with pytest.raises(ValueError, match="time zone"):
        LAW.deemed_notified("e_adrese", datetime(2026, 11, 12, 12, 0))


def test_the_answer_deadline_moves_off_weekends_and_holidays() -> None:
    assert LAW.answer_by(date(2026, 11, 3), 15) == date(2026, 11, 19)  # 18 Nov → 19 Nov
    assert LAW.answer_by(date(2026, 11, 5), 15) == date(2026, 11, 20)  # a Friday stays
    assert LAW.answer_by(date(2026, 11, 6), 15) == date(2026, 11, 23)  # Sat → Mon
    assert LAW.answer_by(date(2026, 12, 9), 15) == date(2026, 12, 28)  # 24 Dec → Mon 28th
    assert LAW.answer_by(date(2026, 11, 19), 0) == date(2026, 11, 19)


def test_a_deadline_from_sending() -> None:
    sent = datetime(2026, 11, 13, 9, 0, tzinfo=UTC)
    assert LAW.deadline("e_adrese", sent, 15) == Deadline(
        "e_adrese", date(2026, 11, 13), date(2026, 11, 17), date(2026, 12, 2)
    )
    assert LAW.deadline("letter", date(2026, 11, 14), 15) == Deadline(
        "letter",
        date(2026, 11, 14),
        date(2026, 11, 21),
        date(2026, 12, 7),  # 6 Dec: Sunday
    )


def test_a_day_off_announced_after_the_library_moves_a_deadline() -> None:
    friday = date(2026, 11, 20)
    assert LAW.answer_by(date(2026, 11, 5), 15) == friday
    law = NoticeLaw(calendar=WorkingCalendar(days_off=frozenset({friday})))
    assert law.answer_by(date(2026, 11, 5), 15) == date(2026, 11, 23)
    assert law.deemed_notified("e_adrese", date(2026, 11, 18)) == date(2026, 11, 23)


def test_a_saturday_made_a_working_day_counts() -> None:
    saturday = date(2026, 11, 14)
    law = NoticeLaw(calendar=WorkingCalendar(working_days=frozenset({saturday})))
    assert law.deemed_notified("e_adrese", date(2026, 11, 12)) == saturday
    assert LAW.deemed_notified("e_adrese", date(2026, 11, 12)) == date(2026, 11, 16)
    assert law.answer_by(date(2026, 10, 30), 15) == saturday
    with pytest.raises(ValueError, match="both off and working"):
        WorkingCalendar(days_off=frozenset({saturday}), working_days=frozenset({saturday}))


def test_a_channel_rule_replaced() -> None:
    law = NoticeLaw({**DEFAULT_CHANNEL_RULES, "email": ChannelRule("reminder_only")})
    assert not law.notifies("email")
    assert law.notifies("e_adrese")
    assert hash(law) == hash(
        NoticeLaw({**DEFAULT_CHANNEL_RULES, "email": ChannelRule("reminder_only")})
    )


@pytest.mark.parametrize(
    ("moment", "guard", "delay"),
    [
        # Winter: Riga midnight is 22:00 UTC; summer: 21:00 UTC.
        (datetime(2026, 1, 15, 21, 50, tzinfo=UTC), timedelta(minutes=15), timedelta(minutes=10)),
        (datetime(2026, 1, 15, 21, 40, tzinfo=UTC), timedelta(minutes=15), timedelta(0)),
        (datetime(2026, 7, 15, 20, 59, 59, tzinfo=UTC), timedelta(minutes=1), timedelta(seconds=1)),
        (datetime(2026, 7, 15, 21, 0, tzinfo=UTC), timedelta(minutes=15), timedelta(0)),
        (datetime(2026, 7, 15, 12, 0, tzinfo=UTC), timedelta(0), timedelta(0)),
        # The night from summer to winter time: the Riga day of 25 Oct 2026 lasts 25 hours.
        (datetime(2026, 10, 24, 22, 0, tzinfo=UTC), timedelta(hours=24), timedelta(hours=24)),
        # The night from winter to summer time: the Riga day of 29 Mar 2026 lasts 23 hours.
        (datetime(2026, 3, 28, 23, 0, tzinfo=UTC), timedelta(hours=24), timedelta(hours=22)),
        (datetime(2026, 3, 28, 21, 30, tzinfo=UTC), timedelta(hours=1), timedelta(minutes=30)),
    ],
)
def test_sending_waits_past_midnight_in_riga(
    moment: datetime, guard: timedelta, delay: timedelta
) -> None:
    waited = sending_delay(moment, guard)
    expected = delay + timedelta(milliseconds=1) if delay else delay
    assert waited == expected
    if waited:
        after = (moment + waited).astimezone(RIGA)
        assert (after.hour, after.minute, after.second, after.microsecond) == (0, 0, 0, 1000)


def test_sending_delay_needs_an_aware_moment() -> None:
    with pytest.raises(ValueError, match="time zone"):
        sending_delay(datetime(2026, 1, 15, 23, 50), timedelta(minutes=15))


@settings(max_examples=50, deadline=None)
@given(
    first_day=st.dates(date(2025, 1, 1), date(2028, 12, 31)),
    horizon=st.integers(0, 40),
    days=st.integers(0, 30),
    days_off=st.frozensets(st.dates(date(2025, 1, 1), date(2029, 3, 31)), max_size=5),
)
def test_the_schedule_is_the_deadline_of_every_day(
    first_day: date, horizon: int, days: int, days_off: frozenset[date]
) -> None:
    law = NoticeLaw(calendar=WorkingCalendar(days_off=days_off))
    schedule = law.schedule(first_day, horizon, days)
    assert set(schedule) == {"e_adrese", "email", "letter", "e_service"}
    for channel, ends in schedule.items():
        assert len(ends) == horizon
        for i, end in enumerate(ends):
            deadline = law.deadline(channel, first_day + timedelta(days=i), days)
            assert deadline is not None
            assert end == deadline.respond_by
            assert law.calendar.is_working_day(end)


def test_a_schedule_for_chosen_channels_leaves_out_those_that_do_not_notify() -> None:
    schedule = LAW.schedule(date(2026, 11, 13), 2, 15, ["in_person", "sms", "letter"])
    assert schedule == {
        "in_person": (date(2026, 11, 30), date(2026, 11, 30)),  # 28 Nov: Sat; 29th: Sun
        "letter": (date(2026, 12, 7), date(2026, 12, 7)),  # 20th + 15 = 5 Dec: Sat
    }


def test_rules_tables_change_channels_and_the_calendar() -> None:
    law = NoticeLaw.from_rules(
        {
            "municipality": "riga",
            "notification": {
                "email": {"rule": "working_days_after_sending", "days": 3},
                "letter": {"rule": "days_after_posting", "days": 7},
                "e_service": {"rule": "on_confirmation"},
            },
            "calendar": {"days_off": ["2027-05-03", date(2027, 5, 3)], "working_days": []},
        }
    )
    assert law.channels["email"] == ChannelRule(
        "working_days_after_sending", 3, "rules, [notification] email"
    )
    assert law.channels["letter"] is DEFAULT_CHANNEL_RULES["letter"]
    assert law.channels["e_service"].kind == "on_confirmation"
    assert law.channels["e_adrese"] == DEFAULT_CHANNEL_RULES["e_adrese"]
    assert law.calendar == WorkingCalendar(days_off=frozenset({date(2027, 5, 3)}))
    assert NoticeLaw.from_rules({}) == NoticeLaw()


@pytest.mark.parametrize(
    ("table", "key", "message"),
    [
        ({"notification": []}, "notification", "notification must be a table"),
        (
            {"notification": {"fax": {"rule": "on_confirmation"}}},
            "notification.fax",
            "unknown channel",
        ),
        ({"notification": {"email": 2}}, "notification.email", "must be a table"),
        (
            {"notification": {"email": {"rule": "working_days_after_sending", "day": 2}}},
            "notification.email",
            "unknown key notification.email.day",
        ),
        ({"notification": {"email": {"rule": "soon"}}}, "notification.email", "email.rule must be"),
        (
            {"notification": {"email": {"rule": "working_days_after_sending"}}},
            "notification.email",
            "days is required",
        ),
        (
            {"notification": {"letter": {"rule": "days_after_posting", "days": 31}}},
            "notification.letter",
            "from 0 to 30, got 31",
        ),
        (
            {"notification": {"letter": {"rule": "days_after_posting", "days": True}}},
            "notification.letter",
            "must be an integer",
        ),
        (
            {"notification": {"sms": {"rule": "reminder_only", "days": 2}}},
            "notification.sms",
            "not used by rule reminder_only",
        ),
        ({"calendar": {"holidays": []}}, "calendar.holidays", "unknown key calendar.holidays"),
        ({"calendar": {"days_off": "2027-05-03"}}, "calendar.days_off", "array of dates"),
        ({"calendar": {"days_off": ["2027-02-30"]}}, "calendar.days_off", "not a date of the"),
        ({"calendar": {"days_off": ["3 May 2027"]}}, "calendar.days_off", "YYYY-MM-DD"),
        ({"calendar": {"days_off": ["2027-W18-1"]}}, "calendar.days_off", "YYYY-MM-DD"),
        (
            {"calendar": {"working_days": [datetime(2027, 5, 8, 9, 0)]}},
            "calendar.working_days",
            "YYYY-MM-DD",
        ),
        (
            {"calendar": {"days_off": ["2027-05-08"], "working_days": ["2027-05-08"]}},
            "calendar.working_days",
            "also in calendar.days_off",
        ),
    ],
)
def test_rules_tables_refused(table: dict[str, object], key: str, message: str) -> None:
    with pytest.raises(NoticeRulesError, match=message) as caught:
        NoticeLaw.from_rules(table, "riga.toml")
    assert caught.value.key == key
    assert str(caught.value).startswith("riga.toml: ")
    assert isinstance(caught.value, ValueError)
