"""The ``lookup-proxy`` command: serve, check-config, token, replay, red-team, demo-backend,
audit (export, verify, search), report, and for security staff cases, locks and unlock.

Errors reach the user as plain lines (file, key, expected, found) and an exit code, never as a
traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any

from lookup_proxy.clock import SystemClock
from lookup_proxy.durations import parse_duration
from lookup_proxy.errors import ConfigError
from lookup_proxy.policy import Policy, load_policy
from lookup_proxy.replay import ReplayFailed

DEFAULT_POLICY = "config/policy.toml"
EXIT_CONFIG = 2


def _policy(path: str) -> Policy:
    return load_policy(path)


def run_async(main: Coroutine[Any, Any, None]) -> None:
    """Run on uvloop, the faster event loop, where it is installed (every platform but Windows)."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency where it builds
        asyncio.run(main)
    else:
        uvloop.run(main)


def cmd_serve(args: argparse.Namespace) -> int:
    from lookup_proxy.logs import configure_logging
    from lookup_proxy.serving.options import ServeOptions

    configure_logging(args.log_level)
    options = ServeOptions(
        config=args.config,
        host=args.host,
        port=args.port,
        store_kind=args.store_kind,
        upstream_url=args.upstream_url,
        lock_journal=args.lock_journal,
        audit_archive=args.audit_archive,
        trusted_proxies=args.trusted_proxies,
        with_demo_backend=args.with_demo_backend,
        log_level=args.log_level,
        workers=args.workers,
        drain_timeout=args.drain_timeout,
    )
    policy = options.load()
    if options.workers > 1:
        from lookup_proxy.serving.master import serve_workers

        return serve_workers(options, policy)
    from lookup_proxy.serving.process import serve

    run_async(serve(options, policy))
    return 0


def cmd_check_config(args: argparse.Namespace) -> int:
    from lookup_proxy.guard.engine import _all_rules

    policy = _policy(args.file)
    rules = _all_rules(policy)
    print(
        f"{args.file}: OK — {len(policy.routes)} route(s), {len(policy.reasons)} reason code(s), "
        f"{len(rules)} rule(s) (including per-reason limits), store {policy.store.kind}"
    )
    return 0


def cmd_token(args: argparse.Namespace) -> int:
    from lookup_proxy.tokens import mint_token

    policy = _policy(args.config)
    roles = [r for part in args.roles for r in part.split(",") if r]
    accounts = [a for part in args.accounts for a in part.split(",") if a]
    token = mint_token(
        policy.auth,
        os.environ,
        employee=args.employee,
        store=args.store,
        region=args.region,
        roles=roles,
        ttl=parse_duration(args.ttl),
        clock=SystemClock(),
        accounts=accounts,
    )
    print(token)
    return 0


def cmd_demo_backend(args: argparse.Namespace) -> int:
    from lookup_proxy.demo_backend import run_demo_backend
    from lookup_proxy.logs import configure_logging

    configure_logging("INFO")
    run_async(run_demo_backend(args.host, args.port, args.seed, args.share))
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    import json

    from lookup_proxy.replay import Replayer, load_accounts, load_roster

    policy = _policy(args.config)
    roles = load_roster(Path(args.roster)) if args.roster else None
    accounts = load_accounts(Path(args.roster)) if args.roster else None
    _warn_unassigned("replay", policy, accounts)
    _warn_unchecked("replay", policy, Path(args.events))
    progress = sys.stderr.isatty() if args.progress is None else args.progress
    summary = Replayer(policy, roles, accounts).run(
        Path(args.events), Path(args.out), progress=progress
    )
    print(summary.render())
    if args.summary_json:
        Path(args.summary_json).write_text(json.dumps(summary.as_json(), indent=2) + "\n")
    return 0


