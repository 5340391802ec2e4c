"""The adaptive part: for each strategy, the most it can get before the policy locks it out.

For every knob combination of a strategy (its grid; the first combination is the default) the
search finds the edge intensity — the most probes per working day at which no insider is ever
locked in the period — by doubling from the strategy's start until a lock (or the ceiling),
then bisecting between the last unlocked and the first locked intensity. It assumes more
probes never make a lock less likely (true of counting rules, the kind every policy has). The
default combination searches from the strategy's start; every other combination starts from
the edge found so far (a hill-climb over the knobs). Every trial is kept: the report's
"best" numbers are maxima over all of them, so an intensity past the edge that disclosed more
before its lock still counts where the report says "locked later or not".
"""

from __future__ import annotations

import functools
import itertools
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

from lookup_proxy.redteam.baseline import Staff, spread_out
from lookup_proxy.redteam.probes import Stage
from lookup_proxy.redteam.strategies import Combined, Knob, Knobs, Padded, Strategy
from lookup_proxy.redteam.trial import Arena, Outcome
from lookup_proxy.simulation.customer_book import CustomerBook


@dataclass
class Trial:
    """One parameter set of one strategy and what it got."""

    intensity: float
    knobs: dict[str, Knob]
    insiders: list[str]
    outcome: Outcome


@dataclass
class StrategyResult:
    """Every trial of one strategy, and the edge found for each knob combination."""

    strategy: Strategy
    trials: list[Trial] = field(default_factory=list)
    edges: list[tuple[dict[str, Knob], float, float | None]] = field(default_factory=list)
    """(knobs, largest intensity never locked (0: none), smallest locked or None)."""
    redraws: list[Outcome] = field(default_factory=list)
    """The best never-locked trial again with other numbers and times (``Search.redraw``)."""

    def best_unlocked(self) -> Trial | None:
        """The trial that got one insider the most records with nobody ever locked."""
        unlocked = [t for t in self.trials if not t.outcome.locked]
        if not unlocked:
            return None
        return max(unlocked, key=lambda t: (t.outcome.best_insider, -t.intensity))


def combinations(strategy: Strategy) -> Iterator[dict[str, Knob]]:
    """The knob grid, default combination first."""
    names = list(strategy.knobs)
    for values in itertools.product(*(strategy.knobs[n] for n in names)):
        yield dict(zip(names, values, strict=True))


def unpadded(strategy: Strategy, intensity: float, knobs: Knobs) -> tuple[Strategy, float, Knobs]:
    """A combination's part: a padded strategy's base at the same edge, its padding dropped.

    Padding discloses nothing, and every share a rule takes is of numbers new to the employee,
    which pads are not; but every pad counts against the insider where lookups are counted
    (``peer-volume``: a day's lookups against the region's). A combination's padding is the sum
    of its padded parts' (150 a day on seed 1), which locked the plan that had been seed 1's
    headline at every intensity (2026-12-07), while the same parts without it got up to 16
    records a month never locked (six draws at three eighths of each edge: 8-16, none locked).
    """
    if isinstance(strategy, Padded):
        return strategy.base, intensity, {k: v for k, v in knobs.items() if k != strategy.knob}
    return strategy, intensity, knobs


def edge(
    run: Callable[[float], Outcome],
    start: int,
    ceiling: int,
    steps: int,
    precision: float = 0.0,
    floor: float = 1 / 8,
) -> tuple[float, float | None]:
    """The largest intensity never locked, and the smallest locked one tried.

    Doubling from ``start`` brackets the edge; integer bisection closes it until the bracket is
    one apart, or within ``precision`` of the edge (0.1: a tenth). When even one probe a day is
    locked, halving tries sparser probing (a probe every other working day, every fourth...)
    down to ``floor``. At most ``steps`` trials, but doubling goes on past them while nothing
    locks, to the first lock or the ceiling (a few trials more: an edge cut short by the budget
    understated a strategy nothing binds, a rep walking other businesses' lines, 2026-12-07);
    (0, n) when nothing tried was unlocked.
    """
    ok: float = 0
    locked: float | None = None
    n = max(1, min(start, ceiling))
    while True:
        steps -= 1
        if run(n).locked:
            locked = n
            break
        ok = n
        if n >= ceiling:
            return ok, None
        n = min(ceiling, n * 2)
    while locked is not None and locked - ok > max(1, int(ok * precision)) and steps > 0:
        steps -= 1
        middle = (int(ok) + int(locked)) // 2
        if run(middle).locked:
            locked = middle
        else:
            ok = middle
    sparse = 0.5
    while ok == 0 and locked is not None and sparse >= floor and steps > 0:
        steps -= 1
        if run(sparse).locked:
            locked = sparse
            sparse /= 2
        else:
            ok = sparse
    return ok, locked


