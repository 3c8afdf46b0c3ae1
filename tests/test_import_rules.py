"""The architecture's boundaries, checked on the import graph of the application code.

- ``registry.storage`` owns the layout: outside it, only ``registry.wiring`` (which
  builds storage from config) imports its drivers, and nothing imports ``paths``.
- Storage knows nothing of configuration or of the wire error table: inside
  ``registry.storage`` nothing imports ``registry.config``, ``shared.errors``, or any
  other ``registry`` module outside the storage package but the content model
  (``registry.oci``), which itself imports nothing of the registry.
- ``shared`` imports neither service; neither service imports the other; and ``shared``
  holds only what both use: each of its modules is imported, directly or through another
  ``shared`` module, by both.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("registry", "tokenauth", "shared")
WIRING = "registry.wiring"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_module(name: str) -> bool:
    base = ROOT.joinpath(*name.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def _imports(path: Path) -> Iterator[str]:
    """Every module ``path`` imports, at any depth (functions and TYPE_CHECKING too)."""
    package = _module_name(path).rsplit(".", 1)[0] if path.name != "__init__.py" else ""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:  # relative: resolve against this module's package
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                module = f"{base}.{module}".strip(".")
            for alias in node.names:
                candidate = f"{module}.{alias.name}"
                yield candidate if _is_module(candidate) else module


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            graph[_module_name(path)] = set(_imports(path))
    return graph


GRAPH = _graph()


def _within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def _violations(rule: str) -> list[str]:
    found = []
    for module, imported in sorted(GRAPH.items()):
        for target in sorted(imported):
            if _breaks(rule, module, target):
                found.append(f"{module} imports {target}")
    return found


def _breaks(rule: str, module: str, target: str) -> bool:
    in_storage = _within(module, "registry.storage")
    if rule == "layout":
        if in_storage:
            return False
        if _within(target, "registry.storage.paths"):
            return True
        return _within(target, "registry.storage.driver") and module != WIRING
    if rule == "storage-knows-no-config":
        if not in_storage:
            return False
        return _within(target, "shared.errors") or (
            _within(target, "registry")
            and not _within(target, "registry.storage")
            and not _within(target, "registry.oci")
        )
    if rule == "oci-is-a-leaf":
        return (
            _within(module, "registry.oci")
            and _within(target, "registry")
            and not _within(target, "registry.oci")
        )
    if rule == "shared-is-shared":
        return _within(module, "shared") and (
            _within(target, "registry") or _within(target, "tokenauth")
        )
    if rule == "services-apart":
        return (_within(module, "registry") and _within(target, "tokenauth")) or (
            _within(module, "tokenauth") and _within(target, "registry")
        )
    raise AssertionError(rule)


RULES = [
    "layout",
    "storage-knows-no-config",
    "oci-is-a-leaf",
    "shared-is-shared",
    "services-apart",
]


def test_the_graph_is_read() -> None:
    """The checks below mean something only if the parser sees the real imports."""
    assert "registry.storage.driver.s3" in GRAPH[WIRING]
    assert "registry.storage.paths" in GRAPH["registry.storage.blobs"]
    assert "registry.config" in GRAPH["registry.app"]


@pytest.mark.parametrize("rule", RULES)
def test_import_rule_holds(rule: str) -> None:
    assert _violations(rule) == []


def test_a_broken_rule_is_caught() -> None:
    """Each rule flags the import it exists to forbid."""
    assert _breaks("layout", "registry.handlers.blobs", "registry.storage.paths")
    assert _breaks("layout", "registry.app", "registry.storage.driver.base")
    assert not _breaks("layout", WIRING, "registry.storage.driver.s3")
    assert _breaks("storage-knows-no-config", "registry.storage.driver.s3", "registry.config")
    assert _breaks("storage-knows-no-config", "registry.storage.errors", "shared.errors")
    assert _breaks("shared-is-shared", "shared.token", "registry.config")
    assert _breaks("services-apart", "tokenauth.app", "registry.config")
    assert _breaks("oci-is-a-leaf", "registry.oci.digest", "registry.storage.errors")
    assert not _breaks("storage-knows-no-config", "registry.storage.blobs", "registry.oci.digest")


def _users_of(module: str) -> set[str]:
    """The services whose modules import ``module``, directly or through ``shared``."""
    services: set[str] = set()
    seen: set[str] = set()
    pending = [module]
    while pending:
        current = pending.pop()
        if current in seen:
            continue
        seen.add(current)
        for importer, imported in GRAPH.items():
            if current in imported:
                if _within(importer, "shared"):
                    pending.append(importer)
                else:
                    services.add(importer.split(".")[0])
    return services


def test_shared_holds_only_what_both_services_use() -> None:
    only_one = {
        module: sorted(users)
        for module in GRAPH
        if _within(module, "shared") and module != "shared"
        if (users := _users_of(module)) != {"registry", "tokenauth"}
    }
    assert only_one == {}