def _warn_unassigned(
    command: str, policy: Policy, accounts: dict[str, frozenset[str]] | None
) -> None:
    """Say so when a backtest will refuse every lookup of an own-account reason for want of
    the accounts each employee works (a roster without the column)."""
    from lookup_proxy.replay import unassigned_reasons

    unassigned = unassigned_reasons(policy, accounts)
    if unassigned:
        print(
            f"{command}: warning: the policy takes references for {', '.join(unassigned)} only "
            f"from the accounts each employee works ([auth.claims] {policy.auth.claims.accounts})"
            ", and the roster names none (give it an accounts column: employee,roles,accounts),"
            " so every such lookup is refused here as account-not-assigned",
            file=sys.stderr,
        )


def _warn_unchecked(
    command: str,
    policy: Policy,
    events: Path,
    instead: str = "every found record is shown here",
) -> None:
    """Say so when the policy withholds business lines ([accounts]) and EVENTS.csv does not
    say which found records are such lines (no ``account`` column): the backtest then shows
    them all, honest clerks' refusals and an insider's walk alike."""
    from lookup_proxy.replay import ACCOUNT_COLUMN

    if not policy.account_checks():
        return
    try:
        with events.open(encoding="utf-8") as handle:
            header = handle.readline()
    except (OSError, UnicodeDecodeError):
        return  # the run itself reports what is wrong with the file
    if ACCOUNT_COLUMN not in [name.strip() for name in header.split(",")]:
        print(
            f"{command}: warning: the policy withholds business customers' lines ([accounts]) "
            f"but {events} has no {ACCOUNT_COLUMN} column naming the account of each found "
            f"record, so {instead} (add the column: the value the backend's record has at "
            "[accounts] field, empty for a consumer's line)",
            file=sys.stderr,
        )


def cmd_red_team(args: argparse.Namespace) -> int:
    import json

    from lookup_proxy.redteam import Options, red_team

    if args.roster and not args.events:
        raise ValueError("--roster needs --events (the simulated baseline has its own roster)")
    options = Options(
        policy_path=args.config,
        events=Path(args.events) if args.events else None,
        roster=Path(args.roster) if args.roster else None,
        days=args.days,
        density=args.density,
        seed=args.seed,
        employees=args.employees,
        regulars=args.regulars,
        steps=args.steps,
        draws=args.draws,
        only=tuple(args.only),
    )
    policy = _policy(args.config)
    if args.events:
        from lookup_proxy.replay import load_accounts

        _warn_unassigned(
            "red-team", policy, load_accounts(Path(args.roster)) if args.roster else None
        )
        _warn_unchecked(
            "red-team",
            policy,
            Path(args.events),
            "business lines are taken to be the spans of lines found under each reference",
        )
    outcome = red_team(policy, options)
    print(outcome.text)
    if args.json:
        Path(args.json).write_text(json.dumps(outcome.report, indent=2) + "\n")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from lookup_proxy.report import ReportError, ReportRequest, make_report

    request = ReportRequest(
        args.month,
        Path(args.out),
        Path(args.csv) if args.csv else None,
        store=args.store,
        region=args.region,
    )
    try:
        review = make_report(_policy(args.config), Path(args.config).parent, request)
    except ReportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    print(
        f"{review.month.label} ({review.scope}): {review.attempts} lookup attempts by "
        f"{len(review.employees)} employees, {len(review.outliers)} standing out, "
        f"{len(review.cases)} case(s), {review.after_hours_total} after hours -> {args.out}"
        + (f", {args.csv}" if args.csv else "")
    )
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from lookup_proxy.demo import run_demo

    policy = _policy(args.config)
    run_demo(
        policy,
        speed=args.speed,
        minutes=args.minutes,
        seed=args.seed,
        port=args.port,
        hold=args.hold,
        live=args.live,
    )
    return 0


def _review_session(args: argparse.Namespace) -> Any:
    from lookup_proxy.cases.commands import CommandFailed, Session

    actor = getattr(args, "actor", None)
    if actor is None:
        raise CommandFailed("--as EMPLOYEE_ID is required: who is reviewing", 2)
    config = getattr(args, "config", DEFAULT_POLICY)
    return Session(_policy(config), Path(config), actor, os.environ)


