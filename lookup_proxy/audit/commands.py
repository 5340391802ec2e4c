"""``lookup-proxy audit keygen|export|verify|search``: the audit archive from a shell.

Like every command, errors reach the user as plain lines and an exit code (``cli.main`` turns
ConfigError, ValueError and OSError into them), never as a traceback. A search is itself an
access to personal data, so it is audited (:mod:`lookup_proxy.audit.tools`).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from lookup_proxy.cli import DEFAULT_POLICY, run_async
from lookup_proxy.durations import parse_duration
from lookup_proxy.overrides import with_overrides
from lookup_proxy.policy import Policy, load_policy


def _archive_dir(policy: Policy, config: str) -> Path:
    return Path(config).parent / policy.audit.archive


def cmd_audit_keygen(args: argparse.Namespace) -> int:
    """New audit keys and the known-numbers key as shell ``export`` lines (for a secret store
    or ``eval``)."""
    import shlex

    from lookup_proxy.audit.keys import new_keys

    policy = load_policy(args.config)
    for variable, value in new_keys(policy, args.key_id).items():
        print(f"export {variable}={shlex.quote(value)}")
    return 0


def cmd_audit_export(args: argparse.Namespace) -> int:
    from lookup_proxy.audit.export import run_export_command

    policy = with_overrides(load_policy(args.config), args.store_kind, None)
    if policy.store.kind != "redis":
        raise ValueError(
            "audit export reads the Redis stream; with store.kind = 'memory' the proxy writes "
            "the archive itself (proxies run with --store-kind redis? give it here too)"
        )
    interval = parse_duration(args.interval)
    archive = Path(args.archive) if args.archive else _archive_dir(policy, args.config)
    if args.follow:
        from lookup_proxy.logs import configure_logging

        configure_logging("INFO")
    return run_export_command(
        policy, archive, os.environ, args.follow, interval,
        args.metrics_port, run_async,
    )  # fmt: skip


def cmd_audit_verify(args: argparse.Namespace) -> int:
    from lookup_proxy.audit.chain import Signer, Verifier
    from lookup_proxy.audit.verify import verify_archive

    policy = load_policy(args.config)
    if policy.audit.verify_key is not None:
        key_path = Path(args.config).parent / policy.audit.verify_key
        try:
            pem = key_path.read_bytes()
        except OSError as exc:
            raise ValueError(f"cannot read audit.verify_key {key_path}: {exc.strerror}") from None
        verifier = Verifier.from_pem(pem, source=str(key_path))
    else:
        verifier = Verifier.from_signer(
            Signer.from_environ(os.environ, policy.audit.signing_key_env)
        )
    directory = Path(args.archive) if args.archive else _archive_dir(policy, args.config)
    if not directory.is_dir():
        raise ValueError(f"no archive at {directory}")
    report = verify_archive(directory, verifier)
    for problem in report.problems:
        print(problem)
    print(f"{directory}: {report.summary()}")
    return 0 if report.ok else 1


def cmd_audit_search(args: argparse.Namespace) -> int:
    import json

    from lookup_proxy.audit.archive import AuditArchive
    from lookup_proxy.errors import Refusal

    policy = load_policy(args.config)
    subjects = None
    if args.number is not None:
        from lookup_proxy.audit.pseudonym import Pseudonymiser
        from lookup_proxy.numbers import normalise_number

        keys = Pseudonymiser.from_environ(os.environ, policy.audit.pseudonym_keys_env)
        try:
            number = normalise_number(args.number, policy.numbers)
        except Refusal as exc:
            raise ValueError(f"--number: {exc.detail}") from None
        subjects = [subject for subject, _ in keys.subjects(number)]
    from lookup_proxy.audit.tools import record_tool_action

    query: dict[str, object] = {
        "subjects": subjects,
        "employee": args.employee,
        "store": args.store,
        "since": args.since,
        "until": args.until,
        "limit": args.limit,
    }
    with AuditArchive(_archive_dir(policy, args.config)) as archive:
        found = archive.search(
            subjects=subjects,
            employee=args.employee,
            store=args.store,
            since=args.since,
            until=args.until,
            limit=args.limit,
        )
    # Searching the trail is itself an access to personal data: audited before it is shown.
    record_tool_action(
        policy,
        Path(args.config).parent,
        os.environ,
        {
            "request_id": None,
            "employee": args.actor,
            "action": "audit.search",
            "target": args.employee or args.store,
            "note": None,
            "status": 0,
            "query": query,
        },
    )
    if args.json:
        print(json.dumps({"records": found}, indent=2, ensure_ascii=False))
        return 0
    columns = ("at", "employee", "store", "reason", "reference", "last4", "decision", "outcome")
    for record in found:
        print("  ".join(str(record.get(c) if record.get(c) is not None else "-") for c in columns)
              + f"  {record.get('request_id')}")  # fmt: skip
    print(f"{len(found)} lookup(s)", file=sys.stderr)
    return 0


def add_audit_commands(sub: Any) -> None:
    """The ``audit`` command and its actions, on the main parser's subparsers."""
    audit = sub.add_parser("audit", help="the audit archive: export, verify, search")
    audit_sub = audit.add_subparsers(dest="audit_command", required=True, metavar="ACTION")
    keygen = audit_sub.add_parser(
        "keygen",
        help="print new pseudonym, checkpoint-signing and known-numbers keys as export lines",
    )
    keygen.add_argument("--config", default=DEFAULT_POLICY, help="policy file (TOML)")
    keygen.add_argument("--key-id", default="k1", help="id of the new pseudonym key")
    keygen.set_defaults(func=cmd_audit_keygen)
    export = audit_sub.add_parser(
        "export", help="move audit records from the Redis stream into the archive"
    )
    export.add_argument("--config", default=DEFAULT_POLICY, help="policy file (TOML)")
    export.add_argument("--follow", action="store_true", help="keep exporting until stopped")
    export.add_argument("--archive", default=None, help="archive directory (default: the policy's)")
    export.add_argument(
        "--store-kind", choices=["redis"], default=None, help="override [store] kind"
    )
    export.add_argument("--interval", default="1s", help="with --follow: time between rounds")
    export.add_argument(
        "--metrics-port", type=int, default=None, help="with --follow: serve /metrics here"
    )
    export.set_defaults(func=cmd_audit_export)
    verify = audit_sub.add_parser(
        "verify", help="check the archive's hash chains and signed checkpoints"
    )
    verify.add_argument("--config", default=DEFAULT_POLICY, help="policy file (TOML)")
    verify.add_argument("--archive", default=None, help="archive directory (default: the policy's)")
    verify.set_defaults(func=cmd_audit_verify)
    search = audit_sub.add_parser("search", help="lookups of a customer, an employee or a store")
    search.add_argument("--config", default=DEFAULT_POLICY, help="policy file (TOML)")
    which = search.add_mutually_exclusive_group(required=True)
    which.add_argument("--number", default=None, help="customer number (pseudonymised)")
    which.add_argument("--employee", default=None)
    which.add_argument("--store", default=None)
    search.add_argument("--since", default=None, help="ISO-8601 time or date (inclusive)")
    search.add_argument("--until", default=None, help="ISO-8601 time or date (exclusive)")
    search.add_argument("--limit", type=int, default=100)
    search.add_argument("--json", action="store_true", help="JSON instead of one line per lookup")
    search.add_argument(
        "--as", dest="actor", required=True, metavar="EMPLOYEE", help="who searches (audited)"
    )
    search.set_defaults(func=cmd_audit_search)
