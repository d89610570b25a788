"""Which rules a sample concerns, in O(matching rules): an in-memory index, kept in step
with the ``rules`` table.

Rules are bucketed by (source, metric key) and then by the subject an equality
matcher pins them to (``None``: any subject). A sample looks up each metric it
offers and takes the bucket of its subject plus the unpinned one; label
matchers then filter. 100,000 rules pinned to 20,000 devices cost a few dict
look-ups per sample, not a scan.

Every rule change bumps ``rules_meta.version`` in the same transaction (see
repository.bump_rules_version), serialised by that row's lock, so a replica
that knows version ``v`` reloads exactly the rules with ``revision > v``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Iterator

import sqlalchemy as sa
from sqlalchemy.orm import Session

from alert.models import rules, rules_meta
from alert.rules import Rule, rule_from_row
from alert.samples import Sample

log = logging.getLogger(__name__)

Bucket = dict[str | None, dict[int, Rule]]


class RuleIndex:
    def __init__(self) -> None:
        self._buckets: dict[tuple[str, str], Bucket] = {}
        self._by_id: dict[int, Rule] = {}
        self._inhibitors: dict[int, Rule] = {}

    def __len__(self) -> int:
        return len(self._by_id)

    def get(self, rule_id: int) -> Rule | None:
        return self._by_id.get(rule_id)

    def all(self) -> list[Rule]:
        return list(self._by_id.values())

    def inhibitors(self) -> list[Rule]:
        """Enabled rules that mute other alerts while they fire."""
        return list(self._inhibitors.values())

    def put(self, rule: Rule) -> None:
        self.remove(rule.id)
        self._by_id[rule.id] = rule
        bucket = self._buckets.setdefault((rule.source, rule.key), {})
        bucket.setdefault(rule.subject, {})[rule.id] = rule
        if rule.spec.inhibits is not None:
            self._inhibitors[rule.id] = rule

    def remove(self, rule_id: int) -> None:
        old = self._by_id.pop(rule_id, None)
        self._inhibitors.pop(rule_id, None)
        if old is None:
            return
        bucket = self._buckets.get((old.source, old.key))
        if bucket is None:
            return
        pinned = bucket.get(old.subject)
        if pinned is not None:
            pinned.pop(rule_id, None)
            if not pinned:
                del bucket[old.subject]
        if not bucket:
            del self._buckets[(old.source, old.key)]

    def matching(self, sample: Sample) -> Iterator[tuple[Rule, float]]:
        """(rule, value) for every rule the sample concerns."""
        buckets = self._buckets
        for key, value in sample.metrics.items():
            bucket = buckets.get((sample.source, key))
            if bucket is None:
                continue
            for pinned in (bucket.get(sample.subject), bucket.get(None)):
                if pinned is None:
                    continue
                for rule in pinned.values():
                    if not rule.spec.matchers or rule.selects(sample.labels):
                        yield rule, value


class RuleCache:
    """The index shared by the evaluation threads, refreshed from the database.

    Reloads change the index in place; a lock keeps them from running while a
    thread walks it (:meth:`matches`). Rules themselves are immutable.
    """

    def __init__(self) -> None:
        self.index = RuleIndex()
        self.version = -1
        self._lock = threading.Lock()

    def matches(self, samples: Iterable[Sample]) -> list[tuple[Rule, Sample, float]]:
        """(rule, sample, value) for every sample and rule it concerns."""
        with self._lock:
            return [(rule, s, value) for s in samples for rule, value in self.index.matching(s)]

    def refresh(self, session: Session) -> RuleIndex:
        """Bring the index up to date within ``session`` (one cheap query when current)."""
        version = session.execute(sa.select(rules_meta.c.version)).scalar_one_or_none() or 0
        if version == self.version:
            return self.index
        with self._lock:
            if version != self.version:
                self._load_changes(session, version)
        return self.index

    def _load_changes(self, session: Session, version: int) -> None:
        stmt = sa.select(
            rules.c.id, rules.c.revision, rules.c.spec, rules.c.enabled, rules.c.deleted_at
        ).where(rules.c.revision > max(self.version, 0), rules.c.revision <= version)
        changed = 0
        for row in session.execute(stmt):
            changed += 1
            if row.deleted_at is not None or not row.enabled:
                self.index.remove(row.id)
                continue
            try:
                self.index.put(rule_from_row(row.id, row.revision, row.spec))
            except ValueError:
                log.exception("rule %s is stored in a form that no longer validates", row.id)
                self.index.remove(row.id)
        log.info(
            "rules reloaded: %d changed, %d active (version %d)", changed, len(self.index), version
        )
        self.version = version