def _json(args: argparse.Namespace) -> bool:
    return bool(getattr(args, "json", False))


def cmd_cases(args: argparse.Namespace) -> int:
    from lookup_proxy.cases import commands

    action = getattr(args, "case_command", None) or "list"
    case_id = None if action == "list" else commands.check_case_id(args.case_id)
    note = getattr(args, "note", None)
    if action == "list":
        work: Any = lambda s: commands.list_cases(s, args.status, _json(args))  # noqa: E731
    elif action == "show":
        work = lambda s: commands.show_case(s, args.case_id, _json(args))  # noqa: E731
    else:
        resolution = args.resolution if action == "resolve" else None
        note = commands.check_note(note, required=action == "resolve")
        unlock = action == "resolve" and args.unlock
        work = lambda s: commands.review(s, args.case_id, note, resolution, unlock, _json(args))  # noqa: E731
    session = _review_session(args)
    run_async(commands.run(session, f"cases.{action}", case_id, note, work))
    return 0


def cmd_locks(args: argparse.Namespace) -> int:
    from lookup_proxy.cases import commands

    session = _review_session(args)
    run_async(
        commands.run(
            session, "locks.list", None, None, lambda s: commands.list_locks(s, _json(args))
        )
    )
    return 0


def cmd_unlock(args: argparse.Namespace) -> int:
    from lookup_proxy.cases import commands

    note = commands.check_note(args.note, required=True)
    session = _review_session(args)
    work = lambda s: commands.unlock(s, args.employee)  # noqa: E731
    run_async(commands.run(session, "locks.unlock", args.employee, note, work))
    return 0


def _reviewer(parser: argparse.ArgumentParser) -> None:
    """Options every review command takes, before or after its action (never overwritten by
    an absent one: SUPPRESS)."""
    quiet = argparse.SUPPRESS
    parser.add_argument("--config", default=quiet, help="policy file (its [store])")
    parser.add_argument(
        "--as", dest="actor", default=quiet, metavar="EMPLOYEE_ID", help="who is reviewing"
    )
    parser.add_argument(
        "--json", action="store_true", default=quiet, help="JSON, as the admin API answers"
    )


def _add_review_commands(sub: Any) -> None:
    from lookup_proxy.cases.model import RESOLUTIONS, STATUSES

    cases = sub.add_parser("cases", help="the review queue: list, show, acknowledge, resolve")
    _reviewer(cases)
    cases.add_argument("--status", choices=[*STATUSES, "all"], default="open")
    cases.set_defaults(func=cmd_cases)
    actions = cases.add_subparsers(dest="case_command", metavar="ACTION")
    show = actions.add_parser("show", help="one case and its events")
    acknowledge = actions.add_parser("acknowledge", help="take a case in hand")
    resolve = actions.add_parser("resolve", help="close a case with a resolution")
    for parser in (show, acknowledge, resolve):
        _reviewer(parser)
        parser.add_argument("case_id", metavar="ID")
    acknowledge.add_argument("--note", default=None)
    resolve.add_argument("--note", required=True)
    resolve.add_argument("--resolution", required=True, choices=RESOLUTIONS)
    resolve.add_argument("--unlock", action="store_true", help="also lift the employee's lock")

    locks = sub.add_parser("locks", help="every current lockout")
    _reviewer(locks)
    locks.set_defaults(func=cmd_locks)

    unlock = sub.add_parser("unlock", help="lift an employee's lockout on every instance")
    _reviewer(unlock)
    unlock.add_argument("employee", metavar="EMPLOYEE")
    unlock.add_argument("--note", required=True, help="why (kept in the audit trail)")
    unlock.set_defaults(func=cmd_unlock)


