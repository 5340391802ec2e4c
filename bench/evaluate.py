"""Judge a policy the way the README's tuning table does: simulate, replay, score, per seed.

For each seed: simulate a month (bench/simulate.py) with both threat families (--families: the
classic attackers, and insiders who have read the policy under test), replay it through the
policy under test and through a plain 60-per-hour baseline (`lookup-proxy replay`, the live guard
engine), score both against the ground truth (bench/score.py), then print one markdown table over
all seeds: per threat class, per family, honest staff, and each family's verdict per seed.
Seeds used for tuning should not be the seeds reported: pass fresh ones.

Usage:
    python bench/evaluate.py --seeds 11 12 [--employees 300] [--days 30] \\
        [--policy config/policy.toml] [--baseline bench/policies/plain-60-per-hour.toml] \\
        [--work out/evaluate] [--markdown out/evaluate/table.md] [--sim-arg=--attack-intensity=0.5]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sim_model import FAMILIES, family_of

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def run(command: list[str]) -> None:
    print("  $ " + " ".join(command), file=sys.stderr)
    subprocess.run(command, check=True, cwd=ROOT)


def one_seed(seed: int, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Simulate, replay with both policies and score one seed; returns score.py's JSON."""
    events, truth = work / f"events-{seed}.csv", work / f"truth-{seed}.csv"
    run(
        [
            sys.executable,
            str(HERE / "simulate.py"),
            "--seed",
            str(seed),
            "--employees",
            str(args.employees),
            "--days",
            str(args.days),
            "--out",
            str(events),
            "--truth",
            str(truth),
            "--families",
            args.families,
            "--policy",
            str(args.policy),
            *args.sim_arg,
        ]
    )
    roster = events.with_suffix(".roster.csv")
    decisions: dict[str, Path] = {}
    for name, policy in (("policy", args.policy), ("plain-60-per-hour", args.baseline)):
        out = work / f"decisions-{seed}-{name}.csv"
        run(
            [
                sys.executable,
                "-m",
                "lookup_proxy",
                "replay",
                "--config",
                str(policy),
                "--events",
                str(events),
                "--roster",
                str(roster),
                "--out",
                str(out),
                "--no-progress",
                "--summary-json",
                str(work / f"summary-{seed}-{name}.json"),
            ]
        )
        decisions[name] = out
    report = work / f"score-{seed}.json"
    run(
        [
            sys.executable,
            str(HERE / "score.py"),
            "--truth",
            str(truth),
            "--decisions",
            str(decisions["policy"]),
            "--baseline",
            f"plain-60-per-hour={decisions['plain-60-per-hour']}",
            "--json",
            str(report),
        ]
    )
    result: dict[str, Any] = json.loads(report.read_text())
    return result


