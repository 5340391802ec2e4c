"""The compose stack and the image, checked without Docker (the development machines have no
engine): docker-compose.yml against the Compose Specification's JSON schema, and everything the
stack references against the repository — each ``lookup-proxy`` command and flag, each file and
directory, each health condition, port, secret, scrape target and load-balancer backend."""

from __future__ import annotations

import argparse
import hashlib
import re
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

from lookup_proxy.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
SCHEMAS = ROOT / "tests" / "schemas"
COMPOSE_SCHEMA = SCHEMAS / "compose-spec.json"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
HAPROXY_CFG = ROOT / "config" / "lb" / "haproxy.cfg"
PROMETHEUS_DIR = ROOT / "config" / "prometheus"
POLICY = ROOT / "config" / "policy.toml"

OUR_IMAGE = "lookup-proxy:local"
"""The image the Dockerfile builds; its entrypoint is ``lookup-proxy``."""
APP_DIR = PurePosixPath("/app")
"""The image's WORKDIR: relative paths in commands are relative to it."""
SECRET_NAME = re.compile(r"SECRET|PASSWORD|TOKEN|KEY")
REQUIRED_FROM_ENV = re.compile(r"^\$\{(?P<var>[A-Z_][A-Z0-9_]*):\?(?P<message>[^}$]+)\}$")


def load_compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())
    return data


COMPOSE = load_compose()
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
OURS = {name: s for name, s in SERVICES.items() if s.get("image") == OUR_IMAGE}
"""Services that run the lookup-proxy image (their command is ``lookup-proxy``'s arguments)."""
REPLICAS = sorted(name for name, s in OURS.items() if s["command"][0] == "serve")


def option(command: list[str], flag: str) -> str:
    return command[command.index(flag) + 1]


# -- the schema -------------------------------------------------------------------------------


def test_compose_file_is_valid_against_the_compose_specification() -> None:
    """check-jsonschema validates docker-compose.yml against the vendored Compose schema."""
    result = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--schemafile", str(COMPOSE_SCHEMA),
         str(COMPOSE_FILE)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_schema_check_refuses_what_compose_would(tmp_path: Path) -> None:
    """Not a vacuous check: a misspelt key and a made-up depends_on condition are refused."""
    broken = COMPOSE_FILE.read_text()
    broken = broken.replace("stop_grace_period:", "stop_grace:", 1)
    broken = broken.replace("condition: service_healthy}", "condition: healthy}", 1)
    path = tmp_path / "docker-compose.yml"
    path.write_text(broken)
    result = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--schemafile", str(COMPOSE_SCHEMA), str(path)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 1
    assert "stop_grace" in result.stdout
    assert "depends_on" in result.stdout


def test_vendored_schema_is_the_one_its_readme_names() -> None:
    """The schema file is byte for byte the one tests/schemas/README.md records (sha256)."""
    readme = (SCHEMAS / "README.md").read_text()
    digest = hashlib.sha256(COMPOSE_SCHEMA.read_bytes()).hexdigest()
    assert f"sha256 `{digest}`" in readme
    assert (SCHEMAS / "LICENSE.compose-spec").is_file()


# -- lookup-proxy commands --------------------------------------------------------------------


def _subcommand(parser: argparse.ArgumentParser, words: list[str]) -> argparse.ArgumentParser:
    """The (sub)parser that handles ``words``' options, following subcommand names."""
    for word in words:
        if word.startswith("-"):
            break
        subparsers = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subparsers or word not in subparsers[0].choices:
            break
        parser = subparsers[0].choices[word]
    return parser


@pytest.mark.parametrize("service", sorted(OURS))
def test_every_lookup_proxy_command_parses(service: str) -> None:
    """The command is one ``lookup-proxy`` accepts: known subcommand, known values."""
    command = OURS[service]["command"]
    try:
        build_parser().parse_args(command)
    except SystemExit as exc:  # argparse's error exit
        pytest.fail(f"{service}: lookup-proxy {' '.join(command)} is refused (exit {exc.code})")


