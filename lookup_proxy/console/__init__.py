"""The security console: ``GET /admin/console``, a static page on top of the admin API.

The page (HTML, vanilla JavaScript, CSS; package data under ``static/``, no build step) holds
no data of its own: it asks for an admin token, keeps it in the tab's ``sessionStorage`` (never
in a URL) and calls ``/admin/cases``, ``/admin/locks`` and ``/admin/audit`` with it, where the
token and the admin role are checked and every call is audited. The page itself needs no token.

It is served with a strict Content-Security-Policy: scripts, styles and connections from this
origin only, no inline script or style, no frames, no forms posting anywhere, no referrer.
"""

from __future__ import annotations

from importlib.resources import files
from typing import Final

from aiohttp import web

__all__ = ["CONSOLE_PATH", "SECURITY_HEADERS", "add_console_routes"]

CONSOLE_PATH: Final = "/admin/console"

CONTENT_SECURITY_POLICY: Final = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "connect-src 'self'",
        "img-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ]
)

SECURITY_HEADERS: Final = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}

ASSETS: Final = {
    "console.js": "text/javascript",
    "console.css": "text/css",
    "icon.svg": "image/svg+xml",
}


def _read(name: str) -> bytes:
    return files(__package__).joinpath("static", name).read_bytes()


def add_console_routes(app: web.Application) -> None:
    """``GET /admin/console`` (the page) and ``GET /admin/console/{asset}`` (its script and
    style sheet), read once from the package."""
    page = _read("index.html")
    assets = {name: (_read(name), kind) for name, kind in ASSETS.items()}

    async def console(_request: web.Request) -> web.Response:
        return web.Response(
            body=page, content_type="text/html", charset="utf-8", headers=SECURITY_HEADERS
        )

    async def asset(request: web.Request) -> web.Response:
        found = assets.get(request.match_info["asset"])
        if found is None:
            raise web.HTTPNotFound()
        body, kind = found
        return web.Response(body=body, content_type=kind, charset="utf-8", headers=SECURITY_HEADERS)

    app.router.add_get(CONSOLE_PATH, console)
    app.router.add_get(CONSOLE_PATH + "/{asset}", asset)
