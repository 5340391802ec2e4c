"""The ``lookup-proxy`` command as a user runs it: real processes, real ports, exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import jwt
import pytest

from lookup_proxy.guard.lockouts import LockInfo
from lookup_proxy.resilience.journal import LockJournal
from tests.harness import AUDIT_ENV, KNOWN_NUMBERS_KEY, SECRET, run_cli
from tests.servers import free_port

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "config" / "policy.toml"


def test_check_config_accepts_the_shipped_policy() -> None:
    """The shipped policy passes the offline check with exit 0."""
    result = run_cli("check-config", str(SHIPPED))
    assert result.returncode == 0, result.stderr
    assert "OK" in result.stdout


def test_check_config_lists_every_problem_with_file_and_key(tmp_path: Path) -> None:
    """A broken policy exits non-zero listing file, key, expectation and finding, no traceback."""
    broken = tmp_path / "broken.toml"
    text = SHIPPED.read_text()
    text = text.replace('connect_timeout = "1s"', "connect_timeout = 1")
    text = text.replace('name = "burst"', 'name = "burst"\nthreshold = 3')
    broken.write_text(text)
    result = run_cli("check-config", str(broken))
    assert result.returncode == 2
    assert f"{broken}: upstream.connect_timeout: expected a duration" in result.stderr
    assert f"{broken}: rules[0].threshold: expected no such key" in result.stderr
    assert "Traceback" not in result.stderr


def test_check_config_reports_toml_syntax_errors(tmp_path: Path) -> None:
    """A duplicate key is reported with its line, not as a crash."""
    broken = tmp_path / "dup.toml"
    broken.write_text(SHIPPED.read_text() + "\n[server]\nport = 1\n")
    result = run_cli("check-config", str(broken))
    assert result.returncode == 2
    assert "(syntax)" in result.stderr and "Traceback" not in result.stderr


def test_token_refuses_without_the_secret_in_the_environment() -> None:
    """Minting needs the development secret from the environment, and says which variable."""
    result = run_cli("token", "--employee", "E1", "--store", "S1")
    assert result.returncode == 2
    assert "LOOKUP_PROXY_JWT_SECRET" in result.stderr
    assert result.stdout == ""


def test_token_mints_a_token_the_policy_accepts() -> None:
    """A minted token carries the employee, store, region and roles with the policy's iss/aud."""
    result = run_cli(
        "token",
        "--employee",
        "E7",
        "--store",
        "S3",
        "--region",
        "R9",
        "--roles",
        "clerk,corporate-sales",
        "--ttl",
        "2h",
        env={"LOOKUP_PROXY_JWT_SECRET": SECRET},
    )
    assert result.returncode == 0, result.stderr
    claims = jwt.decode(
        result.stdout.strip(),
        SECRET,
        algorithms=["HS256"],
        audience="lookup-proxy",
        issuer="store-idp",
    )
    assert (claims["sub"], claims["store"], claims["region"]) == ("E7", "S3", "R9")
    assert claims["roles"] == ["clerk", "corporate-sales"]
    assert claims["exp"] - claims["iat"] == 7200


def wait_for(url: str, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            output = process.stdout.read() if process.stdout else ""
            raise AssertionError(f"process exited early: {output}")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.1)
    raise AssertionError(f"{url} never answered")


def open_all_day(directory: Path) -> Path:
    """The shipped policy with its store open around the clock: a test must not pass or fail by
    the hour it runs at (opening hours have their own tests, on a manual clock)."""
    text = SHIPPED.read_text(encoding="utf-8")
    opening = 'open = "09:30"\nclose = "21:30"'
    assert opening in text, "the shipped [hours] changed; update this test"
    copy = directory / "policy.toml"
    copy.write_text(text.replace(opening, 'open = "00:00"\nclose = "24:00"'), encoding="utf-8")
    return copy


@contextmanager
def serving_processes(*extra: str, env_extra: dict[str, str] | None = None) -> Iterator[str]:
    """The README's path: demo backend and proxy as real processes with the shipped policy
    (open all day, see ``open_all_day``)."""
    with tempfile.TemporaryDirectory() as directory:
        with _serving(open_all_day(Path(directory)), extra, env_extra) as url:
            yield url


