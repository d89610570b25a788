"""What tests/test_startup.py checks and bench/startup.py times: the processes that start often."""

from __future__ import annotations

#: the five services, each ``python -m <name>``
SERVICES = ["snapshot", "gmail_fetch", "traffic_sync", "alert", "aggregation"]

#: the imports of ../shared/peers/workers/tributary_app.py's worker as it makes them
#: (``Keys`` from its old path included), and its telemetry set-up
PEERS_WORKER = """
import redis.asyncio
from opentelemetry.sdk.trace.export import SpanExporter
from tributary.events import Registry, make_event
from tributary.logs import configure_logging
from tributary.metrics import Metrics
from tributary.runtime import tune_gc
from tributary.streams.names import Keys
from tributary.streams.producer import Producer
from tributary.streams.runner import RunnerOptions, StreamRunner
from tributary.telemetry import setup_telemetry
setup_telemetry("bench", None, set_global=True)
"""
