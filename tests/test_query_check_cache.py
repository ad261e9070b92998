"""A connection remembers the checks a SQL text passed; nothing else is skipped on a rerun.

`PinnedConnection` keeps, per SQL text, the statement's text and the views it names, so a query
run again is not parsed and walked again. What the cache must never do: let a refused text
through, skip the file checks of a dataset's first use, or outlive its connection (a snapshot
reopened after `close` checks its files again).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import wrdsvault
import wrdsvault._query as query_module
from wrdsvault import IntegrityError, QueryRejectedError
from wrdsvault.sources import SampleSource

SQL = "select count(*) as n from crsp.msf"


@pytest.fixture(scope="module")
def vault(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A vault with crsp.msf and comp.funda, synced once for the module."""
    root = tmp_path_factory.mktemp("checkcache") / "vault"
    source = SampleSource(seed=0, years=range(2021, 2023), n_securities=20)
    with wrdsvault.Warehouse(root, source=source) as wh:
        wh.sync(["crsp.msf", "comp.funda"])
    return root


@pytest.fixture
def parses(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The SELECT texts `check_shape` walked (the real function runs; each call is listed)."""
    seen: list[str] = []
    real: Callable[..., Any] = query_module.check_shape

    def counting(cur: Any, text: str) -> Any:
        seen.append(text)
        return real(cur, text)

    monkeypatch.setattr(query_module, "check_shape", counting)
    yield seen


def test_a_query_run_again_is_not_parsed_again(vault: Path, parses: list[str]) -> None:
    """The same SQL text three times is checked once; another text is checked on its own."""
    with wrdsvault.Warehouse(vault, create=False) as wh, wh.snapshot() as snap:
        counts = [snap.arrow(SQL)["n"][0].as_py() for _ in range(3)]
        assert len(set(counts)) == 1 and counts[0] > 0
        assert len(parses) == 1
        assert snap.sql(SQL).arrow()["n"][0].as_py() == counts[0]  # validated, then run
        assert len(parses) == 1
        snap.arrow("select count(*) as n from comp.funda")
        assert len(parses) == 2


def test_a_refused_text_is_refused_every_time(vault: Path, parses: list[str]) -> None:
    """Refusals are never remembered: the second try is checked and refused like the first."""
    with wrdsvault.Warehouse(vault, create=False) as wh, wh.snapshot() as snap:
        for _ in range(2):
            with pytest.raises(QueryRejectedError) as info:
                snap.arrow("select current_setting('temp_directory')")
            assert info.value.statement_type == "FUNCTION"
            with pytest.raises(QueryRejectedError) as info:
                snap.arrow("copy (select 1) to 'x.csv'")
            assert info.value.statement_type == "COPY"
        assert len(parses) == 2  # the function case reaches the parse-tree walk both times
        con = snap._con
        assert con is not None and con._checks == {}


def test_a_remembered_query_still_checks_its_files_on_a_new_connection(
    vault: Path, tmp_path: Path
) -> None:
    """After close, the same SQL on the reopened snapshot checks the files again: a file
    damaged meanwhile is refused, not read."""
    import shutil

    root = tmp_path / "vault"
    shutil.copytree(vault, root, symlinks=True)
    with wrdsvault.Warehouse(root, create=False) as wh, wh.snapshot() as snap:
        assert snap.arrow(SQL)["n"][0].as_py() > 0
        snap.close()
        victim = snap.files("crsp.msf")[0]
        victim.write_bytes(victim.read_bytes()[:-1])
        for _ in range(2):  # and again: the refusal is not remembered either
            with pytest.raises(IntegrityError, match="size"):
                snap.arrow(SQL)


def test_the_cache_is_bounded(
    vault: Path, parses: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """At most CHECK_CACHE_SIZE texts are kept (the oldest goes first); long texts never are."""
    monkeypatch.setattr(query_module, "CHECK_CACHE_SIZE", 3)
    texts = [f"select {i} as x" for i in range(5)]
    with wrdsvault.Warehouse(vault, create=False) as wh, wh.snapshot() as snap:
        for text in texts:
            snap.arrow(text)
        con = snap._con
        assert con is not None
        assert list(con._checks) == texts[-3:]
        long_text = "select 1 as x" + " " * query_module.CHECK_CACHE_MAX_CHARS
        snap.arrow(long_text)
        snap.arrow(long_text)
        assert long_text not in con._checks
        assert parses.count(long_text) == 2  # checked both times
