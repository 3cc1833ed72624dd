"""The synthetic municipality as the outside world writes it: the forms parents submit to the
VPS e-service, and the entries the VPS event feed serves.

The hub's messages are made from these by the VPS adapter's own mapping
(``adapters.vps.message_for``), never here: a simulator does not know the hub's side.
"""

from __future__ import annotations

from typing import Any

from simulators.municipality import Child, Institution


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
            "commission_grounds": list(child.commission_grounds),
        },
    }


def institution_data(inst: Institution) -> dict[str, Any]:
    """The ``data`` of the feed entry ``institution.registered`` for ``inst``."""
    return {
        "institution_id": inst.institution_id,
        "name": inst.name,
        "address_code": inst.address_code,
        "groups": [
            {
                "code": g.code,
                "language": g.language,
                "min_age_months": g.min_age_months,
                "birth_year": g.birth_year,
                "capacity": g.capacity,
            }
            for g in inst.groups
        ],
    }


def application_data(child: Child) -> dict[str, Any]:
    """The ``data`` of the feed entry ``application.submitted`` for the child's application
    (its form, as VPS records it), with the ids and registration time the synthetic
    municipality gave it: VPS child id = ``child.ref`` without its ``CH-``."""
    return {
        "application_id": child.application_id,
        "child_id": child.ref.removeprefix("CH-"),
        "registered_at": child.registered_at.isoformat(),
        **application_form(child),
    }


__all__ = ["application_data", "application_form", "institution_data"]
