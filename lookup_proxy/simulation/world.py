"""The parts of a simulated month every employee shares: customers, calendar, store regulars.

One object answers "which customer is at the counter" and "how busy is today" for everyone,
from the seed alone, so each clerk's day can be generated independently and reproducibly.
"""

from __future__ import annotations

import random
from datetime import timedelta
from typing import Final

from lookup_proxy.simulation.customer_book import CustomerBook
from lookup_proxy.simulation.number_space import canonical
from lookup_proxy.simulation.roster import SimConfig, business_of, corporate_accounts

REGULAR_SHARE: Final = 0.5  # visits by the store's own regulars rather than any customer
WEEKEND_FACTOR: Final = 1.5
LAUNCH_FACTOR: Final = 3.0


class World:
    """The parts of the month every employee shares: customers, calendar, number habits."""

    def __init__(self, cfg: SimConfig) -> None:
        self.cfg = cfg
        self.businesses = corporate_accounts(cfg)
        ranges = tuple((a.first, a.first + a.size - 1) for a in self.businesses)
        self.book = CustomerBook(cfg.seed, cfg.customer_share, ranges)
        self._pools: dict[str, list[str]] = {}
        if cfg.launch_day is not None:
            self.launch = (cfg.launch_day - cfg.start).days
        else:
            self.launch = random.Random(f"{cfg.seed}/launch").randint(
                cfg.days // 3, max(cfg.days // 3, 2 * cfg.days // 3 - 1)
            )

    def busyness(self, day: int) -> float:
        """Scale visit rates: weekends are busier, a phone launch triples the queue."""
        if day == self.launch:
            return LAUNCH_FACTOR
        if (self.cfg.start + timedelta(days=day)).weekday() >= 5:
            return WEEKEND_FACTOR
        return 1.0

    def fresh_customer(self, rng: random.Random) -> str:
        """Draw any customer of the operator, by rejection against the customer book."""
        if self.cfg.customer_share <= 0:
            raise ValueError("honest traffic needs a positive customer share")
        return self.book.draw(rng, found=True)

    def account_of(self, typed: str) -> str:
        """The business account the backend's record of a number names (its reference), or
        "" for a consumer's line or a number it does not know: EVENTS.csv's ``account``."""
        try:
            number = canonical(typed)
        except ValueError:
            return ""
        if not self.book.corporate(number):
            return ""
        business = business_of(self.businesses, int(number[3:]))
        return "" if business is None else business.reference

    def non_customer(self, rng: random.Random) -> str:
        """Draw a number the operator does not serve, as a walk-in switching carriers has."""
        if self.cfg.customer_share >= 1:
            raise ValueError("walk-ins need a customer share below 1")
        return self.book.draw(rng, found=False)

    def regular(self, store: str, rng: random.Random) -> str:
        """Draw one of a store's regular customers, who come back during the month."""
        pool = self._pools.get(store)
        if pool is None:
            pool_rng = random.Random(f"{self.cfg.seed}/pool/{store}")
            pool = [self.fresh_customer(pool_rng) for _ in range(self.cfg.store_customers)]
            self._pools[store] = pool
        return rng.choice(pool)

    def customer(self, store: str, rng: random.Random) -> str:
        """Draw the customer standing at the counter."""
        if rng.random() < REGULAR_SHARE and self.cfg.store_customers > 0:
            return self.regular(store, rng)
        return self.fresh_customer(rng)
