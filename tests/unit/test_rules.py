"""Municipality rules files: the shipped ones, the format, and errors that name the line."""

from datetime import date
from pathlib import Path

import pytest

import hub.allocation.rules
from hub.allocation.criteria import CRITERIA, Composite, unknown_criteria
from hub.allocation.model import Rules
from hub.allocation.rules import (
    MunicipalityRules,
    RulesError,
    criteria_markdown,
    load_rules,
    parse_rules,
    shipped_rules,
)
from hub.errors import HubError
from hub.notice import DEFAULT_CHANNEL_RULES, ChannelRule, NoticeLaw, WorkingCalendar

SHIPPED_DIR = Path(hub.allocation.rules.__file__).parent / "rules"
DOCS = Path(__file__).resolve().parents[2] / "docs" / "rules.md"

# Line numbers matter: the error cases below edit single lines of this file.
VALID = """\
municipality = "ogre"
name = "Ogres novads"
max_institutions = 3
offer_deadline_days = 15
on_expiry = "annul"
lottery_seed = 7
priorities = [
    "commission",
    "sibling",
    "child_resident",
]

[mandatory_age]
age = 6
rule = "birthday"
"""


def test_every_shipped_file_loads_with_known_criteria() -> None:
    assert shipped_rules() == ["daugavpils", "liepaja", "riga"]
    for name in shipped_rules():
        rules = load_rules(name)
        assert rules.municipality == name
        assert rules.criteria
        assert unknown_criteria(rules) == []
        combined = {c.name for c in rules.composites}
        assert set(rules.criteria) <= set(CRITERIA) | combined
        assert combined <= set(rules.criteria)


def test_riga() -> None:
    riga = load_rules("riga")
    assert riga.criteria == (
        "commission",
        "mandatory_age",
        "sibling",
        "child_and_parent_resident",
        "child_resident",
    )
    assert riga.composites == (
        Composite("child_and_parent_resident", "all_of", ("child_resident", "parent_resident")),
    )
    # A parent declared in Riga counts only together with the child (docs/legal-basis.md).
    assert "parent_resident" not in riga.criteria
    assert (riga.max_institutions, riga.offer_deadline_days, riga.on_expiry) == (3, 15, "annul")
    assert (riga.mandatory_age, riga.mandatory_age_rule) == (5, "calendar_year")


def test_liepaja_and_daugavpils() -> None:
    liepaja, daugavpils = load_rules("liepaja"), load_rules("daugavpils")
    assert liepaja.criteria == (
        "without_parental_care",
        "official_entitled_by_law",
        "staff_child",
        "sibling",
        "mandatory_age",
        "child_resident",
    )
    assert (liepaja.mandatory_age, liepaja.mandatory_age_rule) == (5, "calendar_year")
    assert (liepaja.max_institutions, liepaja.offer_deadline_days) == (3, 15)
    assert daugavpils.criteria == ("commission", "mandatory_age", "sibling", "child_resident")
    assert (daugavpils.max_institutions, daugavpils.offer_deadline_days) == (2, 15)
    seeds = {load_rules(name).lottery_seed for name in shipped_rules()}
    assert len(seeds) == len(shipped_rules())


def test_a_name_and_the_path_of_its_shipped_file_give_the_same_rules() -> None:
    assert load_rules("riga") == load_rules(SHIPPED_DIR / "riga.toml")
    assert load_rules("riga") == load_rules(str(SHIPPED_DIR / "riga.toml"))


def test_a_full_file() -> None:
    assert parse_rules(VALID) == MunicipalityRules(
        municipality="ogre",
        name="Ogres novads",
        criteria=("commission", "sibling", "child_resident"),
        max_institutions=3,
        offer_deadline_days=15,
        on_expiry="annul",
        lottery_seed=7,
        mandatory_age=6,
        mandatory_age_rule="birthday",
    )


def test_optional_keys_take_their_defaults() -> None:
    rules = parse_rules(
        'municipality = "ogre"\nmax_institutions = 2\noffer_deadline_days = 10\n'
        'lottery_seed = 0\npriorities = ["sibling"]\n'
    )
    assert (rules.name, rules.on_expiry) == ("", "decline")
    assert (rules.mandatory_age, rules.mandatory_age_rule) == (5, "calendar_year")


