"""The shared store: the guard's primitives run inside Redis, for several proxy instances.

Each batch is split by hash tag and every group runs as one ``EVALSHA`` of a small generic
interpreter (``primitives.lua``), mirrored by the memory store. Client CPU is the scarce thing on
the proxy's machines: one script call costs a fraction of a pipeline of the dozens of raw
commands a batch would need (``bench/bench_store.py``: about 70 against 540 µs of CPU for a
nine-primitive batch), and it is atomic per group for free. Standalone Redis gets every
group in one pipelined round trip; Redis Cluster only runs a script on keys of one slot, so the
groups (employee, store, region) go to their nodes concurrently.

Any failure to get an answer (refused connection, timeout, cluster down, a script error) is
:class:`StoreUnavailable`: the guard then refuses the lookup rather than letting it through
unguarded. Timeouts are short and retries minimal so a terminal never waits on a dead Redis.

Two differences from the memory store are inherent, and no rule depends on them: values and
whole keys expire on Redis's clock rather than the injected one (the same wall time in live
use), and members with *equal* scores are ordered by member rather than by insertion, so a
cap reached within one instant may keep a different member (the counts are the same).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from importlib.resources import files
from typing import Any

import orjson
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError

from lookup_proxy.guard.primitives import (
    ADD,
    COUNT,
    DELETE,
    FIELDS,
    GET,
    INCR,
    MEMBERS,
    REMOVE,
    SCORE,
    SET,
    Op,
    StoreUnavailable,
    hash_tag,
)

SCRIPT = (files("lookup_proxy.guard") / "primitives.lua").read_text(encoding="utf-8")
SCRIPT_SHA = hashlib.sha1(SCRIPT.encode("utf-8"), usedforsecurity=False).hexdigest()

ARITY = {
    ADD: 5,
    COUNT: 1,
    MEMBERS: 1,
    GET: 1,
    SET: 3,
    REMOVE: 1,
    DELETE: 0,
    SCORE: 1,
    INCR: 3,
    FIELDS: 0,
}
"""Arguments after the key, per opcode: the script walks its argument array by these counts."""


class _Group:
    """The primitives of one hash tag, encoded for one script call."""

    __slots__ = ("argv", "indices", "keys", "payload")

    def __init__(self) -> None:
        self.indices: list[int] = []
        self.keys: list[str] = []
        self.argv: list[Any] = []
        self.payload = b""

    def seal(self) -> None:
        """Encode the arguments once, as one JSON array: one argument for redis-py to pack."""
        self.payload = orjson.dumps(self.argv)

    def command(self) -> tuple[Any, ...]:
        return ("EVALSHA", SCRIPT_SHA, len(self.keys), *self.keys, self.payload)

    def fallback(self) -> tuple[Any, ...]:
        """``EVAL`` with the script text: runs once when Redis lost the script, and caches it."""
        return ("EVAL", SCRIPT, len(self.keys), *self.keys, self.payload)


class RedisStore:
    """Guard state in Redis (standalone or Cluster), shared by every proxy instance."""

    kind = "redis"

    def __init__(self, client: Redis | RedisCluster, *, timeout: float) -> None:
        self.client = client
        """The redis-py client, for admin tools and tests that inspect keys and TTLs."""
        self._cluster = isinstance(client, RedisCluster)
        # The socket timeouts bound each connect, write and read, which bounds a standalone
        # batch. A Cluster batch may also refresh the topology, follow redirects and wait out a
        # failover, so it gets an overall deadline too.
        self._deadline = max(4 * timeout, 0.5)
        self._discovered = not self._cluster
        self._discovering = asyncio.Lock()

    @classmethod
    def from_url(cls, url: str, *, cluster: bool, timeout: float) -> RedisStore:
        """A store for ``url``; connects lazily, so a Redis that is down fails on first use."""
        # One immediate retry heals a pooled connection that Redis closed (restart, idle
        # timeout); redis-py's default exponential backoff would hold a terminal for seconds.
        retry = Retry(NoBackoff(), 1)
        options: dict[str, Any] = {
            "socket_connect_timeout": timeout,
            "socket_timeout": timeout,
            "retry": retry,
            "decode_responses": True,
        }
        client: Redis | RedisCluster = (
            RedisCluster.from_url(url, **options) if cluster else Redis.from_url(url, **options)
        )
        return cls(client, timeout=timeout)

    # -- the lookup path ----------------------------------------------------------------------

    async def execute(self, ops: Sequence[Op]) -> list[Any]:
        if not ops:
            return []
        groups: dict[str, _Group] = {}
        for index, op in enumerate(ops):
            code = op[0]
            arity = ARITY.get(code)
            if arity is None or len(op) != arity + 2:
                raise ValueError(f"unknown store primitive or wrong arguments: {op!r}")
            key = op[1]
            tag = hash_tag(key)
            group = groups.get(tag)
            if group is None:
                group = groups[tag] = _Group()
            group.indices.append(index)
            group.keys.append(key)
            group.argv.append(code)
            group.argv.extend(op[2:])
        batches = list(groups.values())
        for group in batches:
            group.seal()  # outside the try: unencodable arguments are a bug, not an outage
        try:
            if self._cluster:
                async with asyncio.timeout(self._deadline):
                    if not self._discovered:
                        await self._discover()
                    replies = await self._run_concurrently(batches)
            else:
                replies = await self._run_pipelined(batches)
        except Exception as exc:
            raise _unavailable(exc) from exc

        results: list[Any] = [None] * len(ops)
        for group, reply in zip(batches, replies, strict=True):
            for index, value in zip(group.indices, reply, strict=True):
                code = ops[index][0]
                if code == ADD:
                    count, nth, oldest = value
                    value = [count, None if nth is None else float(nth), float(oldest)]
                elif code == SCORE and value is not None:
                    value = float(value)
                results[index] = value
        return results

    async def _discover(self) -> None:
        """Learn the Cluster's topology once, before any concurrent commands.

        redis-py 8's Cluster client, when its first commands arrive concurrently, can hand out
        a connection another coroutine is still setting up (AttributeError on ``writelines``);
        one discovery up front avoids that race entirely.
        """
        async with self._discovering:
            client = self.client
            if not self._discovered and isinstance(client, RedisCluster):
                await client.initialize()
                self._discovered = True

    async def _run_pipelined(self, groups: list[_Group]) -> list[Any]:
        """Standalone: every group in one round trip (a lone group needs no pipeline)."""
        client = self.client
        if len(groups) == 1:
            group = groups[0]
            try:
                return [await client.execute_command(*group.command())]
            except NoScriptError:
                return [await client.execute_command(*group.fallback())]
        async with client.pipeline(transaction=False) as pipe:
            for group in groups:
                pipe.execute_command(*group.command())
            replies: list[Any] = await pipe.execute(raise_on_error=False)
        missing = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
        if missing:
            async with client.pipeline(transaction=False) as pipe:
                for i in missing:
                    pipe.execute_command(*groups[i].fallback())
                for i, reply in zip(missing, await pipe.execute(raise_on_error=False), strict=True):
                    replies[i] = reply
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        return replies

    async def _run_concurrently(self, groups: list[_Group]) -> list[Any]:
        """Cluster: one script call per group, each to its slot's node, all at once."""
        if len(groups) == 1:
            return [await self._run_group(groups[0])]
        replies = await asyncio.gather(
            *(self._run_group(group) for group in groups), return_exceptions=True
        )
        # Every call has finished (each is bounded by the socket timeouts), so raising the
        # first failure leaves no task behind.
        for reply in replies:
            if isinstance(reply, BaseException):
                raise reply
        return replies

    async def _run_group(self, group: _Group) -> Any:
        client = self.client
        try:
            return await client.execute_command(*group.command())
        except NoScriptError:
            return await client.execute_command(*group.fallback())

    # -- health and admin ---------------------------------------------------------------------

    async def ping(self) -> None:
        try:
            async with asyncio.timeout(self._deadline):
                if isinstance(self.client, RedisCluster):
                    await self._discover()
                    await self.client.ping(target_nodes=RedisCluster.PRIMARIES)
                else:
                    await self.client.ping()
        except Exception as exc:
            raise _unavailable(exc) from exc

    async def keys(self, pattern: str) -> list[str]:
        # SCAN, never KEYS: listing must not stall Redis for every proxy's lookups. In Cluster
        # redis-py scans every master.
        try:
            await self._discover()
            found = {key async for key in self.client.scan_iter(match=pattern, count=1000)}
        except Exception as exc:
            raise _unavailable(exc) from exc
        return sorted(found)

    async def close(self) -> None:
        await self.client.aclose()


def _unavailable(exc: Exception) -> StoreUnavailable:
    """Whatever kept Redis from answering, to the guard it is one thing: refuse with a 503.

    Only redis-py runs where this is raised. Its own failures are RedisError and its cousins
    (RedisClusterException, OSError, timeouts), but a client bug surfacing as, say,
    AttributeError must still refuse the lookup rather than crash the request.
    """
    return StoreUnavailable(f"Redis did not answer: {exc!r}")
