"""Personal code rules from DOMAIN.md: formats, dates, check digit, masking."""

import json
import logging
import warnings
from datetime import date

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from schemas.base import FrozenModel
from schemas.values import PersonalCode, PersonalCodeChecksumWarning, personal_code_check_digit
from tests.strategies import personal_code_texts


@pytest.mark.parametrize(
    ("raw", "born"),
    [
        ("161175-19997", date(1975, 11, 16)),
        ("111111-11111", date(1911, 11, 11)),
        ("16117519997", date(1975, 11, 16)),
        (" 161175-19997 ", date(1975, 11, 16)),
    ],
)
def test_old_format_vectors_are_valid(raw: str, born: date) -> None:
    code = PersonalCode(raw)
    assert code.reveal() == raw.strip()[:6] + "-" + raw.strip().replace("-", "")[6:]
    assert code.birth_date == born
    assert not code.is_new_format


def test_new_format_vector_is_valid_without_warning() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        code = PersonalCode("328673-00679")
    assert code.is_new_format
    assert code.birth_date is None


def test_new_format_with_other_last_digit_is_accepted_with_a_warning() -> None:
    with pytest.warns(PersonalCodeChecksumWarning) as caught:
        code = PersonalCode("328673-00670")
    assert code.reveal() == "328673-00670"
    assert "00670" not in str(caught[0].message)


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        ("161175-19996", "check digit"),
        ("151175-19997", "check digit"),  # valid date, wrong checksum
        ("310275-19991", "does not exist"),  # 31 February
        ("161175-39995", "century"),  # century digit 3 is not used
        ("161175-1999", "11 digits"),
        ("16-1175-19997", "11 digits"),
        ("abcdef-ghijk", "11 digits"),
        ("", "11 digits"),
    ],
)
def test_invalid_codes_are_refused_with_a_reason(raw: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        PersonalCode(raw)


def test_day_in_the_31st_is_an_old_code_not_a_new_one() -> None:
    head = "310199" + "1123"  # 31 January 1999 starts with 3 but is an old-format code
    code = PersonalCode(f"{head[:6]}-{head[6:]}{personal_code_check_digit(head)}")
    assert code.birth_date == date(1999, 1, 31)


@given(personal_code_texts())
def test_generated_codes_validate(raw: str) -> None:
    assert PersonalCode(raw).reveal().replace("-", "") == raw.replace("-", "")


@given(personal_code_texts(born=None).filter(lambda r: r[0] != "3"), st.integers(0, 9))
def test_any_other_check_digit_is_refused_for_old_codes(raw: str, digit: int) -> None:
    digits = raw.replace("-", "")
    if int(digits[-1]) == digit:
        return
    with pytest.raises(ValueError, match="check digit"):
        PersonalCode(digits[:-1] + str(digit))


def test_code_is_masked_in_str_repr_format_and_logs(caplog: pytest.LogCaptureFixture) -> None:
    code = PersonalCode("161175-19997")
    for text in (
        str(code),
        repr(code),
        f"{code}",
        "%s" % code,  # noqa: UP031
        f"{code!r:>30}",
    ):
        assert "161175" not in text and "19997" not in text
    with caplog.at_level(logging.INFO):
        logging.getLogger("test").info("code %s", code)
    assert "19997" not in caplog.text


class _Holder(FrozenModel):
    code: PersonalCode


def test_models_mask_in_repr_but_write_the_real_value_to_json() -> None:
    holder = _Holder(code="161175-19997")
    assert "19997" not in repr(holder) and "19997" not in str(holder)
    assert json.loads(holder.model_dump_json()) == {"code": "161175-19997"}
    assert _Holder.model_validate_json(holder.model_dump_json()) == holder


def test_validation_errors_do_not_echo_the_code() -> None:
    with pytest.raises(ValidationError) as caught:
        _Holder(code="161175-19996")
    assert "19996" not in str(caught.value)
    assert "check digit" in str(caught.value)


def test_equal_codes_compare_and_hash_equal_whatever_the_hyphen() -> None:
    assert PersonalCode("16117519997") == PersonalCode("161175-19997")
    assert len({PersonalCode("16117519997"), PersonalCode("161175-19997")}) == 1
