"""The synthetic municipality generator: valid codes, sound addresses, families, determinism."""

from __future__ import annotations

import re
import warnings
from collections import defaultdict
from collections.abc import Iterator
from datetime import date

import pytest
from pyproj import Transformer

from schemas.values import PersonalCode, PersonalCodeChecksumWarning
from simulators.gis.app import DELETED_CODE, REFERENCE
from simulators.municipality import BOXES, NEW_FORMAT_SINCE, SyntheticMunicipality

YEAR = 2026
TO_WGS84 = Transformer.from_crs(3059, 4326, always_xy=True)
TO_LKS92 = Transformer.from_crs(4326, 3059, always_xy=True)


@pytest.fixture(scope="module")
def town() -> SyntheticMunicipality:
    return SyntheticMunicipality("riga", seed=3, children=2_000, admission_year=YEAR)


@pytest.fixture(scope="module")
def city() -> SyntheticMunicipality:
    """The largest scale the generator supports (takes a few seconds)."""
    return SyntheticMunicipality("riga", seed=1, children=30_000, admission_year=YEAR)


def people(town: SyntheticMunicipality) -> Iterator[tuple[str, date | None]]:
    """Every personal code of the town, with the birth date it must carry (None: any)."""
    for child in town.children:
        yield child.personal_code, child.birth_date
        for guardian in child.guardians:
            yield guardian.personal_code, None
    for enrolment in town.enrolments.values():
        yield enrolment.personal_code, enrolment.birth_date
    for member in town.staff:
        yield member.personal_code, None


def parsed(raw: str) -> PersonalCode:
    with warnings.catch_warnings():
        warnings.simplefilter("error", PersonalCodeChecksumWarning)  # new format: digit checks
        return PersonalCode(raw)


# --------------------------------------------------------------------------- personal codes


@pytest.mark.parametrize("year", [YEAR, 2021])
def test_personal_codes_are_valid_and_match_birth_dates(year: int) -> None:
    town = SyntheticMunicipality("liepaja", seed=2, children=1_500, admission_year=year)
    formats: set[bool] = set()
    for raw, born in people(town):
        assert re.fullmatch(r"\d{6}-\d{5}", raw)
        code = parsed(raw)
        formats.add(code.is_new_format)
        if born is not None:
            assert code.is_new_format == (born >= NEW_FORMAT_SINCE)
            assert code.birth_date in (None, born)
    assert formats == {True, False}
    if year == 2021:  # children born 2015–2020: both formats among the children themselves
        assert {parsed(c.personal_code).is_new_format for c in town.children} == {True, False}


def test_guardians_and_staff_have_old_format_codes(town: SyntheticMunicipality) -> None:
    guardians = {g.personal_code for c in town.children for g in c.guardians}
    for raw in guardians:
        code = parsed(raw)
        assert not code.is_new_format and code.birth_date is not None
        assert code.birth_date.year < YEAR - 18
    assert town.staff and {m.personal_code for m in town.staff} <= guardians
    institutions = {i.institution_id for i in town.institutions}
    assert {m.institution_id for m in town.staff} <= institutions
    for enrolment in town.enrolments.values():
        groups = next(i for i in town.institutions if i.institution_id == enrolment.institution_id)
        assert enrolment.group_code in {g.code for g in groups.groups}


def test_personal_codes_of_different_people_differ(city: SyntheticMunicipality) -> None:
    children = [c.personal_code for c in city.children]
    assert len(set(children)) == len(children)
    families: dict[str, set[int]] = defaultdict(set)
    for child in city.children:
        for guardian in child.guardians:
            families[guardian.personal_code].add(child.family)
    assert all(len(f) == 1 for f in families.values())


# --------------------------------------------------------------------------- addresses


def test_every_address_is_known_and_has_a_nine_digit_code(town: SyntheticMunicipality) -> None:
    used = {c.address_code for c in town.children} | {i.address_code for i in town.institutions}
    assert used == set(town.addresses)
    for code, address in town.addresses.items():
        assert code == address.code and re.fullmatch(r"\d{9}", code)
        assert re.fullmatch(r"LV-\d{4}", address.postcode)
        assert address.full.startswith(f"{address.street} {address.house}, ")
        assert town.address(code, here=address.in_municipality) == address


