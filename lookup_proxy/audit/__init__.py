"""The audit trail: one hash-chained, signed record per lookup attempt and admin action.

``chain`` links and seals records; ``export`` moves them from the Redis stream into the
append-only archive; ``verify`` checks the archive for tampering; ``archive`` searches it.
"""