def _positive(text: str) -> int:
    number = int(text)
    if number < 1:
        raise argparse.ArgumentTypeError(f"expected 1 or more, found {text}")
    return number


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lookup-proxy",
        description="Guarding reverse proxy for a customer-lookup backend.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", help="run the proxy")
    serve.add_argument("--config", default=DEFAULT_POLICY, help="policy file (TOML)")
    serve.add_argument("--host", default=None, help="override [server] host")
    serve.add_argument("--port", type=int, default=None, help="override [server] port")
    serve.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING"])
    serve.add_argument(
        "--store-kind", choices=["memory", "redis"], default=None, help="override [store] kind"
    )
    serve.add_argument("--upstream-url", default=None, help="override [upstream] url")
    serve.add_argument(
        "--lock-journal",
        default=None,
        metavar="DIR",
        help="override [store] lock_journal (a directory every instance shares)",
    )
    serve.add_argument(
        "--trusted-proxies",
        default=None,
        metavar="CIDR[,CIDR]",
        help="override [server] trusted_proxies (e.g. the load balancer in front)",
    )
    serve.add_argument(
        "--audit-archive",
        default=None,
        metavar="DIR",
        help="override [audit] archive (where this instance writes records Redis cannot take)",
    )
    serve.add_argument(
        "--with-demo-backend",
        action="store_true",
        help="also serve the synthetic customer backend at [upstream] url (local trial only)",
    )
    serve.add_argument(
        "--workers",
        type=_positive,
        default=1,
        metavar="N",
        help="serving processes on the port (SO_REUSEPORT; N > 1 needs the Redis store)",
    )
    serve.add_argument(
        "--drain-timeout",
        type=parse_duration,
        default=None,
        metavar="DURATION",
        help="after SIGTERM, how long lookups in flight may take to finish (default: the "
        "longer of [server] shutdown_timeout and [upstream] total_timeout + 1s)",
    )
    serve.set_defaults(func=cmd_serve)

    check = sub.add_parser("check-config", help="validate a policy file offline")
    check.add_argument("file", nargs="?", default=DEFAULT_POLICY)
    check.set_defaults(func=cmd_check_config)

    token = sub.add_parser(
        "token", help="mint a development token (HS256 secret from the environment)"
    )
    token.add_argument("--config", default=DEFAULT_POLICY)
    token.add_argument("--employee", required=True)
    token.add_argument("--store", required=True)
    token.add_argument("--region", default=None)
    token.add_argument("--roles", action="append", default=[], help="comma-separated roles")
    token.add_argument(
        "--accounts",
        action="append",
        default=[],
        help="comma-separated business accounts (references) the employee works",
    )
    token.add_argument("--ttl", default="8h", help="lifetime, e.g. 8h")
    token.set_defaults(func=cmd_token)

    demo = sub.add_parser(
        "demo",
        help="watch the proxy stop a clerk typing numbers at random (no setup)",
        description=(
            "Starts the demo backend and the proxy (memory store) on local ports and plays a "
            "time-compressed stretch of store traffic through real HTTP: honest clerks serving "
            "a queue and one clerk typing numbers at random, until the typist is locked out. "
            "To point a browser or curl at the running proxy, add --hold (and --port 8080): "
            "after the script the proxy keeps running and prints a ready token and a curl "
            "command; stop it with Ctrl-C."
        ),
    )
    demo.add_argument("--config", default=DEFAULT_POLICY, help="policy (store forced to memory)")
    demo.add_argument("--speed", type=float, default=30.0, help="simulated seconds per second")
    demo.add_argument("--minutes", type=float, default=40.0, help="simulated minutes at most")
    demo.add_argument("--seed", type=int, default=2021)
    demo.add_argument("--port", type=int, default=0, help="proxy port (default: any free one)")
    demo.add_argument("--hold", action="store_true", help="keep the proxy running afterwards")
    demo.add_argument(
        "--live",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="redraw a live view (default: when stdout is a terminal)",
    )
    demo.set_defaults(func=cmd_demo)

    replay = sub.add_parser(
        "replay", help="backtest a policy on past lookups (EVENTS.csv -> DECISIONS.csv)"
    )
    replay.add_argument("--config", default=DEFAULT_POLICY, help="policy file to backtest")
    replay.add_argument("--events", required=True, help="EVENTS.csv, sorted by time")
    replay.add_argument("--out", required=True, help="DECISIONS.csv to write")
    replay.add_argument(
        "--roster",
        default=None,
        help="employee,roles[,accounts] CSV (;-separated) from HR",
    )
    replay.add_argument("--summary-json", default=None, help="also write the summary as JSON")
    replay.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bar on stderr (default: when stderr is a terminal)",
    )
    replay.set_defaults(func=cmd_replay)

    red = sub.add_parser(
        "red-team",
        help="the policy's worst case: an adaptive insider who has read it",
        description=(
            "Plays insiders who know the policy against the replay engine: every evasion "
            "strategy searched over its intensity and knobs, mixed into a month of honest work "
            "(--events, or a simulated chain), and reports per strategy the records one "
            "insider obtains without being locked, before the first flag, and the rule that binds."
        ),
    )
    red.add_argument("--config", default=DEFAULT_POLICY, help="policy file to attack")
    red.add_argument(
        "--events", default=None, help="honest EVENTS.csv to hide in (default: simulated)"
    )
    red.add_argument("--roster", default=None, help="employee,roles[,accounts] CSV for --events")
    red.add_argument("--days", type=int, default=30, help="simulated period (without --events)")
    red.add_argument("--employees", type=int, default=40, help="simulated chain size")
    red.add_argument(
        "--regulars",
        type=int,
        default=400,
        help="each simulated store's regular customers (fewer: clerks meet them more often)",
    )
    red.add_argument(
        "--density", type=float, default=0.14, help="share of numbers that are customers"
    )
    red.add_argument("--seed", type=int, default=1)
    red.add_argument(
        "--steps", type=int, default=5, help="trials per strategy (other knobs: half as many)"
    )
    red.add_argument(
        "--draws",
        type=int,
        default=3,
        help="runs of each strategy's best never-locked trial, with other numbers (luck)",
    )
    red.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="PREFIX",
        help="only strategies whose name starts with PREFIX (repeatable)",
    )
    red.add_argument("--json", default=None, help="also write the report as JSON")
    red.set_defaults(func=cmd_red_team)

    from lookup_proxy.audit.commands import add_audit_commands  # it imports from here

    add_audit_commands(sub)

    report = sub.add_parser(
        "report",
        help="the monthly access review (HTML with charts, CSV per employee)",
        description=(
            "Reads one month of the audit archive (policy [audit] archive) and writes the "
            "monthly access review: lookups per employee against their peers, refusals, locks, "
            "cases, unusual not-found ratios and distinct counts, after-hours lookups."
        ),
    )
    report.add_argument("--month", required=True, help="YYYY-MM, in store time ([hours])")
    report.add_argument("--config", default=DEFAULT_POLICY, help="policy file (TOML)")
    scope = report.add_mutually_exclusive_group()
    scope.add_argument("--store", default=None, help="only this store's employees")
    scope.add_argument("--region", default=None, help="only this region's employees")
    report.add_argument("--out", required=True, help="report.html to write")
    report.add_argument("--csv", default=None, help="also write one row per employee")
    report.set_defaults(func=cmd_report)

    demo_backend = sub.add_parser("demo-backend", help="run the synthetic customer backend")
    demo_backend.add_argument("--host", default="127.0.0.1")
    demo_backend.add_argument("--port", type=int, default=8081)
    demo_backend.add_argument("--seed", type=int, default=7)
    demo_backend.add_argument("--share", type=float, default=1 / 7, help="share of numbers found")
    demo_backend.set_defaults(func=cmd_demo_backend)
    _add_review_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from lookup_proxy.cases.commands import CommandFailed

    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except CommandFailed as failed:
        print(f"error: {failed}", file=sys.stderr)
        return failed.code
    except ReplayFailed as exc:
        print(f"replay failed: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except ConfigError as exc:
        print("configuration error:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return EXIT_CONFIG
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except OSError as exc:  # a file or directory the command needs (the audit archive, ...)
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
