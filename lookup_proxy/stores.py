"""Opening the guard's store named by the policy: embedded memory, or Redis from the env."""

from __future__ import annotations

from collections.abc import Mapping

from lookup_proxy.errors import ConfigError, ConfigProblem
from lookup_proxy.guard.memory import MemoryStore
from lookup_proxy.guard.primitives import GuardStore
from lookup_proxy.policy import Store


def open_store(config: Store, environ: Mapping[str, str]) -> GuardStore:
    """The store for ``[store]``; a Redis URL only ever comes from the environment."""
    if config.kind == "memory":
        return MemoryStore(max_keys=config.memory_max_keys)
    url = environ.get(config.url_env, "").strip()
    if not url:
        raise ConfigError(
            [
                ConfigProblem(
                    "<environment>",
                    config.url_env,
                    "a Redis URL such as redis://127.0.0.1:6379/0 (store.kind = 'redis')",
                    "unset",
                )
            ]
        )
    from lookup_proxy.guard.redis_store import RedisStore

    return RedisStore.from_url(
        url, cluster=config.cluster, timeout=config.timeout, prefix=config.key_prefix
    )
