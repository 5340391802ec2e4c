"""Who is asking: the verified identity every later step of a lookup is attributed to."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Employee:
    """An employee as vouched for by a verified token; ``region`` may be unknown."""

    id: str
    store: str
    region: str | None
    roles: frozenset[str]
    accounts: frozenset[str] = frozenset()
    """The business accounts (references) the token says they work (``[auth.claims]
    accounts``): a corporate rep may look up a business's lines under these alone."""