@pytest.mark.parametrize(
    ("line", "replacement", "expected_line", "message"),
    [
        ("offer_deadline_days = 15", "offer_deadline_days = ", 4, "invalid TOML: Invalid value"),
        ('    "sibling",', '    "siblings",', 9, "unknown criterion 'siblings' in priorities"),
        (
            '    "child_resident",',
            '    "commission",',
            10,
            "duplicated criterion 'commission' in priorities on line 10; first listed on line 8",
        ),
        ('name = "Ogres novads"', 'title = "Ogres novads"', 2, "unknown key title"),
        ("age = 6", "ages = 6", 14, "unknown key mandatory_age.ages; known keys: age, rule"),
        ("lottery_seed = 7", "# no seed yet", 1, "missing required key lottery_seed"),
        ("max_institutions = 3", "max_institutions = 11", 3, "must be from 1 to 10, got 11"),
        ("max_institutions = 3", "max_institutions = 0", 3, "must be from 1 to 10, got 0"),
        ("max_institutions = 3", "max_institutions = true", 3, "must be an integer, got True"),
        ("lottery_seed = 7", 'lottery_seed = "7"', 6, "must be an integer, got '7'"),
        ("lottery_seed = 7", "lottery_seed = -1", 6, "must be at least 0, got -1"),
        ('municipality = "ogre"', 'municipality = "Ogre"', 1, "lower-case code"),
        ('on_expiry = "annul"', 'on_expiry = "cancel"', 5, "one of decline, annul"),
        ('rule = "birthday"', 'rule = "birthdays"', 15, "one of calendar_year, birthday"),
        ("age = 6", "age = 8", 14, "mandatory_age.age must be from 3 to 7, got 8"),
    ],
)
def test_errors_name_the_line_to_fix(
    line: str, replacement: str, expected_line: int, message: str
) -> None:
    assert VALID.count(line + "\n") == 1
    with pytest.raises(RulesError) as error:
        parse_rules(VALID.replace(line + "\n", replacement + "\n"), "ogre.toml")
    assert str(error.value).startswith(f"ogre.toml:{expected_line}: ")
    assert message in str(error.value)


def test_unknown_criterion_lists_the_known_ones_sorted() -> None:
    with pytest.raises(RulesError, match="known criteria: ") as error:
        parse_rules(VALID.replace('"sibling"', '"brother"'), "ogre.toml")
    assert str(error.value).endswith(", ".join(sorted(CRITERIA)))


def test_duplicate_on_one_line_and_empty_priorities() -> None:
    one_line = VALID.replace('"sibling",\n', '"sibling", "sibling",\n')
    with pytest.raises(RulesError, match=r"^ogre\.toml:9: .*first listed on line 9$"):
        parse_rules(one_line, "ogre.toml")
    empty = VALID.replace('    "commission",\n    "sibling",\n    "child_resident",\n', "")
    with pytest.raises(RulesError, match=r"^ogre\.toml:7: priorities must list at least one"):
        parse_rules(empty, "ogre.toml")


def test_toml_error_at_the_end_of_the_document_names_the_last_line() -> None:
    with pytest.raises(RulesError, match=r"^ogre\.toml:16: invalid TOML: "):
        parse_rules(VALID + "extra = {\n", "ogre.toml")


def test_a_file_with_an_error_is_named_by_its_path(tmp_path: Path) -> None:
    path = tmp_path / "ogre.toml"
    path.write_text(VALID.replace("lottery_seed = 7", "lottery_seed = 7.5"), encoding="utf-8")
    with pytest.raises(RulesError) as error:
        load_rules(path)
    assert str(error.value).startswith(f"{path}:6: lottery_seed must be an integer")
    assert isinstance(error.value, HubError)


def test_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(RulesError, match="cannot read the rules file"):
        load_rules(tmp_path / "nowhere.toml")


def test_an_unknown_name_lists_the_shipped_ones() -> None:
    with pytest.raises(RulesError, match="no shipped rules for 'ogre'; shipped: ") as error:
        load_rules("ogre")
    assert ", ".join(shipped_rules()) in str(error.value)


def test_docs_list_every_criterion() -> None:
    assert criteria_markdown() in DOCS.read_text(encoding="utf-8"), (
        "the criteria table in docs/rules.md is stale: replace it with"
        " hub.allocation.rules.criteria_markdown()"
    )


