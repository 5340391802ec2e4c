"""The target step's normaliser: one canonical form per number, refusals a clerk can act on."""

from __future__ import annotations

import random

import phonenumbers
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lookup_proxy.errors import Refusal
from lookup_proxy.numbers import block_of, mask, normalise_number, numeric_value
from lookup_proxy.policy import Numbers

NUMBERS = Numbers()
PREFIXES = NUMBERS.mobile_prefixes


@pytest.mark.parametrize(
    "raw",
    [
        "01012345678",
        "010-1234-5678",
        "010 1234 5678",
        "+82 10-1234-5678",
        "+821012345678",
        "+82-10-1234-5678",
        "+82 010-1234-5678",
        "+82 (0)10 1234 5678",
        "0082 10 1234 5678",
        "0082-10-1234-5678",
        "00821012345678",
        "(010) 1234-5678",
        "010.1234.5678",
        "010--1234--5678",
        "  010 1234 5678  ",
        "(+82) 10 1234 5678",
    ],
)
def test_every_accepted_format_gives_the_same_canonical_number(raw: str) -> None:
    """Each format a terminal may send normalises to the same 11-digit national form."""
    assert normalise_number(raw, NUMBERS) == "01012345678"


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [
        ("011-123-4567", "0111234567"),
        ("0111234567", "0111234567"),
        ("011-1234-5678", "01112345678"),
        ("+82 16 123 4567", "0161234567"),
        ("019 9876 5432", "01998765432"),
    ],
)
def test_older_prefixes_keep_their_ten_or_eleven_digits(raw: str, canonical: str) -> None:
    """Pre-010 prefixes exist in both lengths, and the two lengths are different numbers."""
    assert normalise_number(raw, NUMBERS) == canonical


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        ("", "Type the customer's mobile phone number"),
        ("   ", "Type the customer's mobile phone number"),
        ("--", "Type the customer's mobile phone number"),
        ("０１０１２３４５６７８", "full-width"),
        ("010-１２３４-5678", "full-width"),
        ("٠١٠١٢٣٤٥٦٧٨", "full-width"),
        ("010-abcd-5678", "only the digits"),
        ("010-1234-567O", "only the digits"),
        ("010\t1234\t5678", "only the digits"),
        ("010\n12345678", "only the digits"),
        ("01012345678\x00", "only the digits"),
        ("%2B821012345678", "only the digits"),
        ("010%2D1234%2D5678", "only the digits"),
        ("010+1234+5678", "only the digits"),
        ("82+1012345678", "only the digits"),
        ("++821012345678", "only the digits"),
        ("010/1234/5678", "only the digits"),
        ("010_1234_5678", "only the digits"),
        ("+", "only the digits"),
        ("0" * 33, "too long"),
        ("010-1234-5678" + " " * 20, "too long"),
        ("0101234567", "11 digits"),
        ("010123456789", "11 digits"),
        ("+82 10 1234 567", "11 digits"),
        ("011123456", "10 or 11 digits"),
        ("011123456789", "10 or 11 digits"),
        ("02-1234-5678", "starting with 010, 011, 016, 017, 018 or 019"),
        ("070-1234-5678", "starting with 010, 011, 016, 017, 018 or 019"),
        ("015-1234-5678", "starting with 010, 011, 016, 017, 018 or 019"),
        ("0", "starting with 010"),
        ("+82 2 1234 5678", "starting with 010"),
        ("+8200 10 1234 5678", "starting with 010"),
        ("1012345678", "must start with 0"),
        ("821012345678", "must start with 0"),
        ("82 10 1234 5678", "must start with 0"),
        ("+1 212 555 0100", "Only Korean mobile numbers"),
        ("+81 90 1234 5678", "Only Korean mobile numbers"),
        ("001 82 10 1234 5678", "Only Korean mobile numbers"),
        ("+0082 10 1234 5678", "Only Korean mobile numbers"),
    ],
)
def test_refusals_are_400_bad_number_with_a_plain_detail(raw: str, says: str) -> None:
    """Anything that is not a well-formed Korean mobile number is refused with advice."""
    with pytest.raises(Refusal) as caught:
        normalise_number(raw, NUMBERS)
    refusal = caught.value
    assert (refusal.status, refusal.cause) == (400, "bad-number")
    assert says in refusal.detail
    assert "010-1234-5678" in refusal.detail or "+82" in refusal.detail


def test_a_configured_prefix_list_and_length_limit_apply() -> None:
    """The policy's [numbers] section decides prefixes and the input length limit."""
    only_010 = Numbers(mobile_prefixes=("010",), max_input_length=13)
    assert normalise_number("010-1234-5678", only_010) == "01012345678"
    with pytest.raises(Refusal, match="starting with 010,"):
        normalise_number("011-1234-5678", only_010)
    with pytest.raises(Refusal, match="too long"):
        normalise_number("+82 10 1234 5678", only_010)
    assert normalise_number("011-1234-5678", NUMBERS) == "01112345678"  # no stale cache


def test_a_configured_country_code_is_the_only_one_accepted() -> None:
    """International forms must carry the policy's country code."""
    other = Numbers(country_code="83")
    assert normalise_number("+83 10 1234 5678", other) == "01012345678"
    with pytest.raises(Refusal, match=r"\+83"):
        normalise_number("+82 10 1234 5678", other)


def _random_valid_national(rng: random.Random) -> str:
    prefix = rng.choice(PREFIXES)
    length = 11 if prefix == "010" else rng.choice((10, 11))
    free = length - 3
    return prefix + str(rng.randrange(10**free)).zfill(free)


