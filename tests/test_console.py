"""The security console in headless Chromium, against a real proxy and its admin API.

A flag rule fires on a real lookup and opens a case; a reviewer signs in with a token, opens the
case, sees its evidence, resolves it with a note and sees it leave the open list; a search by
number finds the lookup. The page must run under its strict Content-Security-Policy without a
single violation, and the token must never reach a URL.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from playwright.async_api import Browser, ConsoleMessage, Page, async_playwright, expect

from lookup_proxy.customers import CustomerBase
from tests.harness import audit_records, policy, running_proxy, token

CHROMIUM = "/usr/bin/chromium"
ADMIN = ("security-admin",)
FLAG_EVERY_LOOKUP = (
    '[[rules]]\nname = "any-lookup"\nkind = "rate"\nwindow = "1h"\nlimit = 0\naction = "flag"\n'
)
NUMBER = CustomerBase().find_customers(1)[0]
DASHED = f"{NUMBER[:3]}-{NUMBER[3:7]}-{NUMBER[7:]}"


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as p:
        launched = await p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield launched
        await launched.close()


class Watch:
    """Everything the page did that a strict page must not: CSP reports, script errors, and
    every URL it asked for (the token must be in none)."""

    def __init__(self, page: Page) -> None:
        self.errors: list[str] = []
        self.urls: list[str] = []
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.errors.append(f"pageerror: {error}"))
        page.on("request", lambda request: self.urls.append(request.url))
        page.on(
            "response",
            lambda r: self.urls.append(f"{r.status} {r.url}") if r.status >= 400 else None,
        )

    def _console(self, message: ConsoleMessage) -> None:
        if message.type in ("error", "warning") and "401" not in message.text:
            self.errors.append(f"{message.type}: {message.text}")


async def wait_for(check: Any, what: str) -> Any:
    for _ in range(100):
        found = await check()
        if found:
            return found
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


async def test_the_page_is_strict_and_needs_a_token(
    backend: str, client: aiohttp.ClientSession, browser: Browser
) -> None:
    """The page loads under its CSP with no violation; a wrong token is refused in words and
    not kept."""
    p = policy(backend)
    async with running_proxy(p) as (url, _):
        async with client.get(f"{url}/admin/console") as response:
            assert response.status == 200
            assert response.content_type == "text/html"
            csp = response.headers["Content-Security-Policy"]
            assert "default-src 'none'" in csp and "script-src 'self'" in csp
            assert "'unsafe-inline'" not in csp and "frame-ancestors 'none'" in csp
            assert response.headers["Cache-Control"] == "no-store"
            html = await response.text()
        assert "<script>" not in html and " style=" not in html and "http" not in html.lower()
        for asset, kind in [("console.js", "text/javascript"), ("icon.svg", "image/svg+xml")]:
            async with client.get(f"{url}/admin/console/{asset}") as response:
                assert response.status == 200 and response.content_type == kind
                assert response.headers["Content-Security-Policy"] == csp
        async with client.get(f"{url}/admin/console/nothing.js") as response:
            assert response.status == 403  # not an asset: default deny, as every unknown path

        page = await browser.new_page()
        watch = Watch(page)
        await page.goto(f"{url}/admin/console")
        await expect(page.locator("#login")).to_be_visible()
        await expect(page.locator("#console")).to_be_hidden()
        await page.fill("#token", "not-a-token")
        await page.click("#login-form button[type=submit]")
        await expect(page.locator("#status")).to_contain_text("token")
        await expect(page.locator("#console")).to_be_hidden()
        assert await page.evaluate("sessionStorage.length") == 0
        clerk = token(p, employee="E1")  # a valid token without the admin role
        await page.fill("#token", clerk)
        await page.click("#login-form button[type=submit]")
        await expect(page.locator("#status")).to_contain_text("security-admin")
        await expect(page.locator("#console")).to_be_hidden()
        assert await page.evaluate("sessionStorage.length") == 0
        assert watch.errors == [] or all("403" in e for e in watch.errors), watch.errors
        assert not any("not-a-token" in u or clerk in u for u in watch.urls)


async def test_review_a_case_resolve_it_and_search_a_number(
    backend: str, client: aiohttp.ClientSession, browser: Browser, tmp_path: Path
) -> None:
    """Sign in, open the case a flagged lookup opened, see the lookup as evidence, resolve it
    with a note: it leaves the open list. Searching the number shows the lookup."""
    p = policy(backend, rules=FLAG_EVERY_LOOKUP)
    admin = token(p, employee="SEC1", roles=ADMIN)
    clerk = token(p, employee="E7", store="S3", region="R2")
    async with running_proxy(p, audit_dir=tmp_path) as (url, proxy):
        headers = {"Authorization": f"Bearer {clerk}", "X-Lookup-Reason": "BILLING_INQUIRY"}
        async with client.get(f"{url}/customers/{DASHED}", headers=headers) as response:
            assert response.status == 200

        async def opened() -> list[dict[str, Any]]:
            auth = {"Authorization": f"Bearer {admin}"}
            async with client.get(f"{url}/admin/cases", headers=auth) as listed:
                cases: list[dict[str, Any]] = (await listed.json())["cases"]
                return cases

        [case] = await wait_for(opened, "the flag's case")
        await proxy.guard.lock("E7", rule="manual")

        page = await browser.new_page(viewport={"width": 1280, "height": 1000})
        watch = Watch(page)
        await page.goto(f"{url}/admin/console")
        await page.fill("#token", admin)
        await page.click("#login-form button[type=submit]")
        await expect(page.locator("#console")).to_be_visible()
        assert await page.evaluate("Object.keys(sessionStorage)") == ["lookup-proxy.admin-token"]

        listed = page.locator(f'#case-list tr[data-case="{case["id"]}"]')
        await expect(listed).to_contain_text("E7")
        await expect(listed).to_contain_text("any-lookup")
        await expect(page.locator('#lock-list tr[data-employee="E7"]')).to_contain_text("manual")

        await listed.get_by_role("button", name="Open").click()
        await expect(page.locator("#case")).to_be_visible()
        await expect(page.locator("#case-id")).to_have_text(case["id"])
        evidence = page.locator("#evidence tbody tr")
        await expect(evidence).to_have_count(1)
        await expect(evidence.first).to_contain_text("BILLING_INQUIRY")
        await expect(evidence.first).to_contain_text("…" + NUMBER[-4:])
        await expect(evidence.first).to_contain_text("found")

        await page.fill("#resolve-note", "Customer was at the counter; <b>fine</b>")
        await page.select_option("#resolution", "false-positive")
        await expect(page.locator("#resolve-unlock")).to_be_checked()  # the employee is locked
        await page.click("#resolve-form button[type=submit]")
        await expect(page.locator("#status")).to_contain_text(f"Case {case['id']} resolved")
        await expect(listed).to_have_count(0)  # left the open list
        await expect(page.locator("#no-cases")).to_be_visible()
        await expect(page.locator("#case-events li").last).to_contain_text("resolved · by SEC1")
        await expect(page.locator("#case-events li").last).to_contain_text("<b>fine</b>")
        await expect(page.locator("#case-actions")).to_be_hidden()
        await expect(page.locator('#lock-list tr[data-employee="E7"]')).to_have_count(0)
        assert await proxy.guard.lock_status("E7") is None

        await page.fill("#search-text", f"+82 {DASHED[1:]}")  # another way to write it
        await page.click("#search-form button[type=submit]")
        results = page.locator("#results tbody tr")
        await expect(results).to_have_count(1)
        await expect(results.first).to_contain_text("E7")
        await expect(results.first).to_contain_text("S3")
        await expect(page.locator("#search-summary")).to_contain_text("1 lookup(s) of that number")

        shot = await page.screenshot(full_page=True)
        assert len(shot) > 10_000
        assert watch.errors == [], "\n".join(watch.errors + watch.urls)
        assert not any(admin in u for u in watch.urls)
        assert page.url == f"{url}/admin/console"  # nothing typed ever reached the address

    resolved = [r for r in audit_records(tmp_path, "case") if r["event"] == "resolved"]
    assert [(r["by"], r["resolution"]) for r in resolved] == [("SEC1", "false-positive")]
    actions = [r["action"] for r in audit_records(tmp_path, "admin")]
    assert "cases.resolve" in actions and "cases.show" in actions and "audit.search" in actions
