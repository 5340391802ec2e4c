"""The metric names a PromQL expression reads, for tests that check dashboards and rules
against what the proxy exports.

Not a parser: a tokenizer that knows just enough PromQL to tell a metric name from everything
else that looks like an identifier. Skipped: strings, label matchers ``{…}`` (label names and
values), ranges and subqueries ``[…]``, the label lists after ``by``/``without``/``on``/
``ignoring``/``group_left``/``group_right``, numbers and durations, Grafana variables (``$x``,
``${x}``, ``[[x]]`` inside brackets), keywords and aggregation operators, and any identifier
followed by ``(`` (a function). What is left is a metric name. A selector by ``__name__``
(``{__name__="…"}``) cannot be checked by name and is refused.
"""

from __future__ import annotations

import re

KEYWORDS = frozenset(
    {
        # binary operators and modifiers
        "and",
        "or",
        "unless",
        "bool",
        "offset",
        "atan2",
        # aggregation operators (also valid without "(" right after: `sum by (x) (…)`)
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
        "limitk",
        "limit_ratio",
        # literals, and `@ start()` / `@ end()`
        "inf",
        "nan",
        "start",
        "end",
    }
)
LABEL_LIST_KEYWORDS = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})

_IDENTIFIER = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
_NUMBER = re.compile(r"0[xX][0-9a-fA-F]+|(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?(?:[a-zA-Z]+\d*)*")
_VARIABLE = re.compile(r"\$\{[^}]*\}|\$[A-Za-z0-9_]+")
_NAME_MATCHER = re.compile(r"(?:^|[{,\s])__name__\s*(?:=|!=|=~|!~)")


class PromQLError(ValueError):
    """The expression is not one this tokenizer can vouch for."""


def _skip_string(expr: str, i: int) -> int:
    quote = expr[i]
    i += 1
    while i < len(expr):
        if expr[i] == "\\" and quote != "`":
            i += 2
            continue
        if expr[i] == quote:
            return i + 1
        i += 1
    raise PromQLError(f"unterminated string in {expr!r}")


def _skip_group(expr: str, i: int, opening: str, closing: str) -> tuple[int, str]:
    """From ``expr[i] == opening`` past its matching ``closing``; returns (end, the inside)."""
    depth = 0
    start = i
    while i < len(expr):
        char = expr[i]
        if char in "\"'`":
            i = _skip_string(expr, i)
            continue
        if char == opening:
            depth += 1
        elif char == closing:
            depth -= 1
            if depth == 0:
                return i + 1, expr[start + 1 : i]
        i += 1
    raise PromQLError(f"unbalanced {opening!r} in {expr!r}")


def _next_non_space(expr: str, i: int) -> int:
    while i < len(expr) and expr[i].isspace():
        i += 1
    return i


def metric_names(expr: str) -> set[str]:
    """Every metric name ``expr`` selects."""
    names: set[str] = set()
    i = 0
    while i < len(expr):
        char = expr[i]
        if char.isspace():
            i += 1
        elif char in "\"'`":
            i = _skip_string(expr, i)
        elif char == "#":  # a comment runs to the end of the line
            newline = expr.find("\n", i)
            i = len(expr) if newline < 0 else newline
        elif char == "{":
            i, inside = _skip_group(expr, i, "{", "}")
            if _NAME_MATCHER.search(inside):
                raise PromQLError(f"selector by __name__ in {expr!r}: name the metric instead")
        elif char == "[":
            i, _ = _skip_group(expr, i, "[", "]")
        elif char == "$":
            match = _VARIABLE.match(expr, i)
            if match is None:
                raise PromQLError(f"stray '$' at {i} in {expr!r}")
            i = match.end()
        elif (number := _NUMBER.match(expr, i)) is not None and not char.isalpha():
            i = number.end()
        elif (identifier := _IDENTIFIER.match(expr, i)) is not None:
            word = identifier.group()
            i = identifier.end()
            after = _next_non_space(expr, i)
            if word.lower() in LABEL_LIST_KEYWORDS:
                if after < len(expr) and expr[after] == "(":
                    i, _ = _skip_group(expr, after, "(", ")")
            elif after < len(expr) and expr[after] == "(":
                continue  # a function or an aggregation: its arguments are scanned next
            elif word.lower() not in KEYWORDS:
                names.add(word)
        else:
            i += 1  # operators, parentheses, commas, '@'
    return names


_LABEL_VALUES = re.compile(r"^\s*label_values\(\s*(?:(?P<selector>.*),)?\s*(?P<label>\w+)\s*\)\s*$")
_QUERY_RESULT = re.compile(r"^\s*query_result\((?P<query>.*)\)\s*$", re.DOTALL)
_METRICS = re.compile(r"^\s*metrics\((?P<regex>.*)\)\s*$")
_LABEL_NAMES = re.compile(r"^\s*label_names\(\s*\)\s*$")


def variable_query_metric_names(query: str) -> set[str]:
    """Metric names in a Grafana Prometheus template-variable query: ``label_values(sel,
    label)``, ``query_result(expr)``, ``label_names()``, or a bare PromQL expression."""
    if match := _LABEL_VALUES.match(query):
        selector = match.group("selector")
        return metric_names(selector) if selector else set()
    if match := _QUERY_RESULT.match(query):
        return metric_names(match.group("query"))
    if _METRICS.match(query):
        raise PromQLError(f"metrics(…) lists names by regex and cannot be checked: {query!r}")
    if _LABEL_NAMES.match(query):
        return set()
    return metric_names(query)
