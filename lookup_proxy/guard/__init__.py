"""The guard: one decision per lookup from every rule in the policy, over pluggable stores."""

from lookup_proxy.guard.engine import Decision, Guard, Hit, Lookup
from lookup_proxy.guard.primitives import GuardStore, StoreUnavailable

__all__ = ["Decision", "Guard", "GuardStore", "Hit", "Lookup", "StoreUnavailable"]
