"""Flushes per-node traffic counters from Redis hashes into MySQL exactly once."""
