"""The public API: a sorted __all__, every name importable, errors under WrdsVaultError."""

from __future__ import annotations

import pickle  # noqa: TID251 - round-trips our own error objects only

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
