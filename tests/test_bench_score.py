"""The backtest scorer: right numbers on hand-built files, clear errors on broken ones."""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

import score  # noqa: E402
import simulate  # noqa: E402

EMPLOYEES = [
    ("E00001", "S001", "R01", "honest", "", ""),
    ("E00002", "S001", "R01", "corporate", "", ""),
    ("E00003", "S002", "R01", "attacker", "random_typing", "2026-10-01"),
    ("E00004", "S002", "R01", "attacker", "slow_probe", "2026-10-02"),
]
STORES = {e[0]: (e[1], e[2]) for e in EMPLOYEES}

# (timestamp, employee, threat, found, decision, rule, flags) for the "policy" file.
ROWS = [
    ("2026-10-01T10:00:00+09:00", "E00001", "", "true", "allow", "", ""),
    ("2026-10-01T10:01:00+09:00", "E00002", "", "true", "allow", "", ""),
    ("2026-10-01T10:02:00+09:00", "E00003", "random_typing", "true", "allow", "", ""),
    ("2026-10-01T10:03:00+09:00", "E00003", "random_typing", "false", "allow", "", "misses"),
    ("2026-10-01T10:04:00+09:00", "E00003", "random_typing", "true", "deny", "misses", ""),
    ("2026-10-02T10:00:00+09:00", "E00003", "random_typing", "true", "deny", "locked", ""),
    ("2026-10-02T11:00:00+09:00", "E00004", "", "true", "allow", "", ""),
    ("2026-10-02T12:00:00+09:00", "E00001", "", "false", "deny", "rate", ""),
    ("2026-10-10T12:00:00+09:00", "E00004", "slow_probe", "true", "allow", "", "slow"),
]


