"""Outline VPN usage snapshots, correct deltas, top consumers, anomalies, time to quota."""
