"""Benchmarks of the hub; each script prints its figures."""
