"""Pre-school admission: the allocation engine and, later, the service around it."""
