"""Insiders who have read the policy: each stays just under every threshold they can count.

The classic campaigns enumerate as if no guard existed; these read the policy file the month is
replayed against (a policy is no secret) and size each day's probing to what its counting rules
allow: ``Budget`` turns the misses, rate, distinct and block rules (and peer rules' fixed floors)
that apply to a reason into probes per working day, at ``MARGIN`` of the limit and after the
insider's own honest work. What
they cannot count under — opening hours, comparison with peers, escalation of repeated flags —
is what is left to catch them. Their parameters are fixed (no search: that is
``lookup-proxy red-team``), so a scored month says how the policy fares against the obvious
reading of itself.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Sequence
from typing import Final

from lookup_proxy.policy import BlockRule, PeerRule, Policy, SequentialRule
from lookup_proxy.simulation.campaigns import Campaign, CollusionBlock
from lookup_proxy.simulation.contracts import CORPORATE_REASON
from lookup_proxy.simulation.honest import EVERYDAY_REASONS
from lookup_proxy.simulation.number_space import (
    canonical,
    number_of,
    random_subscriber,
    typo_of,
)
from lookup_proxy.simulation.roster import (
    CorporateAccount,
    Employee,
    business_lines,
    corporate_accounts,
)
from lookup_proxy.simulation.workday import HOUR, Event, Segment, time_in
from lookup_proxy.simulation.world import World

DAY: Final = 86_400
WORKDAY: Final = 9 * HOUR
"""The span over which an informed insider spreads a day's probes."""
MARGIN: Final = 0.8
"""How close to a limit an informed insider dares to go."""
HONEST_LOOKUPS_PER_VISIT: Final = 1.8
LENIENT_REASON: Final = "NEW_SUBSCRIPTION"
TYPO_RETYPE: Final = (6, 15)
"""Seconds between a farmed variant and the retype of the known customer."""
SLOW_PER_DAY: Final = 3
PAD_FACTOR: Final = 2.0
"""Lookups of known customers a padding insider adds, per honest lookup of their own."""
WALK_REASON: Final = "BILLING_INQUIRY"
"""The cover reason of a walk along business customers' lines: an existing customer's question."""
BEFORE_OPENING: Final = (7 * HOUR, 9 * HOUR)
AFTER_CLOSING: Final = (21 * HOUR + 30 * 60, 23 * HOUR)


def _applies(rule: object, reason: str) -> bool:
    reasons = getattr(rule, "reasons", None)
    if reasons is not None and reason not in reasons:
        return False
    return reason not in getattr(rule, "exempt_reasons", ())


