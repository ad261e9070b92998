"""The public API: a sorted __all__, every name importable, errors under WrdsVaultError."""

from __future__ import annotations

import pickle  # noqa: TID251 - round-trips our own error objects only
from pathlib import Path

import pytest

import wrdsvault
import wrdsvault.errors
import wrdsvault.sources


def test_all_is_sorted_and_importable() -> None:
    """__all__ is sorted (case-sensitively) and every name in it exists."""
    for module in (wrdsvault, wrdsvault.errors, wrdsvault.sources):
        assert list(module.__all__) == sorted(module.__all__)
        for name in module.__all__:
            assert hasattr(module, name), f"{module.__name__}.{name}"


def test_exported_names() -> None:
    """The top-level API is exactly what the docs promise: every type a public method returns."""
    expected = {
        "Warehouse",
        "Snapshot",
        "SyncReport",
        "DatasetResult",
        "SnapshotInfo",
        "VaultSettings",
        "VaultStatus",
        "DatasetSummary",
        "DatasetSpec",
        "BUILTIN_SPECS",
        "LazyResult",
        "Session",
        "Progress",
        "FORMAT_VERSION",
        "FileFault",
        "LockInfo",
        "VerifyReport",
        "BackupReport",
        "RepairReport",
        "SchemaDrift",
        "SchemaVersion",
        "ColumnChange",
        "ColumnSchema",
        "Revision",
        "DatasetDiff",
        "ColumnDiff",
        "DatasetEntry",
        "Manifest",
        "PartitionFile",
        "SyncRecipe",
        "DiskState",
        "DoctorFinding",
        "DoctorReport",
        "QuarantineEntry",
        "Finding",
        "ValidationReport",
        "Receipt",
        "ReceiptCheck",
        "ReceiptDataset",
        "DatasetCheck",
        "check_receipt",
        "RetentionPolicy",
        "GcPlan",
        "GcReport",
        "KeptSnapshot",
        "ExpiredSnapshot",
        "__version__",
    } | set(wrdsvault.errors.__all__)
    assert set(wrdsvault.__all__) == expected


def test_every_public_return_type_is_exported_and_documented() -> None:
    """Each class a public method or property of Warehouse/Snapshot returns is exported."""
    import sys
    import typing

    import duckdb
    import pandas as pd
    import pyarrow as pa

    values = [getattr(wrdsvault, name) for name in wrdsvault.__all__]
    exported = {v for v in values if isinstance(v, type)}
    owners = (wrdsvault.Warehouse, wrdsvault.Snapshot, wrdsvault.LazyResult)
    checked = 0
    for owner in owners:
        for name, member in vars(owner).items():
            if name.startswith("_"):
                continue
            func = member.fget if isinstance(member, property) else member
            if not callable(func):
                continue
            namespace = {**vars(sys.modules[func.__module__]), "pd": pd, "pa": pa, "duckdb": duckdb}
            namespace.update((n, getattr(wrdsvault, n)) for n in wrdsvault.__all__)
            annotation = func.__annotations__.get("return")
            returned = eval(annotation, namespace) if isinstance(annotation, str) else annotation  # noqa: S307
            checked += 1
            for arg in (returned, *typing.get_args(returned)):
                if isinstance(arg, type) and arg.__module__.startswith("wrdsvault"):
                    assert arg in exported, f"{owner.__name__}.{name} returns {arg.__name__}"
    assert checked > 20
    for name in wrdsvault.__all__:
        value = getattr(wrdsvault, name)
        if isinstance(value, type):
            assert value.__doc__ and value.__doc__.strip(), f"{name} has no docstring"


