"""Compiles the replay hot path with mypyc when it can; the package works without it.

Everything else about the package is in pyproject.toml. ``lookup_proxy/native.py`` names the
modules to compile and, at import, refuses a compiled module whose source changed since: this
file records the digest of every source it compiles next to them (``native_build.json``).
Set LOOKUP_PROXY_PURE_PYTHON=1 to build without compiling. A failed C compile (no compiler)
leaves the pure-Python package, with a warning from setuptools.
"""

from __future__ import annotations

import json
import os
import runpy
from pathlib import Path

from setuptools import setup

ROOT = Path(__file__).resolve().parent
native = runpy.run_path(str(ROOT / "lookup_proxy" / "native.py"))
record_path = ROOT / "lookup_proxy" / native["BUILD_RECORD"]


def extensions() -> list:  # type: ignore[type-arg]
    record_path.unlink(missing_ok=True)
    if os.environ.get(native["PURE_ENV"]) == "1":
        return []
    from mypyc.build import mypycify

    package = ROOT / "lookup_proxy"
    sources = {m: native["source_path"](m, package) for m in native["COMPILED_MODULES"]}
    modules = mypycify(
        [
            f"--config-file={ROOT / 'build_support' / 'mypyc.ini'}",
            *(str(path.relative_to(ROOT)) for path in sources.values()),
        ],
        opt_level="3",
    )
    for module in modules:
        module.optional = True  # no C compiler: install the pure-Python package
    record = {m: native["source_digest"](path) for m, path in sources.items()}
    record_path.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    return modules


setup(ext_modules=extensions())
