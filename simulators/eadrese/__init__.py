"""Simulator of the official electronic address (e-adrese, DIV); see :mod:`.app`."""
