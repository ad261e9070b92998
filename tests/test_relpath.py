"""Manifest paths resolve inside ``data/`` only: the one-regex fast path judges as the rule does."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wrdsvault._storage.layout import Layout
from wrdsvault.errors import InvalidNameError

ROOT = Path("/vault/root")


def _allowed(relpath: str) -> bool:
    """The rule, written out plainly: under ``data/``, no empty, ``.`` or ``..`` part, no
    backslash, no NUL."""
    parts = relpath.split("/")
    return (
        relpath.startswith("data/")
        and "\\" not in relpath
        and "\x00" not in relpath
        and all(part not in ("", ".", "..") for part in parts)
    )


def _judge(relpath: str) -> str | None:
    try:
        return Layout(ROOT).resolve_relpath_str(relpath)
    except InvalidNameError:
        return None


@pytest.mark.parametrize(
    "relpath",
    [
        "data/crsp/msf/year=2020/part-ab.parquet",
        "data/.hidden/x",
        "data/.../x",
        "data/a\nb",
        "data/..\n",
        "data/a/../b",
        "data/./x",
        "data//x",
        "data/x/",
        "data/x\\y",
        "data/x\x00",
        "data",
        "datax/y",
        "/data/x",
        "data/x/..",
    ],
)
def test_tricky_paths_are_judged_by_the_rule(relpath: str) -> None:
    """Each path resolves to root/relpath exactly when the rule allows it."""
    expected = f"{ROOT}{os.sep}{relpath}" if _allowed(relpath) else None
    assert _judge(relpath) == expected


@given(st.text(alphabet="data/.\\\x00\nxy", max_size=14).map(lambda s: "data/" + s))
def test_any_path_is_judged_by_the_rule(relpath: str) -> None:
    """Random paths under data/ made of the characters that matter: the same verdict."""
    expected = f"{ROOT}{os.sep}{relpath}" if _allowed(relpath) else None
    assert _judge(relpath) == expected
