"""The red-team: an adaptive insider against the replay engine, on tiny simulated months."""

from __future__ import annotations

import itertools
import json
import random
import re
from dataclasses import replace
from pathlib import Path

import pytest

from lookup_proxy.cli import main
from lookup_proxy.numbers import normalise_number
from lookup_proxy.policy import Policy, load_policy, parse_policy
from lookup_proxy.redteam import Options, red_team
from lookup_proxy.redteam.baseline import (
    Baseline,
    simulated,
    simulated_config,
    spread_out,
)
from lookup_proxy.redteam.probes import Probe, Stage
from lookup_proxy.redteam.report import Row, best_never_locked, headline
from lookup_proxy.redteam.search import Search, Trial, edge
from lookup_proxy.redteam.strategies import (
    Budgeted,
    BusinessWalk,
    Combined,
    CorporateExempt,
    CustomerList,
    Paced,
    Padded,
    Quiet,
    QuietRegion,
    Relief,
    Strategy,
    Surge,
    TypoFarm,
    TypoFarmOwnVisits,
    WaitOut,
    business_lines,
    everyday_reasons,
    levelled,
    strategies_for,
    typo_visit,
)
from lookup_proxy.redteam.trial import VISIT_GAP, Arena, Outcome, _stamp
from lookup_proxy.simulation.customer_book import CustomerBook
from lookup_proxy.simulation.number_space import number_of
from lookup_proxy.simulation.roster import CorporateAccount

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "config" / "policy.toml"

# A per-day cap nobody honest reaches (clerks make about 60 lookups a day), refusing only.
WEAK_RULES = """
[[rules]]
name = "daily"
kind = "rate"
window = "1d"
limit = 200
action = "deny"
"""

# The same, plus a lock after a handful of misses in a day: random probing misses 6 in 7.
STRICT_RULES = (
    WEAK_RULES
    + """
[[rules]]
name = "misses-lock"
kind = "misses"
window = "1d"
limit = 4
action = "lock"
"""
)

# Lock past 20 DEVICE_SUPPORT lookups in 12 hours (a working day fits; two never do).
EDGE_RULES = """
[[rules]]
name = "device-cap"
kind = "rate"
window = "12h"
limit = 20
action = "lock"
reasons = ["DEVICE_SUPPORT"]
"""


