"""The *target* step: one canonical form per mobile number, whatever the clerk typed.

Every guard counter is keyed by the canonical number, so rotating formats (``010-1234-5678``,
``+82 10 1234 5678``, ``01012345678``) must never look like three different customers. The
parser is hand-written because it runs on every lookup and in the replay tool's hot loop; it is
some twenty to thirty times faster than ``phonenumbers`` (``bench/bench_numbers.py``), which the
tests use as an independent oracle instead.

Accepted, after dropping the separators space, ``-``, ``.``, ``(`` and ``)`` anywhere (repeats
included):

- national: ``0`` + a mobile prefix from ``[numbers] mobile_prefixes`` + subscriber digits;
- international: ``+`` (the first character that is not a separator) or ``00``, then the
  country code, then the number with or without its trunk ``0`` (``+82 10…``, ``+82 (0)10…``,
  ``0082 10…``).

Refused on purpose, so a typo is retyped rather than guessed at:

- a bare country code without ``+``/``00`` (``82 10 1234 5678``) and any number not starting
  with ``0``: a dropped ``+`` or ``0`` is indistinguishable from a mistyped digit;
- Korean carrier international prefixes (``001``, ``002``, ``00700``…): terminals never send
  them, and ``001 82…`` would otherwise need carrier tables;
- full-width or other non-ASCII digits, letters, control characters, percent-escapes and a ``+``
  anywhere but first: the path was already URL-decoded, so these are garbage or evasion.

Lengths: ``010`` numbers have 11 digits; the older prefixes have 10 or 11. The allocation plan
inside a prefix is not checked: a well-formed number nobody holds is the backend's "not found".
"""

from __future__ import annotations

from dataclasses import dataclass

from lookup_proxy.errors import Refusal, bad_request
from lookup_proxy.policy import Numbers

__all__ = ["block_of", "mask", "normalise_number", "numeric_value"]

_CAUSE = "bad-number"
_EXAMPLE = "such as 010-1234-5678"

# 010 was allocated with 4-digit exchanges only; 011/016-019 predate that and kept both forms.
_LENGTHS_BY_PREFIX = {"010": (11,)}
_DEFAULT_LENGTHS = (10, 11)


@dataclass(frozen=True, slots=True)
class _Plan:
    """A policy's ``[numbers]`` section compiled into what the parser compares against."""

    numbers: Numbers
    max_input_length: int
    country_code: str
    lengths: dict[str, tuple[int, ...]]


_last_plan: _Plan | None = None


def _compile(numbers: Numbers) -> _Plan:
    # One policy is live at a time, so remembering the last one makes the lookup an identity
    # check; swapping a whole object is atomic, so concurrent callers never see a torn plan.
    global _last_plan
    plan = _Plan(
        numbers=numbers,
        max_input_length=numbers.max_input_length,
        country_code=numbers.country_code,
        lengths={
            prefix: _LENGTHS_BY_PREFIX.get(prefix, _DEFAULT_LENGTHS)
            for prefix in numbers.mobile_prefixes
        },
    )
    _last_plan = plan
    return plan


def _refuse(detail: str) -> Refusal:
    return bad_request(detail, cause=_CAUSE)


def _refuse_characters(raw: str) -> Refusal:
    if not raw.strip(" -.()"):
        return _refuse(f"Type the customer's mobile phone number, {_EXAMPLE}.")
    if any(ch.isdigit() and not ch.isascii() for ch in raw):
        return _refuse(
            "The phone number contains full-width or non-Latin digits. Switch the keyboard "
            f"to standard (half-width) input and type the number again, {_EXAMPLE}."
        )
    return _refuse(
        "The phone number may contain only the digits 0-9, spaces, hyphens, dots, brackets "
        f"and a leading +, {_EXAMPLE}."
    )


def _refuse_prefix(plan: _Plan) -> Refusal:
    prefixes = sorted(plan.lengths)
    listed = ", ".join(prefixes[:-1]) + (" or " if len(prefixes) > 1 else "") + prefixes[-1]
    return _refuse(
        f"The phone number must be a Korean mobile number starting with {listed}, {_EXAMPLE}."
    )


def _refuse_length(prefix: str, lengths: tuple[int, ...]) -> Refusal:
    counts = " or ".join(str(n) for n in lengths)
    return _refuse(
        f"The phone number has the wrong number of digits: {prefix} numbers have {counts} "
        f"digits, {_EXAMPLE}. Check it with the customer and type it again."
    )


def _domestic(international: str, plan: _Plan) -> str:
    """The national form of digits following ``+`` or ``00``, with or without the trunk 0."""
    country_code = plan.country_code
    if not international.startswith(country_code):
        raise _refuse(
            "Only Korean mobile numbers can be looked up. Type the number starting with "
            f"010 ({_EXAMPLE}) or with +{country_code}."
        )
    national = international[len(country_code) :]
    return national if national[:1] == "0" else "0" + national


def normalise_number(raw: str, numbers: Numbers) -> str:
    """The canonical national form (``01012345678``) of a typed number, or a 400 refusal.

    Raises :class:`~lookup_proxy.errors.Refusal` (cause ``bad-number``) with a detail the clerk
    can act on.
    """
    plan = _last_plan
    if plan is None or plan.numbers is not numbers:
        plan = _compile(numbers)
    if len(raw) > plan.max_input_length:
        raise _refuse(
            f"The phone number is too long. Type only the customer's mobile number, {_EXAMPLE}."
        )
    if raw.isdigit() and raw.isascii():  # the common case: digits only, nothing to strip
        digits = raw
    else:
        if not raw.isascii():
            raise _refuse_characters(raw)
        # A chain of replace() beats translate() and regex here: each pass is a memchr.
        digits = (
            raw.replace("-", "").replace(" ", "").replace(".", "").replace("(", "").replace(")", "")
        )
        if not digits.isdigit() and not (digits[:1] == "+" and digits[1:].isdigit()):
            raise _refuse_characters(raw)

    # Only a leading "+" or "00" introduces a country code; the isdigit() checks above leave
    # no other place for a "+".
    first = digits[0]
    if first == "+":
        national = _domestic(digits[1:], plan)
    elif first != "0":
        raise _refuse(
            f"The phone number must start with 0 ({_EXAMPLE}) or with +{plan.country_code}."
        )
    elif digits[1:2] == "0":
        national = _domestic(digits[2:], plan)
    else:
        national = digits

    lengths = plan.lengths.get(national[:3])
    if lengths is None:
        raise _refuse_prefix(plan)
    if len(national) not in lengths:
        raise _refuse_length(national[:3], lengths)
    return national


def numeric_value(canonical: str) -> int:
    """The canonical number as an integer, so rules can measure how far apart two lookups are."""
    return int(canonical)


def block_of(canonical: str, digits: int) -> str:
    """The leading ``digits`` of a canonical number: the block a shuffled scan stays inside."""
    if not 1 <= digits <= len(canonical):
        raise ValueError(f"block length must be between 1 and {len(canonical)}, not {digits}")
    return canonical[:digits]


def mask(canonical: str) -> str:
    """The number with all but its last four digits hidden, so logs do not become a directory."""
    return "*" * max(len(canonical) - 4, 0) + canonical[-4:]
