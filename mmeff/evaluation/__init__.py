"""Metrics registered in mmeff.registry.METRICS (the classification branch adds them)."""
