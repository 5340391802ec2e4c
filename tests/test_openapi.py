"""The admin API's OpenAPI document matches the running app (schemathesis over a socket)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from lookup_proxy.admin import ROUTES
from lookup_proxy.admin.openapi import DOCUMENT
from lookup_proxy.app import Proxy
from lookup_proxy.cases import Signal
from tests.harness import policy, running_proxy, token


class Served:
    """A proxy on a real socket, run by its own event loop in a thread (schemathesis calls
    are blocking), with a few cases in its queue."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.stop: asyncio.Event | None = None
        self.url = ""
        self.proxy: Proxy | None = None
        self.policy = policy("http://127.0.0.1:9")
        self.thread = threading.Thread(target=self.loop.run_until_complete, args=(self._run(),))

    async def _run(self) -> None:
        self.stop = asyncio.Event()
        async with running_proxy(self.policy) as (url, proxy):
            self.url, self.proxy = url, proxy
            await proxy.guard.lock("E7", rule="escalation")
            for employee in ("E7", "E8", "E9"):
                proxy.raiser.signal(Signal(employee, ("distinct-day",), employee == "E7", "S1"))
            await proxy.raiser.idle()
            self.ready.set()
            await self.stop.wait()

    def __enter__(self) -> Served:
        self.thread.start()
        assert self.ready.wait(30), "the proxy did not start"
        return self

    def __exit__(self, *_: object) -> None:
        assert self.stop is not None
        self.loop.call_soon_threadsafe(self.stop.set)
        self.thread.join(30)
        self.loop.close()


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    with Served() as running:
        yield running


@pytest.fixture(scope="module")
def auth(served: Served) -> dict[str, str]:
    return {
        "Authorization": f"Bearer {token(served.policy, employee='SEC1', roles=('security-admin',))}"
    }


@pytest.fixture(scope="module")
def admin_schema(served: Served, auth: dict[str, str]) -> Any:
    return schemathesis.openapi.from_url(f"{served.url}/admin/openapi.json", headers=auth)


schema = schemathesis.pytest.from_fixture("admin_schema")


@schema.parametrize()
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_the_app_answers_as_documented(case: Any, served: Served, auth: dict[str, str]) -> None:
    """Whatever schemathesis sends, the answer is no server error, a documented status, a
    documented content type and a body matching the documented schema."""
    case.call_and_validate(
        base_url=served.url,
        headers=auth,
        checks=[
            not_a_server_error,
            status_code_conformance,
            content_type_conformance,
            response_schema_conformance,
        ],
    )


def test_every_route_is_documented_and_nothing_else() -> None:
    """The document and the route table list the same operations."""
    documented = {
        (method.upper(), path, operation["operationId"])
        for path, item in DOCUMENT["paths"].items()
        for method, operation in item.items()
        if method != "parameters"
    }
    assert documented == set(ROUTES)