class Budget:
    """Probes per working day an insider can send under the policy's counting rules.

    Rules are read for one insider: employee-scoped, enforced, applying to the reasons the
    insider rotates through (a rule that sees m of n rotated reasons sees m/n of the probes).
    A window of a day or longer allows ``limit`` per window; a shorter one ``limit`` per window
    over a working day. Misses rules count the share of probes that miss; rate and distinct
    rules also count the insider's own honest work.
    """

    def __init__(self, policy: Policy, density: float) -> None:
        self.policy = policy
        self.density = density

    @staticmethod
    def per_day(limit: float, window: float) -> float:
        """What a limit per window allows in one working day, at the margin."""
        scale = DAY / window if window >= DAY else WORKDAY / window
        return MARGIN * limit * scale

    def probes(
        self, reasons: Sequence[str], honest: float, roles: frozenset[str], misses: bool = True
    ) -> int:
        """Probes per working day under ``reasons`` in turn, ``honest`` own lookups a day;
        ``misses`` false for probes that never miss (a walk along business lines), which no
        rule counting misses sees."""
        allowed = math.inf
        for rule in self.policy.rules:
            if rule.scope != "employee" or rule.mode != "enforce":
                continue
            if set(getattr(rule, "exempt_roles", ())) & roles:
                continue
            # A walk-in reason's misses count only once corrected as typos: not a probe's.
            walk_ins = getattr(rule, "walk_in_reasons", ())
            seen = sum(_applies(rule, r) and r not in walk_ins for r in reasons)
            # A peer rule's fixed floor is a count the insider can read (what the peers add
            # to it they cannot); every probe that misses counts towards it unless the rule
            # counts only forgiven typos.
            metric = getattr(rule, "metric", "")
            floor = getattr(rule, "min_count", 0) if metric in ("misses", "all-misses") else 0
            if not seen or (rule.kind not in ("misses", "rate", "distinct") and not floor):
                continue
            if not misses and rule.kind in ("misses", "peer"):
                continue
            share = seen / len(reasons)
            per_day = self.per_day(floor or rule.limit, rule.window)
            if rule.kind in ("misses", "peer"):
                allowed = min(allowed, per_day / share / (1 - self.density))
            else:
                allowed = min(allowed, max(0.0, per_day - honest) / share)
        for code in reasons:
            for window, limit in self._reason_limits(code).items():
                allowed = min(allowed, max(0.0, self.per_day(limit, window) - honest))
        return max(1, int(min(allowed, 400)))

    def _reason_limits(self, code: str) -> dict[float, int]:
        from lookup_proxy.durations import parse_duration

        reason = self.policy.reasons.get(code)
        if reason is None:
            return {}
        return {parse_duration(w): n for w, n in reason.limits.items()}

    def volume_room(self, honest: float) -> float:
        """Lookups a day an insider may add to ``honest`` of their own under the policy's
        enforced ``lookups`` peer rules (a day's count against the peers' median, which a clerk
        sees at the next counter: about their own day), at the margin; no such rule, no bound."""
        room = math.inf
        for rule in self.policy.rules:
            if isinstance(rule, PeerRule) and rule.metric == "lookups" and rule.mode == "enforce":
                room = min(room, max(0.0, (MARGIN * rule.min_ratio - 1.0) * honest))
        return room

    def typo_forgiveness(self, reason: str) -> int:
        """Misses forgiven as typos per working day under ``reason`` (the tightest cap)."""
        allowed = 20.0  # forgiveness without a cap: a clumsy-looking clerk's share
        for rule in self.policy.rules:
            if rule.kind != "misses" or rule.scope != "employee" or not _applies(rule, reason):
                continue
            limit = getattr(rule, "typo_limit", None)
            budget = getattr(rule, "typo_budget", None)
            if limit is not None and budget:
                allowed = min(allowed, self.per_day(limit, budget))
        return max(1, int(allowed))

    def walk(self, honest: float, businesses: Sequence[CorporateAccount]) -> int:
        """Steps per working day of one clerk's walk along ``businesses``' lines under
        WALK_REASON: no miss, so only rate, distinct and reason limits, and the block rules,
        each of whose blocks the walk's lines fill a few a day (the walk takes the businesses
        in turn, so every block they cover is filled alike)."""
        allowed: float = self.probes((WALK_REASON,), honest, frozenset({"clerk"}), misses=False)
        for rule in self.policy.rules:
            if not isinstance(rule, BlockRule) or rule.mode != "enforce":
                continue
            if not _applies(rule, WALK_REASON):
                continue
            width = 10 ** (11 - rule.block_digits)
            blocks = {
                line // width for business in businesses for line in business.lines()[::width]
            } | {(business.first + business.size - 1) // width for business in businesses}
            allowed = min(allowed, len(blocks) * self.per_day(rule.limit, rule.window))
        return max(1, int(min(allowed, 400)))

    def block_take(self, members: int) -> int:
        """Numbers of one block a group member may take per working day unnoticed.

        Members sit in different stores and regions: store- and region-wide block rules see
        one member each, chain-wide ones all; ``member_min`` spares a member below it.
        """
        allowed = math.inf
        for rule in self.policy.rules:
            if not isinstance(rule, BlockRule) or rule.mode != "enforce":
                continue
            if not _applies(rule, LENIENT_REASON):
                continue
            sharing = members if rule.scope == "chain" else 1
            own = max(rule.limit / sharing, rule.member_min - 1 if rule.scope != "employee" else 0)
            allowed = min(allowed, self.per_day(own, rule.window))
        return max(1, int(min(allowed, 400)))


def _honest_lookups(employee: Employee) -> float:
    return employee.rate * WORKDAY / HOUR * HONEST_LOOKUPS_PER_VISIT


class Informed(Campaign):
    """An informed insider: a fixed daily quota, spread over working hours, one reason."""

    reason_cycle: tuple[str, ...] = (LENIENT_REASON,)

    def __init__(self, world: World, employee: Employee, quota: int) -> None:
        super().__init__(world, employee)
        self.quota = quota
        self.turn = 0

    def next_reason(self) -> str:
        """The reason of the next probe (rotating ones take turns)."""
        reason = self.reason_cycle[self.turn % len(self.reason_cycle)]
        self.turn += 1
        return reason

    def day(self, segments: Sequence[Segment], out: list[Event]) -> None:
        for _ in range(self.scaled(self.quota, self.quota)):
            number = number_of(random_subscriber(self.rng))
            self.emit(out, time_in(segments, self.rng), number, self.next_reason(), style=0)


class InformedPadded(Informed):
    """NEW_SUBSCRIPTION probing, with the day padded by the insider's own customers again.

    Misses are judged as shares of numbers (peer rules, ratio rules); a customer the insider
    served on an earlier day, looked up again, discloses nothing new but is one more number,
    so ``PAD_FACTOR`` times the insider's own honest lookups would make the probes' misses a
    share that looks like chance, if every number counted alike. (Until 2026-12-06 the pads
    were any of the store's regulars, most of whom the insider had never looked up: a list of
    customers the insider would need from somewhere, and each of them a record disclosed.)
    """

    def __init__(self, world: World, employee: Employee, quota: int, pad: int) -> None:
        super().__init__(world, employee, quota)
        self.pad = pad
        self.met: dict[str, None] = {}
        """Customers the insider served on earlier days (found, their own honest work), in
        the order first served: a dict, so one structure answers both "met?" and "in what
        order" (``rng.sample`` needs the order to be reproducible)."""

    def day(self, segments: Sequence[Segment], out: list[Event]) -> None:
        today = [
            event[1]
            for event in out
            if event[5] is self.employee and not event[6] and event[4] and not event[3]
        ]
        super().day(segments, out)
        cover = [r for r in EVERYDAY_REASONS if r != LENIENT_REASON]
        if self.met:
            for known in self.rng.sample(list(self.met), min(self.pad, len(self.met))):
                # Cover, not probes: the insider's own customers, so the truth counts them as
                # their own work and they disclose nothing new.
                t = time_in(segments, self.rng)
                out.append((t, known, self.rng.choice(cover), "", True, self.employee, ""))
        self.met.update(dict.fromkeys(canonical(number) for number in today))


class InformedRotation(Informed):
    """Every everyday reason and every spelling in turn, each just under its own limits."""

    reason_cycle = EVERYDAY_REASONS

    def day(self, segments: Sequence[Segment], out: list[Event]) -> None:
        for _ in range(self.scaled(self.quota, self.quota)):
            number = number_of(random_subscriber(self.rng))
            style = self.turn % 5
            self.emit(out, time_in(segments, self.rng), number, self.next_reason(), style=style)


class InformedAfterHours(Informed):
    """Probing before opening or after closing, when no queue watches."""

    def day(self, segments: Sequence[Segment], out: list[Event]) -> None:
        low, high = BEFORE_OPENING if self.rng.random() < 0.5 else AFTER_CLOSING
        for _ in range(self.scaled(self.quota, self.quota)):
            number = number_of(random_subscriber(self.rng))
            self.emit(out, self.rng.randint(low, high), number, LENIENT_REASON, style=0)


class InformedTypoFarm(Informed):
    """A variant of a store regular's number, then the regular retyped seconds later."""

    def day(self, segments: Sequence[Segment], out: list[Event]) -> None:
        for _ in range(self.scaled(self.quota, self.quota)):
            known = self.world.regular(self.employee.store, self.rng)
            t = time_in(segments, self.rng, margin=60)
            self.emit(out, t, typo_of(known, self.rng), "BILLING_INQUIRY", style=0)
            # The retype is cover, not a probe: a customer the insider already serves, so the
            # truth counts it as their own work and it discloses nothing new.
            retype = t + self.rng.randint(*TYPO_RETYPE)
            out.append((retype, known, "BILLING_INQUIRY", "", True, self.employee, ""))


class InformedBusinessWalk(Informed):
    """A clerk walking the business customers' lines under a cover reason: a business owns
    consecutive lines, so every step is a record and none a miss for a rule to count (found
    by the red-team, 2026-12-07: 72-92 records a month, never flagged, before ``[accounts]``).
    Steps are a pass ``stride`` apart (just past the policy's largest sequential ``distance``),
    one business after another; the walk knows every business's lines (a rep's screen, a
    business's own numbers: the worst case)."""

    def __init__(self, world: World, employee: Employee, quota: int, stride: int) -> None:
        super().__init__(world, employee, quota)
        self.lines: Iterator[int] = business_lines(world.businesses, stride)

    def day(self, segments: Sequence[Segment], out: list[Event]) -> None:
        for _ in range(self.scaled(self.quota, self.quota)):
            line = next(self.lines, None)
            if line is None:
                return  # every line walked
            self.emit(out, time_in(segments, self.rng), number_of(line), WALK_REASON, style=0)


class InformedCorporate(Informed):
    """A corporate-sales insider probing under the corporate reason with a real reference."""

    def __init__(self, world: World, employee: Employee, quota: int, reference: str) -> None:
        super().__init__(world, employee, quota)
        self.reference = reference

    def day(self, segments: Sequence[Segment], out: list[Event]) -> None:
        for _ in range(self.scaled(self.quota, self.quota)):
            number = number_of(random_subscriber(self.rng))
            t = time_in(segments, self.rng)
            self.emit(out, t, number, CORPORATE_REASON, self.reference, style=0)


class InformedGroup(Informed):
    """One of a group in different stores and regions, taking slices of one shared block."""

    def __init__(self, world: World, employee: Employee, quota: int, block: CollusionBlock):
        super().__init__(world, employee, quota)
        self.block = block

    def day(self, segments: Sequence[Segment], out: list[Event]) -> None:
        for subscriber in self.block.take(self.scaled(self.quota, self.quota)):
            t = time_in(segments, self.rng)
            self.emit(out, t, number_of(subscriber), LENIENT_REASON, style=0)


def informed_campaigns(
    world: World, roster: Sequence[Employee], policy: Policy
) -> dict[str, Campaign]:
    """Each informed attacker's campaign, sized by the policy they have read."""
    budget = Budget(policy, world.cfg.customer_share)
    group = [e for e in roster if e.threat == "informed_groups"]
    block = CollusionBlock(random.Random(f"{world.cfg.seed}/informed-group"))
    campaigns: dict[str, Campaign] = {}
    for employee in roster:
        honest = _honest_lookups(employee)
        clerk = frozenset({"clerk"})
        threat = employee.threat
        campaign: Campaign
        if threat in ("informed_newsub", "informed_quiet"):
            # informed_quiet: the same probing by an employee with little honest work of their
            # own (QUIET_WORK, set by the roster), every share of theirs over few numbers.
            quota = budget.probes((LENIENT_REASON,), honest, clerk)
            campaign = Informed(world, employee, quota)
        elif threat == "informed_padded":
            quota = budget.probes((LENIENT_REASON,), honest, clerk)
            # Padding adds lookups: what a day's count against the peers' leaves room for.
            pad = min(PAD_FACTOR * honest, budget.volume_room(honest) - quota)
            campaign = InformedPadded(world, employee, quota, max(0, round(pad)))
        elif threat == "informed_slow":
            quota = min(SLOW_PER_DAY, budget.probes(EVERYDAY_REASONS, honest, clerk))
            campaign = InformedRotation(world, employee, quota)
        elif threat == "informed_rotation":
            campaign = InformedRotation(
                world, employee, budget.probes(EVERYDAY_REASONS, honest, clerk)
            )
        elif threat == "informed_after_hours":
            quota = budget.probes((LENIENT_REASON,), honest, clerk)
            campaign = InformedAfterHours(world, employee, quota)
        elif threat == "informed_typo_farm":
            campaign = InformedTypoFarm(world, employee, budget.typo_forgiveness("BILLING_INQUIRY"))
        elif threat == "informed_corporate":
            roles = frozenset({"clerk", "corporate-sales"})
            quota = budget.probes((CORPORATE_REASON,), honest, roles)
            accounts = corporate_accounts(world.cfg)
            reference = accounts[0].reference if accounts else "CORP-000001"
            campaign = InformedCorporate(world, employee, quota, reference)
        elif threat == "informed_business_walk":
            stride = 1 + max(
                (r.distance for r in policy.rules if isinstance(r, SequentialRule)), default=0
            )
            quota = budget.walk(honest, world.businesses)
            campaign = InformedBusinessWalk(world, employee, quota, stride)
        elif threat == "informed_groups":
            quota = min(
                budget.block_take(len(group)), budget.probes((LENIENT_REASON,), honest, clerk)
            )
            campaign = InformedGroup(world, employee, quota, block)
        else:
            continue
        campaigns[employee.id] = campaign
    return campaigns
