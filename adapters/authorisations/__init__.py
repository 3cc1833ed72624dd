"""The authorisations adapter: powers of attorney checked in the register of authorisations
(orphans' courts and notaries)."""

from adapters.authorisations.client import AuthorisationsClient, Verification, client_from_url
from adapters.authorisations.service import AuthorisationChecks, service

__all__ = [
    "AuthorisationChecks",
    "AuthorisationsClient",
    "Verification",
    "client_from_url",
    "service",
]
