"""Simulator of the GIS / address register (VZD VARIS): addresses, coordinates, distances."""

from simulators.gis.app import DELETED_CODE, FAILING_CODE, REFERENCE, create_app

__all__ = ["DELETED_CODE", "FAILING_CODE", "REFERENCE", "create_app"]