@pytest.mark.parametrize("service", sorted(OURS))
def test_every_flag_is_spelt_out_exactly(service: str) -> None:
    """Each --flag is an option of its subcommand as written, not an abbreviation argparse
    happens to expand today."""
    command = OURS[service]["command"]
    parser = _subcommand(build_parser(), command)
    known = set(parser._option_string_actions)
    flags = [word.split("=", 1)[0] for word in command if word.startswith("--")]
    assert flags and not [f for f in flags if f not in known], (service, flags)


def test_the_stack_runs_the_proxy_the_exporter_and_the_demo_backend() -> None:
    """Two or more replicas, one audit exporter following the Redis stream, the demo backend."""
    assert len(REPLICAS) >= 2
    exporters = [n for n, s in OURS.items() if s["command"][:2] == ["audit", "export"]]
    assert len(exporters) == 1
    exporter = OURS[exporters[0]]["command"]
    assert "--follow" in exporter and option(exporter, "--store-kind") == "redis"
    assert option(exporter, "--metrics-port")
    assert [n for n, s in OURS.items() if s["command"][0] == "demo-backend"] == ["backend"]
    for name in REPLICAS:
        command = OURS[name]["command"]
        assert option(command, "--store-kind") == "redis"
        assert option(command, "--host") == "0.0.0.0"


def test_replicas_share_one_lock_journal_and_one_archive_with_the_exporter() -> None:
    """Every replica writes the same lock journal and audit archive volumes, and the exporter
    archives into that same audit volume."""
    journals = set()
    archives = set()
    for name in REPLICAS:
        command = OURS[name]["command"]
        mounts = dict(_mount_targets(OURS[name]))
        journals.add(mounts[option(command, "--lock-journal")])
        archives.add(mounts[option(command, "--audit-archive")])
    exporter = next(s for s in OURS.values() if s["command"][:2] == ["audit", "export"])
    archives.add(dict(_mount_targets(exporter))[option(exporter["command"], "--archive")])
    assert len(journals) == 1 and len(archives) == 1
    assert journals | archives <= set(COMPOSE["volumes"])


def test_proxies_reach_redis_and_the_backend_by_their_service_names() -> None:
    """--upstream-url names the backend's service and port; the Redis URL the redis service."""
    backend_port = option(SERVICES["backend"]["command"], "--port")
    store = tomllib.loads(POLICY.read_text())["store"]
    for name in REPLICAS:
        command = OURS[name]["command"]
        assert option(command, "--upstream-url") == f"http://backend:{backend_port}"
        assert OURS[name]["environment"][store["url_env"]] == "redis://redis:6379/0"


# -- files and directories --------------------------------------------------------------------


def _mounts(service: dict[str, Any]) -> list[tuple[str, str]]:
    """(source, target) of each short-syntax volume entry."""
    pairs = []
    for entry in service.get("volumes", []):
        assert isinstance(entry, str), "long-syntax volumes: teach this test to read them"
        source, target, *_ = entry.split(":")
        pairs.append((source, target))
    return pairs


def _mount_targets(service: dict[str, Any]) -> list[tuple[str, str]]:
    """(target, source) for each mount."""
    return [(target, source) for source, target in _mounts(service)]


BIND_MOUNTS = [
    pytest.param(name, source, target, id=f"{name}:{source}")
    for name, service in SERVICES.items()
    for source, target in _mounts(service)
    if source.startswith((".", "/"))
]


@pytest.mark.parametrize(("service", "source", "target"), BIND_MOUNTS)
def test_every_bind_mount_exists_in_the_repository(service: str, source: str, target: str) -> None:
    """Files and directories mounted from the repository are there (Docker would silently
    create a missing one as an empty directory)."""
    assert source.startswith("./"), f"{service}: mount {source} from the repository only"
    path = ROOT / source
    assert path.exists(), f"{service}: {source} is missing"
    assert path.resolve().is_relative_to(ROOT)
    if path.is_dir():
        assert any(path.iterdir()), f"{service}: {source} is empty"


