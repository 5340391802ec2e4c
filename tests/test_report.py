"""The monthly access review: a month of audit records in, the report a reviewer reads out.

The month is written as the proxy writes it (tests/audit_month.py); the command runs as a user
runs it; the HTML is opened in headless Chromium and checked for what a reviewer sees.
"""

from __future__ import annotations

import csv
import statistics
from datetime import timedelta
from pathlib import Path

import pytest
from playwright.async_api import async_playwright

from tests.audit_month import ArchiveWriter, local
from tests.harness import policy_text, run_cli

CHROMIUM = "/usr/bin/chromium"

STAFF = {
    "E01": ("S1", 20),
    "E02": ("S1", 21),
    "E03": ("S1", 19),
    "E04": ("S1", 60),  # types numbers at random
    "E05": ("S1", 20),
    "E06": ("S1", 22),
    "E07": ("S2", 18),
    "E08": ("S2", 20),
    "E09": ("S2", 21),
    "E10": ("S2", 19),
    "E11": ("S2", 20),
    "E12": ("S2", 22),
}
ENUMERATOR = "E04"


def number(serial: int) -> str:
    return f"010{serial:08d}"


def october(directory: Path) -> ArchiveWriter:
    """Twelve clerks of two stores, one of them enumerating; refusals, locks, cases, a few
    lookups after hours, records just outside the month, and one exported days late."""
    w = ArchiveWriter(directory)
    serial = 10_000_000
    for day in range(1, 31):
        for employee, (store, per_day) in STAFF.items():
            spacing = 420 // per_day
            for j in range(per_day):
                moment = local(day, 10, 0) + timedelta(minutes=j * spacing, seconds=day)
                if employee == ENUMERATOR:
                    serial += 1
                    if j >= 55:
                        w.lookup(
                            moment, employee, store, number(serial),
                            outcome="refused", cause="guard-denied", rule="misses",
                            locked=(employee,) if (day, j) == (20, 55) else (),
                        )  # fmt: skip
                    else:
                        outcome = "not_found" if j % 20 < 17 else "found"
                        w.lookup(moment, employee, store, number(serial), outcome=outcome)
                else:
                    if j % 2 == 0:
                        serial += 1  # the same customer twice in one visit
                    outcome = "not_found" if j % 8 == 7 else "found"
                    w.lookup(moment, employee, store, number(serial), outcome=outcome)
    # Rate-limited three times, and two attempts with a forged token (nobody known).
    for k in range(3):
        w.lookup(
            local(7, 12, k), "E05", "S1", number(20_000_000 + k),
            outcome="refused", cause="rate-limited", rule="rate",
        )  # fmt: skip
    for k in range(2):
        w.lookup(local(8, 9, 30 + k), None, None, None, outcome="refused", cause="token-invalid")
    # After hours: three late lookups, one just after midnight on the 1st (in September's UTC
    # file), one on the month's last evening; just outside the month on either side.
    for k in range(3):
        w.lookup(local(5, 23, 30 + 5 * k), "E02", "S1", number(30_000_000 + k), outcome="found")
    w.lookup(local(1, 0, 30), "E02", "S1", number(30_000_010), outcome="found")
    w.lookup(local(31, 23, 50), "E08", "S2", number(30_000_011), outcome="found")
    w.lookup(
        local(30, 23, 0, month=9), "E02", "S1", number(30_000_020), outcome="found", counted=False
    )
    w.lookup(
        local(1, 0, 10, month=11), "E02", "S1", number(30_000_021), outcome="found", counted=False
    )
    # Made on the 15th, exported to the archive on 2 November (a Redis stream drained late).
    w.lookup(
        local(15, 11, 0), "E03", "S1", number(30_000_030), outcome="found", written_on="2026-11-02"
    )
    # Locks: the guard locks the enumerator (above, on the 20th); staff lift and lay locks.
    w.admin(local(21, 9, 15), "SEC1", "locks.unlock", "E04", "interviewed; case C-1 holds")
    w.admin(local(22, 16, 0), "SEC1", "locks.lock", "E09", "pending HR review")
    # Cases.
    w.case(local(20, 15, 12), "C-1", "opened", "E04", ["misses"])
    w.case(local(20, 16, 40), "C-1", "raised", "E04", ["misses", "distinct"])
    w.case(local(21, 9, 10), "C-1", "acknowledged", "E04", [], by="SEC1", note="calling the store")
    w.case(
        local(22, 10, 5), "C-1", "resolved", "E04", [], by="SEC1",
        note="confirmed enumeration <script>alert(1)</script>", resolution="abuse-confirmed",
    )  # fmt: skip
    w.case(local(10, 11, 0), "C-2", "opened", "E07", ["hours"])
    w.case(
        local(11, 9, 0), "C-2", "resolved", "E07", [], by="SEC2",
        note="inventory night, approved", resolution="false-positive",
    )  # fmt: skip
    w.case(local(28, 14, 0), "C-3", "opened", "E10", ["peer"])
    w.own_files.add("2026-10-12")
    w.flush()
    # A torn last line, as a crash mid-write leaves it.
    with (directory / "audit-2026-10-30.jsonl").open("ab") as out:
        out.write(b'{"v":1,"kind":"lookup","at":"2026-10-30T0')
    return w


