"""The synthetic municipality's data as the hub's messages and as the VPS e-service's forms."""

from __future__ import annotations

from typing import Any

from schemas.applications import ApplicationSubmitted, Guardian
from schemas.institutions import InstitutionRegistered, SeatPool
from schemas.topics import VPS
from simulators.municipality import Child, Institution


def institution_message(municipality: str, inst: Institution) -> InstitutionRegistered:
    return InstitutionRegistered.new(
        producer=VPS,
        municipality=municipality,
        institution_id=inst.institution_id,
        name=inst.name,
        address_code=inst.address_code,
        pools=tuple(
            SeatPool(
                group_code=g.code,
                language=g.language,
                min_age_months=g.min_age_months,
                birth_year_from=g.birth_year,
                birth_year_to=g.birth_year,
                capacity=g.capacity,
            )
            for g in inst.groups
        ),
    )


def application_message(municipality: str, child: Child) -> ApplicationSubmitted:
    return ApplicationSubmitted.new(
        producer=VPS,
        municipality=municipality,
        application_id=child.application_id,
        child_ref=child.ref,
        child_personal_code=child.personal_code,
        child_birth_date=child.birth_date,
        guardians=tuple(
            Guardian(personal_code=g.personal_code, email=g.email, phone=g.phone)
            for g in child.guardians
        ),
        residence_address_code=child.address_code,
        institutions=child.choices,
        desired_start_date=child.desired_start_date,
        language=child.language,
        accepts_any_institution=child.accepts_any_institution,
        registered_at=child.registered_at,
        claims={"large_family": child.large_family},
    )


def application_form(child: Child) -> dict[str, Any]:
    """The child's application as the parents submit it to the VPS e-service (JSON body)."""
    return {
        "child_personal_code": child.personal_code,
        "child_birth_date": child.birth_date.isoformat(),
        "guardians": [
            {"personal_code": g.personal_code, "email": g.email, "phone": g.phone}
            for g in child.guardians
        ],
        "residence_address_code": child.address_code,
        "institutions": list(child.choices),
        "desired_start_date": child.desired_start_date.isoformat(),
        "language": child.language,
        "accepts_any_institution": child.accepts_any_institution,
        "claims": {
            "large_family": child.large_family,
            "sibling_personal_codes": child.sibling_codes,
        },
    }


__all__ = ["application_form", "application_message", "institution_message"]
