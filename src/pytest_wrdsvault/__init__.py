"""A pytest plugin that pins a test's data to a vault snapshot or a receipt (docs/revisions.md).

Registered through the ``pytest11`` entry point, so pytest loads it wherever wrdsvault is
installed. It is a top-level module of its own, not part of the ``wrdsvault`` package, so that
loading it imports nothing but pytest (``import wrdsvault`` brings DuckDB and pyarrow, ~0.5 s):
wrdsvault is imported only when a test uses the ``wrdsvault`` marker or the ``wrds_snapshot``
fixture, and a test without them runs as before.

```python
@pytest.mark.wrdsvault(snapshot="paper-v1")        # or receipt="data-receipt.json", or both
def test_momentum(wrds_snapshot):                   # the pinned Snapshot
    df = wrds_snapshot.query("select ...")
```

The vault is ``--wrdsvault-vault PATH``, else ``$WRDSVAULT_VAULT``. A missing vault or snapshot
skips the test with the reason (``--wrdsvault-missing=skip``, the default) or fails it
(``--wrdsvault-missing=fail``); it never falls back to other data. A receipt that does not match
fails the test, naming each dataset that differs.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import pytest

if TYPE_CHECKING:
    from wrdsvault.receipts import Receipt
    from wrdsvault.snapshot import Snapshot
    from wrdsvault.warehouse import Warehouse

MARKER = "wrdsvault"
FIXTURE = "wrds_snapshot"
_VAULT_ENV = "WRDSVAULT_VAULT"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("wrdsvault", "wrdsvault: tests pinned to a vault snapshot")
    group.addoption(
        "--wrdsvault-vault",
        metavar="PATH",
        default=None,
        help=f"the vault that @pytest.mark.{MARKER} tests read (default: ${_VAULT_ENV})",
    )
    group.addoption(
        "--wrdsvault-missing",
        choices=["skip", "fail"],
        default="skip",
        help="a missing vault or snapshot skips the pinned tests (default) or fails them",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{MARKER}(snapshot=None, receipt=None): pin the test's data to a wrdsvault snapshot "
        "(tag, id, ISO date) and/or a receipt file; the wrds_snapshot fixture gives the Snapshot",
    )


def pytest_runtest_setup(item: pytest.Item) -> None:
    """A marked test that does not ask for the fixture still gets its pin checked."""
    marker = item.get_closest_marker(MARKER)
    if marker is None or FIXTURE in getattr(item, "fixturenames", ()):
        return
    for _ in _pinned(item.config, marker, item.path):
        pass  # resuming the generator closes the snapshot and the vault


@pytest.fixture
def wrds_snapshot(request: pytest.FixtureRequest) -> Iterator[Snapshot]:
    """The Snapshot the test's ``@pytest.mark.wrdsvault(...)`` pins, closed after the test."""
    marker = request.node.get_closest_marker(MARKER)
    if marker is None:
        pytest.fail(
            f"{FIXTURE} needs the test pinned: @pytest.mark.{MARKER}(snapshot='paper-v1') "
            "or receipt='data-receipt.json' (it never picks a snapshot by itself)",
            pytrace=False,
        )
    yield from _pinned(request.config, marker, request.node.path)


def _missing(config: pytest.Config, reason: str) -> NoReturn:
    """Skip or fail, as ``--wrdsvault-missing`` says."""
    if config.getoption("wrdsvault_missing") == "fail":
        pytest.fail(f"wrdsvault: {reason}", pytrace=False)
    pytest.skip(f"wrdsvault: {reason}")


def _args(marker: pytest.Mark) -> tuple[str | None, str | None]:
    unknown = set(marker.kwargs) - {"snapshot", "receipt"}
    snapshot = marker.kwargs.get("snapshot", marker.args[0] if marker.args else None)
    receipt = marker.kwargs.get("receipt")
    if unknown or len(marker.args) > 1 or (snapshot is None and receipt is None):
        pytest.fail(
            f"@pytest.mark.{MARKER} takes snapshot= (a tag, id or ISO date) and/or receipt= "
            f"(a receipt file), not {marker.args!r} {marker.kwargs!r}",
            pytrace=False,
        )
    return snapshot, receipt