def _policy_file(directory: Path, rules: str, name: str = "policy.toml") -> Path:
    """The shipped policy's routes, reasons and auth with only ``rules``, locks for good."""
    head = SHIPPED.read_text(encoding="utf-8").split("[[rules]]", 1)[0]
    path = directory / name
    path.write_text(head + rules + '\n[lockout]\nduration = "until-unlocked"\n', encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def policies(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("policies")
    return {
        "weak": _policy_file(directory, WEAK_RULES, "weak.toml"),
        "strict": _policy_file(directory, STRICT_RULES, "strict.toml"),
        "edge": _policy_file(directory, EDGE_RULES, "edge.toml"),
    }


@pytest.fixture(scope="module")
def baseline(policies: dict[str, Path]) -> Baseline:
    """Three days of a 16-employee chain, honest only."""
    return simulated(load_policy(policies["weak"]), simulated_config(3, 16, 3))


def _options(path: Path, **overrides: object) -> Options:
    values: dict[str, object] = {
        "policy_path": str(path),
        "days": 3,
        "employees": 16,
        "seed": 3,
        "steps": 7,
        "precision": 0.25,
    }
    values.update(overrides)
    return Options(**values)  # type: ignore[arg-type]


def test_edge_finds_the_largest_unlocked_intensity_exactly() -> None:
    """Doubling then bisection returns the last intensity that is not locked, for any edge."""
    for limit in (1, 7, 20, 33, 150):
        tried: list[int] = []

        def run(n: int, limit: int = limit, tried: list[int] = tried) -> Outcome:
            tried.append(n)
            return Outcome(locked_at=1.0 if n > limit else None)

        assert edge(run, 8, 400, 30) == (limit, limit + 1)
        assert len(tried) <= 2 + 2 * 9


def test_edge_stops_at_the_ceiling_and_within_the_step_budget() -> None:
    """Nothing locks: the ceiling is the edge; a small budget stops the search once it locks."""
    assert edge(lambda n: Outcome(), 8, 100, 30) == (100, None)
    calls: list[int] = []

    def run(n: int) -> Outcome:
        calls.append(n)
        return Outcome(locked_at=1.0 if n > 50 else None)

    assert edge(run, 8, 400, 4) == (32, 64)
    assert calls == [8, 16, 32, 64]
    # Doubling goes past the budget while nothing locks: an unlocked edge is never cut short.
    calls.clear()
    assert edge(run, 1, 400, 2) == (32, 64)
    assert calls == [1, 2, 4, 8, 16, 32, 64]
    assert edge(lambda n: Outcome(), 1, 100, 1) == (100, None)


def test_edge_tries_sparser_probing_when_one_a_day_is_locked() -> None:
    """Below one probe a day the search halves: a probe every other, every fourth working day."""
    tried: list[float] = []

    def run(n: float) -> Outcome:
        tried.append(n)
        return Outcome(locked_at=1.0 if n > 0.3 else None)

    assert edge(run, 4, 400, 10) == (0.25, 0.5)
    assert tried[-2:] == [0.5, 0.25]
    assert edge(lambda n: Outcome(locked_at=1.0), 4, 400, 10, floor=1 / 8) == (0, 0.125)


def test_daily_counts_spread_an_intensity_over_working_days(baseline: Baseline) -> None:
    """Half a probe a day is one every other working day; three a day is three every day."""
    insider = baseline.clerks()[0]
    stage = Stage(baseline, [insider], CustomerBook(3, 0.14), random.Random(1))
    days = [day for day, _ in stage.days(insider)]
    assert {count for _, _, count in stage.daily(insider, 3)} == {3}
    assert [day for day, _, _ in stage.daily(insider, 3)] == days
    sparse = list(stage.daily(insider, 0.5))
    assert [count for _, _, count in sparse] == [1] * (len(days) // 2)
    assert [day for day, _, _ in sparse] == days[1::2]


def test_search_finds_a_simple_rate_limit_exactly(
    policies: dict[str, Path], baseline: Baseline, tmp_path: Path
) -> None:
    """Against a 20-per-12h locking cap on one reason, the edge found is 20 probes a day."""
    policy = load_policy(policies["edge"])
    # Keep the cap for the adversary alone: honest DEVICE_SUPPORT work becomes billing work.
    rows = [
        (when, (*row[:5], "BILLING_INQUIRY" if row[5] == "DEVICE_SUPPORT" else row[5], *row[6:]))
        for when, row in baseline.rows
    ]
    honest = Baseline(rows, baseline.staff, baseline.start, baseline.days)
    honest.learn_days(policy)
    search = Search(Arena(policy, honest, tmp_path), CustomerBook(3, 0.14), 3, 20, 0.0)
    result = search.run(Paced("DEVICE_SUPPORT"))
    default = result.edges[0]
    assert default[0] == {"shape": "even"}
    assert (default[1], default[2]) == (20, 21)
    locked = [t for t in result.trials if t.outcome.locked]
    assert locked and all(t.outcome.locked_by == "device-cap" for t in locked)


def test_weak_policy_discloses_many_records_and_names_the_binding_rule(
    policies: dict[str, Path],
) -> None:
    """With only a daily refusal cap, paced probing gets many records and the cap binds."""
    outcome = red_team(
        load_policy(policies["weak"]), _options(policies["weak"]), [Paced("BILLING_INQUIRY")]
    )
    (row,) = outcome.rows
    assert row.unlocked is not None
    assert row.unlocked.outcome.best_insider > 20
    assert row.binding_rule == "daily"
    assert outcome.report["headline"]["strategy"] == "paced BILLING_INQUIRY"


def test_the_best_unlocked_trial_is_drawn_again_with_other_numbers(
    policies: dict[str, Path],
) -> None:
    """``draws`` runs the row's never-locked parameters again with other numbers (same
    insider, same month): the other draws are reported beside the best, the headline's mean is
    over all of them, and its records are the most of any never-locked draw."""
    outcome = red_team(
        load_policy(policies["weak"]),
        _options(policies["weak"], draws=3),
        [Paced("BILLING_INQUIRY")],
    )
    (row,) = outcome.rows
    (result,) = outcome.results
    assert row.unlocked is not None and len(row.redraws) == 2
    again = [o for o in row.redraws if o.probes == row.unlocked.outcome.probes]
    assert again == row.redraws  # the same intensity: as many probes
    records = [row.unlocked.outcome.best_insider, *(o.best_insider for o in row.redraws)]
    assert len(set(records)) > 1  # other numbers, other customers
    # kept apart from the search's trials, whose maxima the row reports as before
    assert not any(o is t.outcome for t in result.trials for o in row.redraws)
    headline = outcome.report["headline"]
    assert headline["records_mean_of_draws"] == pytest.approx(sum(records) / 3)
    # a luckier draw is a trial too: the headline is never below what a trial found
    assert not any(o.locked for o in row.redraws)
    assert headline["records_per_insider"] == max(records)
    assert headline["records_in_the_search"] == row.unlocked.outcome.best_insider
    assert "more draws" in outcome.text
    once = red_team(
        load_policy(policies["weak"]),
        _options(policies["weak"], draws=1),
        [Paced("BILLING_INQUIRY")],
    )
    assert once.rows[0].redraws == [] and "more draws" not in once.text


def test_a_strict_misses_lock_leaves_far_fewer_records(policies: dict[str, Path]) -> None:
    """Locking on a few misses a day cuts what paced probing gets, and the lock binds."""
    weak = red_team(
        load_policy(policies["weak"]), _options(policies["weak"]), [Paced("BILLING_INQUIRY")]
    )
    strict = red_team(
        load_policy(policies["strict"]), _options(policies["strict"]), [Paced("BILLING_INQUIRY")]
    )
    weak_records = weak.rows[0].unlocked
    strict_row = strict.rows[0]
    assert weak_records is not None
    strict_records = strict_row.unlocked.outcome.best_insider if strict_row.unlocked else 0
    assert strict_records * 3 < weak_records.outcome.best_insider
    assert strict_row.binding_rule == "misses-lock"
    assert strict_row.days_to_lock is not None


def test_typo_farming_pairs_a_variant_with_a_quick_retype(baseline: Baseline) -> None:
    """Each probe is one edit from a customer the insider met, retyped seconds later."""
    insider = baseline.clerks()[0]
    stage = Stage(baseline, [insider], CustomerBook(3, 0.14), random.Random(1))
    probes = sorted(
        TypoFarm(same=False).plan(stage, 5, {"retype_after": 8, "reason": "BILLING_INQUIRY"}),
        key=lambda p: p.at,
    )
    variants = [p for p in probes if p.counts]
    retypes = [p for p in probes if not p.counts]
    assert variants and len(variants) == len(retypes)
    for variant in variants:
        retype = next(r for r in retypes if r.at > variant.at)
        assert retype.at - variant.at <= 10
        assert retype.number in stage.met_before(insider, variant.at)
        assert _one_edit_apart(variant.number, retype.number)
    # "many customers" retypes different customers; "same customer" always the first one met.
    assert len({r.number for r in retypes}) > 1
    same = TypoFarm(same=True).plan(stage, 5, {"retype_after": 8, "reason": "BILLING_INQUIRY"})
    assert len({p.number for p in same if not p.counts}) == 1


def test_typo_farming_this_visit_retypes_a_customer_met_for_the_first_time_minutes_before(
    baseline: Baseline,
) -> None:
    """Against a policy bounding returning customers' retypes, the farmer retypes only
    customers first met (that month) within the visit under the reason it farms; the policy's
    ``typo_visit`` is what the strategy reads, and it adds the knob, which the shipped policy
    (no such bound) does not get. Both farms try a cover reason and the one whose misses are
    expected."""
    shipped = load_policy(SHIPPED)
    assert typo_visit(shipped) is None
    plain = next(s for s in strategies_for(shipped) if s.name == "typo-farm many customers")
    assert "customer" not in plain.knobs
    text = SHIPPED.read_text(encoding="utf-8")
    bounded = text.replace(
        'typo_budget = "7d"\n', 'typo_budget = "7d"\ntypo_returning_limit = 7\n', 1
    )
    assert bounded != text
    policy: Policy = parse_policy(bounded)
    visit = typo_visit(policy)
    assert visit == 1800
    farm = next(s for s in strategies_for(policy) if s.name == "typo-farm many customers")
    assert farm.knobs["customer"] == ("any met", "this visit")
    assert farm.knobs["reason"] == ("BILLING_INQUIRY", "NEW_SUBSCRIPTION")
    insider = baseline.clerks()[0]
    stage = Stage(baseline, [insider], CustomerBook(3, 0.14), random.Random(1))
    knobs = {"retype_after": 8, "reason": "BILLING_INQUIRY", "customer": "this visit"}
    probes = sorted(farm.plan(stage, 5, knobs), key=lambda p: p.at)
    honest = baseline.met[insider.employee]
    first = {}
    for at, number, reason in honest:
        first.setdefault(number, (at, reason))
    variants = [p for p in probes if p.counts]
    assert variants and len(variants) == len([p for p in probes if not p.counts])
    for variant in variants:
        retype = next(p for p in probes if not p.counts and p.at > variant.at)
        met_at, reason = first[retype.number]
        assert 0 < variant.at - met_at <= 0.9 * visit
        assert variant.reason == retype.reason == reason == "BILLING_INQUIRY"
        assert _one_edit_apart(variant.number, retype.number)


def test_typo_farming_own_visits_puts_a_variant_before_a_customer_at_the_counter(
    baseline: Baseline,
) -> None:
    """The retype is the insider's own honest lookup: a variant seconds before the first
    lookup that day of a customer they served, under that visit's reason, one per visit."""
    insider = baseline.clerks()[0]
    stage = Stage(baseline, [insider], CustomerBook(3, 0.14), random.Random(1))
    probes = TypoFarmOwnVisits().plan(stage, 3, {"retype_after": 8})
    honest = baseline.met[insider.employee]
    assert probes and all(p.counts for p in probes)
    assert len(probes) <= 3 * len(baseline.workdays[insider.employee])
    followed = []
    for probe in probes:
        at, number, reason = min(
            ((at, n, r) for at, n, r in honest if at > probe.at), key=lambda visit: visit[0]
        )
        assert at - probe.at <= 10
        assert reason == probe.reason
        assert _one_edit_apart(probe.number, number)
        day = baseline.day_of(at)
        assert not any(n == number and baseline.day_of(a) == day and a < at for a, n, _ in honest)
        followed.append(at)
    assert len(set(followed)) == len(followed)


def test_business_lines_go_round_the_businesses_in_passes_a_stride_apart() -> None:
    """Every line once; one of each business in turn; a business's in passes ``stride`` apart."""
    first = CorporateAccount(1000, 10, "CORP-000001")
    second = CorporateAccount(5000, 3, "CORP-000002")
    lines = list(business_lines([first, second], 4))
    assert lines == [1000, 5000, 1004, 5001, 1008, 5002, 1001, 1005, 1009, 1002, 1006, 1003, 1007]
    assert list(business_lines([first], 1)) == list(first.lines())


def test_walking_business_lines_finds_a_record_at_every_step(
    policies: dict[str, Path], baseline: Baseline, tmp_path: Path
) -> None:
    """A clerk's walk stays on the businesses' lines, no two steps in a row close, and every
    step is a record: the customer book knows a business's lines, as the backend does."""
    assert baseline.businesses
    insider = baseline.clerks()[0]
    book = CustomerBook(3, 0.14, baseline.business_ranges())
    stage = Stage(baseline, [insider], book, random.Random(1))
    probes = BusinessWalk(20).plan(stage, 6, {"stride": 21, "reason": "BILLING_INQUIRY"})
    assert len(probes) >= 6
    lines = [int(p.number[3:]) for p in sorted(probes, key=lambda p: p.at)]
    assert all(any(line in b.lines() for b in baseline.businesses) for line in lines)
    assert all(abs(a - b) > 20 for a, b in itertools.pairwise(lines))
    assert len(set(lines)) == len(lines)
    assert all(stage.found(p) and p.reason == "BILLING_INQUIRY" for p in probes)
    assert all(stage.account(p) in {b.reference for b in baseline.businesses} for p in probes)
    # Against rate limits alone, every probe let through is a record; where the policy's
    # [accounts] shows business lines to their accounts' reps only (the shipped head), none is.
    shipped_head = policies["weak"].read_text(encoding="utf-8")
    unchecked = tmp_path / "unchecked.toml"
    without = re.sub(r"(?m)^\[accounts\]\n(?:(?!\[).*\n)*", "", shipped_head)
    unchecked.write_text(re.sub(r"(?m)^accounts = .*\n", "", without), "utf-8")
    assert load_policy(policies["weak"]).accounts is not None
    assert load_policy(unchecked).accounts is None
    result = red_team(load_policy(unchecked), _options(unchecked), [BusinessWalk(0)])
    allowed = [t.outcome for t in result.results[0].trials if not t.outcome.denied]
    assert allowed and all(o.probes > 0 and o.best_insider == o.probes for o in allowed)
    # Checked, every step is withheld: a 403 the insider sees (replay denies it, the account
    # column naming the business), counted from the first probe, and never a record.
    result = red_team(load_policy(policies["weak"]), _options(policies["weak"]), [BusinessWalk(0)])
    trials = [t.outcome for t in result.results[0].trials]
    assert trials and all(o.best_insider == 0 for o in trials)
    assert all(o.denied_by.get("business-line", 0) > 0 for o in trials)
    assert all(o.first_flag == o.first_probe for o in trials)


def test_a_list_of_real_customers_finds_a_record_at_every_lookup_none_the_insider_met(
    baseline: Baseline,
) -> None:
    """An insider with a list looks up customers new to them, each once, none a business
    line (``[accounts]`` withholds those): every lookup is a record and nothing misses."""
    insider = baseline.clerks()[0]
    book = CustomerBook(3, 0.14, baseline.business_ranges())
    stage = Stage(baseline, [insider], book, random.Random(1))
    probes = CustomerList().plan(stage, 40, {"shape": "even", "every": 1})
    assert len(probes) >= 40
    numbers = [p.number for p in probes]
    assert len(set(numbers)) == len(numbers)
    met = {number for _, number, _ in stage.met(insider)}
    assert met and not met & set(numbers)
    assert all(p.found and book.found(p.number) and p.counts for p in probes)
    assert all(stage.account(p) == "" for p in probes)
    # A surge: every lookup of ten working days on the first of them, none between (this
    # short month has fewer working days than that).
    surge = CustomerList().plan(stage, 40, {"shape": "even", "every": 10})
    days = [day for day, _ in stage.days(insider)]
    assert len(days) < 10
    assert {baseline.day_of(p.at) for p in surge} == {days[0]} and len(surge) == 400


def test_a_list_of_real_customers_stays_out_of_the_headline_and_gets_a_line_of_its_own(
    policies: dict[str, Path],
) -> None:
    """The list's row is in the table and the JSON, but neither the headline nor the
    combinations take it (no lookup pattern finds a list looked up at an honest pace, the
    threat model): a line of its own under the headline says what it got."""
    strategies = [Paced("BILLING_INQUIRY"), Paced("PLAN_CHANGE"), CustomerList()]
    outcome = red_team(load_policy(policies["weak"]), _options(policies["weak"]), strategies)
    listed = next(row for row in outcome.rows if row.name == "list of real customers")
    paced = [row for row in outcome.rows if row.name.startswith("paced")]
    assert listed.unlocked is not None
    assert best_never_locked(listed) > max(best_never_locked(row) for row in paced)
    assert "list" not in outcome.report["headline"]["strategy"]
    combined = [r.strategy for r in outcome.results if isinstance(r.strategy, Combined)]
    assert combined and all(
        part.name != "list of real customers" for c in combined for part, _, _ in c.parts
    )
    line = next(x for x in outcome.text.splitlines() if x.startswith("Beyond the headline"))
    assert f"{best_never_locked(listed)} records for one insider" in line
    assert "binding rule: daily" in line
    by_name = {s["strategy"]: s for s in outcome.report["strategies"]}
    assert by_name["list of real customers"]["in_headline"] is False
    assert by_name["paced BILLING_INQUIRY"]["in_headline"] is True
    alone = red_team(load_policy(policies["weak"]), _options(policies["weak"]), [CustomerList()])
    assert "Headline: none (no strategy that competes for it was run)." in alone.text
    assert alone.report["headline"] is None


def test_the_shipped_policy_bounds_a_list_by_a_day_s_lookups_against_the_peers(
    tmp_path: Path,
) -> None:
    """Against the shipped policy a list's lookups are bound by ``peer-volume`` (its second
    flag-day locks: escalation), far below what the hourly limits alone let through."""
    options = _options(SHIPPED, days=8, steps=4)
    daily = CustomerList()
    daily.knobs = {"shape": ("even",), "every": (1,)}  # surges meet the hourly limits first
    shipped = red_team(load_policy(SHIPPED), options, [daily])
    (row,) = shipped.rows
    assert row.binding_rule == "escalation"
    assert row.days_to_lock is not None and row.days_to_lock <= 3
    assert row.days_to_flag is not None and row.days_to_flag <= 2
    text = SHIPPED.read_text(encoding="utf-8").replace(", peer-volume = 1 }", " }")
    without = tmp_path / "without.toml"
    without.write_text(
        text.replace('name = "peer-volume"', 'name = "peer-volume"\nmode = "shadow"')
    )
    unbound = red_team(load_policy(without), replace(options, policy_path=str(without)), [daily])
    (free,) = unbound.rows
    assert free.binding_rule != "escalation"
    assert best_never_locked(free) >= 2 * best_never_locked(row)


def test_a_corporate_rep_walks_the_businesses_they_do_not_serve_under_their_reference(
    baseline: Baseline,
) -> None:
    """``other businesses``: lines of businesses whose reference the rep never used, each a
    record, typed with the rep's own reference."""
    rep = next(s for s in baseline.corporate() if baseline.references.get(s.employee))
    own = baseline.references[rep.employee]
    foreign = [b for b in baseline.businesses if b.reference not in own]
    assert foreign and len(foreign) < len(baseline.businesses)
    stage = Stage(
        baseline, [rep], CustomerBook(3, 0.14, baseline.business_ranges()), random.Random(2)
    )
    probes = CorporateExempt("CORPORATE_ACCOUNT").plan(stage, 8, {"pattern": "other businesses"})
    assert probes
    for probe in probes:
        line = int(probe.number[3:])
        assert any(line in b.lines() for b in foreign)
        assert probe.reference in own and probe.reason == "CORPORATE_ACCOUNT"
        assert stage.found(probe)
        # The backend's record names the business whose line it is (EVENTS.csv's account),
        # never the rep's own: replay withholds it where the policy has [accounts].
        assert stage.account(probe) not in own and stage.account(probe)
    mine = next(b for b in baseline.businesses if b.reference in own)
    line = Probe(0.0, rep.employee, number_of(mine.first), "CORPORATE_ACCOUNT", mine.reference)
    assert stage.found(line) and stage.account(line) == mine.reference
    consumer = next(
        n
        for n in (number_of(30_000_000 + k) for k in range(400))
        if stage.book.hashed(n) and baseline.business_of(int(n[3:])) is None
    )
    consumer_line = replace(line, number=consumer)
    assert stage.found(consumer_line) and stage.account(consumer_line) == ""


def test_a_rep_walking_other_businesses_gets_nothing_where_tokens_name_their_accounts(
    policies: dict[str, Path], tmp_path: Path
) -> None:
    """Under the shipped head ([accounts], CORPORATE_ACCOUNT ``own``, the accounts claim) every
    walk of other businesses' lines gets nothing; without the claim, a walk under each
    business's own reference gets a record at every step."""
    rep = [CorporateExempt("CORPORATE_ACCOUNT")]
    shipped = policies["weak"]
    assert load_policy(shipped).auth.claims.accounts is not None
    result = red_team(load_policy(shipped), _options(shipped), rep)
    walks = [
        t
        for t in result.results[0].trials
        if str(t.knobs["pattern"]).endswith(("es", "businesses"))
    ]
    assert {t.knobs["pattern"] for t in walks} == {"other businesses", "their references"}
    assert all(t.outcome.best_insider == 0 for t in walks)
    unclaimed = tmp_path / "unclaimed.toml"
    text = shipped.read_text("utf-8")
    unclaimed.write_text(re.sub(r'(?m)^accounts = "accounts"\n', "", text), "utf-8")
    assert load_policy(unclaimed).auth.claims.accounts is None
    result = red_team(load_policy(unclaimed), _options(unclaimed), rep)
    theirs = [
        t.outcome for t in result.results[0].trials if t.knobs["pattern"] == "their references"
    ]
    assert theirs and all(o.best_insider > 0 for o in theirs)


def test_surge_days_put_every_probe_of_a_stretch_on_its_first_working_day(
    policies: dict[str, Path],
) -> None:
    """A surge is a stretch's probes (``every`` working days at ``intensity`` a day) all on
    its first working day, within that day's span, under the lenient reason; none between."""
    chain = simulated(load_policy(policies["weak"]), simulated_config(3, 16, 12))
    insider = max(chain.clerks(), key=lambda s: len(chain.workdays[s.employee]))
    stage = Stage(chain, [insider], CustomerBook(3, 0.14), random.Random(1))
    days = list(stage.days(insider))
    assert len(days) >= 7
    probes = Surge().plan(stage, 1.5, {"every": 3})
    by_day: dict[int, list[float]] = {}
    for probe in probes:
        assert probe.insider == insider.employee and probe.reason == "NEW_SUBSCRIPTION"
        by_day.setdefault(chain.day_of(probe.at), []).append(probe.at)
    surge_days = {day: span for index, (day, span) in enumerate(days) if index % 3 == 0}
    assert set(by_day) == set(surge_days)
    for day, moments in by_day.items():
        assert len(moments) in (4, 5)  # 1.5 a day over three working days
        span = surge_days[day]
        assert all(span.first <= at <= span.last for at in moments)
    assert abs(len(probes) - 1.5 * len(surge_days) * 3) <= 1


def test_waiting_out_the_week_probes_one_week_of_each_period_at_that_much_more(
    policies: dict[str, Path],
) -> None:
    """Probes fall only in the first calendar week of every ``period`` (weeks 0 and 2 of a
    month, for 2), within each day's span, under the lenient reason, at ``period`` times the
    intensity on each of those working days: the month's total stays about what the intensity
    gives all its working days."""
    chain = simulated(load_policy(policies["weak"]), simulated_config(3, 16, 21))
    insider = max(chain.clerks(), key=lambda s: len(chain.workdays[s.employee]))
    stage = Stage(chain, [insider], CustomerBook(3, 0.14), random.Random(1))
    days = dict(stage.days(insider))
    on_days = {day for day in days if (day // 7) % 2 == 0}
    assert on_days and len(on_days) < len(days)
    probes = WaitOut().plan(stage, 1.0, {"period": 2})
    by_day: dict[int, int] = {}
    for probe in probes:
        assert probe.insider == insider.employee and probe.reason == "NEW_SUBSCRIPTION"
        day = chain.day_of(probe.at)
        assert days[day].first <= probe.at <= days[day].last
        by_day[day] = by_day.get(day, 0) + 1
    assert set(by_day) == on_days
    assert set(by_day.values()) == {2}


def test_levelling_lifts_the_days_of_fewest_misses_to_one_level() -> None:
    """The added misses go to the lowest days first (the earliest among equals), never to a
    day already above the level they reach; their number is the total, rounded."""
    assert levelled([3, 0, 1, 5], 5) == [0, 3, 2, 0]
    assert levelled([2, 2], 3) == [2, 1]
    assert levelled([4, 1], 2.4) == [0, 2]
    assert levelled([], 5) == []


def test_an_insider_s_own_misses_leave_out_the_typos_they_retyped(
    policies: dict[str, Path],
) -> None:
    """What an insider saw on their own screen: a miss retyped as a found number one digit
    away within a minute was a typo, the policy forgives it and so does the count; a miss
    retyped later, one followed by another customer, or by nothing, is a miss, on its day."""
    base = simulated(load_policy(policies["weak"]), simulated_config(3, 16, 3))
    clerk = base.clerks()[0]
    midnight = base.midnight(0)

    def row(day: int, hour: float, number: str, found: bool) -> tuple[float, tuple[str, ...]]:
        at = midnight + day * 86_400 + hour * 3600
        fields = ("", clerk.employee, clerk.store, clerk.region, number, "PLAN_CHANGE", "")
        return (at, (*fields, "true" if found else "false", ""))

    rows = [
        row(0, 10, "01012340000", False),
        row(0, 10 + 20 / 3600, "01012340001", True),  # the retype: a typo
        row(0, 11, "01012350000", False),
        row(0, 11 + 5 / 60, "01012350001", True),  # five minutes on: still a miss
        row(0, 12, "01012360000", False),
        row(1, 10, "01012370000", True),
        row(2, 10, "01012380000", False),
        row(2, 10 + 20 / 3600, "01099990000", True),  # another customer: still a miss
        row(2, 11, "010-1239-0000", False),
        row(2, 11 + 9 / 3600, "010-1239-0010", True),  # spelt otherwise, one digit: a typo
    ]
    chain = Baseline(rows, {clerk.employee: clerk}, base.start, 3)
    chain.learn_days(load_policy(policies["weak"]))
    stage = Stage(chain, [clerk], CustomerBook(3, 0.14), random.Random(1))
    assert stage.honest_misses(clerk) == {0: 2, 2: 1}


def test_budgeted_probing_spends_each_day_s_quota_of_misses_late_in_the_day(
    policies: dict[str, Path],
) -> None:
    """Each working day's probes, under the lenient reason in the last quarter of the day's
    work, go on until that day's quota of misses (``levelled`` over the insider's own misses)
    is spent, so the last is a miss; the quotas lift the days of fewest misses to one level
    and add up to ``intensity`` a working day."""
    chain = simulated(load_policy(policies["weak"]), simulated_config(3, 16, 12))
    insider = max(chain.clerks(), key=lambda s: len(chain.workdays[s.employee]))
    stage = Stage(chain, [insider], CustomerBook(3, 0.14), random.Random(1))
    days = dict(stage.days(insider))
    honest = stage.honest_misses(insider)
    assert len(days) >= 7 and len(set(honest.values())) > 1  # days that differ
    probes = Budgeted().plan(stage, 2, {})
    by_day: dict[int, list[Probe]] = {}
    for probe in probes:
        assert probe.insider == insider.employee and probe.reason == "NEW_SUBSCRIPTION"
        day = chain.day_of(probe.at)
        span = days[day]
        assert span.last - (span.last - span.first) / 4 <= probe.at <= span.last
        by_day.setdefault(day, []).append(probe)
    quotas = levelled([honest.get(day, 0) for day in sorted(days)], 2 * len(days))
    assert sum(quotas) == 2 * len(days)
    for day, quota in zip(sorted(days), quotas, strict=True):
        made = sorted(by_day.get(day, []), key=lambda p: p.at)
        assert sum(not stage.found(p) for p in made) == quota
        if quota:
            assert not stage.found(made[-1])
    totals = [honest.get(day, 0) + quota for day, quota in zip(sorted(days), quotas, strict=True)]
    assert max(t for t, q in zip(totals, quotas, strict=True) if q) <= min(totals) + 1
    assert any(stage.found(p) for p in probes)  # records come with the misses
    # Where nearly every number is a customer, a day ends at the ceiling, quota spent or not.
    dense = Stage(chain, [insider], CustomerBook(3, 0.999), random.Random(1))
    by_day_dense: dict[int, int] = {}
    for probe in Budgeted().plan(dense, 2, {}):
        day = chain.day_of(probe.at)
        by_day_dense[day] = by_day_dense.get(day, 0) + 1
    assert max(by_day_dense.values()) == Budgeted.ceiling


def test_padding_adds_known_customers_to_each_working_day_beside_the_probes(
    policies: dict[str, Path],
) -> None:
    """The base strategy's probes, unchanged, plus ``pad`` lookups a working day (fewer
    while the insider has met fewer) of distinct customers met before that day, found,
    not counted as probes, spread over the day's span, under reasons other than the lenient
    one: more numbers for the same misses."""
    chain = simulated(load_policy(policies["weak"]), simulated_config(3, 16, 5))
    insider = max(chain.clerks(), key=lambda s: len(chain.workdays[s.employee]))
    stage = Stage(chain, [insider], CustomerBook(3, 0.14), random.Random(1))
    reasons = ["NEW_SUBSCRIPTION", "PLAN_CHANGE", "BILLING_INQUIRY"]
    padded = Padded(Paced("NEW_SUBSCRIPTION"), reasons)
    assert padded.name == "padded paced NEW_SUBSCRIPTION"
    probes = padded.plan(stage, 2, {"shape": "even", "pad": 30})
    alone = Paced("NEW_SUBSCRIPTION").plan(
        Stage(chain, [insider], CustomerBook(3, 0.14), random.Random(1)), 2, {"shape": "even"}
    )
    assert [p for p in probes if p.counts] == alone
    pads = [p for p in probes if not p.counts]
    days = dict(stage.days(insider))
    by_day: dict[int, list[str]] = {}
    for pad in pads:
        day = chain.day_of(pad.at)
        assert days[day].first <= pad.at <= days[day].last
        assert pad.found is True and pad.reason in ("PLAN_CHANGE", "BILLING_INQUIRY")
        assert pad.number in stage.met_before(insider, days[day].first)
        by_day.setdefault(day, []).append(pad.number)
    assert len(by_day) >= 3
    for day, numbers in by_day.items():
        assert len(numbers) == len(set(numbers))
        assert len(numbers) == min(30, len(stage.met_before(insider, days[day].first)))


def test_a_quiet_insider_probes_as_the_base_strategy_with_little_work_of_their_own(
    baseline: Baseline, tmp_path: Path
) -> None:
    """``quiet``: the base strategy's probes, unchanged, by an insider whose own honest
    lookups are kept only at ``own_work`` (a part-timer, a manager). Under a daily cap that
    the insider's honest work alone passes, they are locked with all of it and not with none
    of it; in a combined plan, the least work any part keeps is the insider's."""
    insider = max(baseline.clerks(), key=lambda s: len(baseline.workdays[s.employee]))
    busiest = max(
        sum(
            1
            for when, row in baseline.rows
            if row[1] == insider.employee and baseline.day_of(when) == day
        )
        for day in range(baseline.days)
    )
    cap = f"""
[[rules]]
name = "daily-cap"
kind = "rate"
window = "1d"
limit = {busiest // 2}
action = "lock"
"""
    policy = load_policy(_policy_file(tmp_path, cap))
    quiet = Quiet(Paced("NEW_SUBSCRIPTION"))
    assert quiet.name == "quiet paced NEW_SUBSCRIPTION"
    assert quiet.knobs == {"shape": ("even", "sittings"), "own_work": (0.1, 0.0, 0.3)}
    assert quiet.own_work({"shape": "even", "own_work": 0.3}) == 0.3
    assert Paced("NEW_SUBSCRIPTION").own_work({"shape": "even"}) == 1.0

    def stage() -> Stage:
        return Stage(baseline, [insider], CustomerBook(3, 0.14), random.Random(1))

    assert quiet.plan(stage(), 2, {"shape": "even", "own_work": 0.0}) == Paced(
        "NEW_SUBSCRIPTION"
    ).plan(stage(), 2, {"shape": "even"})
    arena = Arena(policy, baseline, tmp_path)
    assert arena.run(stage(), []).locked_by == "daily-cap"
    assert not arena.run(stage(), [], own_work=0.0).locked
    combined = Combined(
        [(quiet, 2.0, {"shape": "even", "own_work": 0.1}), (Paced("PLAN_CHANGE"), 1.0, {})]
    )
    assert combined.own_work({}) == 0.1


def test_a_relief_insider_works_their_days_in_turn_at_home_and_in_other_regions(
    policies: dict[str, Path], tmp_path: Path
) -> None:
    """``relief``: the base strategy's probes, unchanged, by an insider whose working days
    rotate over ``regions`` regions: home, then one store in each of the others, in turn, the
    day's honest work and probes alike under that store and region; nobody else moves. In a
    combined plan, the most regions any part rotates over is the insider's."""
    baseline = simulated(load_policy(policies["weak"]), simulated_config(1, 40, 7))
    assert len({s.region for s in baseline.staff.values()}) >= 3
    insider = max(baseline.clerks(), key=lambda s: len(baseline.workdays[s.employee]))
    relief = Relief(Paced("NEW_SUBSCRIPTION"))
    assert relief.name == "relief paced NEW_SUBSCRIPTION"
    assert relief.knobs == {"shape": ("even", "sittings"), "regions": (3, 2)}
    assert relief.regions({"shape": "even", "regions": 2}) == 2
    assert Paced("NEW_SUBSCRIPTION").regions({"shape": "even"}) == 1

    def stage() -> Stage:
        return Stage(baseline, [insider], CustomerBook(3, 0.14), random.Random(1))

    plan = relief.plan(stage(), 2, {"shape": "even", "regions": 3})
    assert plan == Paced("NEW_SUBSCRIPTION").plan(stage(), 2, {"shape": "even"})
    arena = Arena(load_policy(SHIPPED), baseline, tmp_path)
    moved = arena._relief(stage(), 3)
    days = [day for day, _ in stage().days(insider)]
    places = [moved.get((insider.employee, day)) for day in days]
    assert places[0::3] == [None] * len(places[0::3])  # home
    away = {place for place in places if place is not None}
    assert len(away) == 2 and len({region for _, region in away}) == 2
    assert insider.region not in {region for _, region in away}
    for store, region in away:
        assert any(s.store == store and s.region == region for s in baseline.staff.values())
    assert places[1::3] == [places[1]] * len(places[1::3])
    assert places[2::3] == [places[2]] * len(places[2::3])
    rows = arena._moved(moved)
    for (when, line), (_, row) in zip(rows, baseline.rows, strict=True):
        fields = line.split(",")
        place = moved.get((row[1], baseline.day_of(when)))
        assert tuple(fields[2:4]) == (place or (row[2], row[3]))
        assert fields[:2] + fields[4:] == [row[0], row[1], *row[4:]]
    for probe in plan:
        place = moved.get((insider.employee, baseline.day_of(probe.at)))
        fields = arena._fields(stage(), probe, moved)
        assert fields[2:4] == (place or (insider.store, insider.region))
    assert arena._relief(stage(), 1) == {}
    arena.honest(stage(), 3)  # the honest month with the insider as a relief clerk
    with (tmp_path / "events.csv").open(encoding="utf-8") as replayed:
        placed = {
            (line.split(",")[2], line.split(",")[3])
            for line in replayed
            if line.split(",")[1] == insider.employee
        }
    assert placed == away | {(insider.store, insider.region)}
    combined = Combined(
        [(relief, 2.0, {"shape": "even", "regions": 3}), (Paced("PLAN_CHANGE"), 1.0, {})]
    )
    assert combined.regions({}) == 3


def test_a_quiet_insider_pads_and_farms_typos_only_with_customers_they_still_meet(
    baseline: Baseline, tmp_path: Path
) -> None:
    """Padding and typo farming draw on the customers the insider met; where the trial leaves
    some of their visits out (a quiet insider, a quiet region), only the customers of the
    visits kept. Drawn from the whole month, a quiet insider's padding was hundreds of
    customers a day new to them (found, diluting every share) and counted as none: the
    red-team's seed 5 found 28 records that way. The trial decides what it leaves out before
    the plan (``Arena.thin``) and leaves out the same rows when it runs."""
    insider = max(baseline.clerks(), key=lambda s: len(baseline.met.get(s.employee, [])))
    arena = Arena(load_policy(SHIPPED), baseline, tmp_path)
    padded = Padded(Paced("NEW_SUBSCRIPTION"), ["BILLING_INQUIRY", "PLAN_CHANGE"])
    farm = TypoFarm(same=False)
    knobs = {"retype_after": 8, "reason": "BILLING_INQUIRY"}

    def stage(own_work: float) -> Stage:
        staged = Stage(baseline, [insider], CustomerBook(3, 0.14), random.Random(1))
        arena.thin(staged, own_work, 1.0)
        return staged

    whole = stage(1.0)
    assert whole.left_out == frozenset()
    assert whole.met(insider) == baseline.met[insider.employee]
    pads = [p for p in padded.plan(whole, 1, {"shape": "even", "pad": 50}) if not p.counts]
    assert pads and farm.plan(whole, 2, knobs)

    nobody = stage(0.0)
    assert nobody.met(insider) == []
    assert not [p for p in padded.plan(nobody, 1, {"shape": "even", "pad": 50}) if not p.counts]
    assert farm.plan(nobody, 2, knobs) == []

    half = stage(0.5)
    assert half.left_out
    kept = {number for _, number, _ in half.met(insider)}
    assert kept < {number for _, number, _ in baseline.met[insider.employee]}
    half_pads = [p for p in padded.plan(half, 1, {"shape": "even", "pad": 50}) if not p.counts]
    retypes = [p for p in farm.plan(half, 2, knobs) if not p.counts]
    assert half_pads and retypes
    assert {p.number for p in half_pads} <= kept
    assert {p.number for p in retypes} <= kept  # every retype is of a customer still met
    # The rows the plan was made for are the rows left out (events.csv: the last day's).
    arena.run(half, [], own_work=0.5)
    last_day = max(baseline.day_of(when) for when, _ in baseline.rows)
    with (tmp_path / "events.csv").open(encoding="utf-8") as replayed:
        own = sum(1 for line in replayed if line.split(",")[1] == insider.employee)
    kept_rows = sum(
        1
        for index, (when, row) in enumerate(baseline.rows)
        if row[1] == insider.employee
        and baseline.day_of(when) == last_day
        and index not in half.left_out
    )
    assert 0 < own == kept_rows


def test_a_quiet_region_keeps_a_share_of_the_insider_s_region_s_work(
    policies: dict[str, Path], tmp_path: Path
) -> None:
    """``quiet region``: the base strategy's probes, unchanged, by an insider in a region of
    quiet stores: everyone's honest visits there, the insider's too, kept only at
    ``region_work``; the other regions' work untouched. In a combined plan the least any part
    keeps is the region's."""
    baseline = simulated(load_policy(policies["weak"]), simulated_config(1, 40, 7))
    insider = max(baseline.clerks(), key=lambda s: len(baseline.workdays[s.employee]))
    quiet = QuietRegion(Paced("NEW_SUBSCRIPTION"))
    assert quiet.name == "quiet region paced NEW_SUBSCRIPTION"
    assert quiet.knobs == {"shape": ("even", "sittings"), "region_work": (0.25, 0.1, 0.5)}
    knobs = {"shape": "even", "region_work": 0.1}
    assert quiet.region_work(knobs) == quiet.own_work(knobs) == 0.1
    assert Paced("NEW_SUBSCRIPTION").region_work({"shape": "even"}) == 1.0

    def stage() -> Stage:
        return Stage(baseline, [insider], CustomerBook(3, 0.14), random.Random(1))

    assert quiet.plan(stage(), 2, knobs) == Paced("NEW_SUBSCRIPTION").plan(
        stage(), 2, {"shape": "even"}
    )
    arena = Arena(load_policy(SHIPPED), baseline, tmp_path)
    last_day = max(baseline.day_of(when) for when, _ in baseline.rows)

    def regions_of_the_last_day(**work: float) -> dict[str, int]:
        arena.run(stage(), [], **work)  # type: ignore[arg-type]
        counts: dict[str, int] = {}
        with (tmp_path / "events.csv").open(encoding="utf-8") as replayed:
            next(replayed)
            for line in replayed:
                region = line.split(",")[3]
                counts[region] = counts.get(region, 0) + 1
        return counts

    whole = {
        region: sum(
            1
            for when, row in baseline.rows
            if row[3] == region and baseline.day_of(when) == last_day
        )
        for region in {s.region for s in baseline.staff.values()}
    }
    assert regions_of_the_last_day() == {r: n for r, n in whole.items() if n}
    thinned = regions_of_the_last_day(own_work=0.0, region_work=0.0)
    assert insider.region not in thinned
    assert thinned == {r: n for r, n in whole.items() if n and r != insider.region}
    combined = Combined([(quiet, 2.0, knobs), (Paced("PLAN_CHANGE"), 1.0, {"shape": "even"})])
    assert combined.region_work({}) == 0.1
    # Whole visits go, never a typo without its retype: an employee's rows less than
    # VISIT_GAP apart are kept or left out together, and about half the visits are kept.
    dropped = arena._thinned(stage(), {}, 1.0, 0.5)
    last: dict[str, tuple[float, bool]] = {}
    visits = kept = 0
    for index, (when, row) in enumerate(baseline.rows):
        if row[3] != insider.region:
            assert index not in dropped
            continue
        gone = index in dropped
        previous = last.get(row[1])
        if previous is not None and when - previous[0] <= VISIT_GAP:
            assert gone is previous[1]
        else:
            visits += 1
            kept += not gone
        last[row[1]] = (when, gone)
    assert 0.4 < kept / visits < 0.6


def test_the_headline_counts_a_luckier_never_locked_draw_and_not_a_locked_one() -> None:
    """A draw of the same parameters is a trial like any other: when one got an insider more
    records, never locked, than the search's best trial, the headline is that draw's; a
    locked draw never counts."""

    def row(name: str, searched: int, draws: list[tuple[int, bool]]) -> Row:
        def outcome(records: int, locked: bool = False) -> Outcome:
            return Outcome(records={"E1": records}, locked_at=1.0 if locked else None)

        trial = Trial(1.0, {}, ["E1"], outcome(searched))
        return Row(
            Paced("BILLING_INQUIRY"), name, 1, trial, trial,
            [outcome(records, locked) for records, locked in draws],
            trial, "", None, None, 3,
        )  # fmt: skip

    steady = row("steady", 16, [(8, False), (12, False)])
    lucky = row("lucky", 12, [(17, False), (5, True)])
    unlucky = row("unlucky", 12, [(30, True), (3, False)])
    assert [best_never_locked(r) for r in (steady, lucky, unlucky)] == [16, 17, 12]
    assert headline([steady, lucky, unlucky]) is lucky


def _one_edit_apart(variant: str, number: str) -> bool:
    """One digit replaced, or two adjacent digits swapped."""
    diffs = [i for i in range(11) if variant[i] != number[i]]
    swapped = len(diffs) == 2 and diffs[1] == diffs[0] + 1 and variant[diffs[0]] == number[diffs[1]]
    return len(diffs) == 1 or swapped


def test_groups_sit_in_different_stores_and_regions(policies: dict[str, Path]) -> None:
    """Colluders are spread over stores, and over regions while there are regions left."""
    chain = simulated(load_policy(policies["weak"]), simulated_config(5, 40, 1))
    regions = {s.region for s in chain.clerks()}
    assert len(regions) >= 2
    for size in (3, 5):
        group = list(spread_out(chain, size, random.Random(size)))
        assert len(group) == size
        assert len({s.store for s in group}) == size
        assert len({s.region for s in group}) == min(size, len(regions))


def test_every_reason_of_the_catalogue_gets_a_paced_row() -> None:
    """The family is read from the policy: a paced row per everyday reason, a corporate row."""
    policy: Policy = load_policy(SHIPPED)
    names = [s.name for s in strategies_for(policy)]
    for code, reason in policy.reasons.items():
        if reason.roles is None and reason.reference_pattern is None:
            assert f"paced {code}" in names
    assert "exempt CORPORATE_ACCOUNT (corporate rep)" in names
    assert {
        "typo-farm same customer",
        "typo-farm many customers",
        "typo-farm own visits",
        "after hours",
        "surge days",
        "wait out the week",
        "padded paced NEW_SUBSCRIPTION",
        "padded typo-farm many customers",
    } <= set(names)


def test_command_prints_the_table_and_writes_json(
    policies: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The CLI prints one row per strategy and a headline, writes the JSON, and exits 0."""
    out = tmp_path / "red.json"
    status = main(
        ["red-team", "--config", str(policies["weak"]), "--days", "3", "--employees", "16",
         "--seed", "3", "--steps", "2", "--only", "paced BILLING", "--only", "after hours",
         "--json", str(out)]
    )  # fmt: skip
    assert status == 0
    printed = capsys.readouterr().out
    assert "| paced BILLING_INQUIRY |" in printed
    assert "| after hours |" in printed
    assert "Headline:" in printed
    assert "The honest month alone (no probes): 0 of 16 employees locked" in printed
    assert "honest lookups (400 regulars a store)" in printed
    report = json.loads(out.read_text(encoding="utf-8"))
    assert report["honest_locked"] == []
    assert {"policy", "days", "density", "seed", "trials", "headline", "strategies"} <= set(report)
    row = report["strategies"][0]
    assert {
        "strategy", "insiders", "records_never_locked", "records_best", "records_before_flag",
        "days_to_flag", "days_to_lock", "binding_rule", "edges", "trials",
        "records_never_locked_mean_of_draws", "other_draws",
    } <= set(row)  # fmt: skip
    trial = row["trials"][0]
    assert {
        "intensity", "knobs", "records_per_insider", "records_before_flag", "first_probe_day",
        "first_flag", "locked", "locked_at", "locked_by", "days_to_flag", "days_to_lock",
    } <= set(trial)  # fmt: skip
    assert trial["first_probe_day"] is not None


def test_bad_config_exits_2_naming_file_and_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A broken policy is a configuration error with the file and key, not a traceback."""
    broken = _policy_file(tmp_path, WEAK_RULES.replace("limit = 200", 'limit = "lots"'))
    assert main(["red-team", "--config", str(broken), "--days", "2"]) == 2
    error = capsys.readouterr().err
    assert f"{broken}: rules[0].limit" in error


def test_an_events_baseline_reads_as_the_simulated_one(
    policies: dict[str, Path], baseline: Baseline, tmp_path: Path
) -> None:
    """EVENTS.csv and its roster give the same rows, roles, working days and met customers."""
    from lookup_proxy.redteam.baseline import from_events
    from lookup_proxy.simulation.month import simulate

    cfg = simulated_config(3, 16, 3)
    events = tmp_path / "EVENTS.csv"
    simulate(cfg, events, tmp_path / "TRUTH.csv")
    read = from_events(load_policy(policies["weak"]), events, tmp_path / "EVENTS.roster.csv")
    assert read.rows == baseline.rows
    assert read.staff == baseline.staff
    assert (read.start, read.days) == (baseline.start, baseline.days)
    assert read.workdays == baseline.workdays
    assert read.met == baseline.met
    assert read.references == baseline.references
    assert read.corporate() and all("corporate-sales" in s.roles for s in read.corporate())
    # The businesses it shows are the spans its corporate work found, inside the real ones.
    real = {b.reference: b for b in baseline.businesses}
    assert read.businesses
    for business in read.businesses:
        assert set(business.lines()) <= set(real[business.reference].lines())
    # Without the account column: the businesses from references alone, and a found row
    # inside one of their spans named after it (never another account than the file's).
    plain = tmp_path / "PLAIN.csv"
    lines = events.read_text(encoding="utf-8").splitlines()
    assert lines[0].endswith(",found,account")
    plain.write_text("".join(line.rsplit(",", 1)[0] + "\n" for line in lines), "utf-8")
    unnamed = from_events(load_policy(policies["weak"]), plain, tmp_path / "EVENTS.roster.csv")
    assert [row[:8] for _, row in unnamed.rows] == [row[:8] for _, row in baseline.rows]
    assert unnamed.businesses == read.businesses
    named = [(a[8], b[8]) for (_, a), (_, b) in zip(unnamed.rows, read.rows, strict=True)]
    assert all(guess in ("", real) for guess, real in named)
    assert any(guess for guess, _ in named)


def test_the_honest_month_counts_what_accounts_withholds_from_honest_clerks(
    policies: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A clerk who serves a business line's holder under an everyday reason is refused live
    ([accounts]); the red-team's honest month says how many such lookups it refused, and warns
    when EVENTS.csv does not say which records are business lines (then it takes the lines
    found under each reference to be a business's)."""
    from lookup_proxy.simulation.month import simulate

    events = tmp_path / "EVENTS.csv"
    simulate(simulated_config(3, 16, 3), events, tmp_path / "TRUTH.csv")
    header, *rows = events.read_text(encoding="utf-8").splitlines()
    corporate = [r for r in rows if ",CORPORATE_ACCOUNT," in r and r.endswith(r.split(",")[6])]
    assert corporate
    clerk = next(r for r in rows if ",CORPORATE_ACCOUNT," not in r).split(",")
    at, business = corporate[0].split(","), corporate[0].split(",")[6]
    # A clerk looks one of those lines up under BILLING_INQUIRY, a second after the rep did.
    served = [at[0], *clerk[1:4], at[4], "BILLING_INQUIRY", "", "true", business]
    index = rows.index(corporate[0]) + 1
    rows.insert(index, ",".join(served))
    events.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    args = ["red-team", "--config", str(policies["weak"]), "--events", str(events)]
    args += ["--roster", str(tmp_path / "EVENTS.roster.csv"), "--steps", "1", "--draws", "1"]
    assert main([*args, "--only", "after hours", "--json", str(tmp_path / "r.json")]) == 0
    done = capsys.readouterr()
    report = json.loads((tmp_path / "r.json").read_text(encoding="utf-8"))
    assert report["honest_withheld"] == 1
    assert "; 1 honest lookups withheld for their business account" in done.out
    assert "has no account column" not in done.err
    plain = tmp_path / "PLAIN.csv"
    plain.write_text(
        "".join(line.rsplit(",", 1)[0] + "\n" for line in [header, *rows]), encoding="utf-8"
    )
    args[args.index(str(events))] = str(plain)
    assert main([*args, "--only", "after hours", "--json", str(tmp_path / "r.json")]) == 0
    done = capsys.readouterr()
    # Without the column the red-team names accounts from the lines found under each
    # reference, and says that it did.
    assert json.loads((tmp_path / "r.json").read_text(encoding="utf-8"))["honest_withheld"] == 1
    assert "has no account column naming the account" in done.err
    assert "the spans of lines found under each reference" in done.err


def test_an_unreadable_events_baseline_exits_2_naming_the_line(
    policies: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A baseline row replay could not read stops the red-team as it stops replay."""
    events = tmp_path / "EVENTS.csv"
    events.write_text(
        "timestamp,employee,store,region,number,reason,reference,found\n"
        "yesterday,E1,S1,R1,01012345678,BILLING_INQUIRY,,true\n",
        encoding="utf-8",
    )
    assert main(["red-team", "--config", str(policies["weak"]), "--events", str(events)]) == 2
    assert f"{events}: line 2: timestamp" in capsys.readouterr().err


def test_an_insider_s_own_business_line_withheld_is_not_their_first_flag(
    policies: dict[str, Path], baseline: Baseline, tmp_path: Path
) -> None:
    """An insider who serves a business line's holder at the counter is refused ([accounts])
    like any clerk: no suspicion of their probing, so "days to flag" does not start there; a
    probe of a business line withheld is a refusal of the probe, and does."""
    insider = baseline.clerks()[0]
    business = baseline.businesses[0]
    line = number_of(business.first)
    days = sorted(baseline.workdays[insider.employee].items())
    (_, first), (_, second) = days[0], days[1]
    own = (first.last, (
        _stamp(first.last), insider.employee, insider.store, insider.region,
        line, "BILLING_INQUIRY", "", "true", business.reference,
    ))  # fmt: skip
    after = Baseline(
        sorted([*baseline.rows, own], key=lambda r: r[0]),
        baseline.staff, baseline.start, baseline.days,
    )  # fmt: skip
    after.learn_days(load_policy(policies["weak"]))
    after.businesses = baseline.businesses
    book = CustomerBook(3, 0.14, after.business_ranges())
    arena = Arena(load_policy(policies["weak"]), after, tmp_path)
    miss = next(n for n in (number_of(40_000_000 + k) for k in range(99)) if not book.found(n))
    probe = Probe(first.first + 1, insider.employee, miss, "NEW_SUBSCRIPTION")
    outcome = arena.run(Stage(after, [insider], book, random.Random(1)), [probe])
    assert outcome.first_probe is not None
    assert (outcome.first_flag, outcome.denied) == (None, 0)
    walked = replace(probe, at=second.first + 1, number=number_of(business.first + 1))
    walked = replace(walked, reason="BILLING_INQUIRY")
    outcome = arena.run(Stage(after, [insider], book, random.Random(1)), [probe, walked])
    assert outcome.first_flag == round(walked.at)
    assert outcome.denied_by == {"business-line": 1} and outcome.best_insider == 0


def test_the_best_strategies_are_also_tried_together(
    policies: dict[str, Path], baseline: Baseline
) -> None:
    """The best one-clerk strategies run at once, each at a share of the edge it found alone:
    the best two, and the best three (fewer parts can each keep more of their edge)."""
    parts = [Paced("BILLING_INQUIRY"), Paced("PLAN_CHANGE"), Paced("DEVICE_SUPPORT")]
    outcome = red_team(load_policy(policies["weak"]), _options(policies["weak"]), parts)
    alone = outcome.results[: len(parts)]
    pair, triple = (result.strategy for result in outcome.results[len(parts) :])
    assert isinstance(pair, Combined) and isinstance(triple, Combined)
    assert [row.name for row in outcome.rows[-2:]] == [pair.name, triple.name]
    ranked = sorted(
        alone,
        key=lambda r: -max(t.outcome.best_insider for t in r.trials if not t.outcome.locked),
    )
    assert [part.name for part, _, _ in pair.parts] == [r.strategy.name for r in ranked[:2]]
    assert {part.name for part, _, _ in triple.parts} == {p.name for p in parts}
    insider = baseline.clerks()[0]
    stage = Stage(baseline, [insider], CustomerBook(3, 0.14), random.Random(1))
    together = triple.plan(stage, 8, {})
    each = [len(part.plan(stage, edge, knobs)) for part, edge, knobs in triple.parts]
    assert len(together) == sum(each) > 0
    assert len(triple.plan(stage, 4, {})) < len(together)


def test_a_padded_part_joins_a_combination_without_its_padding(
    policies: dict[str, Path],
) -> None:
    """Padding discloses nothing and counts against the insider where lookups are counted, so
    a padded row joins a combination as its base at the same edge, without the pad knob."""
    policy = load_policy(policies["weak"])
    parts = [Paced("BILLING_INQUIRY"), Padded(Paced("PLAN_CHANGE"), everyday_reasons(policy))]
    outcome = red_team(policy, _options(policies["weak"]), parts)
    (pair,) = (r.strategy for r in outcome.results if isinstance(r.strategy, Combined))
    assert isinstance(pair, Combined)
    assert sorted(part.name for part, _, _ in pair.parts) == [
        "paced BILLING_INQUIRY",
        "paced PLAN_CHANGE",
    ]
    padded = next(r for r in outcome.results if r.strategy.name.startswith("padded"))
    best = padded.best_unlocked()
    assert best is not None and "pad" in best.knobs
    [(_, edge_found, knobs)] = [p for p in pair.parts if p[0].name == "paced PLAN_CHANGE"]
    assert edge_found == best.intensity
    assert knobs == {k: v for k, v in best.knobs.items() if k != "pad"}


def test_the_honest_month_is_judged_first_and_no_insider_is_one_it_locks(
    tmp_path: Path, baseline: Baseline
) -> None:
    """A policy that locks busy honest clerks (more lookups in a day than the median clerk's
    busiest day) looks strong against probes only because its insiders are locked anyway: the
    report names whom the honest month alone locks, worked out here from the rows themselves,
    and no insider, alone or in a group (one a store: fewer where few stores are left), is
    chosen among them."""
    busiest: dict[str, int] = {}
    times: dict[str, list[float]] = {}
    for when, row in baseline.rows:
        times.setdefault(row[1], []).append(when)
    for employee, moments in times.items():
        busiest[employee] = max(sum(1 for m in moments if t - 86_400 < m <= t) for t in moments)
    limit = sorted(busiest.values())[len(busiest) // 2]
    rules = f"""
[[rules]]
name = "daily-lock"
kind = "rate"
window = "1d"
limit = {limit}
action = "lock"
"""
    path = _policy_file(tmp_path, rules)
    expected = sorted(e for e, most in busiest.items() if most > limit)
    assert 0 < len(expected) < len(baseline.clerks())
    outcome = red_team(
        load_policy(path), _options(path, steps=1, draws=1), [Paced("BILLING_INQUIRY")]
    )
    assert outcome.report["honest_locked"] == expected
    assert f"locked: {', '.join(expected)}; no insider is chosen among them" in outcome.text
    search = Search(
        Arena(load_policy(path), baseline, tmp_path), CustomerBook(3, 0.14), 3, 1, 0.0,
        frozenset(expected),
    )  # fmt: skip
    for seed in range(12):
        search.seed = seed
        (one,) = search.insiders(Paced("BILLING_INQUIRY"), {})
        group = search.insiders(strategies_by_name()["group sharing a block"], {"k": 3})
        assert one.employee not in expected
        assert group and not {s.employee for s in group} & set(expected)


def strategies_by_name() -> dict[str, Strategy]:
    return {s.name: s for s in strategies_for(load_policy(SHIPPED))}


def test_fewer_regulars_a_store_means_more_customers_a_clerk_already_knows(
    policies: dict[str, Path],
) -> None:
    """``--regulars`` sizes each simulated store's pool of returning customers: with fewer,
    a clerk's lookups are more often of a number they looked up on an earlier day (what every
    share of numbers new to them feels), and the report says how many."""
    policy = load_policy(policies["weak"])

    def known_share(regulars: int) -> float:
        chain = simulated(policy, simulated_config(3, 16, 3, regulars))
        first_day: dict[tuple[str, str], int] = {}
        again = total = 0
        for when, row in chain.rows:
            day = chain.day_of(when)
            met = first_day.setdefault((row[1], normalise_number(row[4], policy.numbers)), day)
            total += 1
            again += met < day
        return again / total

    assert known_share(50) > 2 * known_share(5000)
    report = red_team(
        policy,
        _options(policies["weak"], regulars=50, steps=1, draws=1),
        [Paced("BILLING_INQUIRY")],
    )
    assert report.report["regulars"] == 50
    assert "(50 regulars a store)" in report.text
