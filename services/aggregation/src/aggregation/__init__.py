"""Moves daily per-merchant usage counters from Redis into PostgreSQL."""
