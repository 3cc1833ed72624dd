"""Message contracts of the municipal integration hub.

Pydantic models of every message on the bus, the domain value types they
use, and the topic catalogue (:mod:`schemas.topics`). This package imports
nothing but pydantic, so integrators can depend on it alone.
"""

from schemas.base import Command, Event, FrozenModel, Message
from schemas.values import PersonalCode, PersonalCodeChecksumWarning

__all__ = [
    "Command",
    "Event",
    "FrozenModel",
    "Message",
    "PersonalCode",
    "PersonalCodeChecksumWarning",
]
