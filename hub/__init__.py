"""Runtime of the municipal integration hub: settings, broker wiring, CLI."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("municipal-hub")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"
