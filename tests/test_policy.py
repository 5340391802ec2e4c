"""The policy file: the shipped default is valid, and every error names file, key and expectation."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lookup_proxy.durations import format_duration, parse_duration
from lookup_proxy.errors import ConfigError
from lookup_proxy.policy import load_policy, parse_policy
from tests.harness import policy_text

SHIPPED = Path(__file__).resolve().parent.parent / "config" / "policy.toml"


def problems(text: str) -> list[tuple[str, str, str, str]]:
    with pytest.raises(ConfigError) as caught:
        parse_policy(text, "broken.toml")
    return [(p.file, p.key, p.expected, p.found) for p in caught.value.problems]


def test_the_shipped_policy_is_valid_and_complete() -> None:
    """config/policy.toml loads, uses the memory store, and has the default reason catalogue."""
    p = load_policy(SHIPPED)
    assert p.store.kind == "memory"
    assert set(p.reasons) == {
        "NEW_SUBSCRIPTION",
        "CONTRACT_RENEWAL",
        "PLAN_CHANGE",
        "BILLING_INQUIRY",
        "DEVICE_SUPPORT",
        "CORPORATE_ACCOUNT",
    }
    assert p.reasons["CORPORATE_ACCOUNT"].reference_pattern == "CORP-[0-9]{6}"
    assert {rule.kind for rule in p.rules} == {
        "rate",
        "distinct",
        "sequential",
        "block",
        "misses",
        "hours",
        "peer",
    }
    assert p.escalation.enabled
    assert {rule.scope for rule in p.rules if rule.kind == "block"} >= {"region", "chain"}


def test_a_valid_test_policy_parses() -> None:
    """The harness policy is itself valid (so the broken variants below fail for one reason)."""
    assert parse_policy(policy_text("http://127.0.0.1:1")).upstream.url == "http://127.0.0.1:1"


def test_wrong_type_names_the_key() -> None:
    """A number where a duration belongs names the key and what was expected."""
    text = policy_text("http://127.0.0.1:1").replace(
        'connect_timeout = "500ms"', "connect_timeout = 5"
    )
    [(file, key, expected, found)] = problems(text)
    assert (file, key, found) == ("broken.toml", "upstream.connect_timeout", "5")
    assert "duration" in expected


def test_unknown_key_is_an_error() -> None:
    """A misspelt key is refused, not silently ignored."""
    text = policy_text("http://127.0.0.1:1", upstream_extra='conect_timeout = "1s"')
    [(_, key, expected, _)] = problems(text)
    assert key == "upstream.conect_timeout"
    assert "no such key" in expected


def test_duplicate_key_is_an_error() -> None:
    """The same key twice in a table is a syntax error naming the line."""
    text = policy_text("http://127.0.0.1:1", upstream_extra='read_timeout = "2s"')
    [(file, key, expected, found)] = problems(text)
    assert (file, key) == ("broken.toml", "(syntax)")
    assert "duplicate" in expected and "line" in found


def test_bad_regex_is_an_error() -> None:
    """A reference pattern that does not compile names the reason's key."""
    text = policy_text("http://127.0.0.1:1").replace('"CORP-[0-9]{6}"', '"CORP-[0-9"')
    [(_, key, expected, _)] = problems(text)
    assert key == "reasons.CORPORATE_ACCOUNT.reference_pattern"
    assert "regular expression" in expected


def test_missing_section_is_an_error() -> None:
    """A policy without [auth] says that auth is missing."""
    text = policy_text("http://127.0.0.1:1").replace("[auth]", "[auth_typo]")
    keys = {key for _, key, _, _ in problems(text)}
    assert {"auth", "auth_typo"} <= keys


def test_every_problem_is_reported_at_once() -> None:
    """Several mistakes produce several problems, not just the first."""
    text = policy_text(
        "http://127.0.0.1:1",
        rules='[[rules]]\nname = "r"\nkind = "rate"\nwindow = "soon"\nlimit = -1\nverdict = "x"\n',
    )
    keys = {key for _, key, _, _ in problems(text)}
    assert {"rules[0].window", "rules[0].limit", "rules[0].verdict"} <= keys


