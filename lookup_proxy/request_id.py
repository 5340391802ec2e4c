"""Request ids: every response carries one, so a clerk can quote it and staff can find the
audit line. A terminal's own id is kept when it is well-formed (correlation across systems),
otherwise a fresh one is made; an id is never trusted as anything more than a label."""

from __future__ import annotations

import random
import re

from aiohttp import web

REQUEST_ID = web.RequestKey("request_id", str)

_WELL_FORMED = re.compile(r"^[A-Za-z0-9._:-]{8,64}$")


def request_id_for(request: web.Request) -> str:
    """The terminal's X-Request-Id when well-formed, else a new random one.

    128 random bits as 32 hex digits, as ``uuid4().hex`` gave, from ``random`` rather than the
    OS: an id is a label, not a secret (a system call a request was 2 % of the proxy's CPU),
    and ``random`` is reseeded in every forked worker."""
    offered = request.headers.get("X-Request-Id", "")
    return offered if _WELL_FORMED.match(offered) else f"{random.getrandbits(128):032x}"
