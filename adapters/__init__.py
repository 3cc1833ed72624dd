"""Adapters: the only code that talks to external systems, each over its own protocol."""
