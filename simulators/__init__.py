"""Stand-alone fakes of the external systems, and the synthetic municipality they share."""
