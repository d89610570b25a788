"""Every Redis key of the system: the one module that spells a key name or prefix.

As arq keeps its key names in ``arq/constants.py``, every key the libraries and the
five services read or write is built here. The services keep their domain logic
(parsing a counter key, validating names, escaping a SCAN pattern, taking a node id out
of a key) but take each name, prefix and template from :class:`Keys`, so ``grep`` over
this file finds them all. docs/architecture.md ("Redis keys") has the table of every key:
its type, owner and expiry or trimming (``tests/test_docs.py`` checks that each builder
below has a row there).

Every key is ``STREAM_PREFIX`` (:attr:`Keys.prefix`, empty in production) followed by a
name, built by one of two private methods, so that Redis Cluster hash tags can be added
in one place:

* :meth:`Keys._own`: a name this system chooses. Its builder says which part of the name
  groups the key with others (``slot``): a stream's dead letters and retry sets name the
  stream, so they can be put in the stream's hash slot; traffic_sync's own keys name
  their namespace. Hash tags would wrap ``slot`` in ``{}`` there and nowhere else.
* :meth:`Keys._shared`: a name written by systems outside the services too (the usage
  counters and their index, the proxy nodes' traffic hashes and the dirty-node index,
  written by ``track_usage`` and ``record_traffic`` or by hand): a contract with those
  writers, which no change here alone may rename, hash tags included.
"""

from __future__ import annotations

from dataclasses import dataclass

# -- streams (tributary.streams, tributary.outbox): a stream's key is its catalog name
#: after a stream's name: its dead-letter stream
DLQ_SUFFIX = ".dlq"
#: between a stream's name and a consumer group's: the group's retry set
RETRY_INFIX = ":retry:"

# -- leader leases (tributary.leases): ``lease:<service>:<job>`` for periodic jobs
LEASE_NAMESPACE = "lease"

# -- aggregation: usage counters the merchants' API writes, and the per-date index
USAGE_COUNTER_NAMESPACE = "usage"
#: does not match ``usage:*``, so a SCAN for counters never finds an index
USAGE_INDEX_NAMESPACE = "usage-index"

# -- traffic_sync: node hashes the proxy nodes write, and traffic_sync's own keys
NODE_TRAFFIC_HEAD = "node:"
NODE_TRAFFIC_TAIL = ":traffic"
TRAFFIC_SYNC_NAMESPACE = "traffic_sync"
TRAFFIC_DIRTY = f"{TRAFFIC_SYNC_NAMESPACE}:dirty"

# -- gmail_fetch: per-user quota buckets
GMAIL_QUOTA_NAMESPACE = "gmail_fetch:quota"

# -- snapshot: what the scheduler's last tick did
SNAPSHOT_SCHEDULER = "snapshot:scheduler"


@dataclass(frozen=True, slots=True)
class Keys:
    """Every Redis key name, under a configurable prefix (``STREAM_PREFIX``).

    A ``Keys`` whose prefix is glob-escaped builds the SCAN MATCH patterns of the keys
    (the services escape it: see ``aggregation.keys`` and ``traffic_sync.counters``).
    """

    prefix: str = ""

    def _own(self, slot: str, rest: str = "") -> str:
        """A key this system names; ``slot`` is the part that picks its hash slot."""
        return f"{self.prefix}{slot}{rest}"

    def _shared(self, name: str) -> str:
        """A key whose name other writers share: never changed here alone."""
        return f"{self.prefix}{name}"

    def key(self, name: str) -> str:
        """A key named by code outside the services (tools, benchmarks), under the prefix."""
        return self._shared(name)

    # -- streams ----------------------------------------------------------------------

    def stream(self, stream: str) -> str:
        return self._own(stream)

    def dlq(self, stream: str) -> str:
        """The stream of ``stream``'s dead letters."""
        return self._own(stream, DLQ_SUFFIX)

    def retries(self, stream: str, group: str) -> str:
        """Sorted set of entry ids waiting for redelivery, scored by due time (ms)."""
        return self._own(stream, f"{RETRY_INFIX}{group}")

    def logical(self, key: str) -> str:
        """The stream name of a key built by :meth:`stream`."""
        return key[len(self.prefix) :] if self.prefix and key.startswith(self.prefix) else key

    # -- leases -----------------------------------------------------------------------

    def lease(self, name: str) -> str:
        """A leader lease (``Resources.lease`` names a job's ``<service>:<job>``)."""
        return self._own(f"{LEASE_NAMESPACE}:{name}")

    # -- aggregation ------------------------------------------------------------------

    @property
    def usage_counter_prefix(self) -> str:
        """What every usage counter's key starts with."""
        return self._shared(f"{USAGE_COUNTER_NAMESPACE}:")

    def usage_counter(self, merchant_id: str, date: str, metric: str) -> str:
        """A merchant's counter of one metric on one ``YYYY-MM-DD`` date (UTC)."""
        return f"{self.usage_counter_prefix}{merchant_id}:{date}:{metric}"

    def usage_index(self, date: str) -> str:
        """Set of the counter keys of a date that ``track_usage`` incremented."""
        return self._shared(f"{USAGE_INDEX_NAMESPACE}:{date}")

    # -- traffic_sync -----------------------------------------------------------------

    @property
    def node_traffic_affixes(self) -> tuple[str, str]:
        """What comes before and after a node's id in its key (the move script builds
        node keys from them)."""
        return self._shared(NODE_TRAFFIC_HEAD), NODE_TRAFFIC_TAIL

    def node_traffic(self, node_id: int | str) -> str:
        """A node's hash of ``upload`` and ``download`` bytes since its last flush."""
        head, tail = self.node_traffic_affixes
        return f"{head}{node_id}{tail}"

    @property
    def traffic_dirty(self) -> str:
        """Set of node ids written since their last flush (``record_traffic`` adds them)."""
        return self._shared(TRAFFIC_DIRTY)

    def traffic_batch(self, batch_id: str) -> str:
        """The node data one flush batch moved out of the writers' way."""
        return self._own(TRAFFIC_SYNC_NAMESPACE, f":batch:{batch_id}")

    @property
    def traffic_batches(self) -> str:
        """Set of batch ids moved but not yet known to be applied."""
        return self._own(TRAFFIC_SYNC_NAMESPACE, ":batches")

    @property
    def traffic_quarantine_prefix(self) -> str:
        """What the keys of node keys set aside (of the wrong Redis type) start with."""
        return self._own(TRAFFIC_SYNC_NAMESPACE, ":quarantine:")

    def traffic_quarantine(self, node_id: str) -> str:
        """Where the move script renames a node's key of the wrong type."""
        return f"{self.traffic_quarantine_prefix}{node_id}"

    @property
    def traffic_status(self) -> str:
        """Hash describing the last flush cycle (for ``status``)."""
        return self._own(TRAFFIC_SYNC_NAMESPACE, ":status")

    # -- gmail_fetch ------------------------------------------------------------------

    def gmail_quota(self, user_id: str) -> str:
        """A user's Gmail quota token bucket, shared by every replica and job."""
        return self._own(f"{GMAIL_QUOTA_NAMESPACE}:{user_id}")

    # -- snapshot ---------------------------------------------------------------------

    @property
    def snapshot_scheduler(self) -> str:
        """Hash describing the scheduler's last tick (in ``GET /summary``)."""
        return self._own(SNAPSHOT_SCHEDULER)