# The notification tables: VALID plus these lines (lines 16 to 23).
NOTICE = """\

[notification]
email = { rule = "working_days_after_sending", days = 3 }
sms = { rule = "reminder_only" }

[calendar]
days_off = ["2027-05-03"]
working_days = [2027-05-08]
"""


def test_riga_states_the_law_s_defaults() -> None:
    riga = load_rules("riga")
    assert isinstance(riga, Rules)
    assert riga.notice == NoticeLaw()


def test_a_file_without_notification_tables_keeps_the_law() -> None:
    assert parse_rules(VALID).notice == NoticeLaw()


def test_notification_and_calendar_tables() -> None:
    notice = parse_rules(VALID + NOTICE, "ogre.toml").notice
    assert notice.channels["email"] == ChannelRule(
        "working_days_after_sending", 3, "ogre.toml, [notification] email"
    )
    assert notice.channels["sms"] is DEFAULT_CHANNEL_RULES["sms"]
    assert notice.channels["letter"] is DEFAULT_CHANNEL_RULES["letter"]
    assert notice.calendar == WorkingCalendar(
        days_off=frozenset({date(2027, 5, 3)}), working_days=frozenset({date(2027, 5, 8)})
    )
    # Monday 3 May 2027 is off by the file: a term ending that day moves to Tuesday 4 May,
    # itself a holiday, so to Wednesday 5 May.
    assert notice.answer_by(date(2027, 4, 18), 15) == date(2027, 5, 5)


@pytest.mark.parametrize(
    ("line", "replacement", "expected_line", "message"),
    [
        ("[notification]", "[notices]", 17, "unknown key notices"),
        (
            'sms = { rule = "reminder_only" }',
            'fax = { rule = "on_confirmation" }',
            19,
            "unknown channel notification.fax; known channels: e_adrese, email",
        ),
        (
            'email = { rule = "working_days_after_sending", days = 3 }',
            'email = { rule = "working_days_after_sending", days = 31 }',
            18,
            "notification.email.days must be from 0 to 30, got 31",
        ),
        (
            'email = { rule = "working_days_after_sending", days = 3 }',
            'email = { rule = "working_days_after_sending", days = -1 }',
            18,
            "notification.email.days must be from 0 to 30, got -1",
        ),
        (
            'email = { rule = "working_days_after_sending", days = 3 }',
            'email = { rule = "second_working_day" }',
            18,
            "notification.email.rule must be one of working_days_after_sending",
        ),
        (
            'email = { rule = "working_days_after_sending", days = 3 }',
            'email = { rule = "working_days_after_sending", days = 2, via = "smtp" }',
            18,
            "unknown key notification.email.via; known keys: days, rule",
        ),
        ('days_off = ["2027-05-03"]', 'days_off = ["2027-02-29"]', 22, "not a date of the"),
        ('days_off = ["2027-05-03"]', 'days_off = ["03.05.2027"]', 22, "YYYY-MM-DD"),
        ('days_off = ["2027-05-03"]', "days_off = [2027-05-03T09:00:00]", 22, "YYYY-MM-DD"),
        ('days_off = ["2027-05-03"]', 'holidays = ["2027-05-03"]', 22, "unknown key calendar"),
        (
            'days_off = ["2027-05-03"]',
            'days_off = ["2027-05-08"]',
            23,
            "calendar.working_days lists 2027-05-08, also in calendar.days_off",
        ),
    ],
)
def test_notification_errors_name_the_line_to_fix(
    line: str, replacement: str, expected_line: int, message: str
) -> None:
    text = VALID + NOTICE
    assert text.count(line + "\n") == 1
    with pytest.raises(RulesError) as error:
        parse_rules(text.replace(line + "\n", replacement + "\n"), "ogre.toml")
    assert str(error.value).startswith(f"ogre.toml:{expected_line}: ")
    assert message in str(error.value)


def test_a_calendar_that_is_no_table() -> None:
    text = VALID.replace("lottery_seed = 7\n", "lottery_seed = 7\ncalendar = 1\n")
    with pytest.raises(RulesError, match=r"^ogre.toml:7: calendar must be a table, got 1$"):
        parse_rules(text, "ogre.toml")