def table(results: list[dict[str, Any]]) -> str:
    """Markdown: per threat class over all seeds, then honest-staff cost and verdicts."""
    threats: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for result in results:
        for row in result["threats"]:
            if row["threat"] == "total":
                continue  # score.py's own total row; the table adds its own
            t = threats[row["threat"]]
            t["attackers"] += row["attackers"]
            t["no_guard"] += row["no_guard"]
            for name in ("policy", "plain-60-per-hour"):
                t[name] += row["disclosed"][name]
                t[name + "_max"] = max(t[name + "_max"], row["max_per_attacker"][name])
        for attacker in result["attackers"]:
            days = attacker["results"]["policy"]["days_to_flag"]
            t = threats[attacker["threat"]]
            t["flag_days"] = max(t["flag_days"], 99 if days is None else days)

    def pct(part: float, whole: float) -> str:
        return f"{100 * part / whole:.2f}%" if whole else "-"

    def row(label: str, t: dict[str, float], bold: bool = False) -> str:
        policy = f"{t['policy']:.0f} ({pct(t['policy'], t['no_guard'])})"
        return (
            f"| {label} | {t['attackers']:.0f} | {t['no_guard']:.0f} | "
            f"{t['plain-60-per-hour']:.0f} ({pct(t['plain-60-per-hour'], t['no_guard'])}) | "
            f"{f'**{policy}**' if bold else policy} | {t['policy_max']:.0f} | "
            f"{t['flag_days']:.0f} |"
        )

    lines = [
        "| threat class | attackers | records, no guard | plain 60/h | shipped policy | worst attacker | flagged by day |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    totals: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for name in sorted(threats, key=lambda n: (family_of(n), n)):
        t = threats[name]
        for group in (family_of(name), "all"):
            total = totals[group]
            for key in ("attackers", "no_guard", "policy", "plain-60-per-hour"):
                total[key] += t[key]
            total["policy_max"] = max(total["policy_max"], t["policy_max"])
            total["flag_days"] = max(total["flag_days"], t["flag_days"])
        lines.append(row(name, t))
    families = [f for f in FAMILIES if f in totals]
    for family in families if len(families) > 1 else []:
        lines.append(row(f"**{family} family**", totals[family], bold=True))
    lines.append(row("**all**", totals["all"], bold=True))
    lines += ["", "| honest staff | plain 60/h | shipped policy |", "|---|---:|---:|"]
    staff: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for result in results:
        for name in ("policy", "plain-60-per-hour"):
            s = result["staff"][name]
            staff[name]["employees"] += s["honest"]["employees"]
            staff[name]["lookups"] += s["honest"]["lookups"]
            staff[name]["denied"] += s["honest"]["denied"]
            staff[name]["locked"] += len(s["honest"]["locked_employees"]) + len(
                s["corporate"]["locked_employees"]
            )
            staff[name]["flagged"] += len(s["honest"]["flagged_employees"])
            staff[name]["corporate_denied"] += s["corporate"]["denied"]
            staff[name]["corporate_lookups"] += s["corporate"]["lookups"]
            staff[name]["runs_denied"] += s["corporate"]["runs_denied"]
            staff[name]["runs"] += s["corporate"]["runs"]
    plain, shipped = staff["plain-60-per-hour"], staff["policy"]
    lines += [
        f"| honest employees (over all seeds) | {plain['employees']:.0f} | {shipped['employees']:.0f} |",
        f"| honest or corporate employees ever locked | {plain['locked']:.0f} | {shipped['locked']:.0f} |",
        f"| honest employees flagged | {plain['flagged']:.0f} | {shipped['flagged']:.0f} |",
        f"| honest lookups denied | {plain['denied']:.0f} of {plain['lookups']:.0f} "
        f"({pct(plain['denied'], plain['lookups'])}) | {shipped['denied']:.0f} of "
        f"{shipped['lookups']:.0f} ({pct(shipped['denied'], shipped['lookups'])}) |",
        f"| corporate runs denied (reps' CORPORATE_ACCOUNT lookups) | "
        f"{plain['runs_denied']:.0f} of {plain['runs']:.0f} | {shipped['runs_denied']:.0f} of "
        f"{shipped['runs']:.0f} |",
        f"| corporate reps' lookups denied, counter work included | "
        f"{plain['corporate_denied']:.0f} of {plain['corporate_lookups']:.0f} | "
        f"{shipped['corporate_denied']:.0f} of {shipped['corporate_lookups']:.0f} |",
    ]
    verdicts = [
        f"seed {result['seed']}, {family}: "
        + ("PASS" if passed else "FAIL")
        + " — "
        + "; ".join(
            f"{'ok' if c['ok'] else 'FAILED'} {c['target']} ({c['detail']})"
            for c in result["verdicts"]["policy"]["checks"]
            if c["family"] == family
        )
        for result in results
        for family, passed in result["verdicts"]["policy"]["families"].items()
    ]
    return "\n".join(lines) + "\n\n" + "\n".join(f"- {v}" for v in verdicts) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", required=True)
    parser.add_argument("--employees", type=int, default=300)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--policy", type=Path, default=ROOT / "config" / "policy.toml")
    parser.add_argument(
        "--baseline", type=Path, default=HERE / "policies" / "plain-60-per-hour.toml"
    )
    parser.add_argument("--work", type=Path, default=ROOT / "out" / "evaluate")
    parser.add_argument("--markdown", type=Path, default=None)
    parser.add_argument(
        "--families",
        default="classic,informed",
        help="threat families to plant (simulate.py --families); informed ones read --policy",
    )
    parser.add_argument("--sim-arg", action="append", default=[], help="extra simulate.py args")
    args = parser.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    results = []
    for seed in args.seeds:
        result = one_seed(seed, args, args.work)
        result["seed"] = seed
        results.append(result)
    rendered = table(results)
    print(rendered)
    if args.markdown is not None:
        args.markdown.write_text(rendered)
    return 0 if all(r["verdicts"]["policy"]["pass"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
