"""The shared store: the guard's primitives run inside Redis, for several proxy instances.

A batch runs as ``EVALSHA`` of a small generic interpreter (``primitives.lua``), mirrored by the
memory store. Client CPU is the scarce thing on the proxy's machines: one script call costs a
fraction of a pipeline of the dozens of raw commands a batch would need
(``bench/bench_store.py``: about 70 against 540 µs of CPU for a nine-primitive batch), and it is
atomic for free. Standalone Redis runs the batches of one loop turn (see
:meth:`RedisStore.execute`) as script calls of whole batches, about ``CALL_SIZE`` primitives
each, whatever their keys: each call's packing and parsing in redis-py, and its set-up in Redis,
were most of what a batch cost when split by hash tag (``bench/bench_guard_redis.py``). Redis
Cluster only runs a script on keys of one slot, so there a batch is split by hash tag and the
groups (employee, store, region, chain) go to their nodes concurrently, atomic per group.

Any failure to get an answer (refused connection, timeout, cluster down, a script error) is
:class:`StoreUnavailable`: the guard then refuses the lookup rather than letting it through
unguarded. Timeouts are short and retries minimal so a terminal never waits on a dead Redis.

A Redis that restarted is noticed on the first new connection to it, before any command runs
there: the connection's handshake reads the server's ``run_id`` and, when it is not the one
whose state this instance vouched for, refuses the connection (:class:`RedisRestarted`). Every
batch then waits while :meth:`RedisStore.on_restart` writes back what must not be lost (the
proxy re-asserts locks from its journal), and runs after. A marker key written at each
recovery catches a Redis emptied without a restart (a flush) at the next :meth:`verify`.
Cluster clients own the handshake hook, so there only the marker and start-up recover.

Windows keep their times as whole milliseconds (``script_calls.millis``; integral scores are
what Redis stores and compares cheaply), so a Redis store sees times a millisecond apart or
less as one: no window depends on that. A store written by a version that kept seconds is
converted once, by the first instance that finds it so (:data:`SCORES_CONVERSION`).

Two differences from the memory store are inherent, and no rule depends on them: values and
whole keys expire on Redis's clock rather than the injected one (the same wall time in live
use), and members with *equal* scores are ordered by member rather than by insertion, so a
cap reached within one instant may keep a different member (the counts are the same).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from contextvars import ContextVar
from typing import Any

import hiredis
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError, RedisError

from lookup_proxy.guard.known_numbers import new_key
from lookup_proxy.guard.primitives import (
    ADD,
    ADD_MEMBERS,
    Op,
    StoreUnavailable,
)
from lookup_proxy.guard.script_calls import ScriptCall, check, encode

CALL_SIZE = 128
"""Primitives in one round trip (and, standalone, one script call) of the batches of a loop turn:
whole batches are added until they reach it (a lookup's three ask for about forty). Fewer,
larger calls cost less to pack, parse and set up; smaller round trips let the first lookups go
on while Redis runs the rest, and Redis runs nothing else while a script runs.
bench/bench_guard_redis.py at 64, 128 and 256: 128 did most lookups a second at nearly the least
proxy CPU."""


log = logging.getLogger("lookup_proxy.store")

SCORES_UNIT = "ms"
"""The value of the scores marker (``<prefix>:scores``): window scores are milliseconds."""

SCORES_CONVERSION = """
-- Window scores in seconds become milliseconds: members scored above -inf (a removal's
-- placeholder stays) and below 1e11 (every time in seconds until the year 5138; no time in
-- milliseconds since 1973). Returns the members converted.
local converted = 0
for k = 1, #KEYS do
  local key = KEYS[k]
  if redis.call('TYPE', key)['ok'] == 'zset' then
    local old = redis.call('ZRANGEBYSCORE', key, '(-inf', '(100000000000', 'WITHSCORES')
    local i = 1
    while i <= #old do
      local args = {}
      while i <= #old and #args < 1000 do
        args[#args + 1] = string.format('%d', math.floor(tonumber(old[i + 1]) * 1000 + 0.5))
        args[#args + 1] = old[i]
        i = i + 2
      end
      redis.call('ZADD', key, unpack(args))
      converted = converted + #args / 2
    end
  end
end
return converted
"""
"""Run by the first instance that finds a store with data but no scores marker (written by a
version that kept seconds), over every key under the prefix, before any lookup's batch. Safe
to run twice (a converted score is past 1e11) and per key atomic."""

CONVERSION_KEYS = 100
"""Keys per conversion call (standalone; a Cluster converts key by key, slots differ)."""


_RECOVERING: ContextVar[bool] = ContextVar("lookup_proxy_redis_recovering", default=False)
"""True inside the recovery task: its own batches must not wait for themselves."""


class RedisRestarted(RedisError):
    """A new connection reached a Redis whose state this instance has not vouched for."""


EXPIRY_SLOTS_KEPT = 200_000
"""Keys whose refreshed slot a process remembers; past it the memory starts again (each key
then refreshes once more: a command, never a lost TTL)."""


class ExpirySlots:
    """Which window keys this process has already set the TTL of in their current expiry slot.

    A key's TTL must run ``window`` past the end of its newest member's slot. The script used to
    read every window's newest score (a ZRANGE on every add) to see whether an add opened a new
    slot; the process knows its own adds, so it asks for the refresh on its first add of each
    slot, and the script also sets the TTL whenever the add finds its window otherwise empty
    (a new key, an expired one, one a restarted Redis lost). Several processes each refresh
    once a slot (with ``GT``, so a process whose clock is behind never shortens another's).
    A ``note`` does not count its window, so it cannot see one otherwise empty: a note to a key
    that vanished within the slot (another process deleted it: an unlock wipes the employee's
    counters) leaves the key without a TTL until this process adds to it again in a later slot
    (a key nobody writes again keeps that one member; the guard's notes go to logs of misses,
    found numbers and forgiveness, which a working clerk writes every hour or so), and that add
    takes it for a new key (a count of one for that add). A removal never empties a key (the
    script keeps the last member as a placeholder); this process's own deletes forget the key's
    slot, and a Redis restart or flush forgets them all.
    """

    __slots__ = ("remembered",)

    def __init__(self) -> None:
        self.remembered: dict[str, int] = {}
        """Key → the slot this process last refreshed it in (RedisStore._encode reads it)."""

    def forget(self) -> None:
        """Redis restarted or was emptied: refresh every key again on its next add."""
        self.remembered.clear()

    def refreshed(self, done: list[tuple[str, int]]) -> None:
        """Remember refreshes that ran."""
        slots = self.remembered
        if len(slots) + len(done) > EXPIRY_SLOTS_KEPT:
            slots.clear()
        for key, slot in done:
            slots[key] = slot


class RedisStore:
    """Guard state in Redis (standalone or Cluster), shared by every proxy instance."""

    kind = "redis"

    def __init__(
        self,
        client: Redis | RedisCluster,
        *,
        timeout: float,
        marker: str = "lp:epoch",
        prefix: str = "lp",
        numbers_key: bytes | None = None,
    ) -> None:
        self.client = client
        """The redis-py client, for admin tools and tests that inspect keys and TTLs."""
        self.numbers_key = numbers_key if numbers_key is not None else new_key()
        """The secret keying the filters of known numbers (guard/known_numbers.py): every
        instance sharing this Redis must have the same (``open_store`` takes it from the
        environment); without one, a key of this object's own, which no other instance shares."""
        self.marker = marker
        self.prefix = prefix
        self.scores_marker = f"{prefix}:scores"
        """Present (:data:`SCORES_UNIT`) once the store's window scores are milliseconds."""
        self.on_restart: Callable[[str], Awaitable[None]] | None = None
        """Run before any lookup's batch whenever Redis may have lost state: at first contact
        (``"start"``), after a restart that kept its data (``"restarted"``) or lost it
        (``"empty"``), and after a flush (``"flushed"``)."""
        self._run_id: str | None = None
        self._verified = False
        self._recovery: asyncio.Task[None] | None = None
        self._cluster = isinstance(client, RedisCluster)
        # The socket timeouts bound each connect, write and read, which bounds a standalone
        # batch. A Cluster batch may also refresh the topology, follow redirects and wait out a
        # failover, so it gets an overall deadline too.
        self._deadline = max(4 * timeout, 0.5)
        self._discovered = not self._cluster
        self._discovering = asyncio.Lock()
        self._slots = ExpirySlots()
        self._latest = 0.0
        """The latest ``now`` of an add this process sent (a clock that steps back is clamped)."""
        self._queue: list[tuple[Sequence[Op], asyncio.Future[list[Any]]]] = []
        """Batches asked for in this turn of the event loop, sent together at its end."""
        self._sending: set[asyncio.Task[None]] = set()

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        cluster: bool,
        timeout: float,
        marker: str = "lp:epoch",
        prefix: str = "lp",
        numbers_key: bytes | None = None,
    ) -> RedisStore:
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
        if cluster:
            return cls(
                RedisCluster.from_url(url, **options),
                timeout=timeout,
                marker=marker,
                prefix=prefix,
                numbers_key=numbers_key,
            )
        watch = _Handshake()
        store = cls(
            Redis.from_url(url, redis_connect_func=watch.connected, **options),
            timeout=timeout,
            marker=marker,
            prefix=prefix,
            numbers_key=numbers_key,
        )
        watch.store = store
        return store

    # -- restarts -----------------------------------------------------------------------------

    def _admit(self, run_id: str) -> None:
        """Called in every new connection's handshake with the server's run_id."""
        if _RECOVERING.get() or (self._recovery is None and not self._verified):
            return  # before the first recovery every batch waits for it anyway (_ready)
        if run_id == self._run_id and self._recovery is None:
            return
        raise RedisRestarted("Redis restarted; its state is being checked")

    def _recover_soon(self) -> asyncio.Task[None]:
        if self._recovery is None:
            self._recovery = asyncio.get_running_loop().create_task(self._recover())
        return self._recovery

    async def _recover(self) -> None:
        token = _RECOVERING.set(True)
        try:
            async with asyncio.timeout(self._deadline * 4):
                client = self.client
                run_id: str | None = None
                if not self._cluster:
                    run_id = str((await client.info("server"))["run_id"])
                had_marker = await client.get(self.marker) is not None
                in_seconds = had_marker and await client.get(self.scores_marker) != SCORES_UNIT
            if in_seconds:
                # Not under the recovery's deadline: a chain's store holds millions of keys.
                # Every command is still bounded by the socket timeouts.
                await self._convert_seconds()
            async with asyncio.timeout(self._deadline * 4):
                if not self._verified:
                    found = "start"
                elif run_id != self._run_id:
                    found = "restarted" if had_marker else "empty"
                else:  # only verify() recovers the same server: its marker had gone
                    found = "flushed"
                if found != "start":
                    self._slots.forget()  # what this process refreshed may be gone
                if self.on_restart is not None:
                    await self.on_restart(found)
                if not had_marker:
                    await client.set(self.marker, uuid.uuid4().hex, nx=True)
                if not had_marker or in_seconds:
                    await client.set(self.scores_marker, SCORES_UNIT)
                self._run_id = run_id
                self._verified = True
        finally:
            _RECOVERING.reset(token)
            self._recovery = None

    async def _convert_seconds(self) -> None:
        """Window scores in seconds (a store written before milliseconds) to milliseconds."""
        client = self.client
        await self._discover()
        keys = converted = 0
        chunk: list[str] = []

        async def convert(batch: list[str]) -> int:
            if self._cluster:
                counts = await asyncio.gather(
                    *(client.eval(SCORES_CONVERSION, 1, key) for key in batch)
                )
                return sum(int(count) for count in counts)
            return int(await client.eval(SCORES_CONVERSION, len(batch), *batch))

        async for key in client.scan_iter(match=f"{self.prefix}:*", count=1000):
            chunk.append(key)
            if len(chunk) >= CONVERSION_KEYS:
                converted += await convert(chunk)
                keys += len(chunk)
                chunk = []
        if chunk:
            converted += await convert(chunk)
            keys += len(chunk)
        log.warning(
            "guard store: window scores converted from seconds to milliseconds "
            "(%d members, %d keys looked at); a store written before milliseconds, converted once",
            converted,
            keys,
        )

    async def _ready(self) -> None:
        """Wait for a recovery in progress (or start the first); StoreUnavailable if it fails."""
        if _RECOVERING.get():
            return
        task = self._recovery
        if task is None:
            if self._verified:
                return
            task = self._recover_soon()
        try:
            # A batch waits as long as a recovery's own steps may take (two of deadline x 4);
            # a longer one (a store being converted: SCORES_CONVERSION) goes on meanwhile,
            # and lookups are refused until it is done.
            async with asyncio.timeout(self._deadline * 8):
                await asyncio.shield(task)
        except TimeoutError as exc:
            if task.done():  # the recovery itself timed out
                raise _unavailable(exc) from exc
            raise StoreUnavailable(
                "Redis is still being recovered (a store written in seconds is being "
                "converted); lookups are refused until it is done"
            ) from exc
        except Exception as exc:
            raise _unavailable(exc) from exc

    async def verify(self) -> None:
        """Recover now if the marker key is gone (Redis emptied without a restart)."""
        await self._ready()
        try:
            present = await self.client.get(self.marker) is not None
        except Exception as exc:
            raise _unavailable(exc) from exc
        if not present:
            try:
                await asyncio.shield(self._recover_soon())
            except Exception as exc:
                raise _unavailable(exc) from exc

    # -- the lookup path ----------------------------------------------------------------------

    async def execute(self, ops: Sequence[Op]) -> list[Any]:
        """Run a batch; batches asked for in one turn of the event loop share a round trip.

        Under load many lookups reach the store in the same turn (decisions, outcomes learnt
        after the answer); each used to be its own pipeline, and the client's work per
        pipeline, not Redis's, was most of what a round trip cost. Queued batches are sent at
        the end of the turn as one: each keeps its results and its errors (a failure fails
        every batch it carried, as it would have failed each alone). Batches of a recovery run
        at once: the queue waits for the recovery, so it cannot also carry it.
        """
        if not ops:
            return []
        check(ops)  # compiled (script_calls): 0.56 µs for a batch of 21, 1.5 µs interpreted
        if _RECOVERING.get():
            return await self._execute_now(ops)
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[list[Any]] = loop.create_future()
        self._queue.append((ops, waiter))
        if len(self._queue) == 1:
            loop.call_soon(self._flush)
        return await waiter

    def _flush(self) -> None:
        queue, self._queue = self._queue, []
        loop = asyncio.get_running_loop()
        # Whole batches, about CALL_SIZE primitives a round trip: the first answers come back
        # (and their lookups go on) while Redis still runs the rest.
        chunk: list[tuple[Sequence[Op], asyncio.Future[list[Any]]]] = []
        size = 0
        for item in queue:
            chunk.append(item)
            size += len(item[0])
            if size >= CALL_SIZE:
                self._start_sending(loop, chunk)
                chunk, size = [], 0
        if chunk:
            self._start_sending(loop, chunk)

    def _start_sending(
        self,
        loop: asyncio.AbstractEventLoop,
        chunk: list[tuple[Sequence[Op], asyncio.Future[list[Any]]]],
    ) -> None:
        task = loop.create_task(self._send(chunk))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _send(self, queue: list[tuple[Sequence[Op], asyncio.Future[list[Any]]]]) -> None:
        ops = queue[0][0] if len(queue) == 1 else [op for batch, _ in queue for op in batch]
        try:
            results = await self._execute_now(ops)
        except BaseException as exc:
            for _, waiter in queue:
                if waiter.done():
                    continue
                if isinstance(exc, asyncio.CancelledError):
                    waiter.cancel()  # the loop is closing
                else:
                    waiter.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        start = 0
        for batch, waiter in queue:
            end = start + len(batch)
            if not waiter.done():  # its lookup may have been abandoned meanwhile
                waiter.set_result(results[start:end])
            start = end

    async def _execute_now(self, ops: Sequence[Op]) -> list[Any]:
        batches, refreshed, scored = self._encode(ops)
        await self._ready()
        try:
            replies = await self._run(batches)
        except RedisRestarted:
            # Refused in the handshake, so nothing of this batch ran: recover, then run it.
            await self._recover_soon()
            await self._ready()
            try:
                replies = await self._run(batches)
            except Exception as exc:
                raise _unavailable(exc) from exc
        except Exception as exc:
            raise _unavailable(exc) from exc

        self._slots.refreshed(refreshed)  # only once they ran: a lost batch refreshed nothing
        if len(batches) == 1:  # standalone always, a Cluster batch of one hash tag
            results: list[Any] = batches[0].answer(replies[0])
        else:
            results = [None] * len(ops)
            for group, reply in zip(batches, replies, strict=True):
                for index, value in zip(group.indices, group.answer(reply), strict=True):
                    results[index] = value
        # Scores leave the script as strings of milliseconds (see primitives.lua): only adds
        # and score reads.
        for index in scored:
            value = results[index]
            code = ops[index][0]
            if code == ADD:
                count, nth, oldest = value
                results[index] = [
                    count,
                    None if nth is None else float(nth) / 1000.0,
                    None if oldest is None else float(oldest) / 1000.0,
                ]
            elif code == ADD_MEMBERS:
                count, nth, members = value
                results[index] = [count, None if nth is None else float(nth) / 1000.0, members]
            elif value is not None:
                results[index] = float(value) / 1000.0
        return results

    def _encode(
        self, ops: Sequence[Op]
    ) -> tuple[list[ScriptCall], list[tuple[str, int]], list[int]]:
        """The script calls for ``ops``, the expiry slots their adds refresh, and where the
        results hold scores (``script_calls.encode``, compiled)."""
        calls, refreshed, scored, self._latest = encode(
            ops, self._cluster, self._slots.remembered, self._latest
        )
        return calls, refreshed, scored

    async def _run(self, batches: list[ScriptCall]) -> list[Any]:
        if self._cluster:
            async with asyncio.timeout(self._deadline):
                if not self._discovered:
                    await self._discover()
                return await self._run_concurrently(batches)
        return await self._run_pipelined(batches)

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

    async def _run_pipelined(self, groups: list[ScriptCall]) -> list[Any]:
        """Standalone: one group (see :meth:`_encode`), one script call, one round trip."""
        client = self.client
        assert isinstance(client, Redis)  # a Cluster runs _run_concurrently
        [group] = groups
        try:
            return [await self._call(client, group.command())]
        except NoScriptError:
            return [await self._call(client, group.fallback())]

    @staticmethod
    async def _call(client: Redis, command: tuple[Any, ...]) -> Any:
        """One command on a pooled connection, as ``execute_command`` sends it but without its
        per-call machinery: redis-py 8 walks every argument twice to pack it, awaits its
        observability hooks and looks up a response callback, about 15 µs a call here with a
        call's hundred-odd keys. The retry (once, at once, on a connection error) and the
        connection's handshake and health check are redis-py's own, as before."""
        pool = client.connection_pool
        connection = await pool.get_connection()  # type: ignore[no-untyped-call]
        packed = hiredis.pack_command(command)

        async def send() -> Any:
            await connection.send_packed_command(packed)
            return await connection.read_response()

        async def failed(error: BaseException) -> None:
            await connection.disconnect()

        try:
            return await connection.retry.call_with_retry(send, failed)
        finally:
            await pool.release(connection)

    async def _run_concurrently(self, groups: list[ScriptCall]) -> list[Any]:
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

    async def _run_group(self, group: ScriptCall) -> Any:
        client = self.client
        try:
            return await client.execute_command(*group.command())
        except NoScriptError:
            return await client.execute_command(*group.fallback())

    # -- health and admin ---------------------------------------------------------------------

    async def ping(self) -> None:
        await self._ready()
        try:
            try:
                await self._ping()
            except RedisRestarted:
                await self._recover_soon()
                await self._ready()
                await self._ping()
        except Exception as exc:
            raise _unavailable(exc) from exc

    async def _ping(self) -> None:
        async with asyncio.timeout(self._deadline):
            if isinstance(self.client, RedisCluster):
                await self._discover()
                await self.client.ping(target_nodes=RedisCluster.PRIMARIES)
            else:
                await self.client.ping()

    async def keys(self, pattern: str) -> list[str]:
        # SCAN, never KEYS: listing must not stall Redis for every proxy's lookups. In Cluster
        # redis-py scans every master.
        await self._ready()
        try:
            await self._discover()
            found = {key async for key in self.client.scan_iter(match=pattern, count=1000)}
        except Exception as exc:
            raise _unavailable(exc) from exc
        return sorted(found)

    async def close(self) -> None:
        if self._sending:
            await asyncio.wait(set(self._sending), timeout=self._deadline)
        await self.client.aclose()


class _Handshake:
    """The connection hook: the usual handshake, then the server's run_id for the store."""

    store: RedisStore | None = None

    async def connected(self, connection: Any) -> None:
        await connection.on_connect()
        await connection.send_command("INFO", "server")
        info = await connection.read_response()
        text = info.decode() if isinstance(info, bytes) else str(info)
        run_id = next(
            (line[7:].strip() for line in text.splitlines() if line.startswith("run_id:")), ""
        )
        if self.store is not None:
            self.store._admit(run_id)


def _unavailable(exc: Exception) -> StoreUnavailable:
    """Whatever kept Redis from answering, to the guard it is one thing: refuse with a 503.

    Only redis-py runs where this is raised. Its own failures are RedisError and its cousins
    (RedisClusterException, OSError, timeouts), but a client bug surfacing as, say,
    AttributeError must still refuse the lookup rather than crash the request.
    """
    return StoreUnavailable(f"Redis did not answer: {exc!r}")
