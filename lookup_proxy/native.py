"""Which modules run compiled (mypyc), and never a compiled module older than its source.

Replay decides millions of events through the guard; compiled with mypyc, the same source runs
about two and a half times as fast. ``setup.py`` compiles ``COMPILED_MODULES`` when a C compiler is
present and records a digest of each source it compiled. In a source checkout the compiled modules
sit beside their sources (an editable install builds in place), so a source edited since the build
would silently run the old code: the compiled modules are therefore used only when every source
still has the recorded digest, and otherwise every one of them is imported from its Python source,
with a warning. All or none, because compiled modules import each other inside their shared
library, past the import system: one stale module would still run from a fresh one.

``LOOKUP_PROXY_PURE_PYTHON=1`` imports every module from its Python source (to compare, or to
debug); a build with it set compiles nothing.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import json
import os
import sys
import warnings
from collections.abc import Sequence
from importlib.abc import MetaPathFinder
from importlib.machinery import ModuleSpec
from pathlib import Path
from types import ModuleType

COMPILED_MODULES = (
    "lookup_proxy.clock",
    "lookup_proxy.employee",
    "lookup_proxy.numbers",
    "lookup_proxy.justify",
    "lookup_proxy.guard.primitives",
    "lookup_proxy.guard.memory",
    "lookup_proxy.guard.rules",
    "lookup_proxy.guard.lockouts",
    "lookup_proxy.guard.peers",
    "lookup_proxy.guard.escalation",
    "lookup_proxy.guard.known_numbers",
    "lookup_proxy.guard.decision",
    "lookup_proxy.guard.plans",
    "lookup_proxy.guard.learning",
    "lookup_proxy.guard.engine",
    "lookup_proxy.guard.script_calls",
    "lookup_proxy.replay",
    "lookup_proxy.request_shape",
    "lookup_proxy.identify",
    "lookup_proxy.forward",
    "lookup_proxy.upstream.exchange",
    "lookup_proxy.upstream.pool",
    "lookup_proxy.resilience.fallback",
    "lookup_proxy.record",
    "lookup_proxy.audit.pseudonym",
    "lookup_proxy.audit.chain",
    "lookup_proxy.audit.trail",
    "lookup_proxy.metrics",
    "lookup_proxy.app",
)
"""The replay hot path, the Redis store's encoding of a batch (``guard.script_calls``), and the
live proxy's walk: the walk itself (``app``), target, identify, forward (with the backend
client), failover, record (the audit trail, its chain and pseudonyms) and metrics, which were
most of the interpreter's instructions in a lookup (bench/instructions.py). Compiled classes
cannot be subclassed or patched from Python, so only modules whose classes nobody extends belong
here. Not here: ``middleware`` (aiohttp marks a middleware by setting an attribute on the
function, which a compiled function refuses) and ``http_edge`` (its classes extend aiohttp's)."""

BUILD_RECORD = "native_build.json"
"""Written by setup.py beside this module: module → sha256 of the source it was compiled from."""

PURE_ENV = "LOOKUP_PROXY_PURE_PYTHON"

PACKAGE_DIR = Path(__file__).resolve().parent


class StaleCompiledModule(UserWarning):
    """A compiled module was built from another version of its source; the source runs."""


def source_path(module: str, package_dir: Path = PACKAGE_DIR) -> Path:
    """The ``.py`` file of one of this package's modules."""
    parts = module.split(".")[1:]
    return package_dir.joinpath(*parts[:-1], parts[-1] + ".py")


def source_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def has_extension(source: Path) -> bool:
    """Whether a compiled module (``name.<abi tag>.so``) sits beside ``source``."""
    return any(
        source.with_name(source.stem + suffix).exists()
        for suffix in importlib.machinery.EXTENSION_SUFFIXES
    )


def modules_to_load_from_source(
    package_dir: Path, forced: bool, modules: Sequence[str] = COMPILED_MODULES
) -> tuple[list[str], list[str]]:
    """(modules whose Python source must be imported instead of their extension, the stale ones)."""
    try:
        record = json.loads((package_dir / BUILD_RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        record = {}
    compiled = [
        module
        for module in modules
        if source_path(module, package_dir).exists()
        and has_extension(source_path(module, package_dir))
    ]
    stale = [
        module
        for module in compiled
        if record.get(module) != source_digest(source_path(module, package_dir))
    ]
    return (compiled if forced or stale else []), ([] if forced else stale)


class _SourceFinder(MetaPathFinder):
    """Finds the listed modules as Python source, ahead of their compiled extensions."""

    def __init__(self, modules: Sequence[str], package_dir: Path) -> None:
        self.modules = frozenset(modules)
        self.package_dir = package_dir

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: ModuleType | None = None,
    ) -> ModuleSpec | None:
        if fullname not in self.modules:
            return None
        return importlib.util.spec_from_file_location(
            fullname, source_path(fullname, self.package_dir)
        )


def install(package_dir: Path = PACKAGE_DIR) -> None:
    """Route stale (or, when forced, all) compiled modules to their sources. Run at import."""
    from_source, stale = modules_to_load_from_source(package_dir, os.environ.get(PURE_ENV) == "1")
    if from_source:
        sys.meta_path.insert(0, _SourceFinder(from_source, package_dir))
    if stale:
        warnings.warn(
            f"{', '.join(stale)} changed since the package was compiled, so every compiled "
            "module runs from its Python source instead (correct, but slower). "
            "Rebuild: pip install -e .",
            StaleCompiledModule,
            stacklevel=2,
        )


def compiled_modules() -> list[str]:
    """The modules of ``COMPILED_MODULES`` that this process runs compiled."""
    return [
        name
        for name in COMPILED_MODULES
        if (module := sys.modules.get(name)) is not None
        and not str(getattr(module, "__file__", "")).endswith(".py")
    ]
