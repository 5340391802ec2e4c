"""``serve --workers N``: a master process and N serving processes on one port.

Why SO_REUSEPORT and freshly started interpreters, rather than one socket inherited by forked
workers:

- **Each worker has its own listening socket in the port's SO_REUSEPORT group**, so the kernel
  spreads new connections over the workers by a hash of their addresses. With one shared
  socket every worker races for ``accept()`` and an event loop that wakes first keeps winning:
  on Linux the load piles onto one or two workers of a pool. A worker's connections stay its
  own (one keep-alive client keeps talking to one worker).
- **Workers are spawned, not forked** (``multiprocessing``'s ``spawn``): each starts a clean
  interpreter with no event loop, Redis pool, thread or lock copied from the master in whatever
  state fork found it, and imports prometheus_client only after the master has set
  ``PROMETHEUS_MULTIPROC_DIR`` (lookup_proxy/metrics.py). Start-up costs a second per worker,
  once.
- **The master holds the port** with a socket bound in the same group but never listening: no
  connection is ever queued on it, yet no other program can take the port while a worker is
  being replaced, ``--port 0`` picks one port for all workers, and a port already taken is
  reported once, by the master, before any worker starts. Joining an SO_REUSEPORT group needs
  the same user id, so another user's process cannot listen in.

The master does nothing else: it forwards SIGTERM and SIGINT (each worker drains, see
:mod:`.process`) and SIGHUP (each worker reloads the policy; a worker still starting gets it
once it is ready), removes the metrics of a worker that exited
(``multiprocess.mark_process_dead``), and starts a worker again when one dies unexpectedly,
after a back-off that doubles with each death in a row (0.5 s up to 30 s; a worker that served
30 s clears the count). A worker that cannot start is a different matter: a configuration
error (a missing secret, a key file) is reported once, by the master, and every worker stops
(exit 2); any other failure to start three times in a row in one place stops the pool (exit 1).
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from types import FrameType
from typing import Any

from lookup_proxy.errors import ConfigError, ConfigProblem
from lookup_proxy.metrics import MULTIPROCESS_DIR
from lookup_proxy.policy import Policy
from lookup_proxy.serving.options import ServeOptions

log = logging.getLogger("lookup_proxy.serving")

EXIT_CONFIG = 2
START_ATTEMPTS = 3
"""Deaths before ready, in a row in one place, after which the pool gives up."""
BACKOFF_FIRST = 0.5
BACKOFF_MAX = 30.0
STEADY_AFTER = 30.0
"""Seconds of serving after which a worker's death no longer counts as one in a row."""
KILL_MARGIN = 5.0
"""Seconds past the drain bound after which a worker that has not exited is killed."""


def refuse_unsafe(options: ServeOptions, policy: Policy) -> None:
    """Refuse a pool that would weaken the guard or misbehave, before anything starts."""
    if options.workers < 2:
        return
    if policy.store.kind == "memory":
        key = "store.kind" if options.store_kind is None else "store.kind (--store-kind)"
        raise ConfigError(
            [
                ConfigProblem(
                    options.config,
                    key,
                    f'"redis" with --workers {options.workers} (the memory store lives in each '
                    "worker, so every limit would silently allow "
                    f"{options.workers} times as many lookups); use --workers 1 or Redis",
                    '"memory"',
                )
            ]
        )
    if options.with_demo_backend:
        raise ValueError(
            "--with-demo-backend serves the demo backend from the proxy's own process, which "
            f"--workers {options.workers} would start {options.workers} times: run "
            "`lookup-proxy demo-backend` beside the pool, or use --workers 1"
        )


