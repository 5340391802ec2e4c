"""The guard: one decision per lookup from every rule in the policy, over pluggable stores."""

from lookup_proxy.guard.decision import Decision, Hit, Lookup
from lookup_proxy.guard.engine import Guard
from lookup_proxy.guard.primitives import GuardStore, StoreUnavailable

__all__ = ["Decision", "Guard", "GuardStore", "Hit", "Lookup", "StoreUnavailable"]
