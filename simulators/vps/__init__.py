"""VPS simulator: e-service, queue register and population register extract."""
