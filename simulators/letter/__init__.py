"""Simulator of a print-and-post service for registered letters; see :mod:`.app`."""

from simulators.letter.app import Letter, create_app, tracking_number

__all__ = ["Letter", "create_app", "tracking_number"]
