"""What keeps the guard honest when its store is not: durable locks, restarts, outages.

The guard's state lives in its store (Redis shared by every instance, or the embedded memory
store). That state is of two kinds, with two different promises:

* **Locks** are decisions a person must review. They are written to the store *and* to a lock
  journal (:mod:`.journal`: append-only files on a volume every instance shares, fsynced per
  entry). Whenever the store may have lost them — at start-up, after Redis restarted (its
  ``run_id`` changed: noticed on the new connection, before any command runs on it), when the
  marker key vanished (a flush), and when Redis comes back after an outage during which the
  instance guarded from memory — the journal's current locks are written back before a lookup
  is decided (:mod:`.recovery`).
* **Counters** (windows, tallies, marks) are as durable as Redis is configured to be: with AOF
  and ``appendfsync everysec`` a crash loses at most about a second of counts. A Redis that comes
  back *empty* has lost them; the locks survive through the journal, the counting starts over.

When Redis cannot be reached, :mod:`.fallback` decides what a lookup meets: a fast 503
(``on_unavailable = "refuse"``, the default) or the embedded store with stricter limits per
instance (``"local"``), behind a circuit breaker so a dead Redis adds no timeout to each lookup.
"""
