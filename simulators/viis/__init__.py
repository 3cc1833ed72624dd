"""Simulator of VIIS, the state education register."""
