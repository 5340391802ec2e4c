"""Real Redis servers for the tests and the store benchmark, as subprocesses on free ports.

Never the machine's own Redis (6379): the tests flush what they use, and a developer's data is
not theirs to flush. Each server lives in its own directory with persistence off, so nothing
outlives the session.
"""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import redis

INSTALL_HINT = (
    "redis-server and redis-cli are needed on PATH for the guard's Redis tests. Run the "
    "suite with ./scripts/test, which installs them (Debian's redis-server package) when "
    "they are missing, or apt-get install redis-server yourself."
)

_CLUSTER_BUS_OFFSET = 10_000


class MissingRedis(RuntimeError):
    """redis-server or redis-cli is not installed."""


def _binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise MissingRedis(f"{name} not found. {INSTALL_HINT}")
    return path


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port(*, cluster_bus: bool = False) -> int:
    """A port nothing listens on; with ``cluster_bus`` also its Cluster bus port (+10000)."""
    if not cluster_bus:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind(("127.0.0.1", 0))
            port: int = probe.getsockname()[1]
            return port
    rng = random.Random()
    for _ in range(1000):
        port = rng.randrange(20_000, 30_000)
        if _port_free(port) and _port_free(port + _CLUSTER_BUS_OFFSET):
            return port
    raise RuntimeError("no free port pair for a Redis Cluster node")


@dataclass
class RedisServer:
    """One redis-server process."""

    port: int
    directory: Path
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def log_tail(self) -> str:
        log = self.directory / "redis.log"
        return log.read_text(errors="replace")[-2000:] if log.exists() else "(no log)"

    def kill(self) -> None:
        """SIGKILL, as a crash or an OOM kill would: no shutdown save, no goodbye."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def _wait_until_answering(server: RedisServer, deadline: float) -> bool:
    client = redis.Redis(port=server.port, socket_timeout=1, socket_connect_timeout=1)
    try:
        while time.monotonic() < deadline:
            if server.process.poll() is not None:
                return False
            try:
                if client.ping():
                    return True
            except redis.RedisError:
                time.sleep(0.02)
        return False
    finally:
        client.close()


def start_redis(
    directory: Path,
    *,
    cluster: bool = False,
    wait: float = 15.0,
    persistence: bool = False,
    port: int | None = None,
    wrapper: Sequence[str] = (),
) -> RedisServer:
    """A redis-server answering PING in ``directory``; persistence off unless asked.

    ``persistence`` turns on the append-only file with ``appendfsync always``, so a test can
    kill the server right after a write and still expect the write back (deployments use
    ``everysec``: at most about a second lost). ``port`` restarts a server where it was.
    ``wrapper`` runs it under another program (bench/instructions.py: valgrind).
    """
    binary = _binary("redis-server")
    directory.mkdir(parents=True, exist_ok=True)
    failure = ""
    for _ in range(5 if port is None else 1):  # a free port can be taken before binding
        chosen = free_port(cluster_bus=cluster) if port is None else port
        args = [
            *wrapper,
            binary,
            "--port", str(chosen),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "yes" if persistence else "no",
            "--appendfsync", "always",
            "--dir", str(directory),
            "--logfile", "redis.log",
        ]  # fmt: skip
        if cluster:
            args += [
                "--cluster-enabled", "yes",
                "--cluster-config-file", "nodes.conf",
                "--cluster-node-timeout", "3000",
            ]  # fmt: skip
        process = subprocess.Popen(args, cwd=directory, stdin=subprocess.DEVNULL)
        server = RedisServer(chosen, directory, process)
        if _wait_until_answering(server, time.monotonic() + wait):
            return server
        failure = server.log_tail()
        server.stop()
    raise RuntimeError(f"redis-server did not start in {directory}:\n{failure}")


@dataclass
class LocalCluster:
    """A Redis Cluster of masters only, on this machine."""

    servers: list[RedisServer] = field(default_factory=list)

    @property
    def url(self) -> str:
        """A startup node; the client discovers the others."""
        return f"redis://127.0.0.1:{self.servers[0].port}"

    @property
    def ports(self) -> list[int]:
        return [server.port for server in self.servers]

    def stop(self) -> None:
        for server in self.servers:
            server.stop()


def _cluster_ready(ports: Sequence[int]) -> bool:
    for port in ports:
        client = redis.Redis(port=port, socket_timeout=1, decode_responses=True)
        try:
            info = client.cluster("INFO")
        except redis.RedisError:
            return False
        finally:
            client.close()
        if (
            info.get("cluster_state") != "ok"
            or int(info.get("cluster_slots_assigned", 0)) != 16384
            or int(info.get("cluster_known_nodes", 0)) != len(ports)
        ):
            return False
    return True


def start_cluster(directory: Path, masters: int = 3, wait: float = 30.0) -> LocalCluster:
    """``masters`` cluster-enabled servers joined by ``redis-cli --cluster create``."""
    cli = _binary("redis-cli")
    cluster = LocalCluster()
    try:
        for index in range(masters):
            cluster.servers.append(start_redis(directory / f"node{index}", cluster=True))
        nodes = [f"127.0.0.1:{port}" for port in cluster.ports]
        command = [cli, "--cluster", "create", *nodes, "--cluster-replicas", "0", "--cluster-yes"]
        created = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=wait,
            stdin=subprocess.DEVNULL,
            check=False,
        )
        if created.returncode != 0:
            raise RuntimeError(
                f"redis-cli --cluster create failed:\n{created.stdout}\n{created.stderr}"
            )
        deadline = time.monotonic() + wait
        while not _cluster_ready(cluster.ports):
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"cluster on ports {cluster.ports} never reached cluster_state:ok"
                )
            time.sleep(0.05)
    except BaseException:
        cluster.stop()
        raise
    return cluster


def flush(ports: Sequence[int]) -> None:
    """Empty every given server (every master of a cluster), so each test starts clean."""
    for port in ports:
        client = redis.Redis(port=port, socket_timeout=5)
        try:
            client.flushall()
        finally:
            client.close()
