"""``lookup-proxy replay``: the backtest contract of DESIGN.md, held to the live guard.

EVENTS.csv in, DECISIONS.csv out: one row per input row in input order, the input echoed and
``decision``, ``rule`` and ``flags`` added; outcomes learnt only for allowed lookups; rows the
proxy refuses before the guard denied with their cause; rows that cannot be replayed fail the
whole run by line number. Policies are written in TOML as security staff would; times are
seconds after ``T0`` in Korean time unless a test is about the clock itself.
"""

from __future__ import annotations

import csv
import gc
import io
import json
import random
import subprocess
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from lookup_proxy.clock import ManualClock
from lookup_proxy.employee import Employee
from lookup_proxy.errors import Refusal
from lookup_proxy.guard.decision import Lookup
from lookup_proxy.guard.engine import Guard
from lookup_proxy.guard.primitives import GuardStore
from lookup_proxy.justify import ReasonCatalogue
from lookup_proxy.metrics import GuardMetrics
from lookup_proxy.numbers import normalise_number
from lookup_proxy.policy import Policy, load_policy, parse_policy
from lookup_proxy.replay import (
    ACCOUNT_EVENT_COLUMNS,
    DECISION_COLUMNS,
    EVENT_COLUMNS,
    Replayer,
    ReplayFailed,
    _EventTimes,
    _records,
    load_accounts,
    load_roster,
    parse_timestamp,
)
from tests.harness import GUARD_HEAD, GUARD_REASONS, run_cli, simulate

ROOT = Path(__file__).resolve().parent.parent
KST = timezone(timedelta(hours=9))
T0 = datetime(2026, 10, 1, 9, 0, tzinfo=KST)

HEAD = GUARD_HEAD + GUARD_REASONS

RATE_2_PER_MINUTE = """
[[rules]]
name = "per-minute"
kind = "rate"
window = "1m"
limit = 2
"""


def policy(rules: str, tail: str = "") -> Policy:
    return parse_policy(HEAD + rules + tail)


def at(seconds: float) -> str:
    """An event time ``seconds`` after T0, ISO 8601 with the +09:00 offset."""
    return (T0 + timedelta(seconds=seconds)).isoformat()


def number(offset: int, block: int = 1234) -> str:
    """A canonical 010 number: ``offset`` within the 010-<block> block."""
    return f"010{block:04d}{offset:04d}"


def event(
    seconds: float,
    employee: str = "E1",
    number_: str = "01012345678",
    *,
    store: str = "S1",
    region: str = "R1",
    reason: str = "BILLING_INQUIRY",
    reference: str = "",
    found: str = "true",
) -> list[str]:
    return [at(seconds), employee, store, region, number_, reason, reference, found]


