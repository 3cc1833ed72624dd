"""Simulator of a DVS (document management system, like LIETVARIS); see :mod:`.app`."""

from simulators.dvs.app import BROKEN, REJECT, NumberFormat, create_app

__all__ = ["BROKEN", "REJECT", "NumberFormat", "create_app"]
