"""Opening the guard's store named by the policy: embedded memory, or Redis from the env."""

from __future__ import annotations

from collections.abc import Mapping

from lookup_proxy.errors import ConfigError, ConfigProblem
from lookup_proxy.guard.known_numbers import SECRET_MIN, key_from_secret
from lookup_proxy.guard.memory import MemoryStore
from lookup_proxy.guard.primitives import GuardStore
from lookup_proxy.policy import Store


def open_store(config: Store, environ: Mapping[str, str], *, learning: bool = True) -> GuardStore:
    """The store for ``[store]``; a Redis URL and the known-numbers key only ever come from the
    environment. ``learning``: a guard will learn outcomes in it (the proxy), so a Redis store
    must have the key every instance shares; a tool that only reads and unlocks needs none."""
    if config.kind == "memory":
        return MemoryStore(
            max_keys=config.memory_max_keys, numbers_key=numbers_key(config, environ)
        )
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
    key = numbers_key(config, environ)
    if key is None and learning:
        raise ConfigError(
            [
                ConfigProblem(
                    "<environment>",
                    config.known_numbers_key_env,
                    f"a secret of at least {SECRET_MIN} characters, the same in every instance "
                    "(lookup-proxy audit keygen prints one; store.known_numbers_key_env names "
                    "the variable)",
                    "unset",
                )
            ]
        )
    from lookup_proxy.guard.redis_store import RedisStore

    return RedisStore.from_url(
        url,
        cluster=config.cluster,
        timeout=config.timeout,
        prefix=config.key_prefix,
        numbers_key=key,
    )


def numbers_key(config: Store, environ: Mapping[str, str]) -> bytes | None:
    """The known-numbers key from the environment, None when unset; a ConfigError when it is
    too short to be a secret."""
    secret = environ.get(config.known_numbers_key_env, "").strip()
    if not secret:
        return None
    if len(secret) < SECRET_MIN:
        raise ConfigError(
            [
                ConfigProblem(
                    "<environment>",
                    config.known_numbers_key_env,
                    f"a secret of at least {SECRET_MIN} characters (lookup-proxy audit keygen "
                    "prints one)",
                    f"{len(secret)} characters",
                )
            ]
        )
    return key_from_secret(secret)
