"""Retention: every store bounded by age and/or length, in one library pass.

- :mod:`~tributary.retention.policy`: a stream's policy and the ``STREAM_RETENTION``
  setting (the defaults are in the catalog);
- :mod:`~tributary.retention.streams`: trimming a stream, never past an entry a group has
  not acknowledged (unless the operator allows it for a lagging group), and its figures;
- :mod:`~tributary.retention.tables`: batched deletes of rows past their age (inbox,
  outbox, and the tables a service registers), and their figures;
- :mod:`~tributary.retention.sweep`: the pass the lease holder runs, paced, counted in
  the metrics; ``retention`` (the CLI verb) prints what it sees or would remove.
"""