def _receipt_path(config: pytest.Config, test_path: Path, receipt: str) -> Path:
    """``receipt`` as given if absolute, else beside the test file, else under the rootdir."""
    path = Path(receipt)
    if path.is_absolute():
        return path
    beside = test_path.parent / path
    return beside if beside.exists() else config.rootpath / path


def _open_vault(config: pytest.Config) -> Warehouse:
    from wrdsvault.errors import WrdsVaultError
    from wrdsvault.warehouse import Warehouse

    root = config.getoption("wrdsvault_vault") or os.environ.get(_VAULT_ENV)
    if not root:
        _missing(config, f"no vault: pass --wrdsvault-vault PATH or set {_VAULT_ENV}")
    if not Path(root).is_dir():
        _missing(config, f"vault {root} does not exist")
    try:
        return Warehouse(str(root), create=False)
    except WrdsVaultError as exc:
        _missing(config, f"cannot open vault {root}: {exc}")


def _pinned(config: pytest.Config, marker: pytest.Mark, test_path: Path) -> Iterator[Snapshot]:
    """Yield the pinned snapshot (then close it and the vault); skip or fail as configured."""
    from wrdsvault.errors import SnapshotNotFoundError, WrdsVaultError
    from wrdsvault.receipts import Receipt, check_receipt, snapshot_holding

    ref, receipt_file = _args(marker)
    receipt = None
    if receipt_file is not None:
        path = _receipt_path(config, test_path, receipt_file)
        if not path.is_file():
            pytest.fail(f"wrdsvault: receipt {path} not found", pytrace=False)
        try:
            receipt = Receipt.load(path)
        except WrdsVaultError as exc:
            pytest.fail(f"wrdsvault: {exc}", pytrace=False)
    wh = _open_vault(config)
    try:
        if ref is None:
            assert receipt is not None
            check = check_receipt(receipt, wh)
            if not check.ok:
                _mismatch(receipt_file, check.summary(), check.mismatched)
            # the receipt's own snapshot, else the newest one holding all its datasets' rows
            ref = receipt.snapshot_id if check.snapshot_found else snapshot_holding(receipt, wh)
            if ref is None:
                pytest.fail(
                    f"wrdsvault: every dataset of {receipt_file} is in the vault, but no single "
                    "snapshot holds them all; pin snapshot= as well",
                    pytrace=False,
                )
        try:
            snap = wh.snapshot(ref)
        except SnapshotNotFoundError as exc:
            _missing(config, f"snapshot {ref!r} not in vault {wh.root}: {exc}")
        except WrdsVaultError as exc:
            pytest.fail(f"wrdsvault: cannot open snapshot {ref!r}: {exc}", pytrace=False)
        try:
            if receipt is not None:
                _check_against(snap, receipt, receipt_file)
            yield snap
        finally:
            snap.close()
    finally:
        wh.close()


def _check_against(snap: Snapshot, receipt: Receipt, receipt_file: str | None) -> None:
    """Fail unless ``snap`` holds every receipt dataset with the receipt's rows."""
    from wrdsvault.receipts import dataset_digest

    bad = []
    for want in receipt.datasets:
        entry = snap.manifest.datasets.get(want.name)
        if entry is None:
            bad.append(f"{want.name}: not in snapshot {snap.id}")
            continue
        digest = dataset_digest(snap._layout, entry)[0]
        if digest != want.content_digest or entry.row_count != want.row_count:
            bad.append(
                f"{want.name}: differs in snapshot {snap.id} ({entry.row_count} rows, digest "
                f"{digest[:16]}; the receipt has {want.row_count} rows, {want.content_digest[:16]})"
            )
    if bad:
        _mismatch(receipt_file, "\n  ".join(bad), [b.split(":")[0] for b in bad])


def _mismatch(receipt_file: str | None, detail: str, names: list[str]) -> NoReturn:
    pytest.fail(
        f"wrdsvault: the data does not match receipt {receipt_file} "
        f"({', '.join(names)}):\n  {detail}",
        pytrace=False,
    )
