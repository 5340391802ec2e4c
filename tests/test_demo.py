"""``lookup-proxy demo``: one command shows the typist locked out while honest clerks carry on."""

from __future__ import annotations

import io
import os
import re
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

from lookup_proxy.demo import CompressedClock, run_demo
from lookup_proxy.policy import load_policy
from tests.servers import free_port

ROOT = Path(__file__).resolve().parent.parent


def test_the_demo_command_locks_the_typist_and_spares_the_clerks() -> None:
    """Run as a user would (no Redis, no secret in the environment): exit 0 and a clear summary."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOKUP_PROXY_")}
    result = subprocess.run(
        [sys.executable, "-m", "lookup_proxy", "demo", "--speed", "300", "--no-live"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "Park Dohyun (E1666) LOCKED OUT" in out
    assert "locked out by rule '" in out
    honest = next(line for line in out.splitlines() if "Honest clerks:" in line)
    assert honest.endswith(" 0 refused.")
    assert "Traceback" not in result.stderr


def test_the_demo_reports_when_the_typist_was_not_stopped() -> None:
    """With a policy that has no rules the summary says the typist was never locked out."""
    policy = load_policy(ROOT / "config" / "policy.toml")
    policy = policy.model_copy(update={"rules": ()})
    out = io.StringIO()
    locked = run_demo(policy, speed=600, minutes=15, live=False, out=out)
    assert locked is False
    assert "was NOT locked out within 15 minutes" in out.getvalue()


def test_the_compressed_clock_runs_faster_than_the_wall() -> None:
    """Simulated time starts at the given moment and only moves forward."""
    clock = CompressedClock(speed=1000.0, start=1_000.0)
    first = clock.now()
    assert first >= 1_000.0
    assert clock.now() >= first


def test_demo_help_says_how_to_reach_the_proxy() -> None:
    """`demo --help` tells how to point curl or a browser at the running proxy."""
    result = subprocess.run(
        [sys.executable, "-m", "lookup_proxy", "demo", "--help"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=True,
    )
    assert "--hold" in result.stdout
    assert "curl" in result.stdout


def test_hold_keeps_the_proxy_up_and_prints_a_working_curl() -> None:
    """With --hold the printed token and URL get a customer record until Ctrl-C ends it cleanly."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOKUP_PROXY_")}
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "lookup_proxy",
            "demo",
            "--speed",
            "600",
            "--no-live",
            "--hold",
            "--port",
            str(port),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
    )
    try:
        assert process.stdout is not None
        lines: list[str] = []
        for line in process.stdout:
            lines.append(line)
            if "X-Lookup-Reason" in line:
                break
        token = re.search(r"Bearer ([\w.-]+)", "".join(lines))
        url = re.search(r"(http://127\.0\.0\.1:\d+/customers/\d+)", "".join(lines))
        assert token is not None and url is not None, "".join(lines)
        assert url.group(1).startswith(f"http://127.0.0.1:{port}/")
        request = urllib.request.Request(
            url.group(1),
            headers={
                "Authorization": f"Bearer {token.group(1)}",
                "X-Lookup-Reason": "BILLING_INQUIRY",
            },
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            assert response.status == 200
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=20)
        for stream in (process.stdout, process.stderr):
            if stream:
                stream.close()
    assert process.returncode == 0