def test_rule_kind_specific_keys_are_checked_per_kind() -> None:
    """A key belonging to another rule kind is refused on this one."""
    text = policy_text(
        "http://127.0.0.1:1",
        rules='[[rules]]\nname = "r"\nkind = "rate"\nwindow = "1h"\nlimit = 5\ndistance = 3\n',
    )
    assert [key for _, key, _, _ in problems(text)] == ["rules[0].distance"]


@pytest.mark.parametrize(
    ("rules", "key"),
    [
        (
            '[[rules]]\nname = "a"\nkind = "rate"\nwindow = "1h"\nlimit = 1\n'
            '[[rules]]\nname = "a"\nkind = "rate"\nwindow = "1h"\nlimit = 2\n',
            "rules[1].name",
        ),
        (
            '[[rules]]\nname = "a"\nkind = "rate"\nwindow = "1h"\nlimit = 1\n'
            'exempt_reasons = ["NOPE"]\n',
            "rules[0].exempt_reasons",
        ),
        (
            '[[rules]]\nname = "m"\nkind = "misses"\nwindow = "1h"\nlimit = 1\n'
            'walk_in_reasons = ["NOPE"]\n',
            "rules[0].walk_in_reasons",
        ),
        (
            '[[rules]]\nname = "m"\nkind = "misses"\nwindow = "1h"\nlimit = 1\n'
            'exempt_reasons = ["PLAN_CHANGE"]\nwalk_in_reasons = ["PLAN_CHANGE"]\n',
            "rules[0].walk_in_reasons",
        ),
        (
            '[[rules]]\nname = "p"\nkind = "peer"\nwindow = "7d"\ntest = "cusum"\n'
            "min_share = 0.15\n",
            "rules[0].min_share",
        ),
        (
            '[[rules]]\nname = "p"\nkind = "peer"\nwindow = "2d"\nmetric = "lookups"\n'
            'test = "cusum"\n',
            "rules[0].test",
        ),
        (
            '[[rules]]\nname = "p"\nkind = "peer"\nwindow = "2d"\nmetric = "lookups"\n'
            "min_share = 0.5\n",
            "rules[0].min_share",
        ),
        (
            '[[rules]]\nname = "p"\nkind = "peer"\nwindow = "1d"\nmetric = "lookups"\n',
            "rules[0].window",
        ),
        (
            '[[rules]]\nname = "p"\nkind = "peer"\nwindow = "7d"\nmin_ratio = 2.5\n',
            "rules[0].min_ratio",
        ),
        (
            '[[rules]]\nname = "p"\nkind = "peer"\nwindow = "7d"\npeers = "chain"\n'
            'fallback = "chain"\n',
            "rules[0].fallback",
        ),
        (
            '[[rules]]\nname = "p"\nkind = "peer"\nwindow = "7d"\npeers = "region"\n'
            'test = "cusum"\nfallback = "chain"\n',
            "rules[0].fallback",
        ),
        (
            '[[rules]]\nname = "lock"\nkind = "distinct"\nwindow = "1h"\nlimit = 1\n',
            "rules[0].name",
        ),
        (
            '[[rules]]\nname = "peer-flags"\nkind = "rate"\nwindow = "1h"\nlimit = 1\n',
            "rules[0].name",
        ),
    ],
)
def test_cross_section_mistakes_are_errors(rules: str, key: str) -> None:
    """Duplicate rule names, names of the guard's own keys, unknown reason codes in rules, a
    walk-in reason the rule does not count, fixed floors on a sequential peer test, a
    ``lookups`` peer rule over other than two buckets, with a sequential test or a share floor,
    ``min_ratio`` on a share, a
    fallback where there is nothing to fall back on (chain peers) or no window to judge
    (a sequential test) are refused."""
    assert [k for _, k, _, _ in problems(policy_text("http://127.0.0.1:1", rules=rules))] == [key]


