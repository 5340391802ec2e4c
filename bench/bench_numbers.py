"""How much the hand-written normaliser saves over phonenumbers on the lookup hot path.

The replay tool must reach 50,000 events/s on one core (20 µs per event for everything), so the
number step has to cost a small fraction of that. Run from the repository root:
``python -m bench.bench_numbers``.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable

import phonenumbers

from lookup_proxy.errors import Refusal
from lookup_proxy.numbers import normalise_number
from lookup_proxy.policy import Numbers

NUMBERS = Numbers()
_MOBILE = phonenumbers.PhoneNumberType.MOBILE


def mixed_inputs(count: int, seed: int = 1) -> list[str]:
    """Typed numbers in every accepted format, plus a few mistakes, as a store would send."""
    rng = random.Random(seed)
    inputs: list[str] = []
    for _ in range(count):
        prefix = "010" if rng.random() < 0.9 else rng.choice(("011", "016", "019"))
        middle = rng.randrange(10_000) if prefix == "010" else rng.randrange(1_000)
        width = 4 if prefix == "010" else 3
        a, b, c = prefix, str(middle).zfill(width), str(rng.randrange(10_000)).zfill(4)
        inputs.append(
            rng.choice(
                (
                    f"{a}{b}{c}",
                    f"{a}-{b}-{c}",
                    f"{a} {b} {c}",
                    f"+82 {a[1:]}-{b}-{c}",
                    f"+82{a[1:]}{b}{c}",
                    f"({a}) {b}-{c}",
                    f"{a}-{b}-{c[:3]}",  # a digit short: refused by both
                )
            )
        )
    return inputs


def ours(raw: str) -> str | None:
    try:
        return normalise_number(raw, NUMBERS)
    except Refusal:
        return None


def theirs(raw: str) -> str | None:
    """What using phonenumbers for the same job would take: parse, validate, format."""
    try:
        parsed = phonenumbers.parse(raw, "KR")
    except phonenumbers.NumberParseException:
        return None
    if parsed.country_code != 82 or phonenumbers.number_type(parsed) != _MOBILE:
        return None
    return "0" + str(parsed.national_number)


def per_call_us(function: Callable[[str], str | None], inputs: list[str], rounds: int) -> float:
    """Best of ``rounds`` passes, in µs per call: the least disturbed run is the most honest."""
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        for raw in inputs:
            function(raw)
        best = min(best, time.perf_counter() - started)
    return best / len(inputs) * 1e6


def main() -> None:
    inputs = mixed_inputs(20_000)
    accepted = [raw for raw in inputs if ours(raw) is not None]
    refused = [raw for raw in inputs if ours(raw) is None]
    # Mostly 10-digit 010 numbers, which phonenumbers' metadata allows and our policy does not.
    disagreements = sum(ours(raw) != theirs(raw) for raw in inputs)
    print(
        f"{len(inputs):,} typed numbers, {len(refused):,} refused by us, {disagreements:,} "
        "judged differently by phonenumbers"
    )
    print(f"{'':18}{'hand-written':>14}{'phonenumbers':>14}{'ratio':>8}")
    for label, sample in (
        ("mixed", inputs),
        ("accepted only", accepted),
        ("refused only", refused),
    ):
        ours_us = per_call_us(ours, sample, rounds=7)
        theirs_us = per_call_us(theirs, sample, rounds=3)
        print(f"{label:18}{ours_us:11.3f} µs{theirs_us:11.3f} µs{theirs_us / ours_us:7.1f}x")


if __name__ == "__main__":
    main()
