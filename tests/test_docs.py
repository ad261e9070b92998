"""The repository stands on its own and its docs stay true to the code.

Background notes that once lived beside the project are not part of it, so no file may send a
maintainer to them: the reasoning belongs in docs/ (docs/design/). Every error class must be
documented in docs/errors.md, and every relative link in the Markdown docs must resolve.
"""

from __future__ import annotations

import inspect
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from wrdsvault import errors

ROOT = Path(__file__).resolve().parents[1]
#: What is checked: the shipped code, the docs, the tests, the benchmarks, the examples.
CHECKED = ("src", "docs", "tests", "benchmarks", "examples", "README.md")
#: Text files only; generated benchmark results are data, not prose.
TEXT_SUFFIXES = frozenset({".py", ".md", ".txt", ".toml", ".cfg", ".ini", ".sql", ".yml", ".yaml"})
SKIPPED_DIRS = frozenset({"__pycache__", "results", "img"})

# Built from pieces so that this file does not name what it forbids.
_MD = r"\.md\b"
OUTSIDE = re.compile(
    "|".join(
        [
            r"\b" + "RELIA" + "BILITY" + _MD,
            r"\b" + "PERFOR" + "MANCE" + _MD,
            r"\b" + "DES" + "IGN" + _MD,
            r"\b" + "STY" + "LE" + _MD,
            r"\bwrds_" + "datasets" + _MD,
            r"\b" + "AD" + r"R-\d+",
            r"\.\./" + "sha" + "red\b",
            r"\b" + "BU" + r"G-\d+\b",
        ]
    )
)


def _files() -> Iterator[Path]:
    for name in CHECKED:
        top = ROOT / name
        if top.is_file():
            yield top
            continue
        for here, dirs, files in os.walk(top):
            dirs[:] = [d for d in dirs if not d.startswith(".") and d not in SKIPPED_DIRS]
            for file in files:
                path = Path(here, file)
                if path.suffix in TEXT_SUFFIXES:
                    yield path


def test_no_file_points_outside_the_repository() -> None:
    """No checked file names a background document or plan label that is not in the repository."""
    found = []
    for path in _files():
        text = path.read_text(encoding="utf-8", errors="replace")
        for number, line in enumerate(text.splitlines(), 1):
            match = OUTSIDE.search(line)
            if match:
                found.append(f"{path.relative_to(ROOT)}:{number}: {match[0]}")
    assert len(list(_files())) > 50, "the walk found too few files to mean anything"
    assert not found, "point at docs/ (e.g. docs/design/) instead:\n" + "\n".join(found)


def test_the_outside_pattern_catches_what_it_must() -> None:
    """The pattern recognises each forbidden reference and lets the real docs/ paths pass."""
    samples = [
        "see " + "RELIA" + "BILITY.md §1",
        "(" + "PERFOR" + "MANCE.md)",
        "``" + "wrds_" + "datasets.md`` §9",
        "(" + "AD" + "R-012)",
        "../" + "shared/" + "DES" + "IGN.md",
        "hit " + "BU" + "G-3",
    ]
    assert [s for s in samples if not OUTSIDE.search(s)] == []
    assert OUTSIDE.search("docs/design/commit-protocol.md and docs/performance.md") is None


def _error_classes() -> list[str]:
    return sorted(
        name
        for name, obj in inspect.getmembers(errors, inspect.isclass)
        if obj.__module__ == errors.__name__ and issubclass(obj, errors.WrdsVaultError)
    )


def test_every_error_class_is_documented() -> None:
    """docs/errors.md has a table row for every WrdsVaultError class defined in errors.py."""
    text = (ROOT / "docs" / "errors.md").read_text(encoding="utf-8")
    classes = _error_classes()
    assert "WrdsVaultError" in classes
    assert len(classes) > 10
    missing = [name for name in classes if f"| `{name}` |" not in text]
    assert not missing, f"add these to docs/errors.md: {missing}"


def test_every_error_class_is_in_the_errors_module_tree() -> None:
    """The tree in errors.py's docstring names every error class."""
    tree = errors.__doc__ or ""
    missing = [name for name in _error_classes() if not re.search(rf"\b{name}\b", tree)]
    assert not missing, f"add these to the tree in errors.py's docstring: {missing}"


def _slug(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    in_code = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            in_code = not in_code
        if in_code or not line.startswith("#"):
            continue
        slug = _slug(line.lstrip("#"))
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
MARKDOWN = sorted([ROOT / "README.md", *(ROOT / "docs").rglob("*.md")])


@pytest.mark.parametrize("doc", MARKDOWN, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(doc: Path) -> None:
    """Every relative link in the Markdown docs names an existing file (and heading, if given)."""
    broken = []
    for target in LINK.findall(doc.read_text(encoding="utf-8")):
        if re.match(r"[a-z]+:", target):
            continue  # http(s), mailto: not checked offline
        file, _, anchor = target.partition("#")
        path = (doc.parent / file).resolve() if file else doc
        if not path.exists():
            broken.append(f"{target}: no such file")
        elif anchor and path.suffix == ".md" and anchor not in _anchors(path):
            broken.append(f"{target}: no such heading")
    assert not broken, f"{doc.relative_to(ROOT)}: " + "; ".join(broken)


def test_the_design_pages_are_linked_from_the_entry_points() -> None:
    """README.md and docs/index.md both lead to docs/design/index.md."""
    assert "docs/design/index.md" in (ROOT / "README.md").read_text(encoding="utf-8")
    assert "design/index.md" in (ROOT / "docs" / "index.md").read_text(encoding="utf-8")