def _random_format(national: str, rng: random.Random) -> str:
    head, tail = national[:3], national[3:]
    middle, last = tail[:-4], tail[-4:]
    sep = rng.choice(("", "-", " ", ".", " - "))
    match rng.randrange(5):
        case 0:
            return sep.join((head, middle, last))
        case 1:
            return f"({head}) {middle}-{last}"
        case 2:
            return "+82" + rng.choice(("", " ", "-")) + sep.join((head[1:], middle, last))
        case 3:
            return "0082" + sep + sep.join((head[1:], middle, last))
        case _:
            return "+82 (0)" + head[1:] + " " + middle + " " + last


def test_agrees_with_phonenumbers_on_random_valid_numbers() -> None:
    """For numbers phonenumbers calls valid KR mobiles, the canonical form is its national form."""
    rng = random.Random(2021)
    compared = 0
    for _ in range(600):
        national = _random_valid_national(rng)
        typed = _random_format(national, rng)
        ours = normalise_number(typed, NUMBERS)
        assert ours == national, typed
        # phonenumbers reads "00" as a carrier prefix in KR, so it gets the +82 form instead.
        parsed = phonenumbers.parse(typed.replace("0082", "+82", 1), "KR")
        if phonenumbers.is_valid_number(parsed):
            assert phonenumbers.number_type(parsed) == phonenumbers.PhoneNumberType.MOBILE
            assert parsed.country_code == 82
            assert ours == "0" + str(parsed.national_number), typed
            compared += 1
    assert compared > 500  # the oracle did judge nearly all of them


def test_numeric_value_is_the_number_as_an_integer() -> None:
    """Neighbouring numbers are one apart, so distance rules can subtract."""
    assert numeric_value("01012345678") == 1_012_345_678
    assert numeric_value("01012345679") - numeric_value("01012345678") == 1


def test_block_of_is_the_leading_digits() -> None:
    """A block is a prefix of the canonical number; absurd lengths are programming errors."""
    assert block_of("01012345678", 7) == "0101234"
    assert block_of("0111234567", 10) == "0111234567"
    with pytest.raises(ValueError, match="block length"):
        block_of("01012345678", 0)
    with pytest.raises(ValueError, match="block length"):
        block_of("0111234567", 11)


def test_mask_keeps_only_the_last_four_digits() -> None:
    """Logs can tell lookups apart by the last digits without revealing the number."""
    assert mask("01012345678") == "*******5678"
    assert mask("0111234567") == "******4567"


# -- properties (hypothesis) ------------------------------------------------------------------

BOUNDED = settings(max_examples=300, deadline=None, database=None, derandomize=True)


@st.composite
def mobile_numbers(draw: st.DrawFn) -> str:
    """A canonical number the policy accepts: a prefix and a length that prefix allows."""
    prefix = draw(st.sampled_from(PREFIXES))
    length = 11 if prefix == "010" else draw(st.sampled_from((10, 11)))
    rest = draw(st.text(alphabet="0123456789", min_size=length - 3, max_size=length - 3))
    return prefix + rest


@st.composite
def written(draw: st.DrawFn, canonical: str) -> str:
    """``canonical`` as a clerk might type it: national or +82/0082 (with or without the trunk
    0, bracketed or not), separators anywhere, space around it."""
    national = canonical[1:]
    lead = draw(
        st.sampled_from(["0", "+82 ", "+82", "0082 ", "0082", "+82 (0)", "+82 0", "(+82) "])
    )
    digits = list(national)
    separated = ""
    for digit in digits:
        separated += digit + draw(st.sampled_from(["", "", "", "-", " ", ".", "--"]))
    pad = draw(st.sampled_from(["", " ", "  "]))
    return pad + lead + separated.rstrip(" -.") + pad


def outcome(raw: str) -> str | Refusal:
    try:
        return normalise_number(raw, NUMBERS)
    except Refusal as refusal:
        return refusal


@BOUNDED
@given(st.data())
def test_any_accepted_format_gives_the_canonical_number(data: st.DataObject) -> None:
    """Formatting never makes two customers of one: dashes, spaces, dots, +82, 0082 and (0)
    all land on the same national form."""
    canonical = data.draw(mobile_numbers())
    typed = data.draw(written(canonical))
    if len(typed) <= NUMBERS.max_input_length:
        assert normalise_number(typed, NUMBERS) == canonical
    else:  # refused before parsing, however well-formed
        refused = outcome(typed)
        assert isinstance(refused, Refusal)
        assert refused.cause == "bad-number"


@BOUNDED
@given(
    st.one_of(
        st.text(alphabet="0123456789+-. ()", max_size=40),
        st.text(st.characters(exclude_categories=()), max_size=40),
        mobile_numbers(),
    )
)
def test_only_mobile_numbers_come_out_and_refusals_are_bad_number(raw: str) -> None:
    """Whatever is typed: a canonical mobile number (which normalises to itself), or a 400
    bad-number refusal the clerk can act on — never another exception."""
    canonical = outcome(raw)
    if isinstance(canonical, Refusal):
        assert canonical.status == 400
        assert canonical.cause == "bad-number"
        assert canonical.detail
        return
    assert canonical.isascii() and canonical.isdigit()
    prefix = canonical[:3]
    assert prefix in PREFIXES
    assert len(canonical) == 11 if prefix == "010" else len(canonical) in (10, 11)
    assert normalise_number(canonical, NUMBERS) == canonical  # idempotent
    assert len(raw) <= NUMBERS.max_input_length