def _one_of_each_error() -> list[wrdsvault.WrdsVaultError]:
    """One instance of every public error, with evidence shaped as wrdsvault really fills it."""
    from wrdsvault.schema import SchemaDrift
    from wrdsvault.validation import Finding, ValidationReport

    e = wrdsvault.errors
    sid = "20251201T143012123456Z-1a2b3c4d"
    holder = {
        "pid": 4242,
        "host": "hpc-login-1",
        "acquired_at": "2025-12-01T14:30:12.123456Z",
        "operation": "sync crsp.msf",
        "token": "9f86d081884c7d659a2feaa0c55ad015",
        "epoch": 7,
    }
    finding = Finding(
        rule="unique_key",
        dataset="crsp.msf",
        year=2020,
        message="2 rows repeat the key (permno, date)",
        count=2,
        examples=({"permno": 10001, "date": "2020-01-31"},),
    )
    return [
        e.InvalidNameError(kind="tag", value="../x", rule="a letter, then letters, digits, ._-"),
        e.InvalidValueError(name="query_timeout_s", value=-1.0, rule="a finite number > 0"),
        e.UnknownDatasetError(dataset="crsp.xyz", known=["comp.funda", "crsp.msf"]),
        e.SnapshotNotFoundError(
            ref="paper-v2",
            tags=["paper-v1"],
            newest=[sid],
            committed_range=("2025-11-01T09:00:00Z", "2025-12-01T14:30:12Z"),
        ),
        e.QueryRejectedError(statement_type="COPY", reason="COPY statements are not allowed"),
        e.QueryError(sql="select nope from crsp.msf", reason='column "nope" not found'),
        e.SnapshotNotFoundError(
            ref="s0",
            tags=[],
            newest=["s1"],
            committed_range=("a", "b"),
            expired_id="s0",
            expired_at="2026-01-01T00:00:00.000000Z",
            expired_policy="--keep-last 1",
        ),
        e.QueryTimeoutError(timeout_s=1.5),
        e.SourceRequiredError(operation="sync()"),
        e.VaultFormatError(path="/data/wrds/vault.json", problem="vault format 9 is newer"),
        e.NotAVaultError(path="/data/wrsd", problem="no such folder"),
        e.MissingExtraError(module="polars", extra="polars", reason="No module named 'polars'"),
        e.IntegrityError(
            path="/data/wrds/data/crsp/msf/2020/x.parquet", problem="size 10 != 20", snapshot_id=sid
        ),
        e.LockHeldError(lock_path="/data/wrds/.lock", holder=holder, waited_s=30.0),
        e.LockBreakRefusedError(
            lock_path="/data/wrds/.lock",
            holder={**holder, "state": "held", "same_host": True},
            reason="its owner, pid 4242, is alive on this host",
        ),
        e.VaultAccessError(
            path="/data/wrds", operation="sync crsp.msf", reason="[Errno 30] Read-only file system"
        ),
        e.DiskSpaceError(
            path="/data/wrds", needed_bytes=2_000_000, free_bytes=1_000, reason="95% full"
        ),
        e.DiskSpaceError(path="/data/wrds", needed_bytes=None, free_bytes=None, reason="ENOSPC"),
        e.CommitOutcomeUnknownError(snapshot_id=sid, reason="OSError: [Errno 5] EIO"),
        e.TagExistsError(tag="paper-v1", current=sid, requested="20251202T000000000000Z-2b3c4d5e"),
        e.WriteError(
            operation="tag paper-v1", reason="OSError: [Errno 5] EIO", after="the tag is unchanged"
        ),
        e.BackupError(destination="/mnt/backup/wrds", reason="it is a file, not a folder"),
        e.SyncError(dataset="crsp.msf", reason="years= was given but the dataset has no date"),
        e.SchemaDriftError(
            dataset="crsp.msf", drift=SchemaDrift(dataset="crsp.msf", added=("x",)), policy="strict"
        ),
        e.ValidationFailedError(
            dataset="crsp.msf", report=ValidationReport(dataset="crsp.msf", findings=(finding,))
        ),
        e.SourceError(source="wrds", reason="permission denied for schema secret", dataset="a.b"),
        e.SourceUnavailableError(source="wrds", reason="server closed the connection"),
        e.SourceAuthError(source="wrds", reason="password authentication failed"),
    ]


def test_every_evidence_attribute_is_declared_and_pickles() -> None:
    """Every exported error declares each evidence attribute it sets, and survives pickling."""
    made = _one_of_each_error()
    exported = {
        name
        for name in wrdsvault.__all__
        if isinstance(getattr(wrdsvault, name), type)
        and issubclass(getattr(wrdsvault, name), BaseException)
    }
    assert exported == set(wrdsvault.errors.__all__)
    assert {type(err).__name__ for err in made} == exported - {"WrdsVaultError"}
    for err in made:
        declared = {
            name for klass in type(err).__mro__ for name in getattr(klass, "__annotations__", {})
        }
        assert err._evidence, type(err).__name__
        undeclared = set(err._evidence) - declared
        assert not undeclared, f"{type(err).__name__} sets undeclared evidence {undeclared}"
        back = pickle.loads(pickle.dumps(err))  # noqa: S301 - our own object
        assert type(back) is type(err)
        assert str(back) == str(err)
        assert back.args == err.args
        for name, value in err._evidence.items():
            assert getattr(back, name) == value, (type(err).__name__, name)


def test_both_error_trees_list_every_error() -> None:
    """The class trees in errors.py and docs/errors.md name every error, with its parents."""
    import re

    import wrdsvault.errors as module

    docs = (Path(__file__).parent.parent / "docs" / "errors.md").read_text(encoding="utf-8")
    for text in (module.__doc__ or "", docs):
        tree = text.split("```")[1]
        names = re.findall(r"^[│ ]*[├└]─ (\w+)", tree, re.MULTILINE)
        assert sorted(names) == sorted(set(module.__all__) - {"WrdsVaultError"})
        for name in names:
            cls = getattr(module, name)
            extra = [b.__name__ for b in cls.__bases__ if not issubclass(b, module.WrdsVaultError)]
            if extra:
                assert f"{name}({', '.join(extra)})" in tree, name


def test_no_error_message_claims_an_unknown_figure() -> None:
    """A DiskSpaceError without figures says they are unknown instead of printing 0."""
    err = wrdsvault.DiskSpaceError(path="/v", needed_bytes=None, free_bytes=None, reason="ENOSPC")
    assert "needed: unknown" in str(err) and "free: unknown" in str(err)
    assert " 0 " not in str(err)


def test_wrong_argument_types_are_type_errors(tmp_path: Path) -> None:
    """Guards for untyped callers still fire: settings=, a bytes dataset list, a non-spec."""
    from wrdsvault.sources import SampleSource

    with pytest.raises(TypeError, match="settings must be a VaultSettings, not str"):
        wrdsvault.Warehouse(tmp_path / "a", settings="zstd")  # type: ignore[arg-type]
    source = SampleSource(seed=0, years=range(2020, 2021), n_securities=10)
    with (
        wrdsvault.Warehouse(tmp_path / "b", source=source) as wh,
        pytest.raises(TypeError, match="not bytes"),
    ):
        wh.sync(b"crsp.msf")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="spec must be a DatasetSpec, not str"):
        source.describe("crsp.msf")  # type: ignore[arg-type]
