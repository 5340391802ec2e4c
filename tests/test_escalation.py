"""Escalation: which flag-days are noted, and when they amount to a lock."""

from __future__ import annotations

from lookup_proxy.guard.escalation import Escalation
from lookup_proxy.guard.primitives import Batch
from lookup_proxy.policy import Escalation as EscalationPolicy

T = 1_790_000_000.0  # 2026-09-21 14:13 UTC, 23:13 at +09:00


def escalation(**overrides: object) -> Escalation:
    return Escalation(EscalationPolicy.model_validate(overrides), "lp", 9 * 3600)


def test_flag_days_are_named_by_rule_and_local_date() -> None:
    """The date is the store's (UTC offset applied), not UTC's."""
    assert escalation().flag_days("alice", ["peer-misses"], T + 3600) == ["peer-misses@2026-09-22"]


def test_a_flag_day_noted_once_is_not_noted_again() -> None:
    """After ``noted``, the same rule on the same day asks for no round trip."""
    e = escalation()
    entries = e.flag_days("alice", ["a", "b"], T)
    e.noted("alice", entries)
    assert e.flag_days("alice", ["a", "b"], T) == []
    assert e.flag_days("bob", ["a"], T) == ["a@2026-09-21"]
    assert e.flag_days("alice", ["a"], T + 86_400) == ["a@2026-09-22"]


def test_more_flag_days_than_the_limit_lock_when_enough_rules_agree() -> None:
    """Three flag-days over a limit of two lock, unless they must come from two rules."""
    days = ["a@2026-09-20", "a@2026-09-21", "a@2026-09-22"]
    assert escalation(limit=2).judge(days) == tuple(days)
    assert escalation(limit=3).judge(days) is None
    assert escalation(limit=2, min_rules=2).judge(days) is None
    assert escalation(limit=2, min_rules=2).judge([*days[:2], "b@2026-09-22"]) is not None


def test_disabled_escalation_notes_nothing() -> None:
    """``enabled = false``: no flag-day, so no extra primitive on any lookup."""
    assert escalation(enabled=False).flag_days("alice", ["a"], T) == []


def test_notes_go_to_the_employee_s_own_window_and_read_it_back() -> None:
    """One add per flag-day, then the window's flag-days, all under the employee's hash tag."""
    batch = Batch()
    escalation(window="14d").add_note(batch, "al ice", ["a@2026-09-21"], T)
    assert [op[:2] for op in batch.ops] == [
        ("note", "lp:{e:al%20ice}:escalation"),
        ("members", "lp:{e:al%20ice}:escalation"),
    ]
    assert batch.ops[1][2] == T - 14 * 86_400


def test_one_rule_flagging_day_after_day_locks_past_its_own_limit() -> None:
    """With ``min_rules = 2``, one rule's flag-days lock only past ``one_rule_limit``."""
    days = [f"a@2026-09-{day:02d}" for day in range(10, 16)]
    e = escalation(limit=2, min_rules=2, one_rule_limit=5)
    assert e.judge(days[:5]) is None
    assert e.judge(days) == tuple(days)
    assert escalation(limit=2, min_rules=2).judge(days) is None


def test_rules_of_one_evidence_are_one_witness() -> None:
    """Two tests of the same misses flagging on the same days are one flag-day a day and one
    rule towards ``min_rules``; a rule of other evidence agreeing still locks."""
    e = Escalation(
        EscalationPolicy.model_validate({"limit": 2, "min_rules": 2}),
        "lp",
        9 * 3600,
        {"peer-misses-cusum": "peer-misses"},
    )
    same = [
        "peer-misses@2026-09-20",
        "peer-misses-cusum@2026-09-20",
        "peer-misses@2026-09-21",
        "peer-misses-cusum@2026-09-21",
    ]
    assert e.judge(same) is None
    assert escalation(limit=2, min_rules=2).judge(same) == tuple(same)
    other = [*same, "peer-typos@2026-09-21"]
    assert e.judge(other) == tuple(other)


def test_flag_days_of_one_evidence_count_once_against_the_limit() -> None:
    """Three rules of one evidence on two days are two flag-days, not six, for ``limit``
    and for ``one_rule_limit``; each rule's own flag-days still stand behind the lock."""
    grouped = {"b": "a", "c": "a"}
    policy = EscalationPolicy.model_validate({"limit": 2, "one_rule_limit": 2, "min_rules": 2})
    e = Escalation(policy, "lp", 9 * 3600, grouped)
    days = [f"{rule}@2026-09-{day}" for day in (20, 21) for rule in "abc"]
    assert e.judge(days) is None
    third = [*days, "c@2026-09-22"]
    assert e.judge(third) == tuple(third)
    single = Escalation(EscalationPolicy.model_validate({"limit": 2}), "lp", 9 * 3600, grouped)
    assert single.judge(days) is None
    assert single.judge(third) == tuple(third)


def test_one_rule_limits_set_the_limit_alone_per_evidence() -> None:
    """``one_rule_limits`` overrides ``one_rule_limit`` for the rule or evidence it names:
    five days of misses lock at a limit of four, five days of typos not at the default six."""
    policy = EscalationPolicy.model_validate(
        {"limit": 2, "min_rules": 2, "one_rule_limit": 6, "one_rule_limits": {"misses": 4}}
    )
    e = Escalation(policy, "lp", 9 * 3600, {"misses-fortnight": "misses"})
    misses = [f"misses@2026-09-{day}" for day in (10, 11, 12)]
    misses += ["misses-fortnight@2026-09-12", "misses-fortnight@2026-09-13"]
    assert e.judge(misses) is None
    assert e.judge([*misses, "misses-fortnight@2026-09-14"]) is not None
    typos = [f"typos@2026-09-{day}" for day in range(10, 16)]
    assert e.judge(typos) is None
    assert e.judge([*typos, "typos@2026-09-16"]) is not None
