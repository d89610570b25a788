"""Fake third-party APIs and load generators (tests, demo, benchmarks)."""
