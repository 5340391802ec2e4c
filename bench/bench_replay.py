"""Replay throughput: events per second through the live guard engine, against pure CSV I/O.

``lookup-proxy replay`` must backtest a month of a store chain's lookups in minutes: the target
is 50,000 events/s on one core. This times, in one invocation and on the same file:

- ``baseline``: read EVENTS.csv with ``csv`` and write every row plus three empty columns, the
  least any replay must do;
- ``replay``:   ``Replayer(policy).run(events, out)``, the whole command minus argument parsing:
  justify, target, guard and learn on the memory store, DECISIONS.csv written, with the modules
  compiled by mypyc where the install compiled them (``lookup_proxy/native.py``);
- ``pure``:     the same replay with every module imported from its Python source
  (``LOOKUP_PROXY_PURE_PYTHON=1``), what a machine without a C compiler gets;

and prints the rates and their ratios to the baseline, which mean more than any rate on a shared
machine. Each replay runs in its own process (a module is compiled or not per process). Without
``--events`` it first simulates a month (``bench/simulate.py``: seed 3, 100 employees, 30 days,
about 230,000 events) into a temporary directory. Each measurement is the best of ``--rounds``
runs (CPU time of the process doing the work), the kinds interleaved.

Run from the repository root: ``python -m bench.bench_replay [--events EVENTS.csv]
[--policy config/policy.toml] [--rounds 3]``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lookup_proxy.replay import DECIDED_COLUMNS

ROOT = Path(__file__).resolve().parent.parent


def simulate(directory: Path, seed: int, employees: int, days: int) -> Path:
    """A simulated month of lookups (EVENTS.csv), written by bench/simulate.py.

    Classic attackers only: the month the README's replay speeds were measured on.
    """
    events = directory / "events.csv"
    command = [
        sys.executable,
        str(ROOT / "bench" / "simulate.py"),
        *("--seed", str(seed), "--employees", str(employees), "--days", str(days)),
        *("--out", str(events), "--truth", str(directory / "truth.csv")),
        *("--families", "classic"),
    ]
    subprocess.run(command, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    return events


def copy_rows(events: Path, out: Path) -> int:
    """The baseline: the same rows out, three empty columns added. Returns the rows copied."""
    rows = 0
    with (
        events.open(newline="", encoding="utf-8") as source,
        out.open("w", newline="", encoding="utf-8") as sink,
    ):
        reader = csv.reader(source)
        writer = csv.writer(sink, lineterminator="\n")
        writer.writerow((*next(reader), *DECIDED_COLUMNS))
        for row in reader:
            writer.writerow((*row, "", "", ""))
            rows += 1
    return rows


def replay_once(events: Path, policy: Path, out: Path, pure: bool) -> tuple[int, float, list[str]]:
    """One replay in a fresh process: (events, CPU seconds, modules that ran compiled)."""
    env = dict(os.environ)
    env.pop("LOOKUP_PROXY_PURE_PYTHON", None)
    if pure:
        env["LOOKUP_PROXY_PURE_PYTHON"] = "1"
    command = [sys.executable, "-m", "bench.bench_replay", "--worker", str(events), str(policy)]
    done = subprocess.run(
        [*command, str(out)], check=True, cwd=ROOT, env=env, capture_output=True, text=True
    )
    answer = json.loads(done.stdout)
    return answer["events"], answer["seconds"], answer["compiled"]


def worker(events: Path, policy_path: Path, out: Path) -> None:
    """The replay side of one measurement; prints JSON for replay_once."""
    from lookup_proxy.native import compiled_modules
    from lookup_proxy.policy import load_policy
    from lookup_proxy.replay import Replayer

    policy = load_policy(policy_path)
    started = time.process_time()
    count = Replayer(policy).run(events, out).events
    seconds = time.process_time() - started
    print(json.dumps({"events": count, "seconds": seconds, "compiled": compiled_modules()}))


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "--worker":
        worker(Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4]))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=Path, help="EVENTS.csv (default: simulate a month)")
    parser.add_argument("--policy", type=Path, default=ROOT / "config" / "policy.toml")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each; the best counts")
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--employees", type=int, default=100)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--no-pure", action="store_true", help="skip the pure-Python replay")
    args = parser.parse_args()
    best: dict[str, tuple[int, float]] = {}
    compiled: list[str] = []
    with tempfile.TemporaryDirectory() as directory:
        work = Path(directory)
        events = (args.events or simulate(work, args.seed, args.employees, args.days)).resolve()
        out = work / "decisions.csv"
        kinds = ["baseline", "replay"] + ([] if args.no_pure else ["pure"])
        for _ in range(args.rounds):
            for kind in kinds:
                if kind == "baseline":
                    started = time.process_time()
                    count = copy_rows(events, out)
                    seconds = time.process_time() - started
                else:
                    count, seconds, modules = replay_once(
                        events, args.policy.resolve(), out, kind == "pure"
                    )
                    if kind == "replay":
                        compiled = modules
                if kind not in best or seconds < best[kind][1]:
                    best[kind] = (count, seconds)
    rates = {kind: count / seconds for kind, (count, seconds) in best.items()}
    for kind, (count, seconds) in best.items():
        ratio = rates[kind] / rates["baseline"]
        print(
            f"{kind:<9} {rates[kind]:10,.0f} events/s   ({count:,} events in {seconds:.2f} s)"
            f"   / baseline = {ratio:.3f}"
        )
    if "pure" in rates:
        print(f"replay / pure = {rates['replay'] / rates['pure']:.2f}")
    print(f"compiled modules: {', '.join(compiled) if compiled else 'none (pure Python)'}")


if __name__ == "__main__":
    main()