@pytest.mark.parametrize(("resolution", "ok"), [("30m", True), ("31m", False), ("3s", False)])
def test_a_rate_rule_s_resolution_leaves_two_to_a_thousand_buckets(
    resolution: str, ok: bool
) -> None:
    """A bucket may be at most half the window and at least a thousandth of it; the problem
    names the key and says so."""
    rules = (
        '[[rules]]\nname = "r"\nkind = "rate"\nwindow = "1h"\nlimit = 5\n'
        f'resolution = "{resolution}"\n'
    )
    text = policy_text("http://127.0.0.1:1", rules=rules)
    if ok:
        assert parse_policy(text).rules[0].resolution == parse_duration(resolution)
    else:
        [(_, key, expected, got)] = problems(text)
        assert key == "rules[0].resolution"
        assert "half of the window" in expected
        assert got == f"{parse_duration(resolution):g}s"


def test_route_without_its_number_placeholder_is_an_error() -> None:
    """A path route must contain the placeholder the number is read from."""
    text = policy_text("http://127.0.0.1:1", routes='[[routes]]\npath = "/customers"\n')
    assert [key for _, key, _, _ in problems(text)] == ["routes[0].path"]


@pytest.mark.parametrize(
    ("path", "number_from"),
    [("/customers/{number}/{store}", "path"), ("/stores/{store}/search", "query")],
)
def test_a_route_may_take_nothing_but_the_number_from_the_path(path: str, number_from: str) -> None:
    """The backend's URL is rebuilt from the checked number: other placeholders are refused."""
    routes = f'[[routes]]\npath = "{path}"\nnumber_from = "{number_from}"\n'
    [(_, key, expected, _)] = problems(policy_text("http://127.0.0.1:1", routes=routes))
    assert key == "routes[0].path"
    assert "no placeholder but the number's own" in expected


def test_forward_headers_default_to_a_small_safe_list() -> None:
    """Content negotiation crosses by default; nothing that names or routes the request."""
    p = parse_policy(policy_text("http://127.0.0.1:1"))
    assert p.upstream.forward_headers == ("Accept", "Accept-Language", "Content-Type")


@pytest.mark.parametrize("name", ["Authorization", "x-employee-id", "Connection", "Host", "a b"])
def test_forward_headers_refuse_what_the_proxy_owns_or_hops(name: str) -> None:
    """A header the proxy sets itself, a hop-by-hop one or a non-token is a config error."""
    text = policy_text("http://127.0.0.1:1", upstream_extra=f'forward_headers = ["{name}"]')
    [(_, key, _, _)] = problems(text)
    assert key.startswith("upstream.forward_headers")


def test_mixing_shared_secret_and_public_key_algorithms_is_refused() -> None:
    """HS and RS algorithms together would allow key-confusion forgeries."""
    text = policy_text("http://127.0.0.1:1").replace(
        'algorithms = ["HS256"]', 'algorithms = ["HS256", "RS256"]'
    )
    [(_, key, expected, _)] = problems(text)
    assert key == "auth.algorithms" and "key-confusion" in expected


def test_public_key_algorithms_need_a_key_file() -> None:
    """RS256 without a PEM or JWKS file is an error naming auth.public_key_file."""
    text = policy_text("http://127.0.0.1:1").replace(
        'algorithms = ["HS256"]', 'algorithms = ["RS256"]'
    )
    assert [key for _, key, _, _ in problems(text)] == ["auth.public_key_file"]


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    """A policy path that does not exist is reported as such."""
    with pytest.raises(ConfigError) as caught:
        load_policy(tmp_path / "nope.toml")
    assert caught.value.problems[0].key == "(file)"


