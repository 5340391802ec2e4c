"""One serving process: the proxy on its port until SIGTERM or SIGINT, then the drain.

The drain is aiohttp's ``runner.cleanup()`` (see ``http_edge.listening``) with a bound chosen
for lookups (:meth:`.options.ServeOptions.drain`): the listening socket closes at once, so a new
connection is refused and a balancer's next health check fails; every lookup already being
handled runs to its real answer (its connection closes after it); then the app's cleanup
flushes the audit trail (a final checkpoint seals the chain) and closes the store, and the
process exits 0. A request that still reaches ``/readyz`` meanwhile (one already on its way on
a connection) is told "draining": not ready. A lookup still running when the bound passes is
cancelled; its audit attempt record was written before it was forwarded.

SIGHUP reloads the policy (lookup_proxy/reload.py). In a worker of ``serve --workers`` the
master sends these signals, SIGINT is the master's to turn into a drain, and a worker whose
master is gone (its pipe to the master closes) drains by itself rather than serve on unwatched.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Callable
from contextlib import AsyncExitStack

from lookup_proxy.clock import SystemClock
from lookup_proxy.http_edge import Listener
from lookup_proxy.policy import Policy
from lookup_proxy.serving.options import ServeOptions

log = logging.getLogger("lookup_proxy.serving")


async def serve(
    options: ServeOptions,
    policy: Policy,
    *,
    worker: int | None = None,
    on_ready: Callable[[Listener], None] | None = None,
    master_pipe: int | None = None,
) -> None:
    """Serve ``policy`` until told to stop, then drain (see the module docstring)."""
    from yarl import URL

    from lookup_proxy.app import build_app
    from lookup_proxy.gc_tuning import tune_for_serving
    from lookup_proxy.http_edge import listening
    from lookup_proxy.loop_lag import LagProbe
    from lookup_proxy.middleware import PROXY

    host, port = options.address(policy)
    app = build_app(
        policy,
        base_dir=options.policy_path.parent,
        environ=os.environ,
        clock=SystemClock(),
        policy_file=options.policy_path,
        prepare=options.prepare,
    )
    proxy = app[PROXY]
    drain = options.drain(policy)
    async with AsyncExitStack() as running:  # leaving it stops the proxy first, then the backend
        if options.with_demo_backend:  # one process only: cli refuses it with --workers
            from lookup_proxy.customers import CustomerBase
            from lookup_proxy.demo_backend import build_demo_backend

            upstream = URL(policy.upstream.url)
            await running.enter_async_context(
                listening(
                    build_demo_backend(CustomerBase()),
                    upstream.host or "127.0.0.1",
                    upstream.port or 80,
                )
            )
        listener = await running.enter_async_context(
            listening(app, host, port, shutdown_timeout=drain, reuse_port=worker is not None)
        )
        tune_for_serving(proxy.metrics.gc_pauses)  # started: what exists now lives on
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        lag = LagProbe(proxy.metrics.loop_lag)
        lag.start(loop)
        running.callback(lag.stop)
        stopping = (signal.SIGTERM,) if worker is not None else (signal.SIGINT, signal.SIGTERM)
        for sig in stopping:
            loop.add_signal_handler(sig, stop.set)
        loop.add_signal_handler(signal.SIGHUP, proxy.reloader.on_signal)  # reload.py
        if master_pipe is not None:  # the master never writes: readable means it is gone
            loop.add_reader(master_pipe, stop.set)
        details = {
            "host": listener.host,
            "port": listener.port,
            "worker": worker,
            "pid": os.getpid(),
        }
        log.info(
            "serving",
            extra={
                **details,
                "store": policy.store.kind,
                "upstream": policy.upstream.url,
                "policy": str(options.policy_path),
            },
        )
        if on_ready is not None:
            on_ready(listener)
        await stop.wait()
        proxy.draining = True
        log.info(
            "draining: no new connections; requests in flight finish",
            extra={**details, "bound_seconds": drain},
        )
    log.info("stopped", extra=details)
