"""Simulator of a DVS (document management system, like LIETVARIS); see :mod:`.app`."""
