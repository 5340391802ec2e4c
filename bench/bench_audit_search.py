"""How fast ``lookup-proxy audit search`` answers on a large archive, and what its index costs.

Generates a synthetic archive (lookups and their outcomes, one file per day, records shaped and
sized like the proxy's), builds the index from scratch (``AuditArchive.catch_up``), then times
searches by number (pseudonym), employee and store (limit 100), and a one-record catch-up plus
search (what every search pays on a live archive). Baseline in the same run: answering the
number search by scanning one day file (orjson per line), which is what a search without an
index costs *per day of archive*.

Run from the repository root::

    python -m bench.bench_audit_search                    # ~1,000 employees x 7 days
    python -m bench.bench_audit_search --employees 3000 --days 365   # a full year (hours, ~100 GB)
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import os
import random
import statistics
import tempfile
import time
from pathlib import Path

import orjson

from lookup_proxy.audit.archive import AuditArchive
from lookup_proxy.audit.chain import iso_at

KEY = b"bench-pseudonym-key-of-32-bytes!!"
DAY = 86_400.0
START = 1_790_000_000.0 - (1_790_000_000.0 % DAY)  # a UTC midnight in 2026


def subject_of(number: str) -> str:
    return hmac.new(KEY, number.encode(), hashlib.sha256).hexdigest()


def generate(
    directory: Path, employees: int, days: int, per_day: int, seed: int
) -> dict[str, list[str]]:
    """Write the archive; returns samples of what exists (numbers, employees, stores)."""
    rng = random.Random(seed)
    stores = max(1, employees // 6)
    customers = max(1000, employees * per_day * days // 3)  # each number looked up ~3 times
    sample_numbers: list[str] = []
    outcomes = ("found", "not_found")
    for day in range(days):
        path = directory / time.strftime("audit-%Y-%m-%d.jsonl", time.gmtime(START + day * DAY))
        lines: list[bytes] = []
        count = employees * per_day
        times = sorted(rng.uniform(9 * 3600, 21 * 3600) for _ in range(count))
        for i, offset in enumerate(times):
            now = START + day * DAY + offset
            employee = rng.randrange(employees)
            number = f"010{rng.randrange(customers):08d}"
            if rng.random() < 0.001:
                sample_numbers.append(number)
            rid = f"{day:03d}{i:08d}{rng.getrandbits(32):08x}"
            chain = f"proxy-{employee % 4}"
            base = {
                "v": 1,
                "at": iso_at(now),
                "chain": chain,
                "seq": i * 2 + 1,
                "prev": f"{rng.getrandbits(256):064x}",
            }
            lookup = {
                **base,
                "kind": "lookup",
                "request_id": rid,
                "employee": f"E{employee:05d}",
                "store": f"S{employee % stores:04d}",
                "region": f"R{employee % 17:02d}",
                "client": f"10.{employee % 250}.{employee // 250}.7",
                "route": "GET /customers/{number}",
                "reason": "CONTRACT_RENEWAL",
                "reference": None,
                "subject": subject_of(number),
                "key_id": "k1",
                "last4": number[-4:],
                "policy": "0123456789abcdef",
                "hash": f"{rng.getrandbits(256):064x}",
            }
            outcome = {
                **base,
                "seq": i * 2 + 2,
                "kind": "outcome",
                "at": iso_at(now + 0.05),
                "of": rid,
                "decision": "allow",
                "rule": None,
                "flags": [],
                "locked": [],
                "cause": None,
                "status": 200,
                "upstream_status": 200,
                "outcome": rng.choice(outcomes),
                "latency_ms": 41.0,
                "fields": None,
                "hash": f"{rng.getrandbits(256):064x}",
            }
            lines.append(orjson.dumps(lookup))
            lines.append(orjson.dumps(outcome))
        path.write_bytes(b"\n".join(lines) + b"\n")
    return {
        "numbers": sample_numbers,
        "employees": [f"E{e:05d}" for e in range(employees)],
        "stores": [f"S{s:04d}" for s in range(stores)],
    }


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--employees", type=int, default=1000)
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument(
        "--per-day", type=int, default=67, help="lookups per employee per day (6M/month / 3,000)"
    )
    parser.add_argument("--searches", type=int, default=300, help="searches of each kind")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument(
        "--dir", default=None, help="where to build (default: a temporary directory)"
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        directory = Path(tmp)
        started = time.perf_counter()
        samples = generate(directory, args.employees, args.days, args.per_day, args.seed)
        generated = time.perf_counter() - started
        files = sorted(directory.glob("audit-*.jsonl"))
        archive_bytes = sum(p.stat().st_size for p in files)
        records = 2 * args.employees * args.per_day * args.days
        print(
            f"archive: {args.employees} employees x {args.days} days x {args.per_day}/day = "
            f"{records // 2:,} lookups, {records:,} records, {archive_bytes / 1e6:,.0f} MB "
            f"(generated in {generated:.1f}s)"
        )

        archive = AuditArchive(directory)
        started = time.perf_counter()
        indexed = archive.catch_up()
        build = time.perf_counter() - started
        index_bytes = sum(p.stat().st_size for p in directory.glob("index.sqlite*"))
        print(
            f"index build: {indexed:,} records in {build:.1f}s = {indexed / build:,.0f} records/s; "
            f"index {index_bytes / 1e6:,.0f} MB ({index_bytes / indexed:.0f} bytes/record)"
        )

        rng = random.Random(args.seed + 1)
        results: dict[str, list[float]] = {}
        hits: dict[str, int] = {}
        kinds = {
            "number": lambda: {"subjects": [subject_of(rng.choice(samples["numbers"]))]},
            "employee": lambda: {"employee": rng.choice(samples["employees"])},
            "store": lambda: {"store": rng.choice(samples["stores"])},
        }
        for name, make in kinds.items():
            times: list[float] = []
            total = 0
            for _ in range(args.searches):
                query = make()
                t = time.perf_counter()
                found = archive.search(**query, limit=100)
                times.append(time.perf_counter() - t)
                total += len(found)
            results[name] = times
            hits[name] = total
            p50, p99 = percentiles(times)
            print(
                f"search by {name:8s} (limit 100): p50 {p50 * 1e3:7.2f} ms  p99 {p99 * 1e3:7.2f} ms  "
                f"({total / args.searches:.1f} hits/search)"
            )

        last = files[-1]
        live: list[float] = []
        for i in range(50):
            with last.open("ab") as file:
                file.write(
                    orjson.dumps(
                        {
                            "v": 1,
                            "kind": "lookup",
                            "at": iso_at(START + args.days * DAY - 1),
                            "chain": "live",
                            "seq": i + 1,
                            "employee": "E00000",
                            "subject": subject_of("01000000000"),
                        }
                    )
                    + b"\n"
                )
            t = time.perf_counter()
            archive.search(employee="E00000", limit=100)
            live.append(time.perf_counter() - t)
        p50, p99 = percentiles(live)
        print(
            f"one new line + catch-up + search by employee: p50 {p50 * 1e3:.2f} ms  p99 {p99 * 1e3:.2f} ms"
        )
        archive.close()

        # baseline: the number search as a scan of one day file
        wanted = subject_of(samples["numbers"][0])
        scans = []
        for _ in range(3):
            t = time.perf_counter()
            with files[0].open("rb") as file:
                found = [
                    r for r in (orjson.loads(line) for line in file) if r.get("subject") == wanted
                ]
            scans.append(time.perf_counter() - t)
        scan = min(scans)
        number_p50 = statistics.median(results["number"])
        lines_per_day = 2 * args.employees * args.per_day
        print(
            f"baseline: scanning one day file ({lines_per_day:,} records) for a number: {scan * 1e3:,.0f} ms; "
            f"indexed search p50 is {scan / number_p50:,.0f}x faster than one day's scan"
        )
        year_records = 2 * 3000 * 67 * 365
        print(
            f"extrapolated to a year of 3,000 employees ({year_records:,} records): "
            f"full scan ~{scan / lines_per_day * year_records / 60:,.0f} min; "
            f"index build from scratch ~{year_records / (indexed / build) / 3600:,.1f} h at this rate; "
            f"index ~{index_bytes / indexed * year_records / 1e9:,.0f} GB"
        )
        del found


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