def test_named_volumes_are_declared() -> None:
    """Every named volume a service mounts is declared at the top level, and none is unused."""
    used = {
        source
        for service in SERVICES.values()
        for source, _ in _mounts(service)
        if not source.startswith((".", "/"))
    }
    assert used == set(COMPOSE["volumes"])


def test_paths_in_commands_exist_in_the_image() -> None:
    """--config is a file the Dockerfile copies to the image; absolute directories given to a
    command are volumes of that service, and the Dockerfile creates them for the proxy user."""
    dockerfile = DOCKERFILE.read_text()
    for name, service in OURS.items():
        command = service["command"]
        if "--config" in command:
            relative = option(command, "--config")
            assert (ROOT / relative).is_file()
            assert f"COPY {relative} ./{relative}" in dockerfile
        targets = dict(_mount_targets(service))
        for flag in ("--lock-journal", "--audit-archive", "--archive"):
            if flag in command:
                directory = option(command, flag)
                assert PurePosixPath(directory).is_absolute()
                assert directory in targets, f"{name}: {flag} {directory} is not a volume"
                assert directory in dockerfile, f"the Dockerfile does not create {directory}"


def test_grafana_mounts_the_provisioning_and_the_dashboards() -> None:
    """Grafana reads the repository's provisioning, and its dashboard provider points at the
    directory the dashboards are mounted at."""
    providers = yaml.safe_load(
        (ROOT / "config/grafana/provisioning/dashboards/lookup-proxy.yml").read_text()
    )["providers"]
    mounts = SERVICES["grafana"]["volumes"]
    assert "./config/grafana/provisioning:/etc/grafana/provisioning:ro" in mounts
    assert f"./config/grafana/dashboards:{providers[0]['options']['path']}:ro" in mounts
    home = SERVICES["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == f"{providers[0]['options']['path']}/lookup-proxy.json"
    assert (ROOT / "config/grafana/dashboards/lookup-proxy.json").is_file()


# -- health and start order -------------------------------------------------------------------


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_every_service_has_a_healthcheck(service: str) -> None:
    """Each service says how to tell it is healthy, with a program its image has: Python in
    ours, redis-cli in Redis's, busybox wget in the Alpine/busybox-based HAProxy, Prometheus
    and Grafana images (an assumption about images this test cannot open)."""
    check = SERVICES[service]["healthcheck"]
    assert not check.get("disable", False)
    test = check["test"]
    assert test[0] == "CMD" and len(test) > 1
    assert check["interval"] and check["timeout"] and check["retries"] >= 1
    image = SERVICES[service]["image"]
    repository = image.split(":")[0]
    if image == OUR_IMAGE:
        program = "python"
    elif repository == "redis":
        program = "redis-cli"
    else:
        assert repository in {"haproxy", "prom/prometheus", "grafana/grafana-oss"}, image
        assert "alpine" in image or repository != "haproxy", "Debian's haproxy image has no wget"
        program = "wget"
    assert test[1] == program, (service, test)


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_depends_on_waits_for_healthy_services(service: str) -> None:
    """depends_on is the long form, every condition service_healthy, naming a service that
    has a healthcheck; nothing depends on itself."""
    depends = SERVICES[service].get("depends_on", {})
    assert isinstance(depends, dict), f"{service}: short depends_on does not wait for health"
    for other, how in depends.items():
        assert other in SERVICES and other != service
        assert how == {"condition": "service_healthy"}, (service, other, how)
        assert "healthcheck" in SERVICES[other], (service, other)


def test_start_order_has_no_cycle() -> None:
    """The services can be started: depends_on is a DAG, Redis and the backend come first."""
    order: list[str] = []
    remaining = dict.fromkeys(SERVICES)
    while remaining:
        ready = [s for s in remaining if set(SERVICES[s].get("depends_on", {})) <= set(order)]
        assert ready, f"depends_on cycle among {sorted(remaining)}"
        order.extend(sorted(ready))
        for s in ready:
            del remaining[s]
    assert order.index("redis") < min(order.index(r) for r in REPLICAS)
    assert order.index("lb") > max(order.index(r) for r in REPLICAS)


def test_proxy_healthchecks_ask_for_readiness() -> None:
    """A replica counts as healthy only when /readyz answers (policy, store, backend)."""
    for name in REPLICAS:
        test = " ".join(OURS[name]["healthcheck"]["test"])
        assert "/readyz" in test and f":{option(OURS[name]['command'], '--port')}/" in test
    exporter = next(s for s in OURS.values() if s["command"][:2] == ["audit", "export"])
    metrics_port = option(exporter["command"], "--metrics-port")
    assert f":{metrics_port}/metrics" in " ".join(exporter["healthcheck"]["test"])


def test_redis_persists_with_aof() -> None:
    """Redis appends every write to its AOF (fsync every second) on a volume, answers ping."""
    redis = SERVICES["redis"]
    command = redis["command"]
    assert option(command, "--appendonly") == "yes"
    assert option(command, "--appendfsync") == "everysec"
    assert "/data" in dict(_mount_targets(redis))
    assert redis["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]


# -- ports, secrets ---------------------------------------------------------------------------


def _published() -> list[tuple[str, str]]:
    return [
        (name, str(port).split(":")[0])
        for name, service in SERVICES.items()
        for port in service.get("ports", [])
    ]


def test_host_ports_are_unique_and_only_the_front_doors_are_published() -> None:
    """One host port per published service: the load balancer, Prometheus, Grafana. The
    replicas are reached only through the balancer."""
    ports = [port for _, port in _published()]
    assert len(ports) == len(set(ports)), ports
    assert {name for name, _ in _published()} == {"lb", "prometheus", "grafana"}
    assert ("lb", "8080") in _published()


def _environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    assert isinstance(env, dict), "environment as a mapping"
    return {key: str(value) for key, value in env.items()}


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_secrets_come_only_from_the_environment(service: str) -> None:
    """Each variable that carries a secret is ``${VAR:?message}``: compose refuses to start
    without it, and the file holds no value. No env_file either."""
    assert "env_file" not in SERVICES[service]
    for key, value in _environment(SERVICES[service]).items():
        if SECRET_NAME.search(key):
            match = REQUIRED_FROM_ENV.match(value)
            assert match, f"{service}: {key}={value!r} is not ${{VAR:?message}}"
            assert match.group("message").strip()


def test_every_secret_the_policy_names_is_passed_to_the_proxy_and_the_exporter() -> None:
    """The environment variables the shipped policy reads its secrets from reach every
    process that needs them."""
    policy = tomllib.loads(POLICY.read_text())
    needed = {
        policy["auth"]["hs_secret_env"],
        policy["audit"]["pseudonym_keys_env"],
        policy["audit"]["signing_key_env"],
        policy["store"]["url_env"],
        policy["store"]["known_numbers_key_env"],
    }
    for name, service in OURS.items():
        if service["command"][0] == "demo-backend":
            continue
        assert needed <= set(_environment(service)), name


def test_no_literal_secret_anywhere_in_the_file() -> None:
    """Nothing that looks like a key: no PEM block, no long random-looking value."""
    text = COMPOSE_FILE.read_text()
    assert "BEGIN" not in text and "PRIVATE" not in text
    for value in re.findall(r"[A-Za-z0-9+/_=-]{32,}", text):
        assert value.isidentifier() or value.replace("-", "_").isidentifier() or "/" in value, value


# -- load balancer and Prometheus -------------------------------------------------------------


def _haproxy_servers() -> list[str]:
    return re.findall(r"^\s*server\s+\S+\s+(\S+)", HAPROXY_CFG.read_text(), re.MULTILINE)


def test_the_load_balancer_sends_to_every_replica_that_is_ready() -> None:
    """HAProxy's backend lists exactly the replicas (service:port), health-checks /readyz, and
    the lb service waits for every replica and listens where it publishes."""
    expected = {f"{r}:{option(OURS[r]['command'], '--port')}" for r in REPLICAS}
    assert sorted(_haproxy_servers()) == sorted(expected)
    cfg = HAPROXY_CFG.read_text()
    assert re.search(r"http-check send meth GET uri /readyz\b", cfg)
    assert re.search(r"http-check expect status 200\b", cfg)
    assert set(SERVICES["lb"]["depends_on"]) == set(REPLICAS)
    published = [str(p).split(":") for p in SERVICES["lb"]["ports"]]
    binds = set(re.findall(r"^\s*bind\s+\S*:(\d+)", cfg, re.MULTILINE))
    assert all(container in binds for _, container in published)
    health_port = re.search(r":(\d+)/healthz", " ".join(SERVICES["lb"]["healthcheck"]["test"]))
    assert health_port and health_port.group(1) in binds


def test_haproxy_accepts_its_configuration() -> None:
    """``haproxy -c`` (Debian's haproxy, which scripts/test installs) finds the file valid."""
    assert shutil.which("haproxy"), (
        "haproxy is missing: apt-get install haproxy (scripts/test does)"
    )
    result = subprocess.run(
        ["haproxy", "-c", "-f", str(HAPROXY_CFG)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_prometheus_scrapes_every_replica_and_the_exporter() -> None:
    """Prometheus's mounted config scrapes each replica and the exporter's --metrics-port, and
    its rule files are in the mounted directory."""
    mounts = dict(_mounts(SERVICES["prometheus"]))
    assert mounts["./config/prometheus"] == "/etc/prometheus"
    assert "--config.file=/etc/prometheus/prometheus.yml" in SERVICES["prometheus"]["command"]
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    targets = {
        target
        for job in config["scrape_configs"]
        for static in job.get("static_configs", [])
        for target in static["targets"]
    }
    for name in REPLICAS:
        assert f"{name}:{option(OURS[name]['command'], '--port')}" in targets
    exporter = next(n for n, s in OURS.items() if s["command"][:2] == ["audit", "export"])
    assert f"{exporter}:{option(OURS[exporter]['command'], '--metrics-port')}" in targets
    for rule_file in config.get("rule_files", []):
        assert (PROMETHEUS_DIR / rule_file).is_file(), rule_file


# -- the Dockerfile ---------------------------------------------------------------------------


@dataclass
class Instruction:
    keyword: str
    arguments: str


def dockerfile_stages() -> list[list[Instruction]]:
    """The Dockerfile's stages, each a list of instructions (continuations joined, comments
    dropped)."""
    stages: list[list[Instruction]] = []
    logical = ""
    for line in DOCKERFILE.read_text().splitlines():
        if line.lstrip().startswith("#"):
            continue
        if line.endswith("\\"):
            logical += line[:-1] + " "
            continue
        logical += line
        if logical.strip():
            keyword, _, arguments = logical.strip().partition(" ")
            if keyword.upper() == "FROM":
                stages.append([])
            assert stages, "an instruction before FROM"
            stages[-1].append(Instruction(keyword.upper(), arguments.strip()))
        logical = ""
    return stages


COMPILERS = re.compile(r"\b(gcc|g\+\+|cc|clang|make|build-essential|libc6-dev|python3-dev)\b")


def test_image_is_built_in_two_stages_from_slim_python() -> None:
    """A build stage with the compiler, and a runtime stage from a slim base, not from it."""
    stages = dockerfile_stages()
    assert len(stages) >= 2
    build_name = stages[0][0].arguments.split()[-1]
    final = stages[-1][0].arguments.split()
    assert final[0] != build_name and "slim" in final[0]
    assert any(COMPILERS.search(i.arguments) for i in stages[0] if i.keyword == "RUN")


def test_final_stage_installs_no_compiler() -> None:
    """Nothing in the runtime stage installs a compiler or headers."""
    for instruction in dockerfile_stages()[-1]:
        if instruction.keyword == "RUN" and "install" in instruction.arguments:
            assert not COMPILERS.search(instruction.arguments), instruction.arguments


def test_final_stage_runs_as_a_non_root_user_with_a_healthcheck() -> None:
    """USER is an unprivileged uid; HEALTHCHECK probes the service."""
    final = dockerfile_stages()[-1]
    users = [i.arguments for i in final if i.keyword == "USER"]
    assert users, "no USER: the image would run as root"
    user = users[-1].split(":")[0]
    assert user not in {"root", "0"}
    assert user.isdigit() and int(user) >= 1000, "a numeric uid (runAsNonRoot can verify it)"
    checks = [i.arguments for i in final if i.keyword == "HEALTHCHECK"]
    assert len(checks) == 1 and "CMD" in checks[0] and "/healthz" in checks[0]
    instructions = [i.keyword for i in final]
    assert instructions.index("USER") > max(
        n for n, i in enumerate(final) if i.keyword in {"RUN", "COPY"}
    ), "USER after the last RUN and COPY"


def test_final_stage_copies_only_what_it_runs() -> None:
    """The runtime image gets the installed wheels and the policy file: no source tree, no
    tests, no wheels left in a layer."""
    final = dockerfile_stages()[-1]
    copies = [i.arguments for i in final if i.keyword in {"COPY", "ADD"}]
    assert copies == ["config/policy.toml ./config/policy.toml"]
    installs = [i.arguments for i in final if i.keyword == "RUN" and "pip install" in i.arguments]
    assert len(installs) == 1
    assert "--mount=type=bind,from=build" in installs[0] and "--no-index" in installs[0]


def test_build_stage_refuses_a_wheel_without_the_compiled_modules() -> None:
    """setup.py falls back to pure Python when compiling fails; the image build must not."""
    runs = " ".join(i.arguments for i in dockerfile_stages()[0] if i.keyword == "RUN")
    assert "pip wheel" in runs and ".so" in runs and "sys.exit" in runs


def test_everything_the_dockerfile_copies_exists_and_is_in_the_build_context() -> None:
    """COPY sources exist, and .dockerignore (an allow-list) lets exactly them in."""
    sources = []
    for stage in dockerfile_stages():
        for instruction in stage:
            if instruction.keyword == "COPY" and "--from" not in instruction.arguments:
                sources.extend(instruction.arguments.split()[:-1])
    for source in sources:
        assert (ROOT / source).exists(), source
    allowed = {
        line[1:].rstrip("/")
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.startswith("!")
    }
    assert set(sources) == allowed


def test_the_replicas_trust_exactly_the_load_balancers_fixed_address() -> None:
    """The audit trail records the terminal, not the balancer: each replica trusts the lb's
    X-Forwarded-For (`--trusted-proxies`), and only the lb, at the fixed address it has in the
    compose network's fixed subnet; the lb sends the header."""
    import ipaddress

    lb = SERVICES["lb"]["networks"]["default"]["ipv4_address"]
    [subnet] = [c["subnet"] for c in COMPOSE["networks"]["default"]["ipam"]["config"]]
    assert ipaddress.ip_address(lb) in ipaddress.ip_network(subnet)
    for name in ("proxy-a", "proxy-b"):
        command = SERVICES[name]["command"]
        trusted = command[command.index("--trusted-proxies") + 1]
        assert trusted == f"{lb}/32", (name, trusted)
    assert "option forwardfor" in HAPROXY_CFG.read_text()