def test_lockout_can_last_until_unlocked() -> None:
    """The lockout duration accepts 'until-unlocked' for locks only staff can lift."""
    text = policy_text("http://127.0.0.1:1", extra='[lockout]\nduration = "until-unlocked"\n')
    assert parse_policy(text).lockout.duration is None


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("15m", 900), ("1h", 3600), ("7d", 604800), ("250ms", 0.25), ("1h30m", 5400)],
)
def test_durations_parse(text: str, seconds: float) -> None:
    """Durations are written with units and mean what they say."""
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "60", "1 hour", "h", "1h-", "-1h"])
def test_bad_durations_are_refused(text: str) -> None:
    """A bare number or an unknown unit is refused rather than guessed."""
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def test_durations_format_back() -> None:
    """Durations shown to clerks use the shortest exact unit."""
    assert [format_duration(s) for s in (30, 60, 3600, 86400, 0.25, 90)] == [
        "30s",
        "1m",
        "1h",
        "1d",
        "250ms",
        "90s",
    ]


def test_opening_hours_are_clock_times_with_an_offset() -> None:
    """``[hours]`` takes HH:MM times and a +HH:MM offset, stored as seconds; stores may differ."""
    text = policy_text("http://127.0.0.1:1") + (
        '[hours]\nutc_offset = "-03:30"\nopen = "08:15"\nclose = "24:00"\n'
        'stores = { S1 = { open = "10:00", close = "12:00" } }\n'
    )
    hours = parse_policy(text).hours
    assert (hours.utc_offset, hours.open, hours.close) == (-12_600, 29_700, 86_400)
    assert (hours.stores["S1"].open, hours.stores["S1"].close) == (36_000, 43_200)


@pytest.mark.parametrize(
    ("hours", "key", "expected"),
    [
        ('open = "9am"', "hours.open", "time of day"),
        ('close = "24:30"', "hours.close", "time of day"),
        ('utc_offset = "KST"', "hours.utc_offset", "UTC offset"),
        ('open = "20:00"\nclose = "08:00"', "hours.close", "closing time after the opening"),
        (
            'stores = { S1 = { open = "12:00", close = "11:00" } }',
            "hours.stores.S1.close",
            "closing time after the opening",
        ),
    ],
)
def test_bad_opening_hours_name_the_key(hours: str, key: str, expected: str) -> None:
    """Unreadable or inverted opening hours are refused, naming the key."""
    [(_, found_key, found_expected, _)] = problems(
        policy_text("http://127.0.0.1:1") + "[hours]\n" + hours + "\n"
    )
    assert found_key == key
    assert expected in found_expected


def test_a_peer_rule_judges_one_employee_and_escalation_needs_its_own_name() -> None:
    """A peer rule's ``scope`` must stay ``employee`` (``peers`` names the group), and the
    escalation's name may not collide with a rule's."""
    rule = '[[rules]]\nname = "escalation"\nkind = "peer"\nscope = "store"\nwindow = "7d"\n'
    found = problems(policy_text("http://127.0.0.1:1") + rule)
    assert {key for _, key, _, _ in found} == {"rules[0].scope", "escalation.name"}


def test_a_rule_s_evidence_names_a_group_not_a_chain_of_them() -> None:
    """``evidence`` may name a rule whose evidence is its own name (the group's first rule),
    or a name of its own; naming a rule that itself counts as other evidence is refused."""
    rule = '[[rules]]\nname = "{}"\nkind = "peer"\nwindow = "7d"\n{}\n'
    grouped = rule.format("a", "") + rule.format("b", 'evidence = "a"')
    chained = grouped + rule.format("c", 'evidence = "b"')
    [(file, key, expected, found)] = problems(policy_text("http://127.0.0.1:1") + chained)
    assert (file, key, found) == ("broken.toml", "rules[2].evidence", "'b'")
    assert "counts as evidence 'a'" in expected
    named = parse_policy(policy_text("http://127.0.0.1:1") + grouped, "ok.toml")
    assert [r.evidence for r in named.rules] == [None, "a"]
    limits = "[escalation]\none_rule_limits = { a = 4, b = 3, c = 2 }\n"
    found = problems(policy_text("http://127.0.0.1:1") + grouped + limits)
    assert [(key, found) for _, key, _, found in found] == [
        ("escalation.one_rule_limits.b", "'b'"),
        ("escalation.one_rule_limits.c", "'c'"),
    ]


