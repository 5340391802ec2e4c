"""Replay throughput: events per second through the live guard engine, against pure CSV I/O.

``lookup-proxy replay`` must backtest a month of a store chain's lookups in seconds: the target
is 50,000 events/s on one core. This times, in one invocation and on the same file:

- ``baseline``: read EVENTS.csv with ``csv`` and write every row plus three empty columns, the
  least any replay must do;
- ``replay``:   ``Replayer(policy).run(events, out)``, the whole command minus argument parsing:
  justify, target, guard and learn on the memory store, DECISIONS.csv written.

and prints both rates and their ratio, which means more than either rate on a shared machine.
Without ``--events`` it first simulates a month (``bench/simulate.py``: seed 3, 100 employees,
30 days, about 230,000 events) into a temporary directory. Each measurement is the best of
``--rounds`` runs (CPU time of this process), the two kinds interleaved.

Run from the repository root: ``python -m bench.bench_replay [--events EVENTS.csv]
[--policy config/policy.toml] [--rounds 3]``.
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from lookup_proxy.policy import load_policy
from lookup_proxy.replay import DECISION_COLUMNS, Replayer

ROOT = Path(__file__).resolve().parent.parent


def simulate(directory: Path, seed: int, employees: int, days: int) -> Path:
    """A simulated month of lookups (EVENTS.csv), written by bench/simulate.py."""
    events = directory / "events.csv"
    command = [
        sys.executable,
        str(ROOT / "bench" / "simulate.py"),
        *("--seed", str(seed), "--employees", str(employees), "--days", str(days)),
        *("--out", str(events), "--truth", str(directory / "truth.csv")),
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
        next(reader)
        writer.writerow(DECISION_COLUMNS)
        for row in reader:
            writer.writerow((*row, "", "", ""))
            rows += 1
    return rows


def best_of(rounds: int, runs: dict[str, Callable[[], int]]) -> dict[str, tuple[int, float]]:
    """Events and the least CPU seconds per named run, over interleaved rounds."""
    best: dict[str, tuple[int, float]] = {}
    for _ in range(rounds):
        for name, run in runs.items():
            started = time.process_time()
            events = run()
            seconds = time.process_time() - started
            if name not in best or seconds < best[name][1]:
                best[name] = (events, seconds)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=Path, help="EVENTS.csv (default: simulate a month)")
    parser.add_argument("--policy", type=Path, default=ROOT / "config" / "policy.toml")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each; the best counts")
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--employees", type=int, default=100)
    parser.add_argument("--days", type=int, default=30)
    args = parser.parse_args()
    policy = load_policy(args.policy)
    with tempfile.TemporaryDirectory() as directory:
        work = Path(directory)
        events = args.events or simulate(work, args.seed, args.employees, args.days)
        out = work / "decisions.csv"
        best = best_of(
            args.rounds,
            {
                "baseline": lambda: copy_rows(events, out),
                "replay": lambda: Replayer(policy).run(events, out).events,
            },
        )
    rates = {name: events / seconds for name, (events, seconds) in best.items()}
    for name, (count, seconds) in best.items():
        print(f"{name:<9} {rates[name]:10,.0f} events/s   ({count:,} events in {seconds:.2f} s)")
    print(f"replay / baseline = {rates['replay'] / rates['baseline']:.3f}")


if __name__ == "__main__":
    main()
