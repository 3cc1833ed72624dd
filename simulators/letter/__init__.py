"""Simulator of a print-and-post service for registered letters; see :mod:`.app`."""
