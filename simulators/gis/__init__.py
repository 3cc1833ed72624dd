"""Simulator of the GIS / address register (VZD VARIS): addresses, coordinates, distances."""
