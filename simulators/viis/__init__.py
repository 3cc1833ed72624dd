"""Simulator of VIIS, the state education register."""

from simulators.viis.app import BROKEN_INSTITUTION, create_app

__all__ = ["BROKEN_INSTITUTION", "create_app"]