class Search:
    """Runs every strategy's search against one arena; chooses each strategy's insiders."""

    def __init__(
        self,
        arena: Arena,
        book: CustomerBook,
        seed: int,
        steps: int,
        precision: float = 0.0,
        locked_anyway: frozenset[str] = frozenset(),
    ) -> None:
        self.arena = arena
        self.locked_anyway = locked_anyway
        """Employees the policy locks for their honest work alone (``Arena.honest``): no
        insider is chosen among them, whose every trial would be locked whatever they
        probed, which says nothing about probing."""
        self.baseline = arena.baseline
        self.book = book
        self.seed = seed
        self.steps = steps
        """Trials for the default knobs; other combinations start near the edge, with half."""
        self.precision = precision

    def insiders(self, strategy: Strategy, knobs: Knobs) -> list[Staff]:
        """The insiders a strategy runs with: a seeded clerk, rep or spread-out group."""
        rng = random.Random(f"{self.seed}/insiders/{strategy.role}")
        if strategy.role == "corporate":
            return self._one(self.baseline.corporate(), rng)
        count = strategy.insiders(knobs)
        if count == 1:
            return self._one(self.baseline.clerks(), rng)
        return spread_out(self.baseline, count, rng, self.locked_anyway)

    def _one(self, staff: list[Staff], rng: random.Random) -> list[Staff]:
        """One of ``staff`` chosen by ``rng``, drawn again while the choice is locked anyway
        (the same choice as without the check whenever the first is not)."""
        if all(s.employee in self.locked_anyway for s in staff):
            return []
        while True:
            choice = rng.choice(staff)
            if choice.employee not in self.locked_anyway:
                return [choice]

    def run(self, strategy: Strategy) -> StrategyResult:
        """Search one strategy's knobs and intensity; every trial is kept."""
        result = StrategyResult(strategy)
        found: float = 0
        for index, knobs in enumerate(combinations(strategy)):
            insiders = self.insiders(strategy, knobs)
            if not insiders:
                continue
            trial = functools.partial(self._cached, result, knobs, insiders, {})
            start = strategy.start if index == 0 else max(1, int(found))
            steps = self.steps if index == 0 else max(1, self.steps // 2)
            ok, locked = edge(trial, start, strategy.ceiling, steps, self.precision)
            found = max(found, ok)
            result.edges.append((dict(knobs), ok, locked))
        return result

    def redraw(self, result: StrategyResult, draws: int) -> None:
        """Run the best never-locked trial ``draws - 1`` more times, with other numbers and
        times at the same parameters, the same insiders and the same honest month.

        The search keeps the best of noisy trials, and a trial whose numbers happened to be
        customers more often both disclosed more and missed less (so was flagged less): the
        best is partly luck, which an insider cannot plan on. The other draws say how much."""
        best = result.best_unlocked()
        if best is None:
            return
        insiders = self.insiders(result.strategy, best.knobs)
        for draw in range(1, draws):
            result.redraws.append(
                self._trial(result.strategy, best.knobs, insiders, best.intensity, draw)
            )

    def combine(self, results: Sequence[StrategyResult], most: int = 4) -> list[Combined]:
        """The best one-clerk strategies (most records never locked) together: the best two,
        the best three, ... up to ``most``.

        Every size is searched, because fewer parts can each keep more of their edge, and
        which size gets the most differs by chain and by draw (on seed 1 the best two in the
        search's own trials, the best four in another draw: the README's red-team table).
        A padded part joins without its padding (:func:`unpadded`).
        """
        best: list[tuple[int, Trial, Strategy]] = []
        for result in results:
            strategy = result.strategy
            top = result.best_unlocked()  # the row's own never-locked trial
            if strategy.role != "clerk" or not strategy.in_headline or top is None:
                continue
            if strategy.insiders(top.knobs) == 1 and top.outcome.best_insider > 0:
                best.append((top.outcome.best_insider, top, strategy))
        best.sort(key=lambda b: -b[0])
        chosen = [unpadded(strategy, top.intensity, top.knobs) for _, top, strategy in best[:most]]
        return [Combined(chosen[:size]) for size in range(2, len(chosen) + 1)]

    def _cached(
        self,
        result: StrategyResult,
        knobs: dict[str, Knob],
        insiders: list[Staff],
        cache: dict[float, Outcome],
        intensity: float,
    ) -> Outcome:
        """A trial of one knob combination, run once per intensity and kept in the result."""
        outcome = cache.get(intensity)
        if outcome is None:
            outcome = cache[intensity] = self._trial(result.strategy, knobs, insiders, intensity)
            names = [s.employee for s in insiders]
            result.trials.append(Trial(intensity, dict(knobs), names, outcome))
        return outcome

    def _trial(
        self,
        strategy: Strategy,
        knobs: Knobs,
        insiders: list[Staff],
        intensity: float,
        draw: int = 0,
    ) -> Outcome:
        """One month with this strategy's plan; its randomness is seeded by the parameters
        (and, past the first, by the draw)."""
        seed = f"{self.seed}/{strategy.name}/{sorted(knobs.items())}/{intensity}"
        rng = random.Random(seed if draw == 0 else f"{seed}/draw {draw}")
        stage = Stage(self.baseline, insiders, self.book, rng)
        own_work, region_work = strategy.own_work(knobs), strategy.region_work(knobs)
        self.arena.thin(stage, own_work, region_work)  # before the plan: whom they still meet
        plan = strategy.plan(stage, intensity, knobs)
        return self.arena.run(
            stage,
            plan,
            own_work=own_work,
            regions=strategy.regions(knobs),
            region_work=region_work,
        )
