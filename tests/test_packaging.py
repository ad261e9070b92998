"""The package declares what it imports, and its declared version floors are the tested ones."""

from __future__ import annotations

import ast
import importlib.metadata as md
import re
import sys
from pathlib import Path

import wrdsvault

REPO = Path(__file__).resolve().parents[1]
SRC = Path(wrdsvault.__file__).resolve().parent
CONSTRAINTS = REPO / ".ci" / "constraints-min.txt"

#: Imports that are not runtime dependencies, and why.
OPTIONAL = {
    "polars": "the polars extra: LazyResult.pl() and Snapshot.to_polars() import it when called",
    "pgserver": "wrdsvault.testing (the replica server) is for tests: the test extra has it",
    "pyiceberg": "Warehouse.export_iceberg imports it when called (the iceberg extra)",
    "sqlglot": "the sql extra: dialect='postgres' and wrdsvault.Connection import it when called",
}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _runtime_requirements() -> dict[str, str]:
    """``{distribution: floor}`` of the runtime dependencies, from pyproject.toml."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10: the installed metadata says the same
        lines = [r for r in md.requires("wrdsvault") or [] if "extra ==" not in r]
    else:
        lines = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    out = {}
    for line in lines:
        m = re.fullmatch(r"\s*([A-Za-z0-9_.\-]+)\s*>=\s*([0-9][0-9.]*)\s*", line.split(";")[0])
        assert m, f"every dependency needs a '>=' floor and nothing else: {line!r}"
        out[_norm(m[1])] = m[2]
    return out


def _third_party_imports() -> set[str]:
    """Top-level modules imported anywhere in the package that are neither ours nor stdlib."""
    found: set[str] = set()
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return found - set(sys.stdlib_module_names) - {"wrdsvault", "__future__"}


def _release(version: str) -> tuple[int, ...]:
    parts = [int(p) for p in version.split(".")]
    while parts and parts[-1] == 0:
        parts.pop()
    return tuple(parts)


def test_every_third_party_import_is_a_declared_dependency() -> None:
    """Each module the package imports belongs to a declared runtime dependency (or is optional)."""
    declared = set(_runtime_requirements())
    dists = md.packages_distributions()
    undeclared = {}
    for module in sorted(_third_party_imports() - set(OPTIONAL)):
        owners = {_norm(d) for d in dists.get(module, [module])}
        if not owners & declared:
            undeclared[module] = sorted(owners)
    assert not undeclared, f"imported but not declared in [project] dependencies: {undeclared}"


def test_declared_floors_are_exactly_the_versions_ci_tests() -> None:
    """.ci/constraints-min.txt pins every runtime dependency at its declared floor, nothing else."""
    floors = _runtime_requirements()
    pins = {}
    for raw in CONSTRAINTS.read_text().splitlines():
        line = raw.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"constraints pin exact versions: {raw!r}"
            pins[_norm(name)] = version.strip()
    assert set(pins) == set(floors)
    for name, floor in floors.items():
        assert _release(pins[name]) == _release(floor), (name, pins[name], floor)
