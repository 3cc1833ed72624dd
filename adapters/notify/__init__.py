"""Notification adapter: e-adrese first, then e-mail and SMS, a registered letter last."""
