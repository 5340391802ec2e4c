"""The traffic simulator: reproducible, contract-shaped, and faithful to DESIGN.md's traffic."""

from __future__ import annotations

import csv
import dataclasses
import itertools
import random
import re
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

import simulate  # noqa: E402
from sim_model import (  # noqa: E402
    EMPLOYEE_HEADER,
    EVENT_HEADER,
    INFORMED_THREATS,
    REASONS,
    THREATS,
    TRUTH_HEADER,
    canonical,
    format_number,
)

CONFIG = simulate.SimConfig(
    seed=7, employees=80, days=10, attackers_per_class=1, store_customers=300
)


@dataclass
class Run:
    """The three files of one simulator run, read back."""

    events_path: Path
    truth_path: Path
    events: list[dict[str, str]]
    truth: list[dict[str, str]]
    employees: list[dict[str, str]]
    headers: tuple[list[str], list[str], list[str]]


def _read(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        rows = list(reader)
        return list(reader.fieldnames or []), rows


def _run(directory: Path, cfg: simulate.SimConfig = CONFIG) -> Run:
    directory.mkdir(parents=True, exist_ok=True)
    events_path, truth_path = directory / "EVENTS.csv", directory / "TRUTH.csv"
    simulate.simulate(cfg, events_path, truth_path)
    events_header, events = _read(events_path)
    truth_header, truth = _read(truth_path)
    employees_header, employees = _read(directory / "TRUTH.employees.csv")
    return Run(
        events_path,
        truth_path,
        events,
        truth,
        employees,
        (events_header, truth_header, employees_header),
    )


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    """One small simulated period shared by the read-only tests."""
    return _run(tmp_path_factory.mktemp("sim"))


def _style(number: str) -> str:
    if number.startswith("+82 "):
        return "intl_dashed"
    if number.startswith("+82"):
        return "intl_plain"
    if " " in number:
        return "spaced"
    return "dashed" if "-" in number else "plain"


def _one_edit_apart(a: str, b: str) -> bool:
    diffs = [i for i in range(len(a)) if a[i] != b[i]]
    if len(diffs) == 1:
        return True
    return (
        len(diffs) == 2
        and diffs[1] == diffs[0] + 1
        and a[diffs[0]] == b[diffs[1]]
        and a[diffs[1]] == b[diffs[0]]
    )


def test_same_seed_writes_identical_files(run: Run, tmp_path: Path) -> None:
    """A seed reproduces the run byte for byte, so a backtest can be repeated and diffed."""
    again = _run(tmp_path / "again")
    for name in ("EVENTS.csv", "TRUTH.csv", "TRUTH.employees.csv"):
        first = (run.events_path.parent / name).read_bytes()
        assert first == (again.events_path.parent / name).read_bytes(), name


def test_another_seed_writes_other_traffic(run: Run, tmp_path: Path) -> None:
    """Changing the seed changes the traffic, so seeds are independent samples."""
    other = _run(tmp_path / "other", dataclasses.replace(CONFIG, seed=8))
    assert other.events_path.read_bytes() != run.events_path.read_bytes()


def test_headers_follow_the_contracts(run: Run) -> None:
    """The files carry exactly the columns replay and the scorer expect."""
    assert run.headers == (list(EVENT_HEADER), list(TRUTH_HEADER), list(EMPLOYEE_HEADER))


def test_every_event_is_well_formed(run: Run) -> None:
    """Each field has the shape DESIGN.md's replay contract describes."""
    for event in run.events:
        moment = datetime.fromisoformat(event["timestamp"])
        assert moment.utcoffset() == timedelta(hours=9)
        assert re.fullmatch(r"E\d{5}", event["employee"])
        assert re.fullmatch(r"S\d{3}", event["store"])
        assert re.fullmatch(r"R\d{2}", event["region"])
        assert len(canonical(event["number"])) == 11
        assert event["reason"] in REASONS
        if event["reason"] == "CORPORATE_ACCOUNT":
            assert re.fullmatch(r"CORP-\d{6}", event["reference"])
        else:
            assert event["reference"] == ""
        assert event["found"] in ("true", "false")


def test_timestamps_are_sorted(run: Run) -> None:
    """Replay needs events in time order across the whole file."""
    moments = [datetime.fromisoformat(e["timestamp"]) for e in run.events]
    assert moments == sorted(moments)
    assert moments[0].date() == CONFIG.start
    assert moments[-1].date() <= CONFIG.start + timedelta(days=CONFIG.days - 1)


def test_truth_is_row_aligned_with_events(run: Run) -> None:
    """Truth row i describes event row i, and agrees with the roster."""
    roster = {e["employee"]: e for e in run.employees}
    assert len(run.truth) == len(run.events)
    for index, (event, truth) in enumerate(zip(run.events, run.truth, strict=True), start=1):
        assert truth["row"] == str(index)
        assert truth["employee"] == event["employee"]
        person = roster[truth["employee"]]
        assert truth["actor"] == person["role"]
        assert (person["store"], person["region"]) == (event["store"], event["region"])
        assert truth["threat"] in ("", person["threat"])


def test_every_number_style_is_present(run: Run) -> None:
    """All five spellings reach the proxy, from honest clerks and attackers alike."""
    honest = Counter(
        _style(e["number"]) for e, t in zip(run.events, run.truth, strict=True) if not t["threat"]
    )
    malicious = Counter(
        _style(e["number"]) for e, t in zip(run.events, run.truth, strict=True) if t["threat"]
    )
    styles = {"plain", "dashed", "spaced", "intl_dashed", "intl_plain"}
    assert set(honest) == styles
    assert set(malicious) == styles
    # Clerks mostly type the two everyday spellings; attackers spread across all five.
    assert (honest["plain"] + honest["dashed"]) / sum(honest.values()) > 0.85
    assert malicious["intl_plain"] / sum(malicious.values()) > 0.1


def test_format_number_spells_every_style() -> None:
    """Each spelling reads back as the same canonical number."""
    spelled = [format_number("01012345678", style) for style in range(5)]
    assert spelled == [
        "01012345678",
        "010-1234-5678",
        "010 1234 5678",
        "+82 10-1234-5678",
        "+821012345678",
    ]
    assert {canonical(s) for s in spelled} == {"01012345678"}


def test_every_threat_class_is_present(run: Run) -> None:
    """Each class from the threat model has attackers and malicious lookups."""
    assert {t["threat"] for t in run.truth if t["threat"]} == set(THREATS)
    attackers = [e for e in run.employees if e["role"] == "attacker"]
    assert {e["threat"] for e in attackers} == set(THREATS)
    first_malicious: dict[str, str] = {}
    for event, truth in zip(run.events, run.truth, strict=True):
        if truth["threat"]:
            first_malicious.setdefault(event["employee"], event["timestamp"][:10])
    for attacker in attackers:
        # The attack starts on the attacker's first working day in the opening week or so.
        assert attacker["attack_start"] == first_malicious[attacker["employee"]]
        start = date.fromisoformat(attacker["attack_start"])
        assert start < CONFIG.start + timedelta(days=CONFIG.attack_start_within + 4)


def test_colluders_share_a_region_across_stores(run: Run) -> None:
    """A collusion group is 3-5 employees of one region, each in a different store."""
    members = [e for e in run.employees if e["threat"] == "collusion"]
    assert 3 <= len(members) <= 5
    assert len({m["region"] for m in members}) == 1
    assert len({m["store"] for m in members}) == len(members)


def test_attackers_use_only_catalogue_reasons(run: Run) -> None:
    """Attackers hide behind plausible reasons; there is no prospecting code to use."""
    reasons = {e["reason"] for e, t in zip(run.events, run.truth, strict=True) if t["threat"]}
    assert reasons <= set(REASONS)


def test_found_is_a_function_of_the_number(run: Run) -> None:
    """The same number always gets the same answer, as a real backend would give."""
    answers: dict[str, set[str]] = defaultdict(set)
    for event in run.events:
        answers[canonical(event["number"])].add(event["found"])
    assert all(len(values) == 1 for values in answers.values())
    book = simulate.World(CONFIG).book
    sample = random.Random(1).sample(sorted(answers), 500)
    assert all((answers[n] == {"true"}) == book.found(n) for n in sample)


@pytest.mark.parametrize("share", [1 / 7, 0.3])
def test_customer_share_matches_configuration(share: float) -> None:
    """Random numbers are customers at the configured rate, as a random-typing attacker sees."""
    rng = random.Random(3)
    numbers = [f"010{rng.randint(20_000_000, 99_999_999):08d}" for _ in range(100_000)]
    hits = sum(simulate.is_customer(n, seed=5, share=share) for n in numbers)
    assert hits / len(numbers) == pytest.approx(share, abs=0.005)


def test_is_customer_ignores_spelling_but_not_seed() -> None:
    """Membership keys on the canonical number and on the seed only."""
    spellings = [format_number("01034567890", style) for style in range(5)]
    assert len({simulate.is_customer(s, seed=1, share=0.5) for s in spellings}) == 1
    numbers = [f"010{n:08d}" for n in range(30_000_000, 30_000_200)]
    first = [simulate.is_customer(n, seed=1, share=0.5) for n in numbers]
    second = [simulate.is_customer(n, seed=2, share=0.5) for n in numbers]
    assert first != second


def test_honest_clerks_mostly_find_their_customers(run: Run) -> None:
    """Honest misses come only from walk-ins and typos, so most honest lookups are found."""
    honest = [e for e, t in zip(run.events, run.truth, strict=True) if t["actor"] == "honest"]
    found = sum(e["found"] == "true" for e in honest) / len(honest)
    assert 0.8 < found < 0.97


def test_corporate_runs_are_consecutive_and_found(run: Run) -> None:
    """A rep's corporate lookups come in runs of 5-30 consecutive found lines, one reference each."""
    series: dict[tuple[str, str], list[int]] = defaultdict(list)
    for event, truth in zip(run.events, run.truth, strict=True):
        if truth["actor"] == "corporate" and event["reason"] == "CORPORATE_ACCOUNT":
            assert event["found"] == "true"
            series[(event["employee"], event["reference"])].append(int(canonical(event["number"])))
    assert series
    lengths: list[int] = []
    for numbers in series.values():
        length = 1
        for previous, current in itertools.pairwise(numbers):
            if current == previous + 1:
                length += 1
            else:
                lengths.append(length)
                length = 1
        lengths.append(length)
    assert all(5 <= n <= 30 for n in lengths), lengths


def test_corporate_lines_are_customers_whatever_the_hash() -> None:
    """Business lines are found even where the keyed hash alone would say no."""
    account = simulate.corporate_accounts(CONFIG)[0]
    book = simulate.World(CONFIG).book
    lines = [f"010{account.first + i:08d}" for i in range(account.size)]
    assert all(book.found(n) for n in lines)
    assert not all(book.hashed(n) for n in lines)


def test_found_business_lines_name_their_account_and_nothing_else_does(run: Run) -> None:
    """EVENTS.csv's ``account`` is the reference of the business whose line a found record is
    (what the backend's record names at ``[accounts] field``), empty for every other row: a
    rep's runs name their reference, and no miss or consumer's line names one."""
    accounts = simulate.corporate_accounts(CONFIG)
    named = 0
    for event in run.events:
        line = int(canonical(event["number"])[3:])
        business = next((a for a in accounts if line in a.lines()), None)
        expected = business.reference if business and event["found"] == "true" else ""
        assert event["account"] == expected, event
        named += bool(expected)
        if event["reason"] == "CORPORATE_ACCOUNT" and event["found"] == "true" and expected:
            assert event["account"] == event["reference"]
    assert named > 0


def test_typos_are_retyped_within_seconds(run: Run) -> None:
    """Clerks mistype a digit or swap two, miss, and retype the found number seconds later."""
    last: dict[str, tuple[datetime, str, str]] = {}
    pairs = 0
    for event, truth in zip(run.events, run.truth, strict=True):
        if truth["threat"]:
            continue
        moment = datetime.fromisoformat(event["timestamp"])
        number = canonical(event["number"])
        before = last.get(event["employee"])
        if (
            before is not None
            and before[2] == "false"
            and event["found"] == "true"
            and moment - before[0] <= timedelta(seconds=15)
            and _one_edit_apart(before[1], number)
        ):
            pairs += 1
        last[event["employee"]] = (moment, number, event["found"])
    assert pairs >= 50


def test_same_customer_is_looked_up_again_within_a_visit(run: Run) -> None:
    """Clerks look the same customer up two or three times, minutes apart."""
    seen: dict[tuple[str, str], datetime] = {}
    repeats = 0
    for event, truth in zip(run.events, run.truth, strict=True):
        if truth["actor"] != "honest":
            continue
        moment = datetime.fromisoformat(event["timestamp"])
        key = (event["employee"], canonical(event["number"]))
        if key in seen and timedelta(minutes=1) <= moment - seen[key] <= timedelta(minutes=30):
            repeats += 1
        seen[key] = moment
    honest = sum(t["actor"] == "honest" for t in run.truth)
    assert repeats / honest > 0.15


def test_launch_day_triples_the_queue(run: Run) -> None:
    """The phone launch day is far busier than an ordinary day."""
    launch = simulate.World(CONFIG).launch
    per_day = Counter(
        (datetime.fromisoformat(e["timestamp"]).date() - CONFIG.start).days
        for e, t in zip(run.events, run.truth, strict=True)
        if t["actor"] == "honest"
    )
    others = [n for day, n in per_day.items() if day != launch]
    assert per_day[launch] > 2 * (sum(others) / len(others))


def test_slow_probes_stay_small_every_day(run: Run) -> None:
    """A slow prober never probes more than fifteen numbers a day, but probes every workday."""
    per_day: Counter[tuple[str, str]] = Counter(
        (e["employee"], e["timestamp"][:10])
        for e, t in zip(run.events, run.truth, strict=True)
        if t["threat"] == "slow_probe"
    )
    assert per_day
    assert max(per_day.values()) <= 15


def test_cli_writes_files_and_reports(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The command line writes all three files and summarises counts on stderr."""
    events, truth = tmp_path / "EVENTS.csv", tmp_path / "TRUTH.csv"
    status = simulate.main(
        [
            "--seed", "2", "--employees", "60", "--days", "3", "--start", "2026-10-05",
            "--out", str(events), "--truth", str(truth), "--attackers-per-class", "1",
            "--store-customers", "100",
        ]
    )  # fmt: skip
    assert status == 0
    assert (tmp_path / "TRUTH.employees.csv").exists()
    report = capsys.readouterr().err
    rows = len(events.read_text(encoding="utf-8").splitlines()) - 1
    assert f"{rows} events" in report
    assert all(threat in report for threat in THREATS)


def test_cli_refuses_more_attackers_than_staff(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Asking for more attackers than employees is a clear error, not a crash."""
    status = simulate.main(
        [
            "--seed", "1", "--employees", "40", "--days", "2",
            "--out", str(tmp_path / "E.csv"), "--truth", str(tmp_path / "T.csv"),
            "--attackers-per-class", "5",
        ]
    )  # fmt: skip
    assert status == 2
    assert "simulate: not enough employees" in capsys.readouterr().err


def test_roster_gives_roles_without_revealing_the_truth(run: Run) -> None:
    """EVENTS.roster.csv lists every employee's roles; only corporate reps may sell to business,
    and only reps work business accounts (the references their honest rows use)."""
    header, roster = _read(run.events_path.with_suffix(".roster.csv"))
    assert header == ["employee", "roles", "accounts"]
    roles = {row["employee"]: set(row["roles"].split(";")) for row in roster}
    accounts = {row["employee"]: set(filter(None, row["accounts"].split(";"))) for row in roster}
    assert set(roles) == {row["employee"] for row in run.employees}
    for employee in run.employees:
        expected = {"clerk", "corporate-sales"} if employee["role"] == "corporate" else {"clerk"}
        assert roles[employee["employee"]] == expected
        assert bool(accounts[employee["employee"]]) == (employee["role"] == "corporate")
    with run.events_path.open(newline="", encoding="utf-8") as handle:
        used = {
            (row["employee"], row["reference"])
            for row in csv.DictReader(handle)
            if row["reference"] and row["employee"] in accounts and accounts[row["employee"]]
        }
    assert used and all(reference in accounts[who] for who, reference in used)


def test_cli_plants_both_families_reading_the_policy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """By default the informed family is planted too, sized by the shipped policy."""
    events, truth = tmp_path / "EVENTS.csv", tmp_path / "TRUTH.csv"
    status = simulate.main(
        [
            "--seed", "2", "--employees", "70", "--days", "3", "--start", "2026-10-05",
            "--out", str(events), "--truth", str(truth), "--attackers-per-class", "1",
            "--store-customers", "100", "--attack-start-within", "1",
        ]
    )  # fmt: skip
    assert status == 0
    report = capsys.readouterr().err
    assert all(threat in report for threat in (*THREATS, *INFORMED_THREATS))
    _, employees = _read(tmp_path / "TRUTH.employees.csv")
    planted = {e["threat"] for e in employees if e["role"] == "attacker"}
    assert set(INFORMED_THREATS) <= planted


def test_cli_refuses_an_unknown_family_or_a_broken_policy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A family name or policy file that cannot be used stops the run with a clear message."""
    base = ["--seed", "1", "--out", str(tmp_path / "E.csv"), "--truth", str(tmp_path / "T.csv")]
    with pytest.raises(SystemExit) as stopped:
        simulate.main([*base, "--families", "classic,clever"])
    assert stopped.value.code == 2
    assert "--families takes classic, informed" in capsys.readouterr().err
    broken = tmp_path / "broken.toml"
    broken.write_text("[server]\nport = 'x'\n", encoding="utf-8")
    with pytest.raises(SystemExit):
        simulate.main([*base, "--policy", str(broken)])
    assert f"--policy: {broken}" in capsys.readouterr().err
