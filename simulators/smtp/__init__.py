"""Simulator of the recipients' mail server (SMTP, with fault injection); see :mod:`.server`."""