@contextmanager
def _serving(config: Path, extra: Sequence[str], env_extra: dict[str, str] | None) -> Iterator[str]:
    backend_port, proxy_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOKUP_PROXY_")}
    env["LOOKUP_PROXY_JWT_SECRET"] = SECRET
    env["LOOKUP_PROXY_KNOWN_NUMBERS_KEY"] = KNOWN_NUMBERS_KEY
    env.update(AUDIT_ENV)
    env.update(env_extra or {})
    backend = subprocess.Popen(
        [sys.executable, "-m", "lookup_proxy", "demo-backend", "--port", str(backend_port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=ROOT,
    )
    proxy = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "lookup_proxy",
            "serve",
            "--config",
            str(config),
            "--port",
            str(proxy_port),
            "--upstream-url",
            f"http://127.0.0.1:{backend_port}",
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=ROOT,
    )
    try:
        wait_for(f"http://127.0.0.1:{backend_port}/healthz", backend)
        wait_for(f"http://127.0.0.1:{proxy_port}/healthz", proxy)
        yield f"http://127.0.0.1:{proxy_port}"
    finally:
        for process in (proxy, backend):
            process.terminate()
            process.wait(timeout=10)
            if process.stdout:
                process.stdout.close()


def lookup(url: str, token: str) -> bytes:
    request = urllib.request.Request(
        f"{url}/customers/010-2000-0007",
        headers={"Authorization": f"Bearer {token}", "X-Lookup-Reason": "BILLING_INQUIRY"},
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.status == 200
        assert response.headers["X-Request-Id"]
        body: bytes = response.read()
        return body


def minted() -> str:
    return run_cli(
        "token", "--employee", "E1", "--store", "S1", env={"LOOKUP_PROXY_JWT_SECRET": SECRET}
    ).stdout.strip()


def _eventually_sampled(url: str, series: str) -> bool:
    """Whether ``series`` (a count) rises above 0 in /metrics within ten seconds."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with urllib.request.urlopen(f"{url}/metrics", timeout=5) as metrics:
            for line in metrics.read().decode().splitlines():
                if line.startswith(series + " ") and float(line.split()[-1]) > 0:
                    return True
        time.sleep(0.1)
    return False


def test_serve_answers_a_token_holder_and_refuses_everyone_else() -> None:
    """The README flow: a minted token and a reason get a record; no token gets a 401 problem.
    (Serving also tunes garbage collection, its pauses timed in /metrics, and samples how late
    the event loop runs: loop_lag.py.)"""
    with serving_processes() as url:
        assert b'"number": "01020000007"' in lookup(url, minted())
        with urllib.request.urlopen(f"{url}/metrics", timeout=5) as metrics:
            assert b'lookup_proxy_gc_pause_seconds_count{generation="2"}' in metrics.read()
        assert _eventually_sampled(url, "lookup_proxy_event_loop_lag_seconds_count")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{url}/customers/010-2000-0007", timeout=5)
    with refused.value:
        assert refused.value.code == 401
        assert refused.value.headers["Content-Type"] == "application/problem+json"


def test_serve_can_keep_its_counters_in_redis(fresh_redis: str) -> None:
    """With --store-kind redis the proxy counts in the Redis named by the environment."""
    with serving_processes(
        "--store-kind", "redis", env_extra={"LOOKUP_PROXY_REDIS_URL": fresh_redis}
    ) as url:
        lookup(url, minted())
    keys = subprocess.run(
        ["redis-cli", "-u", fresh_redis, "--scan", "--pattern", "lp:{e:E1}:*"],
        capture_output=True,
        text=True,
        check=True,
        timeout=10,
    ).stdout.split()
    assert "lp:{e:E1}:burst:ticks" in keys


def test_serve_takes_its_lock_journal_from_the_command_line(tmp_path: Path) -> None:
    """--lock-journal DIR: locks journaled there (by any instance) hold from the first lookup."""
    LockJournal(tmp_path / "locks", "earlier-instance").locked(
        [LockInfo("E1", "manual", time.time(), None)]
    )
    with serving_processes("--lock-journal", str(tmp_path / "locks")) as url:
        with pytest.raises(urllib.error.HTTPError) as refused:
            lookup(url, minted())
    with refused.value:
        assert refused.value.code == 403
        assert json.loads(refused.value.read())["type"].endswith(":locked-out")


def test_serve_refuses_to_start_on_a_missing_secret(tmp_path: Path) -> None:
    """Without the token secret the proxy does not start, and says which variable is missing."""
    result = run_cli("serve", "--config", str(SHIPPED), "--port", str(free_port()))
    assert result.returncode == 2
    assert "LOOKUP_PROXY_JWT_SECRET" in result.stderr and "Traceback" not in result.stderr


def test_audit_keygen_prints_keys_the_proxy_accepts() -> None:
    """``audit keygen``: export lines for a pseudonym key, a checkpoint signing key and a
    known-numbers key, which parse as the proxy reads them; two runs never print the same
    keys."""
    import shlex

    from lookup_proxy.audit.chain import Signer
    from lookup_proxy.audit.pseudonym import Pseudonymiser
    from lookup_proxy.policy import load_policy
    from lookup_proxy.stores import numbers_key

    outputs = []
    for _ in range(2):
        result = run_cli("audit", "keygen", "--config", str(SHIPPED), "--key-id", "k7")
        assert result.returncode == 0, result.stderr
        words = shlex.split(result.stdout)  # as a shell reads it: the PEM spans lines
        assert words[::2] == ["export", "export", "export"]
        environ = dict(word.split("=", 1) for word in words[1::2])
        assert Pseudonymiser.from_environ(environ, "LOOKUP_PROXY_PSEUDONYM_KEYS").key_id == "k7"
        Signer.from_environ(environ, "LOOKUP_PROXY_AUDIT_SIGNING_KEY")
        assert numbers_key(load_policy(str(SHIPPED)).store, environ) is not None
        outputs.append(result.stdout)
    assert outputs[0] != outputs[1]


def test_serve_writes_its_audit_records_where_audit_archive_says(tmp_path: Path) -> None:
    """--audit-archive DIR: a memory-store proxy's records (a lookup's attempt and outcome,
    and the final checkpoint at shutdown) land in DIR."""
    archive = tmp_path / "archive"
    with serving_processes("--audit-archive", str(archive)) as url:
        lookup(url, minted())
    kinds = [
        json.loads(line)["kind"]
        for path in archive.glob("audit-*.jsonl")
        for line in path.read_text().splitlines()
    ]
    assert kinds.count("lookup") == 1 and kinds.count("outcome") == 1
    assert kinds[-1] == "checkpoint"


def test_serve_trusted_proxies_override_is_checked_like_the_policy_key() -> None:
    """--trusted-proxies takes CIDRs; anything else is one plain error line, exit 2."""
    result = run_cli(
        "serve", "--config", str(SHIPPED), "--port", str(free_port()), "--trusted-proxies", "lb",
        env={"LOOKUP_PROXY_JWT_SECRET": SECRET, **AUDIT_ENV},
    )  # fmt: skip
    assert result.returncode == 2
    assert "--trusted-proxies" in result.stderr and "'lb'" in result.stderr
    assert "Traceback" not in result.stderr
