"""The VIIS adapter: the state education register's client and the service built on it."""

from adapters.viis.client import (
    Attendance,
    Enrolled,
    EnrolmentRefusal,
    ViisClient,
    client_from_url,
)
from adapters.viis.service import service

__all__ = [
    "Attendance",
    "Enrolled",
    "EnrolmentRefusal",
    "ViisClient",
    "client_from_url",
    "service",
]
