"""The compiled hot path: it is really compiled here, it decides exactly as its source does, and
a compiled module older than its source never runs."""

from __future__ import annotations

import importlib.machinery
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from lookup_proxy import native
from tests.harness import ROOT, run_cli, simulate


def test_the_test_install_runs_the_hot_path_compiled() -> None:
    """./scripts/test installs the package compiled; otherwise the tests would test another build."""
    import lookup_proxy.guard.engine
    import lookup_proxy.replay  # noqa: F401  (imports every compiled module)

    missing = sorted(set(native.COMPILED_MODULES) - set(native.compiled_modules()))
    assert not missing, (
        f"{missing} run from Python source: the install did not compile them (no C compiler, "
        "or LOOKUP_PROXY_PURE_PYTHON=1 at install). Run ./scripts/test, which rebuilds."
    )


def fake_package(tmp_path: Path, source: str, recorded: str | None) -> Path:
    """A package dir with mod.py, a (placeholder) compiled mod, and a build record."""
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "mod.py").write_text(source)
    (package / ("mod" + importlib.machinery.EXTENSION_SUFFIXES[0])).write_bytes(b"")
    if recorded is not None:
        digest = native.source_digest(package / "mod.py") if recorded == source else "0" * 64
        (package / native.BUILD_RECORD).write_text(json.dumps({"pkg.mod": digest}))
    return package


def test_a_module_compiled_from_its_current_source_is_used(tmp_path: Path) -> None:
    package = fake_package(tmp_path, "X = 1\n", recorded="X = 1\n")
    assert native.modules_to_load_from_source(package, False, ["pkg.mod"]) == ([], [])


def test_a_module_compiled_from_another_source_is_stale(tmp_path: Path) -> None:
    package = fake_package(tmp_path, "X = 2\n", recorded="X = 1\n")
    assert native.modules_to_load_from_source(package, False, ["pkg.mod"]) == (
        ["pkg.mod"],
        ["pkg.mod"],
    )


def test_one_stale_module_sends_every_compiled_module_to_its_source(tmp_path: Path) -> None:
    """Compiled modules import each other natively, so a fresh one would still run a stale one."""
    package = fake_package(tmp_path, "X = 1\n", recorded="X = 1\n")
    (package / "other.py").write_text("Y = 1\n")
    (package / ("other" + importlib.machinery.EXTENSION_SUFFIXES[0])).write_bytes(b"")
    assert native.modules_to_load_from_source(package, False, ["pkg.mod", "pkg.other"]) == (
        ["pkg.mod", "pkg.other"],
        ["pkg.other"],
    )


def test_a_compiled_module_without_a_build_record_is_stale(tmp_path: Path) -> None:
    package = fake_package(tmp_path, "X = 1\n", recorded=None)
    assert native.modules_to_load_from_source(package, False, ["pkg.mod"])[1] == ["pkg.mod"]


def test_forcing_pure_python_loads_every_compiled_module_from_source(tmp_path: Path) -> None:
    package = fake_package(tmp_path, "X = 1\n", recorded="X = 1\n")
    assert native.modules_to_load_from_source(package, True, ["pkg.mod"]) == (["pkg.mod"], [])


IMPORT_AND_REPORT = """
import warnings, json, sys
warnings.simplefilter("always")
with warnings.catch_warnings(record=True) as caught:
    import lookup_proxy.replay
    import lookup_proxy.guard.engine as engine
from lookup_proxy.native import compiled_modules
print(json.dumps({"engine": engine.__file__, "compiled": compiled_modules(),
                  "warnings": [str(w.message) for w in caught]}))
"""


def import_report(cwd: Path, env: dict[str, str] | None = None) -> dict[str, object]:
    environment = {k: v for k, v in os.environ.items() if k != native.PURE_ENV}
    environment.update(env or {})
    done = subprocess.run(
        [sys.executable, "-c", IMPORT_AND_REPORT],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def test_an_edited_source_runs_instead_of_its_stale_compiled_module(tmp_path: Path) -> None:
    """Edit engine.py in a copy of the built package: the copy runs the edit, and says why."""
    shutil.copytree(ROOT / "lookup_proxy", tmp_path / "lookup_proxy")
    for shared in ROOT.glob("*__mypyc*"):  # the library the compiled modules share
        shutil.copy(shared, tmp_path / shared.name)
    engine = tmp_path / "lookup_proxy" / "guard" / "engine.py"
    engine.write_text(engine.read_text() + "\n# edited after the build\n")
    report = import_report(tmp_path)
    assert report["engine"] == str(engine)
    assert report["compiled"] == []  # all or none: see lookup_proxy/native.py
    assert any("lookup_proxy.guard.engine" in str(w) for w in report["warnings"]), report


def test_the_pure_python_switch_imports_every_module_from_source() -> None:
    report = import_report(ROOT, {native.PURE_ENV: "1"})
    assert report["compiled"] == []
    assert str(report["engine"]).endswith("engine.py")
    assert report["warnings"] == []


def test_compiled_and_pure_replays_decide_every_event_alike(tmp_path: Path) -> None:
    """A simulated stretch of a chain's traffic, attackers included, replayed both ways."""
    events = simulate(tmp_path, seed=5, employees=40, days=4)
    decisions = {}
    for kind, env in (("compiled", {}), ("pure", {native.PURE_ENV: "1"})):
        out = tmp_path / f"{kind}.csv"
        done = run_cli(
            "replay",
            *("--config", str(ROOT / "config" / "policy.toml")),
            *("--events", str(events), "--out", str(out), "--no-progress"),
            env=env,
        )
        assert done.returncode == 0, done.stderr
        assert ("pure Python" in done.stdout) == (kind == "pure"), done.stdout
        decisions[kind] = out.read_text()
    assert decisions["compiled"] == decisions["pure"]
    rules = {line.split(",")[-2] for line in decisions["compiled"].splitlines()[1:]}
    assert {"locked", "random-typing"} <= rules, rules
