"""Command-line options the benchmarks share."""

from __future__ import annotations

import argparse

from hub.settings import Settings


def setting_option(parser: argparse.ArgumentParser, name: str, help: str) -> None:
    """Add ``--<name>`` (hyphens for underscores) for the hub's setting ``name``, of its type
    and with its default, for a benchmark to hand on to the services it starts."""
    default = Settings.model_fields[name].default
    parser.add_argument(
        f"--{name.replace('_', '-')}", type=type(default), default=default, help=help
    )