@pytest.fixture
def month(tmp_path: Path) -> tuple[Path, ArchiveWriter]:
    policy = tmp_path / "policy.toml"
    audit = '[audit]\narchive = "audit"\nverify_key = "audit.pub"\n'
    policy.write_text(policy_text("http://127.0.0.1:9", extra=audit))
    written = october(tmp_path / "audit")
    (tmp_path / "audit.pub").write_bytes(written.signer.public_pem())
    return policy, written


def read_csv(path: Path) -> dict[str, dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return {row["employee"]: row for row in csv.DictReader(handle)}


def test_the_csv_counts_what_was_written_and_singles_out_the_enumerator(
    month: tuple[Path, ArchiveWriter], tmp_path: Path
) -> None:
    """Every employee's counts match the records written; only the enumerator stands out."""
    policy, written = month
    verified = run_cli("audit", "verify", "--config", str(policy))
    # The month is a sound chain but for the torn line the test adds at the end.
    assert "audit-2026-10-30.jsonl:" in verified.stdout and "unterminated" in verified.stdout
    assert "1 error(s), 0 warning(s)" in verified.stdout, verified.stdout
    out, table = tmp_path / "report.html", tmp_path / "report.csv"
    result = run_cli(
        "report", "--month", "2026-10", "--config", str(policy),
        "--out", str(out), "--csv", str(table),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "2026-10 (all stores)" in result.stdout
    rows = read_csv(table)
    assert sorted(rows) == sorted(STAFF)
    for employee, books in written.books.items():
        row = rows[employee]
        assert row["store"] == STAFF[employee][0]
        assert int(row["lookups"]) == books.lookups, employee
        assert int(row["found"]) == books.found, employee
        assert int(row["not_found"]) == books.not_found, employee
        assert int(row["refused"]) == books.refused, employee
        assert int(row["distinct_numbers"]) == len(books.subjects), employee
        assert int(row["after_hours"]) == books.after_hours, employee
    assert int(rows["E02"]["lookups"]) == 21 * 30 + 4  # the late ones, not the ones outside
    assert int(rows["E02"]["after_hours"]) == 4
    assert int(rows["E03"]["lookups"]) == 19 * 30 + 1  # exported late, still October's
    s1 = [written.books[e].lookups for e, (store, _) in STAFF.items() if store == "S1"]
    enumerator = rows[ENUMERATOR]
    assert enumerator["peer_group"] == "store S1"
    assert float(enumerator["lookups_peer_median"]) == statistics.median(s1)
    assert float(enumerator["lookups_z"]) > 3.5
    assert float(enumerator["not_found_ratio"]) == pytest.approx(49 / 55, abs=1e-3)
    assert set(enumerator["findings"].split(";")) == {"lookups", "not_found_ratio", "distinct"}
    assert enumerator["locks"] == "1"
    assert enumerator["cases"] == "1"
    assert rows["E09"]["locks"] == "1"  # laid by staff
    assert all(row["findings"] == "" for e, row in rows.items() if e != ENUMERATOR)
    for text in (out.read_text(), table.read_text()):
        assert not any(n in text for n in written.numbers)  # never a number in clear


def test_one_store_is_reviewed_against_itself(
    month: tuple[Path, ArchiveWriter], tmp_path: Path
) -> None:
    """--store keeps that store's employees, locks and cases only."""
    policy, _ = month
    out, table = tmp_path / "s2.html", tmp_path / "s2.csv"
    result = run_cli(
        "report", "--month", "2026-10", "--store", "S2", "--config", str(policy),
        "--out", str(out), "--csv", str(table),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert sorted(read_csv(table)) == [e for e, (s, _) in STAFF.items() if s == "S2"]
    html = out.read_text()
    assert "C-2" in html and "C-3" in html and "C-1" not in html
    assert "pending HR review" in html and "interviewed" not in html


async def test_the_html_shows_the_outlier_refusals_cases_and_after_hours(
    month: tuple[Path, ArchiveWriter], tmp_path: Path
) -> None:
    """In Chromium: the enumerator's row is highlighted, the refusal chart labels carry the
    counts, the cases table tells how each ended, the after-hours section lists the four."""
    policy, _ = month
    out = tmp_path / "report.html"
    result = run_cli("report", "--month", "2026-10", "--config", str(policy), "--out", str(out))
    assert result.returncode == 0, result.stderr
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = await browser.new_page(viewport={"width": 1280, "height": 900})
        requests: list[str] = []
        page.on("request", lambda r: requests.append(r.url))
        await page.goto(out.as_uri())
        assert await page.title() == "Access review 2026-10 — all stores"

        row = page.locator('#employees tr[data-employee="E04"]')
        assert await row.get_attribute("class") == "outlier"
        assert (
            await row.evaluate("r => getComputedStyle(r).backgroundColor") == "rgb(253, 226, 225)"
        )
        assert "lookups" in await row.locator("td").last.inner_text()
        assert await page.locator("#employees tr.outlier").count() == 1
        highlighted = page.locator("#peers-chart g.bar.highlight text.label")
        assert await highlighted.all_text_contents() == ["E04 · S1"]
        assert await page.locator("#unusual-chart g.dot.highlight text").all_text_contents() == [
            "E04"
        ]

        bars = page.locator("#refusals-chart g.bar")
        labels = await bars.locator("text.label").all_text_contents()
        values = await bars.locator("text.value").all_text_contents()
        assert dict(zip(labels, values, strict=True)) == {
            "guard-denied": "150",
            "rate-limited": "3",
            "token-invalid": "2",
        }

        cases = page.locator("#cases-table tbody tr")
        assert await cases.count() == 3
        c1 = await page.locator('#cases-table tr[data-case="C-1"] td').all_inner_texts()
        assert c1[1] == "E04" and c1[3] == "misses, distinct" and c1[5] == "1"
        assert c1[6:10] == [
            "resolved",
            "abuse-confirmed",
            "SEC1",
            "confirmed enumeration <script>alert(1)</script>",  # shown as text, not run
        ]
        c2 = await page.locator('#cases-table tr[data-case="C-2"] td').all_inner_texts()
        assert c2[6:8] == ["resolved", "false-positive"]
        c3 = await page.locator('#cases-table tr[data-case="C-3"] td').all_inner_texts()
        assert c3[6] == "open"
        states = page.locator("#cases-chart g.bar")
        state_labels = await states.locator("text.label").all_text_contents()
        state_values = await states.locator("text.value").all_text_contents()
        assert dict(zip(state_labels, state_values, strict=True)) == {
            "open": "1",
            "acknowledged": "0",
            "false-positive": "1",
            "abuse-confirmed": "1",
            "other": "0",
        }

        locks = await page.locator("#locks-table tbody tr").all_inner_texts()
        assert len(locks) == 3
        assert "rule misses" in locks[0] and "E04" in locks[0]

        assert await page.locator("#after-hours-total").inner_text() == "5"
        late = page.locator("#after-hours-table tbody tr")
        assert await late.count() == 5
        first = await late.first.locator("td").all_inner_texts()
        assert first == ["2026-10-01 00:30", "E02", "S1", "PLAN_CHANGE", "…0010"]
        late_hours = await page.locator("#hours-chart g.hour").evaluate_all(
            """gs => gs.filter(g => g.querySelector('rect.after').getAttribute('height') !== '0.0')
                      .map(g => g.querySelector('text').textContent)"""
        )
        assert late_hours == ["00", "23"]
        assert "1 unreadable line(s) skipped" in await page.locator("#warnings").inner_text()

        shot = await page.screenshot(full_page=True)
        assert len(shot) > 20_000
        assert requests == [out.as_uri()]  # nothing fetched beyond the file itself
        await browser.close()


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--month", "2026-13"], 2, "--month must be a month as YYYY-MM"),
        (["--month", "October"], 2, "--month must be a month as YYYY-MM"),
        (["--month", "2026-08"], 3, "no audit records in 2026-08"),
        (["--month", "2026-10", "--store", "S9"], 3, "no audit records in 2026-10 for store S9"),
    ],
)
def test_bad_input_is_one_line_and_an_exit_code(
    month: tuple[Path, ArchiveWriter],
    tmp_path: Path,
    args: list[str],
    code: int,
    message: str,
) -> None:
    """A wrong month or an empty one is said in one line, without a traceback."""
    policy, _ = month
    result = run_cli("report", *args, "--config", str(policy), "--out", str(tmp_path / "r.html"))
    assert result.returncode == code
    assert result.stderr.startswith("error: " + message)
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert not (tmp_path / "r.html").exists()


def test_a_missing_archive_is_named(tmp_path: Path) -> None:
    """No archive directory: the error names where it looked."""
    policy = tmp_path / "policy.toml"
    policy.write_text(policy_text("http://127.0.0.1:9", extra='[audit]\narchive = "nowhere"\n'))
    result = run_cli(
        "report", "--month", "2026-10", "--config", str(policy), "--out", str(tmp_path / "r.html")
    )
    assert result.returncode == 2
    assert (
        result.stderr
        == f"error: no audit archive at {tmp_path / 'nowhere'} (policy [audit] archive)\n"
    )
