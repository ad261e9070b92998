"""Reading a path that holds no vault (a typo) raises `NotAVaultError` and creates nothing.

Only a sync (or ``Warehouse(path, create=True)``) makes a vault. Every public method of
`Warehouse` and every CLI command is run against a missing folder, a missing parent, an empty
folder, a file and a folder with other content; the file tree must not change.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import wrdsvault
from _helpers.cli import run
from _helpers.disk import entry_paths
from wrdsvault import NotAVaultError, Warehouse
from wrdsvault.cli import _COMMANDS
from wrdsvault.sources import SampleSource

SAMPLE = ["--source", "sample", "--sample-years", "2021-2022", "--securities", "20"]


def _source() -> SampleSource:
    return SampleSource(seed=0, years=range(2021, 2023), n_securities=20)


#: Every public method of Warehouse but ``sync`` (which creates) and ``close``, with arguments.
CALLS: dict[str, Callable[[Warehouse, Path], Any]] = {
    "arrow": lambda wh, _: wh.arrow("select 1"),
    "backup": lambda wh, tmp: wh.backup(tmp / "backup"),
    "break_lock": lambda wh, _: wh.break_lock(),
    "diff": lambda wh, _: wh.diff("latest", "latest"),
    "disk": lambda wh, _: wh.disk(),
    "doctor": lambda wh, _: wh.doctor(),
    "drop": lambda wh, _: wh.drop("crsp.msf"),
    "expired": lambda wh, _: wh.expired(),
    "gc": lambda wh, _: wh.gc(keep_last=1),
    "lock_info": lambda wh, _: wh.lock_info(),
    "pl": lambda wh, _: wh.pl("select 1"),
    "purge_quarantine": lambda wh, _: wh.purge_quarantine(),
    "quarantine": lambda wh, _: wh.quarantine(),
    "query": lambda wh, _: wh.query("select 1"),
    "query_across": lambda wh, _: wh.query_across({"a": "latest"}, "select 1"),
    "reclaimable_bytes": lambda wh, _: wh.reclaimable_bytes(),
    "repair": lambda wh, tmp: wh.repair(tmp / "backup"),
    "schema_history": lambda wh, _: wh.schema_history("crsp.msf"),
    "snapshot": lambda wh, _: wh.snapshot(),
    "snapshots": lambda wh, _: wh.snapshots(),
    "status": lambda wh, _: wh.status(),
    "sync_all": lambda wh, _: wh.sync_all(),
    "tag": lambda wh, _: wh.tag("paper-v1"),
    "tags": lambda wh, _: wh.tags(),
    "untag": lambda wh, _: wh.untag("paper-v1"),
    "verify": lambda wh, _: wh.verify(),
}


def test_the_table_covers_every_public_method() -> None:
    """A new public Warehouse method must be added to the not-a-vault table above."""
    public = {
        name
        for name, member in inspect.getmembers(Warehouse, inspect.isfunction)
        if not name.startswith("_")
    }
    assert public - {"sync", "close"} == set(CALLS)


@pytest.mark.parametrize("where", ["missing", "missing/parent", "empty"])
def test_every_read_of_a_folder_without_a_vault_raises_and_creates_nothing(
    tmp_path: Path, where: str
) -> None:
    """Each Warehouse method but sync on a missing or empty folder raises NotAVaultError naming
    the path and how to create a vault; no file or folder appears."""
    path = tmp_path / where
    if where == "empty":
        path.mkdir()
    before = entry_paths(tmp_path)
    with Warehouse(path, source=_source()) as wh:
        for name, call in sorted(CALLS.items()):
            with pytest.raises(NotAVaultError) as err:
                call(wh, tmp_path)
            assert err.value.path.endswith(where), name
            assert where in str(err.value) and "wrdsvault sync" in str(err.value), name
    assert entry_paths(tmp_path) == before
    with pytest.raises(NotAVaultError, match=r"no such folder|an empty folder"):
        Warehouse(path, create=False)  # must be a vault now: raise at once
    assert entry_paths(tmp_path) == before


@pytest.mark.parametrize("kind", ["file", "folder with content"])
def test_a_file_or_a_used_folder_is_refused_when_opened(tmp_path: Path, kind: str) -> None:
    """A file, or a folder with other content, is refused by Warehouse() itself, even with
    create=True, and stays as it was."""
    path = tmp_path / "vault"
    if kind == "file":
        path.write_text("not a vault")
    else:
        path.mkdir()
        (path / "notes.txt").write_text("mine")
    before = entry_paths(tmp_path)
    for create in (None, True, False):
        with pytest.raises(NotAVaultError) as err:
            Warehouse(path, source=_source(), create=create)
        assert err.value.path == str(path)
        assert isinstance(err.value, wrdsvault.VaultFormatError)  # existing handlers still catch
    assert entry_paths(tmp_path) == before


def test_sync_creates_the_vault_and_other_warehouses_then_see_it(tmp_path: Path) -> None:
    """A read before the first sync fails; the sync creates the vault; a Warehouse opened on the
    folder before it existed reads it afterwards."""
    path = tmp_path / "new" / "vault"
    early = Warehouse(path)  # a reader opened before anything exists: nothing is created
    with pytest.raises(NotAVaultError):
        early.snapshots()
    assert not (tmp_path / "new").exists()
    with Warehouse(path, source=_source()) as writer:
        sid = writer.sync("crsp.msf").snapshot_id
    assert (path / "vault.json").is_file()
    assert early.snapshot().id == sid
    early.close()


def test_create_true_stores_the_settings_before_any_sync(tmp_path: Path) -> None:
    """Warehouse(path, settings=..., create=True) writes vault.json with those settings now."""
    settings = wrdsvault.VaultSettings(retention={"keep_last": 3})
    Warehouse(tmp_path / "v", settings=settings, create=True).close()
    again = Warehouse(tmp_path / "v")
    assert again.settings.retention_policy.keep_last == 3
    assert again.snapshots() == []


def test_a_first_sync_with_bad_arguments_creates_nothing(tmp_path: Path) -> None:
    """sync() refuses an unknown dataset or a bad year before it creates the vault."""
    wh = Warehouse(tmp_path / "v", source=_source())
    with pytest.raises(wrdsvault.UnknownDatasetError):
        wh.sync("crsp.nosuchtable")
    with pytest.raises(wrdsvault.InvalidValueError):
        wh.sync("crsp.msf", years=[0])
    assert not (tmp_path / "v").exists()


@pytest.fixture(scope="module")
def receipt_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A receipt of a real (tiny) vault, for ``check-receipt``."""
    root = tmp_path_factory.mktemp("real")
    with Warehouse(root / "vault", source=_source()) as wh:
        wh.sync("ff.factors_monthly")
        path = root / "receipt.json"
        wh.snapshot().receipt().save(path)
    return path