def _write(path: Path, header: Sequence[str], rows: Sequence[Sequence[object]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
    return path


EMPLOYEE_COLUMNS = ["employee", "store", "region", "role", "threat", "attack_start"]
DECISION_HEADER = [
    "timestamp", "employee", "store", "region", "number", "reason", "reference", "found",
    "decision", "rule", "flags",
]  # fmt: skip


def _truth(directory: Path, rows: Sequence[tuple[str, ...]] = ROWS) -> Path:
    roles = {e[0]: e[3] for e in EMPLOYEES}
    _write(directory / "TRUTH.employees.csv", EMPLOYEE_COLUMNS, EMPLOYEES)
    return _write(
        directory / "TRUTH.csv",
        ["row", "employee", "actor", "threat"],
        [(i, r[1], roles[r[1]], r[2]) for i, r in enumerate(rows, start=1)],
    )


def _decisions(
    path: Path, rows: Sequence[tuple[str, ...]], reasons: dict[int, str] | None = None
) -> Path:
    """DECISIONS.csv of ``rows``, every lookup BILLING_INQUIRY but those ``reasons`` names
    (by row index)."""
    reason = (reasons or {}).get
    return _write(
        path,
        DECISION_HEADER,
        [
            (t, e, *STORES[e], "01012345678", reason(i, "BILLING_INQUIRY"), "", found, d, r, f)
            for i, (t, e, _, found, d, r, f) in enumerate(rows)
        ],
    )


def _allow_all(rows: Sequence[tuple[str, ...]]) -> list[tuple[str, ...]]:
    return [(*r[:4], "allow", "", "") for r in rows]


@pytest.fixture
def report(tmp_path: Path) -> dict[str, Any]:
    """The hand-built scenario scored for a policy and for no guard at all."""
    truth = _truth(tmp_path)
    policy = _decisions(tmp_path / "policy.csv", ROWS)
    none = _decisions(tmp_path / "none.csv", _allow_all(ROWS))
    return score.summarise(score.score(truth, [("policy", policy), ("none", none)]))


def _threat(report: dict[str, Any], name: str) -> dict[str, Any]:
    return next(t for t in report["threats"] if t["threat"] == name)


def _attacker(report: dict[str, Any], employee: str) -> dict[str, Any]:
    return next(a for a in report["attackers"] if a["employee"] == employee)


def _checks(report: dict[str, Any], name: str) -> list[bool]:
    return [c["ok"] for c in report["verdicts"][name]["checks"]]


def test_disclosure_counts_found_and_allowed_malicious_rows(report: dict[str, Any]) -> None:
    """Only malicious lookups of found numbers that were allowed count as disclosed."""
    typing = _threat(report, "random_typing")
    assert (typing["malicious"], typing["no_guard"]) == (4, 3)
    assert typing["disclosed"] == {"policy": 1, "none": 3}
    assert typing["disclosed_pct_of_no_guard"]["policy"] == pytest.approx(33.333)
    total = _threat(report, "total")
    assert (total["malicious"], total["no_guard"], total["attackers"]) == (5, 4, 2)
    assert total["disclosed"] == {"policy": 2, "none": 4}
    assert total["max_per_attacker"] == {"policy": 1, "none": 3}
    assert total["no_guard_max_per_attacker"] == 3


def test_attacker_timeline_counts_days_from_attack_start(report: dict[str, Any]) -> None:
    """Days to flag, deny and lock are counted from each attacker's own start."""
    fast = _attacker(report, "E00003")["results"]["policy"]
    assert fast == {
        "disclosed": 1,
        "days_to_flag": 0,
        "days_to_deny": 0,
        "days_to_lock": 1,
        "locked": True,
    }
    slow = _attacker(report, "E00004")["results"]["policy"]
    assert (slow["days_to_flag"], slow["days_to_deny"], slow["locked"]) == (8, None, False)
    unguarded = _attacker(report, "E00003")["results"]["none"]
    assert (unguarded["days_to_flag"], unguarded["locked"]) == (None, False)


def test_honest_groups_are_reported_separately(report: dict[str, Any]) -> None:
    """Honest, corporate and attackers' own work are tallied apart."""
    staff = report["staff"]["policy"]
    assert staff["honest"]["lookups"] == 2
    assert staff["honest"]["denied"] == 1
    assert staff["honest"]["denied_pct"] == pytest.approx(50.0)
    assert staff["honest"]["flagged_employees"] == ["E00001"]
    assert staff["honest"]["locked_employees"] == []
    assert staff["honest"]["denied_by_rule"] == {"rate": 1}
    assert (staff["corporate"]["lookups"], staff["corporate"]["denied"]) == (1, 0)
    assert staff["attacker_honest"]["lookups"] == 1


def test_verdict_names_each_missed_target(report: dict[str, Any]) -> None:
    """The policy fails on disclosure, honest denials and flags, a late flag; passes the rest."""
    assert _checks(report, "policy") == [False, True, True, False, True, False, False]
    assert report["verdicts"]["policy"]["pass"] is False
    assert _checks(report, "none") == [False, True, True, True, True, False, True]


def test_a_policy_meeting_every_target_passes(tmp_path: Path) -> None:
    """Denying every malicious lookup on day 0 and nothing honest meets all seven targets."""
    deny = [(*r[:4], "deny", "misses", "") if r[2] else (*r[:4], "allow", "", "") for r in ROWS]
    # The slow prober is caught on its start day instead of day 8.
    rows = [
        *deny[:-1],
        ("2026-10-02T13:00:00+09:00", "E00004", "slow_probe", "true", "deny", "s", ""),
    ]
    truth = _truth(tmp_path, rows)
    report = score.summarise(score.score(truth, [("good", _decisions(tmp_path / "d.csv", rows))]))
    assert _checks(report, "good") == [True] * 7
    assert report["verdicts"]["good"]["pass"] is True


def test_locked_honest_employee_fails_the_verdict(tmp_path: Path) -> None:
    """An honest clerk denied with rule locked breaks the no-lockout promise."""
    rows = list(ROWS)
    rows[7] = (*rows[7][:4], "deny", "locked", "")
    truth = _truth(tmp_path)
    report = score.summarise(score.score(truth, [("p", _decisions(tmp_path / "d.csv", rows))]))
    assert report["staff"]["p"]["honest"]["locked_employees"] == ["E00001"]
    assert _checks(report, "p")[2] is False


def test_a_record_withheld_for_its_account_is_an_honest_denial_not_a_flag(
    tmp_path: Path,
) -> None:
    """A business line withheld from an honest clerk ([accounts]: ``business-line``) is a
    denied lookup but raises nothing for review, so it is no flag; an attacker's withheld probe
    is a refusal they see, which counts as noticed ("flagged or refused")."""
    rows = list(ROWS)
    rows[7] = (*rows[7][:3], "true", "deny", "business-line", "")
    rows[-1] = (*rows[-1][:4], "deny", "business-line", "")
    truth = _truth(tmp_path, rows)
    report = score.summarise(score.score(truth, [("p", _decisions(tmp_path / "d.csv", rows))]))
    honest = report["staff"]["p"]["honest"]
    assert honest["denied"] == 1 and honest["denied_by_rule"] == {"business-line": 1}
    assert honest["flagged_employees"] == []
    slow = _attacker(report, "E00004")["results"]["p"]
    assert (slow["days_to_flag"], slow["days_to_deny"], slow["disclosed"]) == (8, 8, 0)


def test_corporate_runs_are_the_reps_corporate_lookups_not_their_counter_work(
    tmp_path: Path,
) -> None:
    """ "Corporate runs untouched" judges a rep's CORPORATE_ACCOUNT lookups; a business line
    withheld from their counter work under an everyday reason is a denial like a clerk's,
    shown, but no refused run."""
    rows = list(ROWS)
    rows[1] = (*rows[1][:4], "deny", "business-line", "")
    truth = _truth(tmp_path, rows)
    report = score.summarise(score.score(truth, [("p", _decisions(tmp_path / "d.csv", rows))]))
    corporate = report["staff"]["p"]["corporate"]
    assert (corporate["denied"], corporate["runs"], corporate["runs_denied"]) == (1, 0, 0)
    runs = next(c for c in report["verdicts"]["p"]["checks"] if "corporate runs" in c["target"])
    assert runs["ok"] and "1 of all 1 of the reps' lookups" in runs["detail"]
    # The same lookup as a run of the rep's account: refused, the target fails.
    decided = _decisions(tmp_path / "r.csv", rows, {1: "CORPORATE_ACCOUNT"})
    report = score.summarise(score.score(truth, [("p", decided)]))
    assert report["staff"]["p"]["corporate"]["runs_denied"] == 1
    runs = next(c for c in report["verdicts"]["p"]["checks"] if "corporate runs" in c["target"])
    assert not runs["ok"]


def test_epoch_timestamps_are_read_as_korean_days(tmp_path: Path) -> None:
    """Replay accepts epoch seconds, so the scorer reads them as KST calendar days."""
    # 2026-10-09T15:30:00Z is 2026-10-10 00:30 in Korea: eight days after E00004's start.
    rows = list(ROWS)
    rows[8] = ("1791559800", *rows[8][1:])
    truth = _truth(tmp_path)
    report = score.summarise(score.score(truth, [("p", _decisions(tmp_path / "d.csv", rows))]))
    assert _attacker(report, "E00004")["results"]["p"]["days_to_flag"] == 8


def test_cli_prints_tables_and_writes_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The command line prints every section and the verdicts, writes JSON, and exits 0."""
    truth = _truth(tmp_path)
    policy = _decisions(tmp_path / "policy.csv", ROWS)
    none = _decisions(tmp_path / "none.csv", _allow_all(ROWS))
    out = tmp_path / "report.json"
    status = score.main(
        ["--truth", str(truth), "--decisions", str(policy), "--baseline", f"none={none}",
         "--json", str(out)]
    )  # fmt: skip
    assert status == 0
    printed = capsys.readouterr().out
    assert "VERDICT policy: FAIL (3/7 targets met; classic FAIL, honest FAIL)" in printed
    assert "VERDICT none: FAIL (5/7 targets met; classic FAIL, honest PASS)" in printed
    assert "FAIL  every attacker flagged within 7 days" in printed
    saved = json.loads(out.read_text(encoding="utf-8"))
    assert saved["verdicts"]["policy"]["pass"] is False
    assert _threat(saved, "total")["disclosed"] == {"policy": 2, "none": 4}


def _broken_decision(rows: list[tuple[str, ...]]) -> list[tuple[str, ...]]:
    rows[1] = (*rows[1][:4], "maybe", "", "")
    return rows


def _swapped_employee(rows: list[tuple[str, ...]]) -> list[tuple[str, ...]]:
    rows[2] = (rows[2][0], "E00001", *rows[2][2:])
    return rows


def _bad_timestamp(rows: list[tuple[str, ...]]) -> list[tuple[str, ...]]:
    rows[3] = ("2026-10-01 10:03", *rows[3][1:])
    return rows


def _bad_found(rows: list[tuple[str, ...]]) -> list[tuple[str, ...]]:
    rows[0] = (*rows[0][:3], "yes", *rows[0][4:])
    return rows


@pytest.mark.parametrize(
    ("damage", "where", "message"),
    [
        (_broken_decision, "decisions.csv:3:", "decision must be allow or deny"),
        (_swapped_employee, "decisions.csv:4:", "not row-aligned"),
        (_bad_timestamp, "decisions.csv:5:", "timestamp must be ISO 8601"),
        (_bad_found, "decisions.csv:2:", "found must be true or false"),
        (lambda rows: rows[:-1], "decisions.csv:9:", "ends after 8 rows"),
        (lambda rows: [*rows, rows[-1]], "decisions.csv:11:", "more than the truth's 9 rows"),
    ],
)
def test_malformed_decisions_exit_2_naming_file_and_line(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    damage: Any,
    where: str,
    message: str,
) -> None:
    """A broken decisions file stops the scorer with the file, the line and the problem."""
    truth = _truth(tmp_path)
    decisions = _decisions(tmp_path / "decisions.csv", damage(list(ROWS)))
    status = score.main(["--truth", str(truth), "--decisions", str(decisions)])
    assert status == 2
    error = capsys.readouterr().err
    assert where in error
    assert message in error


def test_missing_column_is_reported_on_the_header_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A decisions file without the decision columns is refused at line 1."""
    truth = _truth(tmp_path)
    bare = _write(tmp_path / "events.csv", ["timestamp", "employee"], [("x", "E00001")])
    assert score.main(["--truth", str(truth), "--decisions", str(bare)]) == 2
    error = capsys.readouterr().err
    assert f"{bare}:1:" in error
    assert "header lacks" in error


def test_truth_disagreeing_with_roster_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A truth row whose actor contradicts the roster means the files are from different runs."""
    truth = _truth(tmp_path)
    text = truth.read_text(encoding="utf-8").replace("1,E00001,honest,", "1,E00001,attacker,")
    truth.write_text(text, encoding="utf-8")
    decisions = _decisions(tmp_path / "d.csv", ROWS)
    assert score.main(["--truth", str(truth), "--decisions", str(decisions)]) == 2
    assert f"{truth}:2: actor 'attacker'" in capsys.readouterr().err


def test_missing_file_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A path that does not exist is named in the error, not a traceback."""
    truth = _truth(tmp_path)
    status = score.main(["--truth", str(truth), "--decisions", str(tmp_path / "nope.csv")])
    assert status == 2
    assert "nope.csv: cannot open" in capsys.readouterr().err


def test_unguarded_simulation_discloses_everything_found(tmp_path: Path) -> None:
    """Scoring an allow-everything replay of the simulator gives the no-guard baseline exactly."""
    cfg = simulate.SimConfig(
        seed=4, employees=60, days=4, attackers_per_class=1, store_customers=100
    )
    events, truth = tmp_path / "EVENTS.csv", tmp_path / "TRUTH.csv"
    simulate.simulate(cfg, events, truth)
    with events.open(newline="", encoding="utf-8") as source:
        rows = list(csv.reader(source))
    _write(tmp_path / "d.csv", [*rows[0], "decision", "rule", "flags"],
           [[*r, "allow", "", ""] for r in rows[1:]])  # fmt: skip
    report = score.summarise(score.score(truth, [("none", tmp_path / "d.csv")]))
    total = _threat(report, "total")
    assert total["malicious"] > 0
    assert total["disclosed"]["none"] == total["no_guard"] > 0
    honest = report["staff"]["none"]["honest"]
    assert honest["denied"] == 0
    assert honest["lookups"] > 0
    assert _checks(report, "none") == [False, False, True, True, True, False, True]


def test_families_are_scored_and_judged_separately(tmp_path: Path) -> None:
    """An informed insider counts towards the informed family and its own marks, not classic."""
    informed = ("E00005", "S003", "R02", "attacker", "informed_newsub", "2026-10-01")
    rows = [
        *ROWS,
        ("2026-10-03T10:00:00+09:00", "E00005", "informed_newsub", "true", "allow", "", ""),
        ("2026-10-03T11:00:00+09:00", "E00005", "informed_newsub", "false", "allow", "", ""),
        ("2026-10-03T12:00:00+09:00", "E00005", "informed_newsub", "true", "allow", "", ""),
    ]
    roles = {e[0]: e[3] for e in [*EMPLOYEES, informed]}
    _write(tmp_path / "TRUTH.employees.csv", EMPLOYEE_COLUMNS, [*EMPLOYEES, informed])
    truth = _write(
        tmp_path / "TRUTH.csv",
        ["row", "employee", "actor", "threat"],
        [(i, r[1], roles[r[1]], r[2]) for i, r in enumerate(rows, start=1)],
    )
    stores = {**STORES, "E00005": ("S003", "R02")}
    decisions = _write(
        tmp_path / "d.csv",
        DECISION_HEADER,
        [
            (t, e, *stores[e], "01012345678", "BILLING_INQUIRY", "", found, decision, rule, flags)
            for t, e, _, found, decision, rule, flags in rows
        ],
    )
    report = score.summarise(score.score(truth, [("p", decisions)]))
    families = {row["family"]: row for row in report["families"]}
    assert (families["classic"]["attackers"], families["informed"]["attackers"]) == (2, 1)
    assert families["informed"]["disclosed"] == {"p": 2}
    assert families["classic"]["disclosed"] == {"p": 2}
    verdict = report["verdicts"]["p"]
    informed_checks = [c for c in verdict["checks"] if c["family"] == "informed"]
    assert [c["ok"] for c in informed_checks] == [False, True, False]
    assert "5%" in informed_checks[0]["target"]
    assert verdict["families"] == {"classic": False, "informed": False, "honest": False}
    assert [t["threat"] for t in report["threats"]][-2:] == ["informed_newsub", "total"]
    printed = score.render(report)
    assert "family informed" in printed
    assert "informed FAIL" in printed