def test_server_edge_limits_have_safe_defaults_and_name_their_keys() -> None:
    """The HTTP edge's limits default to a few seconds and small heads; wrong values, and an idle
    timeout longer than the header deadline (which would never apply), name their keys."""
    server = parse_policy(policy_text("http://127.0.0.1:1"), "ok.toml").server
    assert (server.header_timeout, server.keepalive_timeout) == (10.0, 5.0)
    assert (server.max_request_line, server.max_header_size, server.max_headers) == (
        4096,
        8190,
        64,
    )
    assert server.max_connections == 500
    edge = 'header_timeout = "2s"\nkeepalive_timeout = "5s"\nmax_headers = 0\nmax_connections = "x"'
    found = problems(policy_text("http://127.0.0.1:1", server=edge))
    assert {key for _, key, _, _ in found} == {"server.max_headers", "server.max_connections"}
    edge = 'header_timeout = "2s"\nkeepalive_timeout = "5s"'
    ((file, key, expected, _),) = problems(policy_text("http://127.0.0.1:1", server=edge))
    assert (file, key) == ("broken.toml", "server.keepalive_timeout")
    assert "header_timeout" in expected


# -- random mutations of a valid policy (hypothesis) ------------------------------------------

SHIPPED_LINES = SHIPPED.read_text(encoding="utf-8").splitlines()
ASSIGNMENTS = [i for i, line in enumerate(SHIPPED_LINES) if re.match(r"^\s*[\w.\"-]+\s*=", line)]
TOML_VALUES = st.one_of(
    st.integers(-(2**63), 2**63 - 1).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(
        lambda f: {"nan": "nan", "inf": "inf", "-inf": "-inf"}.get(str(f), repr(f))
    ),
    st.text(max_size=30).map(lambda s: json.dumps(s)),
    st.sampled_from(
        [
            "true",
            '"0s"',
            '"-5m"',
            '"1w"',
            '"999999999d"',
            '"until-unlocked"',
            '"[unclosed"',
            '"(a+)+$"',
            "[]",
            '[""]',
            "[1, 2]",
            "{}",
            '{ "1h" = -1 }',
            "1979-05-27T07:32:00Z",
            "07:32:00",
            '"24:00"',
            '"http://"',
            '"10.0.0.0/33"',
        ]
    ),
)


@st.composite
def mutated_policies(draw: st.DrawFn) -> str:
    """The shipped policy with one to three edits a hand could make: a value replaced, a line
    dropped, duplicated or renamed, or a character inserted or deleted anywhere."""
    lines = list(SHIPPED_LINES)
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["value", "drop", "duplicate", "rename", "char", "delete"]))
        at = draw(st.sampled_from(ASSIGNMENTS))
        if kind == "value":
            key = lines[at].split("=", 1)[0]
            lines[at] = f"{key}= {draw(TOML_VALUES)}"
        elif kind == "drop":
            lines[at] = ""
        elif kind == "duplicate":
            lines.insert(at, lines[at])
        elif kind == "rename":
            lines[at] = "x" + lines[at].lstrip()
        else:
            text = "\n".join(lines)
            where = draw(st.integers(0, len(text) - 1))
            if kind == "char":
                text = text[:where] + draw(st.characters()) + text[where:]
            else:
                text = text[:where] + text[where + 1 :]
            lines = text.split("\n")
    return "\n".join(lines)


@settings(max_examples=200, deadline=None, database=None, derandomize=True)
@given(mutated_policies())
def test_a_mutated_policy_loads_or_names_file_and_key(text: str) -> None:
    """Any edit to a valid policy either still loads or is a ConfigError whose every problem
    names the file, a key and what was expected — never another exception."""
    try:
        parse_policy(text, "mutated/policy.toml")
    except ConfigError as error:
        caught = error
    else:
        return
    assert caught.problems
    for problem in caught.problems:
        assert problem.file == "mutated/policy.toml"
        assert problem.key
        assert problem.expected