def write_events(path: Path, rows: Sequence[Sequence[str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(EVENT_COLUMNS)
        writer.writerows(rows)
    return path


def replay(
    tmp_path: Path, rules: str, rows: Sequence[Sequence[str]], tail: str = ""
) -> list[list[str]]:
    """Replay ``rows`` under a policy of ``rules``; DECISIONS.csv's rows after the header."""
    out = tmp_path / "decisions.csv"
    Replayer(policy(rules, tail)).run(write_events(tmp_path / "events.csv", rows), out)
    with out.open(newline="", encoding="utf-8") as handle:
        header, *decided = list(csv.reader(handle))
    assert header == list(DECISION_COLUMNS)
    return decided


def outcomes(decided: list[list[str]]) -> list[tuple[str, str, str]]:
    """Each row's (decision, rule, flags)."""
    return [(row[8], row[9], row[10]) for row in decided]


# -- the file contract -------------------------------------------------------------------------


def test_every_row_is_echoed_in_order_with_decision_rule_and_flags(tmp_path: Path) -> None:
    """One output row per input row, same order, input columns untouched, three columns added."""
    rows = [
        event(0, "E1", "010-1234-0001"),
        event(1, "E2", "+82 10-1234-0002", region="", found="false"),
        event(2, "E1", "01012340003", reference="walk-in, asked twice"),
    ]
    decided = replay(tmp_path, RATE_2_PER_MINUTE, rows)
    assert [row[:8] for row in decided] == rows
    assert outcomes(decided) == [("allow", "", ""), ("allow", "", ""), ("allow", "", "")]


def test_a_refusing_rule_names_itself_and_flag_rules_fill_flags(tmp_path: Path) -> None:
    """``rule`` names the rule that denied; flag and shadow rules that fired go in ``flags``."""
    rules = (
        RATE_2_PER_MINUTE
        + """
[[rules]]
name = "watch"
kind = "rate"
window = "1h"
limit = 1
action = "flag"

[[rules]]
name = "trial"
kind = "distinct"
window = "1h"
limit = 2
mode = "shadow"
"""
    )
    rows = [event(second, number_=number(second)) for second in (0, 10, 20, 90)]
    assert outcomes(replay(tmp_path, rules, rows)) == [
        ("allow", "", ""),
        ("allow", "", "watch"),
        ("deny", "per-minute", "watch;trial"),
        ("allow", "", "watch;trial"),
    ]


def test_outcomes_are_learnt_only_for_allowed_lookups(tmp_path: Path) -> None:
    """Misses of denied lookups are not learnt: the live proxy never forwards them."""
    rules = (
        RATE_2_PER_MINUTE
        + """
[[rules]]
name = "misses"
kind = "misses"
window = "1d"
limit = 2
action = "flag"
"""
    )
    misses = [event(second, number_=number(100 * second), found="false") for second in range(4)]
    later = [
        event(600 + second, number_=number(5000 + 100 * second), found="false")
        for second in range(2)
    ]
    assert outcomes(replay(tmp_path, rules, misses + later)) == [
        ("allow", "", ""),
        ("allow", "", ""),
        ("deny", "per-minute", ""),
        ("deny", "per-minute", ""),
        ("allow", "", ""),  # two misses learnt, not four
        ("allow", "", "misses"),  # the miss learnt from the lookup before
    ]


def test_lockouts_made_while_learning_an_outcome_are_in_the_summary(tmp_path: Path) -> None:
    """A peer rule that locks fires when an outcome is learnt, not in a decision: the summary
    still names the employee, when, and the rule, and their next lookup is refused."""
    rules = """
[[rules]]
name = "peer-lock"
kind = "peer"
peers = "store"
window = "1d"
min_peers = 2
min_outcomes = 4
spread = 1.0
min_spread = 0.1
limit = 1
action = "lock"
"""
    rows = [
        event(10 * i + index, clerk, number(100 * i + index))
        for i in range(6)
        for index, clerk in enumerate(("P1", "P2"))
    ]
    rows += [event(100 + i, "E1", number(5000 + 100 * i), found="false") for i in range(5)]
    rows.append(event(200, "E1", number(9000)))
    out = tmp_path / "decisions.csv"
    summary = Replayer(policy(rules)).run(write_events(tmp_path / "events.csv", rows), out)
    locked = summary.employees["E1"]
    assert locked.locked_by == "peer-lock"
    # The second miss: two in two numbers where the peers (all found) predict a quarter of
    # each (min_outcomes' floor on the median), more than limit = 1 over it. The employee is
    # judged however few numbers they have (min_outcomes qualifies peers only).
    assert locked.locked_at == at(101)
    assert summary.lockouts_by_rule["peer-lock"] == 1
    with out.open(newline="", encoding="utf-8") as handle:
        last = list(csv.reader(handle))[-1]
    assert (last[8], last[9]) == ("deny", "locked")


def test_iso_offsets_and_epoch_seconds_are_one_clock(tmp_path: Path) -> None:
    """Any UTC offset and epoch seconds (with fractions) order and window events alike."""
    start = T0.timestamp()
    times = [
        at(0),  # 09:00:00+09:00
        (T0 + timedelta(seconds=30)).astimezone(UTC).isoformat(),  # 00:00:30+00:00
        str(start + 59.5),
        (T0 + timedelta(seconds=60)).astimezone(timezone(timedelta(hours=-5))).isoformat(),
        f"{start + 119.25:.2f}",
        "2026-10-01T00:03:00Z",
    ]
    rows = [
        [when, "E1", "S1", "R1", number(index), "BILLING_INQUIRY", "", "true"]
        for index, when in enumerate(times)
    ]
    assert [parse_timestamp(when) - start for when in times] == [0, 30, 59.5, 60, 119.25, 180]
    decided = replay(tmp_path, RATE_2_PER_MINUTE, rows)
    assert [row[0] for row in decided] == times
    assert [row[8] for row in decided] == ["allow", "allow", "deny", "deny", "deny", "allow"]


def error_of(parse: Callable[[str], float], text: str) -> str:
    """The message of the ValueError ``parse(text)`` raises."""
    try:
        parse(text)
    except ValueError as exc:
        return str(exc)
    raise AssertionError(f"{text!r} was accepted")


def test_timestamps_parse_the_same_whichever_hour_came_first() -> None:
    """Replay's per-minute cache of timestamps agrees with ``parse_timestamp``, errors included."""
    rng = random.Random(7)
    offsets = [timezone(timedelta(hours=h, minutes=m)) for h, m in ((9, 0), (0, 0), (-3, -30))]
    times = _EventTimes()
    for _ in range(2000):
        when = T0 + timedelta(seconds=rng.randrange(0, 3 * 86400))
        text = when.astimezone(rng.choice(offsets)).isoformat()
        assert times.parse(text) == parse_timestamp(text) == when.timestamp(), text
    # In time order, as events come: mostly the previous event's minute, sometimes in another
    # offset, and once the same wall-clock minute in another offset (another instant).
    when, offset = T0, offsets[0]
    for _ in range(2000):
        when += timedelta(seconds=rng.choice((0, 1, 7, 19.5, 61)))
        offset = rng.choice(offsets) if rng.random() < 0.1 else offset
        text = when.astimezone(offset).isoformat()
        assert times.parse(text) == parse_timestamp(text) == when.timestamp(), text
    for text in ("2026-10-01T09:15:23+09:00", "2026-10-01T09:15:40+08:00"):
        assert times.parse(text) == parse_timestamp(text), text
    for text in (
        "2026-10-01T09:60:00+09:00",
        "2026-10-01T24:00:00+09:00",
        "2026-10-01T09:00:61+09:00",
        "2026-10-01T09:0١:00+09:00",
        "2026-10-01T09:00:00+25:00",
        "2026-10-01T09:00:00 09:00",
        "2026-10-01T09:00:00",
    ):
        assert error_of(times.parse, text) == error_of(parse_timestamp, text), text


@pytest.mark.parametrize(
    "body",
    [
        "a,b,c\n\n , ,\n",
        '"a,b",c\nx,"multi\nline",y\n"q""uote",z\r\n',
        'ab"c,d\nlast,no,newline',
        '"never closed,\nn,m\n',
        "old\rmac\n",
    ],
    ids=["plain", "quoted", "stray-quote", "unterminated", "bare-cr"],
)
def test_records_are_what_csv_reads_and_their_text_as_it_came(body: str) -> None:
    """The comma-split fast path and the csv.reader fallback agree with csv.reader throughout,
    and each record's text is its input, line ending dropped, so echoing it loses nothing."""
    text = "h1,h2\n" + body + "\nn,m\n"
    records = list(_records(io.StringIO(text, newline="")))
    assert [fields for _, fields in records] == list(csv.reader(io.StringIO(text, newline="")))
    echoed = "\n".join(record for record, _ in records) + "\n"
    assert list(csv.reader(io.StringIO(echoed, newline=""))) == [f for _, f in records]


def test_a_quoted_event_is_echoed_as_it_came(tmp_path: Path) -> None:
    """DECISIONS.csv repeats each record's text, quoting and all, then the decision."""
    events = tmp_path / "events.csv"
    quoted = f'{at(0)},E1,"Gangnam, 2F",R1,"{number(1)}",BILLING_INQUIRY,,true'
    events.write_text(",".join(EVENT_COLUMNS) + "\n" + quoted + "\n", encoding="utf-8")
    out = tmp_path / "decisions.csv"
    Replayer(policy("")).run(events, out)
    assert out.read_text(encoding="utf-8").splitlines()[1] == quoted + ",allow,,"


# -- rows that cannot be replayed, rows refused before the guard ------------------------------


def test_bad_rows_fail_the_run_by_line_and_leave_no_decisions(tmp_path: Path) -> None:
    """Unreadable time, unsorted time, a bad ``found`` and a wrong column count are all listed."""
    rows: list[list[str]] = [
        event(0),
        ["yesterday", "E1", "S1", "R1", "01012345678", "BILLING_INQUIRY", "", "true"],
        event(60),
        event(30),
        event(90, found="maybe"),
        event(120)[:7],
        ["2026-10-01T09:03:00", "E1", "S1", "R1", "01012345678", "BILLING_INQUIRY", "", "true"],
        event(240),
    ]
    events = write_events(tmp_path / "events.csv", rows)
    out = tmp_path / "decisions.csv"
    with pytest.raises(ReplayFailed) as failed:
        Replayer(policy(RATE_2_PER_MINUTE)).run(events, out)
    assert [row.line for row in failed.value.rows] == [3, 5, 6, 7, 8]
    assert "yesterday" in failed.value.rows[0].message
    assert "sorted" in failed.value.rows[1].message
    assert "maybe" in failed.value.rows[2].message
    assert "columns" in failed.value.rows[3].message
    assert "offset" in failed.value.rows[4].message
    assert list(tmp_path.iterdir()) == [events]


def test_a_wrong_header_fails_before_any_row(tmp_path: Path) -> None:
    """A file that is not EVENTS.csv is named as such, on line 1."""
    events = tmp_path / "events.csv"
    events.write_text("time,who,number\n2026-10-01T09:00:00+09:00,E1,01012345678\n")
    with pytest.raises(ReplayFailed) as failed:
        Replayer(policy(RATE_2_PER_MINUTE)).run(events, tmp_path / "decisions.csv")
    assert [row.line for row in failed.value.rows] == [1]
    assert list(tmp_path.iterdir()) == [events]


def test_rows_the_proxy_refuses_before_the_guard_are_denied_with_the_cause(
    tmp_path: Path,
) -> None:
    """Unknown reasons, missing references and malformed numbers are denied, and not counted."""
    rows = [
        event(0, number_=number(1), reason="PROSPECTING"),
        event(1, number_="010-1234"),
        event(2, number_=number(3), reason="CORPORATE_ACCOUNT"),
        event(3, number_=number(4)),
        event(4, number_=number(5), reason="CORPORATE_ACCOUNT", reference="CORP-004211"),
        event(5, number_=number(6)),
    ]
    assert outcomes(replay(tmp_path, RATE_2_PER_MINUTE, rows)) == [
        ("deny", "unknown-reason", ""),
        ("deny", "bad-number", ""),
        ("deny", "missing-reference", ""),
        ("allow", "", ""),
        ("allow", "", ""),
        ("deny", "per-minute", ""),
    ]


# -- lockouts ------------------------------------------------------------------------------------

BURST_LOCK = """
[[rules]]
name = "burst"
kind = "rate"
window = "10m"
limit = 3
action = "lock"

[[rules]]
name = "watch"
kind = "rate"
window = "10m"
limit = 1
action = "flag"
"""


def test_a_replay_makes_no_reference_cycles(tmp_path: Path) -> None:
    """Replay runs with the cyclic garbage collector off, which is safe only while deciding
    events leaves no cycles behind: a simulated chain (attackers, lockouts, group rules) plus
    rows refused before the guard, and afterwards the collector finds nothing to free."""
    events = simulate(tmp_path, seed=6, employees=30, days=3)
    with events.open("a", encoding="utf-8") as handle:
        last = "2026-12-31T23:59:59+09:00"
        handle.write(f"{last},E1,S1,R1,0101234,BILLING_INQUIRY,,false,\n")  # malformed number
        handle.write(f"{last},E1,S1,R1,01012345678,NO_SUCH_REASON,,true,\n")  # unknown reason
    replayer = Replayer(load_policy(ROOT / "config" / "policy.toml"))
    gc.collect()
    summary = replayer.run(events, tmp_path / "decisions.csv")
    assert gc.collect() == 0
    assert gc.isenabled()
    assert summary.lockouts_by_rule
    assert {"bad-number", "unknown-reason"} <= set(summary.refused_before_guard)


def test_one_replayer_carries_on_from_one_file_to_the_next(tmp_path: Path) -> None:
    """The red-team replays a month a day at a time with one Replayer: a simulated chain
    split into two files decides every row as the whole file does, counters, peer tallies and
    lockouts carrying over."""
    events = simulate(tmp_path, seed=8, employees=30, days=4)
    header, *rows = events.read_text(encoding="utf-8").splitlines()
    half = len(rows) // 2
    first, second = tmp_path / "first.csv", tmp_path / "second.csv"
    first.write_text("\n".join([header, *rows[:half]]) + "\n", encoding="utf-8")
    second.write_text("\n".join([header, *rows[half:]]) + "\n", encoding="utf-8")
    shipped = load_policy(ROOT / "config" / "policy.toml")
    Replayer(shipped).run(events, tmp_path / "whole.csv")
    split = Replayer(shipped)
    split.run(first, tmp_path / "one.csv")
    split.run(second, tmp_path / "two.csv")
    whole = (tmp_path / "whole.csv").read_text(encoding="utf-8").splitlines()
    one = (tmp_path / "one.csv").read_text(encoding="utf-8").splitlines()
    two = (tmp_path / "two.csv").read_text(encoding="utf-8").splitlines()
    assert one + two[1:] == whole
    assert any(",deny," in line for line in two)


def test_replay_keeps_every_counter_whatever_the_memory_budget(tmp_path: Path) -> None:
    """memory_max_keys bounds the live memory store, which sheds the keys closest to expiry;
    a backtest must not: the first clerk's counter outlives 1,200 others' under a 1,000-key
    budget, and their second customer in the hour is refused."""
    rules = """
[[rules]]
name = "one-customer"
kind = "distinct"
window = "1h"
limit = 1
"""
    rows = [event(i * 0.5, f"E{i}", number(i)) for i in range(1200)]
    rows.append(event(700, "E0", number(9999)))
    decided = replay(tmp_path, rules, rows, tail="[store]\nmemory_max_keys = 1000\n")
    assert outcomes(decided)[:1200] == [("allow", "", "")] * 1200
    assert outcomes(decided)[1200] == ("deny", "one-customer", "")


def test_locked_lookups_are_counted_but_not_judged(tmp_path: Path) -> None:
    """While locked: refused as ``locked``, no flags raised, yet every attempt still counts."""
    tail = '[lockout]\nduration = "2m"\n'
    seconds = (0, 10, 20, 30, 60, 90, 610)
    rows = [event(second, number_=number(second)) for second in seconds]
    assert outcomes(replay(tmp_path, BURST_LOCK, rows, tail)) == [
        ("allow", "", ""),
        ("allow", "", "watch"),
        ("allow", "", "watch"),
        ("deny", "burst", "watch"),
        ("deny", "locked", ""),
        ("deny", "locked", ""),
        # The lock has ended, but the two attempts made while locked are still in the window:
        # 20, 30, 60, 90 and 610 are five lookups in ten minutes.
        ("deny", "burst", "watch"),
    ]


def test_a_locked_colluder_still_exposes_the_group(tmp_path: Path) -> None:
    """A locked employee's lookups still fire group rules, which lock the other culprits."""
    rules = """
[[rules]]
name = "new-lines"
kind = "rate"
window = "10m"
limit = 2
action = "lock"
reasons = ["NEW_SUBSCRIPTION"]

[[rules]]
name = "region-block"
kind = "block"
scope = "region"
window = "1d"
block_digits = 7
limit = 3
member_min = 2
action = "lock"
"""
    rows = [
        *(event(s, "A", number(s, 9000), reason="NEW_SUBSCRIPTION") for s in (0, 1, 2)),
        event(10, "B", number(1), store="S2"),
        event(20, "B", number(2), store="S2"),
        event(30, "A", number(3)),
        event(40, "A", number(4)),  # the block's fourth number: fires, while A is locked
        event(50, "B", number(9, 5555), store="S2"),
    ]
    out = tmp_path / "decisions.csv"
    summary = Replayer(policy(rules)).run(write_events(tmp_path / "events.csv", rows), out)
    with out.open(newline="", encoding="utf-8") as handle:
        decided = list(csv.reader(handle))[1:]
    assert outcomes(decided) == [
        ("allow", "", ""),
        ("allow", "", ""),
        ("deny", "new-lines", ""),
        ("allow", "", ""),
        ("allow", "", ""),
        ("deny", "locked", ""),
        ("deny", "locked", ""),
        ("deny", "locked", ""),
    ]
    assert summary.employees["B"].locked_by == "region-block"
    assert summary.employees["B"].locked_at == at(40)
    assert summary.lockouts_by_rule == {"new-lines": 1, "region-block": 1}


# -- the command -----------------------------------------------------------------------------------


def test_the_command_writes_decisions_and_a_summary_json(tmp_path: Path) -> None:
    """``lookup-proxy replay`` exits 0 and its summary counts rules, refusals, locks, flags."""
    rules = tmp_path / "policy.toml"
    rules.write_text(HEAD + BURST_LOCK + '[lockout]\nduration = "until-unlocked"\n')
    rows = [
        event(0, "E1", number(0)),
        event(5, "E2", number(50), reason="PROSPECTING"),
        event(10, "E1", number(10)),
        event(20, "E1", number(20)),
        event(30, "E1", number(30)),
        event(40, "E1", number(40)),
        event(50, "E2", "not a number"),
    ]
    events = write_events(tmp_path / "events.csv", rows)
    out, summary_json = tmp_path / "decisions.csv", tmp_path / "summary.json"
    done = run_cli(
        "replay",
        *("--config", str(rules), "--events", str(events), "--out", str(out)),
        *("--summary-json", str(summary_json), "--no-progress"),
    )
    assert done.returncode == 0, done.stderr
    assert "Replayed 7 events" in done.stdout
    assert "compiled)" in done.stdout.splitlines()[0]
    with out.open(newline="", encoding="utf-8") as handle:
        decided = list(csv.reader(handle))
    assert decided[0] == list(DECISION_COLUMNS)
    assert [row[8:] for row in decided[1:]] == [
        ["allow", "", ""],
        ["deny", "unknown-reason", ""],
        ["allow", "", "watch"],
        ["allow", "", "watch"],
        ["deny", "burst", "watch"],
        ["deny", "locked", ""],
        ["deny", "bad-number", ""],
    ]
    summary = json.loads(summary_json.read_text())
    assert summary["events"] == 7
    assert summary["compiled"] is True  # the test install compiles (tests/test_native.py)
    assert (summary["allowed"], summary["denied"]) == (3, 4)
    assert summary["denials_by_rule"] == {"burst": 1, "locked": 1}
    assert summary["flags_by_rule"] == {"watch": 3}
    assert summary["hits_by_rule"] == {"burst": 1, "watch": 3}
    assert summary["lockouts_by_rule"] == {"burst": 1}
    assert summary["refused_before_guard"] == {
        "unknown-reason": {"count": 1, "lines": [3]},
        "bad-number": {"count": 1, "lines": [8]},
    }
    assert summary["employees_locked"] == {"E1": {"at": at(30), "rule": "burst", "denied": 2}}
    assert summary["employees_flagged"] == {"E1": {"first_at": at(10), "flags": {"watch": 3}}}


def test_the_command_fails_with_exit_2_naming_the_lines(tmp_path: Path) -> None:
    """A bad file is a plain error on stderr with each line, exit 2, and no DECISIONS.csv."""
    events = write_events(tmp_path / "events.csv", [event(60), event(0), event(90, found="")])
    out = tmp_path / "decisions.csv"
    done = run_cli("replay", "--events", str(events), "--out", str(out), "--no-progress")
    assert done.returncode == 2
    assert "line 3:" in done.stderr and "line 4:" in done.stderr
    assert "Traceback" not in done.stderr
    assert not out.exists()


# -- the same engine as the live proxy ---------------------------------------------------------

LIVE_LIKE = """
[[rules]]
name = "burst"
kind = "rate"
window = "5m"
limit = 12

[[rules]]
name = "distinct-hour"
kind = "distinct"
window = "1h"
limit = 25
exempt_reasons = ["CORPORATE_ACCOUNT"]

[[rules]]
name = "typing"
kind = "misses"
window = "1h"
limit = 5
ratio = 0.5
action = "lock"

[[rules]]
name = "sequential"
kind = "sequential"
window = "1h"
distance = 20
limit = 4
action = "lock"
exempt_reasons = ["CORPORATE_ACCOUNT"]

[[rules]]
name = "block"
kind = "block"
window = "1d"
limit = 6
action = "lock"
exempt_reasons = ["CORPORATE_ACCOUNT"]

[[rules]]
name = "region-block"
kind = "block"
scope = "region"
window = "7d"
limit = 9
member_min = 2
action = "lock"
exempt_reasons = ["CORPORATE_ACCOUNT"]

[[rules]]
name = "store-block"
kind = "block"
scope = "store"
window = "1d"
limit = 5
member_min = 2
action = "flag"

[[rules]]
name = "slow-probe"
kind = "misses"
window = "7d"
limit = 6
ratio = 0.2
action = "flag"

[[rules]]
name = "trial"
kind = "rate"
window = "1m"
limit = 2
mode = "shadow"

[lockout]
duration = "until-unlocked"
"""


def simulated_rows(seed: int, count: int) -> list[list[str]]:
    """Honest clerks, scanners, a block shuffler, a typist and two colluders, interleaved."""
    rng = random.Random(seed)
    customers = [f"010{rng.randrange(10**8):08d}" for _ in range(150)]
    staff = {
        "H1": ("S1", "R1"),
        "H2": ("S2", "R1"),
        "H3": ("S3", ""),
        "SEQ": ("S1", "R1"),
        "SHUF": ("S2", "R1"),
        "TYPE": ("S3", ""),
        "C1": ("S1", "R1"),
        "C2": ("S2", "R1"),
    }
    cursor = {"SEQ": 4000, "C1": 0, "C2": 0}

    def number_for(who: str) -> tuple[str, bool]:
        if who == "SEQ":
            cursor["SEQ"] += rng.choice((1, 2, 3))
            return number(cursor["SEQ"] % 10_000, 4321), rng.random() < 0.2
        if who == "SHUF":
            return number(rng.randrange(10_000), 5678), rng.random() < 0.2
        if who == "TYPE":
            return f"010{rng.randrange(10**8):08d}", rng.random() < 0.1
        if who in ("C1", "C2"):
            cursor[who] += 1
            return number(rng.randrange(10_000), 2468), rng.random() < 0.2
        return rng.choice(customers), rng.random() < 0.9

    def formatted(canonical: str) -> str:
        return rng.choice(
            (
                canonical,
                f"{canonical[:3]}-{canonical[3:7]}-{canonical[7:]}",
                f"+82 {canonical[1:3]}-{canonical[3:7]}-{canonical[7:]}",
            )
        )

    rows: list[list[str]] = []
    seconds = 0.0
    for _ in range(count):
        seconds += rng.uniform(1, 40)
        who = rng.choice(list(staff))
        store, region = staff[who]
        canonical, found = number_for(who)
        reason, reference = rng.choice(("BILLING_INQUIRY", "NEW_SUBSCRIPTION")), ""
        if who.startswith("H") and rng.random() < 0.05:
            reason, reference = "CORPORATE_ACCOUNT", f"CORP-{rng.randrange(10**6):06d}"
        raw = formatted(canonical) if rng.random() > 0.01 else "12345"
        rows.append([at(seconds), who, store, region, raw, reason, reference, str(found).lower()])
    return rows


async def decide_live(
    rules: Policy, store: GuardStore, rows: list[list[str]]
) -> list[tuple[str, str, str]]:
    """Drive the proxy's steps (justify, target, guard, learn) over ``rows``, as it serves them."""
    clock = ManualClock(0.0)
    guard = Guard(rules, store, clock, GuardMetrics(CollectorRegistry()))
    catalogue = ReasonCatalogue(rules.reasons)
    decided: list[tuple[str, str, str]] = []
    for index, row in enumerate(rows):
        clock.set(parse_timestamp(row[0]))
        employee = Employee(row[1], row[2], row[3] or None, frozenset())
        try:
            reason = catalogue.justify(employee, row[5], row[6]).reason
            canonical = normalise_number(row[4], rules.numbers)
        except Refusal as refusal:
            decided.append(("deny", refusal.cause, ""))
            continue
        lookup = Lookup(f"live-{index}", employee, reason, canonical)
        decision = await guard.decide(lookup)
        if decision.allowed:
            await guard.learn(lookup, row[7] == "true")
        verdict = "allow" if decision.allowed else "deny"
        decided.append((verdict, decision.rule or "", ";".join(decision.flags)))
    return decided


async def test_replay_decides_as_the_live_guard_does(tmp_path: Path, store: GuardStore) -> None:
    """Row for row, replay's decisions are the live engine's, on memory, Redis and Cluster."""
    rows = simulated_rows(seed=2021, count=1500)
    replayed = outcomes(replay(tmp_path, LIVE_LIKE, rows))
    assert replayed == await decide_live(policy(LIVE_LIKE), store, rows)
    rules_seen = {rule for _, rule, _ in replayed}
    assert {"locked", "bad-number", "distinct-hour"} <= rules_seen
    assert len(rules_seen & {"sequential", "block", "typing", "region-block"}) >= 3
    assert {flag for _, _, flags in replayed for flag in flags.split(";") if flag} == {
        "store-block",
        "trial",
    }


def test_a_roster_gives_employees_their_roles(tmp_path: Path) -> None:
    """Role-limited reasons are judged as live: refused without the role, allowed with it."""
    rules = tmp_path / "policy.toml"
    rules.write_text(
        HEAD.replace(
            'reference_pattern = "CORP-[0-9]{6}"',
            'reference_pattern = "CORP-[0-9]{6}"\nroles = ["corporate-sales"]',
        )
    )
    rows = [
        event(0, "E1", number(0), reason="CORPORATE_ACCOUNT", reference="CORP-000001"),
        event(5, "E2", number(1), reason="CORPORATE_ACCOUNT", reference="CORP-000001"),
    ]
    events = write_events(tmp_path / "events.csv", rows)
    roster = tmp_path / "roster.csv"
    roster.write_text("employee,roles\nE1,clerk;corporate-sales\nE2,clerk\n")
    _, decided = _replay_with_roster(rules, events, roster, tmp_path / "decisions.csv")
    assert [row[8:10] for row in decided[1:]] == [["allow", ""], ["deny", "reason-not-permitted"]]


def _replay_with_roster(
    rules: Path, events: Path, roster: Path, out: Path
) -> tuple[subprocess.CompletedProcess[str], list[list[str]]]:
    """``lookup-proxy replay`` with a roster, as security staff run it: the finished command
    (exit 0 asserted) and DECISIONS.csv's rows, header first."""
    done = run_cli(
        "replay",
        *("--config", str(rules), "--events", str(events), "--out", str(out)),
        *("--roster", str(roster), "--no-progress"),
    )
    assert done.returncode == 0, done.stderr
    with out.open(newline="", encoding="utf-8") as handle:
        return done, list(csv.reader(handle))


def test_a_malformed_roster_fails_naming_the_line(tmp_path: Path) -> None:
    """A roster row without its roles column is an error with its line number."""
    roster = tmp_path / "roster.csv"
    roster.write_text("employee,roles\nE1,clerk\nE2\n")
    with pytest.raises(ReplayFailed) as caught:
        load_roster(roster)
    assert [row.line for row in caught.value.rows] == [3]
    roster.write_text("employee,accounts\nE1,CORP-000001\n")
    with pytest.raises(ReplayFailed, match=r"employee,roles\[,accounts\]"):
        load_accounts(roster)


def test_the_roster_s_accounts_are_the_tokens_accounts(tmp_path: Path) -> None:
    """With ``[auth.claims] accounts``, a rep's corporate lookups take only the references
    the roster's accounts column gives them, as tokens carrying the claim would."""
    rules = tmp_path / "policy.toml"
    head = HEAD.replace(
        'reference_pattern = "CORP-[0-9]{6}"',
        'reference_pattern = "CORP-[0-9]{6}"\naccounts = "own"',
    )
    rules.write_text(
        head + '\n[accounts]\nfield = "account.reference"\n\n[auth.claims]\naccounts = "accounts"\n'
    )
    rows = [
        event(0, "E1", number(0), reason="CORPORATE_ACCOUNT", reference="CORP-000001"),
        event(5, "E1", number(1), reason="CORPORATE_ACCOUNT", reference="CORP-000002"),
        event(9, "E2", number(2), reason="CORPORATE_ACCOUNT", reference="CORP-000001"),
    ]
    events = write_events(tmp_path / "events.csv", rows)
    roster = tmp_path / "roster.csv"
    roster.write_text("employee,roles,accounts\nE1,clerk,CORP-000001;CORP-000003\nE2,clerk,\n")
    assert load_accounts(roster) == {"E1": {"CORP-000001", "CORP-000003"}, "E2": frozenset()}
    assert load_roster(roster) == {"E1": {"clerk"}, "E2": {"clerk"}}
    done, decided = _replay_with_roster(rules, events, roster, tmp_path / "decisions.csv")
    assert [row[8:10] for row in decided[1:]] == [
        ["allow", ""],
        ["deny", "account-not-assigned"],
        ["deny", "account-not-assigned"],
    ]
    assert "warning: the policy takes references" not in done.stderr
    # A roster without the column: every such lookup is refused, and the command says why.
    roster.write_text("employee,roles\nE1,clerk\nE2,clerk\n")
    done, decided = _replay_with_roster(rules, events, roster, tmp_path / "decisions.csv")
    assert "warning: the policy takes references for CORPORATE_ACCOUNT only" in done.stderr
    assert "employee,roles,accounts" in done.stderr
    assert {row[9] for row in decided[1:]} == {"account-not-assigned"}


ACCOUNTS_TAIL = """
[accounts]
field = "account.reference"

[[rules]]
name = "misses"
kind = "misses"
window = "1h"
limit = 1
action = "deny"
"""


def test_the_account_column_withholds_business_lines_as_the_live_proxy_does(
    tmp_path: Path,
) -> None:
    """EVENTS.csv's optional ``account`` names the business account a found record names;
    with the policy's ``[accounts]``, replay withholds what the live proxy would (403
    ``business-line`` for a reason that sees none, ``reference-mismatch`` for an own-account
    reason), learns a mismatch as a miss and a business line as found, and counts both as
    denied; a miss and a consumer's line under an everyday reason pass."""
    rules = HEAD.replace(
        'reference_pattern = "CORP-[0-9]{6}"',
        'reference_pattern = "CORP-[0-9]{6}"\naccounts = "own"',
    )
    checked = parse_policy(rules + ACCOUNTS_TAIL)
    corp = {"reason": "CORPORATE_ACCOUNT", "reference": "CORP-000001"}
    rows = [
        [*event(0, "E1", number(0)), ""],
        [*event(1, "E1", number(1)), "CORP-000001"],
        [*event(2, "E1", number(2)), "CORP-000002"],
        [*event(3, "E1", number(3)), ""],
        [*event(10, "E2", number(10), **corp), "CORP-000001"],
        [*event(11, "E2", number(11), **corp), "CORP-000002"],
        [*event(12, "E2", number(12), **corp), ""],
        [*event(13, "E2", number(13), **corp, found="false"), ""],
    ]
    events = tmp_path / "events.csv"
    with events.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(ACCOUNT_EVENT_COLUMNS)
        writer.writerows(rows)
    out = tmp_path / "decisions.csv"
    summary = Replayer(checked).run(events, out)
    with out.open(newline="", encoding="utf-8") as handle:
        header, *decided = list(csv.reader(handle))
    assert header == [*ACCOUNT_EVENT_COLUMNS, "decision", "rule", "flags"]
    assert [row[:9] for row in decided] == rows
    assert [tuple(row[9:11]) for row in decided] == [
        ("allow", ""),
        ("deny", "business-line"),
        ("deny", "business-line"),
        # Two business lines learned as found: E1 has no miss for the misses rule.
        ("allow", ""),
        ("allow", ""),
        ("deny", "reference-mismatch"),
        ("deny", "reference-mismatch"),
        # Two mismatches learned as misses: the rule refuses E2's next lookup.
        ("deny", "misses"),
    ]
    assert summary.withheld == {"business-line": 2, "reference-mismatch": 2}
    assert (summary.allowed, summary.denied, summary.accounts_checked) == (3, 5, True)
    assert summary.employees["E1"].denied == 2 and summary.employees["E2"].denied == 3
    assert "business-line: 2" in summary.render()
    assert summary.as_json()["withheld"] == {"business-line": 2, "reference-mismatch": 2}
    # Without the column the same policy shows every record, and the summary says so.
    plain = Replayer(checked).run(
        write_events(tmp_path / "plain.csv", [row[:8] for row in rows]), out
    )
    assert (plain.withheld, plain.accounts_checked, plain.denied) == ({}, False, 0)
    assert "has no account column: every found record was shown" in plain.render()
    # A policy without [accounts] reads the column and checks nothing.
    unchecked = Replayer(policy("")).run(events, out)
    assert (unchecked.withheld, unchecked.accounts_checked, unchecked.denied) == ({}, None, 0)


def test_replay_warns_when_the_policy_checks_accounts_and_the_events_do_not_name_them(
    tmp_path: Path,
) -> None:
    """``lookup-proxy replay`` says on stderr that business lines were all shown when the
    policy has ``[accounts]`` and EVENTS.csv no ``account`` column; with it, no warning."""
    rules = tmp_path / "policy.toml"
    rules.write_text(HEAD + ACCOUNTS_TAIL, encoding="utf-8")
    plain = write_events(tmp_path / "plain.csv", [event(0)])
    named = tmp_path / "named.csv"
    named.write_text(",".join(ACCOUNT_EVENT_COLUMNS) + "\n" + ",".join([*event(0), ""]) + "\n")
    for events, warned in ((plain, True), (named, False)):
        done = run_cli(
            "replay",
            *("--config", str(rules), "--events", str(events)),
            *("--out", str(tmp_path / "decisions.csv"), "--no-progress"),
        )
        assert done.returncode == 0, done.stderr
        assert ("has no account column naming the account" in done.stderr) is warned
    bad = tmp_path / "bad.csv"
    bad.write_text(",".join([*EVENT_COLUMNS, "accounts"]) + "\n")
    with pytest.raises(ReplayFailed, match=r"found\[,account\]"):
        Replayer(policy("")).run(bad, tmp_path / "decisions.csv")
