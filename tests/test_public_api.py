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
    """The top-level API is exactly what the docs promise."""
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
        "Progress",
        "FORMAT_VERSION",
        "FileFault",
        "LockInfo",
        "VerifyReport",
        "SchemaDrift",
        "SchemaVersion",
        "RetentionPolicy",
        "GcPlan",
        "GcReport",
        "KeptSnapshot",
        "ExpiredSnapshot",
        "__version__",
    } | set(wrdsvault.errors.__all__)
    assert set(wrdsvault.__all__) == expected


def test_every_error_is_a_wrdsvault_error_and_pickles() -> None:
    """Each public error derives from WrdsVaultError and survives pickling with its evidence."""
    err = wrdsvault.InvalidNameError(kind="tag", value="../x", rule="no dots")
    back = pickle.loads(pickle.dumps(err))  # noqa: S301 - our own object
    assert type(back) is wrdsvault.InvalidNameError
    assert str(back) == str(err)
    assert back.value == "../x"
    assert isinstance(back, ValueError)
    for name in wrdsvault.errors.__all__:
        assert issubclass(getattr(wrdsvault.errors, name), wrdsvault.WrdsVaultError)


def _one_of_each_error() -> list[wrdsvault.WrdsVaultError]:
    from wrdsvault.schema import SchemaDrift
    from wrdsvault.validation import Finding, ValidationReport

    e = wrdsvault.errors
    finding = Finding(rule="unique_key", dataset="crsp.msf", year=2020, message="repeats")
    return [
        e.InvalidNameError(kind="tag", value="../x", rule="no dots"),
        e.UnknownDatasetError(dataset="x.y", known=["crsp.msf"]),
        e.SnapshotNotFoundError(ref="v1", tags=["t"], newest=["s1"], committed_range=("a", "b")),
        e.SnapshotNotFoundError(
            ref="s0",
            tags=[],
            newest=["s1"],
            committed_range=("a", "b"),
            expired_id="s0",
            expired_at="2026-01-01T00:00:00.000000Z",
            expired_policy="--keep-last 1",
        ),
        e.QueryRejectedError(statement_type="INSERT", reason="writes"),
        e.QueryError(sql="select", reason="syntax"),
        e.QueryTimeoutError(timeout_s=1.5),
        e.SourceRequiredError(operation="sync()"),
        e.VaultFormatError(path="/v", problem="not a vault"),
        e.IntegrityError(path="/v/f", problem="size", snapshot_id="s1"),
        e.LockHeldError(lock_path="/v/lock", holder={"pid": 1}, waited_s=0.5),
        e.VaultAccessError(path="/v", operation="sync()", reason="read-only mount"),
        e.TagExistsError(tag="paper-v1", current="20250101T000000000000Z-0a1b2c3d", requested="x"),
        e.WriteError(operation="tag paper-v1", reason="EIO", after="nothing was changed"),
        e.DiskSpaceError(path="/v", needed_bytes=2, free_bytes=1, reason="full"),
        e.CommitOutcomeUnknownError(snapshot_id="s1", reason="EIO"),
        e.SyncError(dataset="crsp.msf", reason="boom"),
        e.SchemaDriftError(
            dataset="crsp.msf", drift=SchemaDrift(dataset="crsp.msf", added=("x",)), policy="strict"
        ),
        e.ValidationFailedError(
            dataset="crsp.msf", report=ValidationReport(dataset="crsp.msf", findings=(finding,))
        ),
        e.SourceError(source="wrds", reason="down"),
        e.SourceUnavailableError(source="wrds", reason="reset"),
        e.SourceAuthError(source="wrds", reason="refused"),
    ]


def test_every_evidence_attribute_is_declared_and_pickles() -> None:
    """Each error declares every evidence attribute it sets, and each survives pickling."""
    made = _one_of_each_error()
    assert {type(err).__name__ for err in made} == set(wrdsvault.errors.__all__) - {
        "WrdsVaultError"
    }
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
        for name, value in err._evidence.items():
            assert getattr(back, name) == value, (type(err).__name__, name)


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
