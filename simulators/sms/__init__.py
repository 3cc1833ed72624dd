"""Simulator of an SMS gateway with delivery callbacks; see :mod:`.app`."""