def test_address_codes_carry_a_type_code_from_101_to_199(town: SyntheticMunicipality) -> None:
    # DOMAIN.md: the first three digits are the type code, 101–199; 108 is a building.
    for code in [*town.addresses, REFERENCE.code, DELETED_CODE]:
        assert re.fullmatch(r"\d{9}", code) and 101 <= int(code[:3]) <= 199, code
    assert REFERENCE.code == "108000001"
    assert REFERENCE.code not in town.addresses  # the simulator's fixed address stays apart


@pytest.mark.parametrize("code", sorted(BOXES))
def test_coordinates_inside_the_box_exactly_when_in_the_municipality(code: str) -> None:
    town = SyntheticMunicipality(code, seed=4, children=400, admission_year=YEAR)
    n_from, n_to, e_from, e_to = town.box
    assert town.box == BOXES[code]
    kinds = set()
    for address in town.addresses.values():
        inside = n_from <= address.northing <= n_to and e_from <= address.easting <= e_to
        assert inside == address.in_municipality
        assert (address.territory_code == town.territory) == address.in_municipality
        kinds.add(address.in_municipality)
    assert kinds == {True, False}
    for child in town.children:
        assert town.addresses[child.address_code].in_municipality == child.declared_here
    assert all(town.addresses[i.address_code].in_municipality for i in town.institutions)


@pytest.mark.parametrize("code", sorted(BOXES))
def test_lks92_wgs84_round_trip_within_a_centimetre(code: str) -> None:
    town = SyntheticMunicipality(code, seed=5, children=1_000, admission_year=YEAR)
    addresses = list(town.addresses.values())
    northing = [a.northing for a in addresses]
    easting = [a.easting for a in addresses]
    lon, lat = TO_WGS84.transform(easting, northing)
    assert all(55.5 <= y <= 58.2 and 20.8 <= x <= 28.4 for x, y in zip(lon, lat, strict=True))
    back_e, back_n = TO_LKS92.transform(lon, lat)
    for n, e, n2, e2 in zip(northing, easting, back_n, back_e, strict=True):
        assert abs(n - n2) < 0.01 and abs(e - e2) < 0.01


# --------------------------------------------------------------------------- families


def test_siblings_share_guardians_address_and_residence(town: SyntheticMunicipality) -> None:
    families = defaultdict(list)
    for child in town.children:
        families[child.family].append(child)
    siblings = [f for f in families.values() if len(f) > 1]
    assert siblings, "some children should be siblings"
    for family in siblings:
        head = family[0]
        for child in family[1:]:
            assert child.guardians == head.guardians
            assert child.address_code == head.address_code
            assert child.declared_here == head.declared_here
            assert child.sibling_codes == head.sibling_codes
            assert child.personal_code != head.personal_code
    attending = [c for c in town.children if c.sibling_codes]
    assert attending
    for child in attending:
        assert all(code in town.enrolments for code in child.sibling_codes)


# --------------------------------------------------------------------------- determinism, scale


def test_same_seed_same_town_and_another_seed_another() -> None:
    def build(seed: int) -> SyntheticMunicipality:
        return SyntheticMunicipality("riga", seed=seed, children=300, admission_year=YEAR)

    first, again, other = build(8), build(8), build(9)
    assert first.children == again.children
    assert first.addresses == again.addresses
    assert first.institutions == again.institutions
    assert first.enrolments == again.enrolments and first.staff == again.staff
    assert first.children != other.children
    assert first.addresses != other.addresses


def test_smallest_scale() -> None:
    town = SyntheticMunicipality(children=50)
    assert len(town.children) == 50 and len(town.institutions) == 8
    assert len({c.application_id for c in town.children}) == 50
    assert all(town.addresses[c.address_code] for c in town.children)


def test_largest_scale(city: SyntheticMunicipality) -> None:
    assert len(city.children) == 30_000
    assert len({c.ref for c in city.children}) == 30_000
    assert len({c.application_id for c in city.children}) == 30_000
    assert {c.address_code for c in city.children} <= set(city.addresses)
    assert all(
        c.choices and set(c.choices) <= {i.institution_id for i in city.institutions}
        for c in city.children
    )