def worker_main(options: ServeOptions, index: int, link: Connection) -> None:
    """A worker process: the same serving process as ``serve``, reporting to the master."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the master turns Ctrl-C into SIGTERM
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # until the loop takes it; resent when ready
    from lookup_proxy.cli import run_async
    from lookup_proxy.instance import become_worker
    from lookup_proxy.logs import configure_logging
    from lookup_proxy.serving.process import serve

    become_worker(index)
    configure_logging(options.log_level)
    ready = False

    def on_ready(listener: Any) -> None:
        nonlocal ready
        ready = True
        link.send(("ready", listener.port))

    try:
        policy = options.load()
        run_async(
            serve(options, policy, worker=index, on_ready=on_ready, master_pipe=link.fileno())
        )
    except ConfigError as exc:
        link.send(("config", exc.problems))
        raise SystemExit(EXIT_CONFIG) from None
    except (OSError, ValueError) as exc:
        if ready:
            raise
        link.send(("error", f"{type(exc).__name__}: {exc}"))
        raise SystemExit(1) from None


@dataclass
class Place:
    """One place in the pool and the worker in it now."""

    index: int
    process: BaseProcess | None = None
    link: Connection | None = None
    ready_at: float | None = None
    deaths: int = 0
    """Deaths in a row (before ready, or within STEADY_AFTER of it)."""
    restart_at: float | None = None
    reload_pending: bool = False
    failure: Any = None
    """What the worker reported before it could serve (problems, or a message)."""


class Master:
    """Starts, watches and stops the workers (see the module docstring)."""

    def __init__(self, options: ServeOptions, policy: Policy) -> None:
        self.options = options
        self.host, self.port = options.address(policy)
        self.drain = options.drain(policy)
        self.places = [Place(index) for index in range(options.workers)]
        self._context = multiprocessing.get_context("spawn")
        self._stopping = False
        self._kill_at = 0.0
        self._exit = 0
        self._fatal: ConfigError | str | None = None
        self._announced = False
        self._metrics = ""

    def run(self) -> int:
        """Serve until SIGTERM/SIGINT (0 when every worker drained cleanly), or until the
        workers cannot start (2: a configuration error, else 1)."""
        held = self._hold_port()
        wake_read, wake_write = socket.socketpair()
        wake_read.setblocking(False)
        wake_write.setblocking(False)
        previous = {sig: signal.signal(sig, _noted) for sig in _FORWARDED}
        old_wakeup = signal.set_wakeup_fd(wake_write.fileno())
        self._metrics = tempfile.mkdtemp(prefix="lookup-proxy-metrics-")
        os.environ[MULTIPROCESS_DIR] = self._metrics  # inherited by every worker started
        try:
            log.info(
                "starting workers",
                extra={"workers": len(self.places), "host": self.host, "port": self.port},
            )
            for place in self.places:
                self._start(place)
            self._supervise(wake_read)
        finally:
            signal.set_wakeup_fd(old_wakeup)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            wake_read.close()
            wake_write.close()
            held.close()
            os.environ.pop(MULTIPROCESS_DIR, None)
            shutil.rmtree(self._metrics, ignore_errors=True)
        if isinstance(self._fatal, ConfigError):
            raise self._fatal  # the command reports it like any configuration error
        if self._fatal is not None:
            print(f"error: {self._fatal}", file=sys.stderr)
            return 1
        return self._exit

    # -- the port ----------------------------------------------------------------------------

    def _hold_port(self) -> socket.socket:
        family, kind, proto, _, address = socket.getaddrinfo(
            self.host or None, self.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        held = socket.socket(family, kind, proto)
        held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        try:
            held.bind(address)
        except OSError as exc:
            held.close()
            raise OSError(f"cannot listen on {self.host}:{self.port}: {exc.strerror}") from None
        self.port = int(held.getsockname()[1])
        return held

    # -- workers -----------------------------------------------------------------------------

    def _start(self, place: Place) -> None:
        ours, theirs = self._context.Pipe()
        options = self.options
        if options.port != self.port:  # --port 0: the one the master holds, for every worker
            from dataclasses import replace

            options = replace(options, port=self.port)
        process = self._context.Process(
            target=worker_main,
            args=(options, place.index, theirs),
            name=f"lookup-proxy-worker-{place.index}",
        )
        process.start()
        theirs.close()  # the worker's end lives in the worker only: its death closes the link
        place.process, place.link = process, ours
        place.ready_at, place.restart_at, place.failure = None, None, None

    def _supervise(self, wake: socket.socket) -> None:
        while True:
            live = [p for p in self.places if p.process is not None]
            if self._stopping and not live:
                return
            now = time.monotonic()
            if self._stopping and now >= self._kill_at:
                for place in live:
                    assert place.process is not None
                    if place.process.is_alive():
                        log.error(
                            "worker still running past the drain bound: killed",
                            extra={"worker": place.index, "pid": place.process.pid},
                        )
                        place.process.kill()
                        self._exit = 1
                self._kill_at = now + 3600
            waits = [t - now for t in (p.restart_at for p in self.places) if t is not None]
            if self._stopping:
                waits.append(self._kill_at - now)
            timeout = max(0.0, min(waits, default=1.0))
            handles: list[Any] = [wake]
            for place in live:
                assert place.process is not None
                handles.append(place.process.sentinel)
                if place.link is not None:
                    handles.append(place.link)
            ready = wait(handles, timeout)
            if wake in ready:
                self._signals(wake)
            for place in live:
                if place.link is not None and place.link in ready:
                    self._hear(place)
            for place in live:
                assert place.process is not None
                if place.process.sentinel in ready:
                    self._exited(place)
            now = time.monotonic()
            for place in self.places:
                if place.restart_at is not None and place.restart_at <= now:
                    if self._stopping:
                        place.restart_at = None
                    else:
                        self._start(place)

    def _signals(self, wake: socket.socket) -> None:
        try:
            received = wake.recv(64)
        except BlockingIOError:
            return
        for number in received:
            if number == signal.SIGHUP and not self._stopping:
                log.info("reloading the policy in every worker")
                for place in self.places:
                    if place.process is None:
                        continue
                    if place.ready_at is None:
                        place.reload_pending = True
                    else:
                        self._send(place, signal.SIGHUP)
            elif number in (signal.SIGTERM, signal.SIGINT):
                self._stop(f"signal {signal.Signals(number).name}")

    def _stop(self, why: str) -> None:
        if self._stopping:
            return
        self._stopping = True
        self._kill_at = time.monotonic() + self.drain + KILL_MARGIN
        log.info("stopping every worker: they drain", extra={"why": why})
        for place in self.places:
            place.restart_at = None
            if place.process is not None:
                self._send(place, signal.SIGTERM)

    def _send(self, place: Place, sig: signal.Signals) -> None:
        if place.process is not None and place.process.pid is not None:
            with contextlib.suppress(ProcessLookupError):  # exiting: its sentinel says so next
                os.kill(place.process.pid, sig)

    def _hear(self, place: Place) -> None:
        link = place.link
        assert link is not None
        try:
            while link.poll():
                message = link.recv()
                if message[0] == "ready":
                    place.ready_at = time.monotonic()
                    if place.reload_pending:
                        place.reload_pending = False
                        self._send(place, signal.SIGHUP)
                    self._announce()
                else:
                    place.failure = message
        except (EOFError, OSError):
            link.close()
            place.link = None

    def _announce(self) -> None:
        if self._announced or not all(p.ready_at is not None for p in self.places):
            return
        self._announced = True
        log.info(
            "every worker serving",
            extra={"workers": len(self.places), "host": self.host, "port": self.port},
        )

    def _exited(self, place: Place) -> None:
        process = place.process
        assert process is not None
        if place.link is not None:
            self._hear(place)  # what it said just before it went
        if place.link is not None:
            place.link.close()
            place.link = None
        process.join()
        code, pid = process.exitcode, process.pid
        place.process = None
        if pid is not None:
            from prometheus_client import multiprocess

            multiprocess.mark_process_dead(pid, self._metrics)  # type: ignore[no-untyped-call]
        details = {"worker": place.index, "pid": pid, "exit_code": code}
        if self._stopping:
            log.info("worker stopped", extra=details)
            if code not in (0, -signal.SIGTERM) or (code != 0 and place.ready_at is not None):
                self._exit = self._exit or 1
            return
        now = time.monotonic()
        if place.ready_at is None:
            self._failed_start(place, details)
            return
        if now - place.ready_at >= STEADY_AFTER:
            place.deaths = 0
        place.deaths += 1
        delay = min(BACKOFF_FIRST * 2 ** (place.deaths - 1), BACKOFF_MAX)
        log.warning(
            "worker died; starting another",
            extra={**details, "in_seconds": delay, "deaths_in_a_row": place.deaths},
        )
        place.restart_at = now + delay

    def _failed_start(self, place: Place, details: dict[str, Any]) -> None:
        failure = place.failure
        if self._fatal is not None:
            return
        if failure is not None and failure[0] == "config":
            self._fatal = ConfigError(list(failure[1]))
            self._stop("a worker found a configuration error")
            return
        place.deaths += 1
        why = failure[1] if failure is not None else f"exit code {details['exit_code']}"
        if place.deaths >= START_ATTEMPTS:
            self._fatal = (
                f"worker {place.index} could not start ({place.deaths} attempts in a row); "
                f"last: {why}"
            )
            self._stop("workers keep dying at start")
            return
        delay = min(BACKOFF_FIRST * 2 ** (place.deaths - 1), BACKOFF_MAX)
        log.warning(
            "worker died before serving; trying again",
            extra={**details, "why": why, "in_seconds": delay},
        )
        place.restart_at = time.monotonic() + delay


_FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def _noted(_signum: int, _frame: FrameType | None) -> None:
    """Signals reach the master's loop through the wake-up socket (signal.set_wakeup_fd)."""


def serve_workers(options: ServeOptions, policy: Policy) -> int:
    refuse_unsafe(options, policy)
    return Master(options, policy).run()