#: Every CLI command but ``sync`` (of named datasets) and ``demo``, with its arguments.
CLI_ARGS: dict[str, list[str]] = {
    "snapshots": [],
    "query": ["select 1"],
    "status": [],
    "diff": ["latest", "latest"],
    "tag": ["paper-v1"],
    "verify": [],
    "backup": ["{tmp}/backup"],
    "repair": ["--from", "{tmp}/backup"],
    "quarantine": ["list"],
    "doctor": [],
    "unlock": [],
    "drop": ["crsp.msf", "--yes"],
    "receipt": [],
    "check-receipt": ["{receipt}"],
    "gc": ["--keep-last", "1"],
    "expired": [],
}


@pytest.mark.parametrize("command", [*sorted(CLI_ARGS), "sync --all"])
def test_every_cli_command_on_a_mistyped_vault_exits_1_and_creates_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], receipt_file: Path, command: str
) -> None:
    """Each read (and `sync --all`) names the path and how to make a vault; nothing appears."""
    assert set(CLI_ARGS) == set(_COMMANDS) - {"sync", "demo"}
    vault = tmp_path / "wrsd"  # the typo
    if command == "sync --all":
        argv = ["sync", "--all", *SAMPLE]
    else:
        argv = [command, *(a.format(tmp=tmp_path, receipt=receipt_file) for a in CLI_ARGS[command])]
    before = entry_paths(tmp_path)
    code, _, err = run(capsys, *argv, "--vault", str(vault))
    assert code == 1, err
    assert f"{vault} is not a wrdsvault vault (no such folder)" in err
    assert "wrdsvault sync --vault" in err and "wrdsvault demo" in err
    assert entry_paths(tmp_path) == before


def test_cli_sync_creates_the_vault(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`wrdsvault sync` into a new folder (with a missing parent) still creates the vault."""
    vault = tmp_path / "a" / "b"
    code, _, err = run(capsys, "sync", "ff.factors_monthly", "--vault", str(vault), *SAMPLE)
    assert code == 0, err
    code, out, _ = run(capsys, "snapshots", "--vault", str(vault))
    assert code == 0 and "1 datasets" in out
