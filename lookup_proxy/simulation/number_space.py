"""The space of Korean 010 mobile numbers as simulated clerks and attackers type them.

Every simulated lookup, honest or not, draws from one allocated range and is spelled in one of
the five ways DESIGN.md says terminals send; keeping the range, the spellings and the human
mistypes in one place means a random guess, a customer and a typo all live in the same space.
"""

from __future__ import annotations

import random
from typing import Final

# The five spellings DESIGN.md says terminals send; index 0 and 1 are what most clerks type.
NUMBER_STYLES: Final = ("plain", "dashed", "spaced", "intl_dashed", "intl_plain")

# Real Korean 010 numbers start their subscriber part with 2-9; staying inside that range keeps
# attackers' random guesses and honest customers in the same space.
SUBSCRIBER_MIN: Final = 20_000_000
SUBSCRIBER_MAX: Final = 99_999_999


def canonical(number: str) -> str:
    """Reduce any accepted spelling to the 11 digits the backend keys on.

    Raises ValueError so callers that read files can report where the bad value was.
    """
    digits = "".join(ch for ch in number if ch.isdigit())
    if number.lstrip().startswith("+"):
        if not digits.startswith("82"):
            raise ValueError(f"not a Korean number: {number!r}")
        digits = "0" + digits[2:]
    if len(digits) != 11 or not digits.startswith("010"):
        raise ValueError(f"not a 010 mobile number: {number!r}")
    return digits


def format_number(number: str, style: int) -> str:
    """Spell a canonical number the way a terminal might send it (see NUMBER_STYLES)."""
    mid, last = number[3:7], number[7:11]
    if style == 0:
        return number
    if style == 1:
        return f"010-{mid}-{last}"
    if style == 2:
        return f"010 {mid} {last}"
    if style == 3:
        return f"+82 10-{mid}-{last}"
    if style == 4:
        return f"+8210{mid}{last}"
    raise ValueError(f"unknown number style {style}")


def number_of(subscriber: int) -> str:
    """Build the canonical number for an 8-digit subscriber part."""
    return f"010{subscriber:08d}"


def random_subscriber(rng: random.Random) -> int:
    """Draw a subscriber part uniformly from the allocated range."""
    return rng.randint(SUBSCRIBER_MIN, SUBSCRIBER_MAX)


def typo_of(number: str, rng: random.Random) -> str:
    """Mistype a number the two ways people do: swap two adjacent digits or hit a wrong key."""
    digits = list(number)
    if rng.random() < 0.5:
        i = rng.randint(3, 9)
        if digits[i] != digits[i + 1] and not (i == 3 and digits[4] in "01"):
            digits[i], digits[i + 1] = digits[i + 1], digits[i]
            return "".join(digits)
    i = rng.randint(3, 10)
    choices = [c for c in ("23456789" if i == 3 else "0123456789") if c != digits[i]]
    digits[i] = rng.choice(choices)
    return "".join(digits)
