"""Informed insiders in the simulator: planted beside the classic ones, sized by the policy."""

from __future__ import annotations

import csv
import dataclasses
import itertools
import math
from collections import defaultdict
from pathlib import Path

import pytest

from lookup_proxy.policy import Policy, load_policy
from lookup_proxy.simulation.contracts import CLASSIC_THREATS, INFORMED_THREATS
from lookup_proxy.simulation.honest import EVERYDAY_REASONS
from lookup_proxy.simulation.informed import Budget, InformedPadded
from lookup_proxy.simulation.month import simulate
from lookup_proxy.simulation.number_space import canonical
from lookup_proxy.simulation.roster import Employee, SimConfig
from lookup_proxy.simulation.workday import Event
from lookup_proxy.simulation.world import World

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = load_policy(ROOT / "config" / "policy.toml")

CONFIG = SimConfig(seed=11, employees=90, days=12, attackers_per_class=1, store_customers=200)


def _read(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _run(directory: Path, cfg: SimConfig) -> tuple[list[dict[str, str]], ...]:
    directory.mkdir(parents=True, exist_ok=True)
    events, truth = directory / "EVENTS.csv", directory / "TRUTH.csv"
    simulate(cfg, events, truth)
    return (
        _read(events),
        _read(truth),
        _read(directory / "TRUTH.employees.csv"),
        _read(directory / "EVENTS.roster.csv"),
    )


@pytest.fixture(scope="module")
def both(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[dict[str, str]], ...]:
    cfg = dataclasses.replace(CONFIG, families=("classic", "informed"), policy=SHIPPED)
    return _run(tmp_path_factory.mktemp("both"), cfg)


def test_every_informed_class_is_planted(both: tuple[list[dict[str, str]], ...]) -> None:
    """Both families' classes have attackers and malicious rows."""
    _, truth, employees, _ = both
    planted = {e["threat"] for e in employees if e["role"] == "attacker"}
    assert planted == set(CLASSIC_THREATS) | set(INFORMED_THREATS)
    assert {t["threat"] for t in truth if t["threat"]} == planted


def test_informed_family_leaves_everyone_elses_rows_unchanged(
    both: tuple[list[dict[str, str]], ...], tmp_path: Path
) -> None:
    """Planting informed insiders changes no row of anyone else: classic runs stay comparable."""
    events, _, employees, _ = both
    classic_events, _, classic_employees, _ = _run(tmp_path, CONFIG)
    informed = {e["employee"] for e in employees if e["threat"] in INFORMED_THREATS}
    assert informed
    assert [e for e in events if e["employee"] not in informed] == [
        e for e in classic_events if e["employee"] not in informed
    ]
    classic_roles = {e["employee"]: e["role"] for e in classic_employees}
    assert all(classic_roles[e] == "honest" for e in informed)


def test_informed_groups_sit_in_different_stores_and_regions(
    both: tuple[list[dict[str, str]], ...],
) -> None:
    """The group straddles scopes: one member per store, one per region while regions last."""
    _, _, employees, _ = both
    members = [e for e in employees if e["threat"] == "informed_groups"]
    regions = {e["region"] for e in employees}
    assert 3 <= len(members) <= 5
    assert len({m["store"] for m in members}) == len(members)
    assert len({m["region"] for m in members}) == min(len(members), len(regions))


def test_the_corporate_insider_has_the_role_and_a_reference(
    both: tuple[list[dict[str, str]], ...],
) -> None:
    """HR gave the informed corporate insider the role; their probes carry a CORP reference."""
    events, truth, employees, roster = both
    insider = next(e["employee"] for e in employees if e["threat"] == "informed_corporate")
    roles = next(r["roles"] for r in roster if r["employee"] == insider)
    assert "corporate-sales" in roles.split(";")
    probes = [e for e, t in zip(events, truth, strict=True) if t["threat"] == "informed_corporate"]
    assert probes
    assert all(p["reason"] == "CORPORATE_ACCOUNT" and p["reference"] for p in probes)


def test_typo_farmers_retype_a_customer_seconds_after_each_variant(
    both: tuple[list[dict[str, str]], ...],
) -> None:
    """Each farmed variant is one edit from a found customer retyped within 15 s, as cover."""
    events, truth, employees, _ = both
    farmers = {e["employee"] for e in employees if e["threat"] == "informed_typo_farm"}
    rows: dict[str, list[tuple[dict[str, str], str]]] = defaultdict(list)
    for event, row in zip(events, truth, strict=True):
        if event["employee"] in farmers:
            rows[event["employee"]].append((event, row["threat"]))
    variants = 0
    for mine in rows.values():
        for index, (event, threat) in enumerate(mine):
            if threat != "informed_typo_farm":
                continue
            variants += 1
            variant = canonical(event["number"])
            seconds = event["timestamp"][11:19]
            retype = next(
                e
                for e, t in mine[index + 1 :]
                if not t and e["timestamp"][:10] == event["timestamp"][:10]
            )
            assert retype["found"] == "true"
            gap = _seconds(retype["timestamp"][11:19]) - _seconds(seconds)
            assert 0 < gap <= 15
            diffs = sum(a != b for a, b in zip(variant, canonical(retype["number"]), strict=True))
            assert 1 <= diffs <= 2
    assert variants > 0


def _seconds(clock: str) -> int:
    hours, minutes, seconds = (int(part) for part in clock.split(":"))
    return hours * 3600 + minutes * 60 + seconds


def _with_rules(rules: str) -> Policy:
    """The shipped policy's catalogue with only ``rules``."""
    import tomllib

    data = tomllib.loads(
        (ROOT / "config" / "policy.toml").read_text(encoding="utf-8").split("[[rules]]", 1)[0]
        + rules
    )
    return Policy.model_validate(data)


def test_budget_follows_the_limits_the_insider_can_read() -> None:
    """A tighter misses limit shrinks the quota; a rule exempting the reason does not bind."""
    rule = """
[[rules]]
name = "weekly-misses"
kind = "misses"
window = "7d"
limit = {limit}
action = "lock"
{exempt}
"""
    loose = _with_rules(rule.format(limit=140, exempt=""))
    tight = _with_rules(rule.format(limit=35, exempt=""))
    exempt = _with_rules(rule.format(limit=35, exempt='exempt_reasons = ["NEW_SUBSCRIPTION"]'))
    clerk = frozenset({"clerk"})
    newsub = ("NEW_SUBSCRIPTION",)
    loose_quota = Budget(loose, 1 / 7).probes(newsub, 40, clerk)
    tight_quota = Budget(tight, 1 / 7).probes(newsub, 40, clerk)
    assert tight_quota < loose_quota
    assert 3 <= loose_quota / tight_quota <= 5
    assert Budget(exempt, 1 / 7).probes(newsub, 40, clerk) > loose_quota
    # Rotating over reasons a reason-specific rule sees only some of spreads its count.
    one = _with_rules(
        rule.format(limit=35, exempt="").replace("action", 'reasons = ["PLAN_CHANGE"]\naction')
    )
    assert Budget(one, 1 / 7).probes(EVERYDAY_REASONS, 40, clerk) > tight_quota


def test_a_peer_rule_s_fixed_floor_is_a_limit_the_insider_reads() -> None:
    """What a peer rule adds to its fixed floor the insider cannot count; the floor itself
    (``min_count`` misses a window, or all misses) they keep under as under a misses rule's
    limit; a floor of forgiven typos their probes do not meet."""
    peer = """
[[rules]]
name = "slow-probe"
kind = "peer"
metric = "{metric}"
peers = "region"
window = "7d"
min_count = {floor}
min_share = 0.15
action = "flag"
"""
    clerk = frozenset({"clerk"})
    newsub = ("NEW_SUBSCRIPTION",)
    floored = Budget(_with_rules(peer.format(metric="misses", floor=35)), 1 / 7)
    misses = _with_rules(
        '[[rules]]\nname = "m"\nkind = "misses"\nwindow = "7d"\nlimit = 35\naction = "flag"\n'
    )
    assert floored.probes(newsub, 40, clerk) == Budget(misses, 1 / 7).probes(newsub, 40, clerk)
    every_miss = Budget(_with_rules(peer.format(metric="all-misses", floor=35)), 1 / 7)
    assert every_miss.probes(newsub, 40, clerk) == floored.probes(newsub, 40, clerk)
    unfloored = Budget(_with_rules(peer.format(metric="misses", floor=0)), 1 / 7)
    assert unfloored.probes(newsub, 40, clerk) > floored.probes(newsub, 40, clerk)
    typos = Budget(_with_rules(peer.format(metric="typos", floor=35)), 1 / 7)
    assert typos.probes(newsub, 40, clerk) == unfloored.probes(newsub, 40, clerk)


def test_a_lookups_peer_rule_leaves_the_insider_room_by_its_ratio() -> None:
    """A day's lookups against the peers' median (``metric = "lookups"``): an insider who sees
    their colleagues' days keeps their own, probes and padding included, at the margin of
    ``min_ratio`` times their honest day; without such a rule nothing bounds it."""
    volume = """
[[rules]]
name = "peer-volume"
kind = "peer"
metric = "lookups"
peers = "region"
window = "2d"
min_ratio = 3.0
action = "flag"
"""
    assert Budget(_with_rules(volume), 1 / 7).volume_room(50) == pytest.approx((0.8 * 3 - 1) * 50)
    assert Budget(_with_rules(volume.replace("3.0", "1.0")), 1 / 7).volume_room(50) == 0
    shadow = volume + 'mode = "shadow"\n'
    assert Budget(_with_rules(shadow), 1 / 7).volume_room(50) == math.inf


def test_informed_family_needs_a_policy(tmp_path: Path) -> None:
    """Without a policy to read there is no informed insider: a clear error, not a guess."""
    cfg = dataclasses.replace(CONFIG, families=("classic", "informed"))
    with pytest.raises(ValueError, match="read a policy"):
        simulate(cfg, tmp_path / "E.csv", tmp_path / "T.csv")


def test_padding_insiders_look_up_known_customers_twice_their_own_work_as_cover(
    both: tuple[list[dict[str, str]], ...],
) -> None:
    """Beside the probes under NEW_SUBSCRIPTION, lookups again of customers served before
    (twice what the insider's pace gives an honest day, or what the policy's day of lookups
    against the peers leaves room for: 1.4 times under the shipped ``peer-volume``): found,
    under other reasons, not malicious, over ten times the probes; a padder's median day
    holds more than an honest clerk's, and less than ``peer-volume``'s three times."""
    events, truth, employees, _ = both
    padders = {e["employee"] for e in employees if e["threat"] == "informed_padded"}
    honest = {e["employee"] for e in employees if e["role"] == "honest"}
    assert padders
    days: dict[tuple[str, str], int] = defaultdict(int)
    probing: set[tuple[str, str]] = set()
    cover = 0
    for event, row in zip(events, truth, strict=True):
        day = (event["employee"], event["timestamp"][:10])
        days[day] += 1
        if event["employee"] not in padders:
            continue
        if row["threat"] == "informed_padded":
            probing.add(day)
            assert event["reason"] == "NEW_SUBSCRIPTION"
        elif event["found"] == "true" and event["reason"] != "NEW_SUBSCRIPTION":
            cover += 1
    probes = sum(1 for row in truth if row["threat"] == "informed_padded")
    assert probing and cover > 10 * probes
    clerk_days = sorted(n for (who, _), n in days.items() if who in honest)
    typical = clerk_days[len(clerk_days) // 2]
    padded_days = sorted(days[day] for day in probing)
    assert typical < padded_days[len(padded_days) // 2] < 3 * typical


def test_a_quiet_insider_probes_under_new_subscription_beside_little_work_of_their_own(
    both: tuple[list[dict[str, str]], ...],
) -> None:
    """``informed_quiet``: a part-timer's or back-office clerk's pace of honest work (a tenth
    of a clerk's), and NEW_SUBSCRIPTION probes at informed_newsub's quota beside it: on their
    median working day, fewer honest lookups than a third of an honest clerk's median day."""
    events, truth, employees, _ = both
    quiet = {e["employee"] for e in employees if e["threat"] == "informed_quiet"}
    honest = {e["employee"] for e in employees if e["role"] == "honest"}
    assert quiet
    own: dict[tuple[str, str], int] = defaultdict(int)
    probes = 0
    for event, row in zip(events, truth, strict=True):
        if row["threat"] == "informed_quiet":
            probes += 1
            assert event["reason"] == "NEW_SUBSCRIPTION"
        elif event["employee"] in quiet | honest:
            own[(event["employee"], event["timestamp"][:10])] += 1
    assert probes > 0

    def median_day(who: set[str]) -> int:
        days = sorted(n for (employee, _), n in own.items() if employee in who)
        return days[len(days) // 2]

    assert median_day(quiet) < median_day(honest) / 3


def test_a_padder_pads_only_with_customers_they_served_on_earlier_days() -> None:
    """The padding is the insider's own customers of earlier days (found, not probes), at most
    ``pad`` distinct a day: none on their first day, and never a number they have not served
    (a store regular they never met would be a record disclosed, not cover)."""
    world = World(CONFIG)
    clerk = Employee(
        "E1", "S01", "R1", "day", 0, 6.0, frozenset(range(12)), threat="informed_padded"
    )
    padder = InformedPadded(world, clerk, quota=3, pad=5)
    segments = [(9 * 3600, 18 * 3600, True)]
    served: set[str] = set()
    for _day in range(4):
        own = [world.fresh_customer(padder.rng) for _ in range(4)]
        out: list[Event] = [
            (9 * 3600 + i, n, "PLAN_CHANGE", "", True, clerk, "") for i, n in enumerate(own)
        ]
        padder.day(segments, out)
        pads = [event[1] for event in out[len(own) :] if not event[6]]
        probes = [event for event in out[len(own) :] if event[6]]
        assert len(probes) == 3
        assert len(pads) == len(set(pads)) == min(5, len(served))
        assert set(pads) <= served
        served |= set(own)


def test_a_business_walker_steps_along_business_lines_a_stride_apart_never_missing(
    both: tuple[list[dict[str, str]], ...],
) -> None:
    """``informed_business_walk``: every step is a line of a business customer, found and
    naming its account, under BILLING_INQUIRY, no two steps in a row closer than the policy's
    sequential ``distance``, no line twice; and the quota is what the block rules leave."""
    events, truth, _, _ = both
    walk = [
        e for e, t in zip(events, truth, strict=True) if t["threat"] == "informed_business_walk"
    ]
    assert len(walk) >= 10
    world = World(dataclasses.replace(CONFIG, families=("classic", "informed"), policy=SHIPPED))
    names = {b.reference for b in world.businesses}
    assert all(e["found"] == "true" and e["account"] in names for e in walk)
    assert {e["reason"] for e in walk} == {"BILLING_INQUIRY"}
    lines = [int(canonical(e["number"])[3:]) for e in walk]
    assert len(set(lines)) == len(lines)
    distance = max(getattr(r, "distance", 0) for r in SHIPPED.rules)
    assert all(abs(a - b) > distance for a, b in itertools.pairwise(lines))
    # Only the block rules bind a walk (no misses to count): a week's limit of one 010-XXXX
    # block at 80 % of it, a seventh of it a day, for each such block the businesses cover.
    blocks = {line // 10_000 for b in world.businesses for line in b.lines()}
    budget = Budget(SHIPPED, 0.14).walk(40, world.businesses)
    assert budget == int(len(blocks) * 0.8 * 8 / 7)
    # Without block rules the walk is bound by the rate rules alone: far more steps a day.
    assert Budget(_with_rules(""), 0.14).walk(40, world.businesses) > 10 * budget
