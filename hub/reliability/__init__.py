"""Reliability core: inbox, outbox, retries, parking, dead letters, metrics, graceful shutdown."""
