"""Manifest format: canonical JSON round trip, data-only fingerprint, tamper and version checks."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

from wrdsvault.errors import VaultFormatError
from wrdsvault.manifest import (
    FORMAT_VERSION,
    ColumnSchema,
    DatasetEntry,
    Manifest,
    PartitionFile,
)


def entry(name: str, years: list[int], salt: str = "a") -> DatasetEntry:
    return DatasetEntry(
        name=name,
        partition_column="date",
        primary_key=("permno", "date"),
        columns=(ColumnSchema("permno", "int32", "integer", True),),
        partitions=tuple(
            PartitionFile(
                year=y,
                path=f"data/{name.replace('.', '/')}/{y}/{(salt * 16)[:16]}.parquet",
                sha256=(salt * 64)[:64],
                size_bytes=100 + y,
                row_count=y,
            )
            for y in years
        ),
        source="sample",
        change_marker="m",
    )


def manifest(datasets: dict[str, DatasetEntry], sid: str = "20251201T000000000000Z-00000001"):
    return Manifest(
        snapshot_id=sid,
        sequence=1,
        parent=None,
        committed_at=datetime(2025, 12, 1, tzinfo=timezone.utc),
        datasets=datasets,
    )


def test_json_round_trip_is_exact() -> None:
    """to_json/from_json give back an equal manifest, byte-identical when written again."""
    m = manifest({"crsp.msf": entry("crsp.msf", [2019, 2020])})
    raw = m.to_json()
    back = Manifest.from_json(raw, where="m")
    assert back == m
    assert back.to_json() == raw
    assert json.loads(raw)["format_version"] == FORMAT_VERSION


def test_fingerprint_covers_data_not_identity() -> None:
    """Same files under another id/time/marker give the same fingerprint; other files do not."""
    a = manifest({"crsp.msf": entry("crsp.msf", [2019, 2020])})
    b = manifest(
        {"crsp.msf": entry("crsp.msf", [2020, 2019])}, sid="20270101T000000000000Z-0000000f"
    )
    c = manifest({"crsp.msf": entry("crsp.msf", [2019, 2020], salt="b")})
    assert a.fingerprint == b.fingerprint
    assert a.fingerprint != c.fingerprint


def test_tampered_manifest_is_refused() -> None:
    """Changing any data fact in the JSON breaks the stored fingerprint."""
    raw = manifest({"crsp.msf": entry("crsp.msf", [2019])}).to_json()
    with pytest.raises(VaultFormatError, match="fingerprint"):
        Manifest.from_json(raw.replace(b'"row_count":2019', b'"row_count":2018'), where="m")


@pytest.mark.parametrize("raw", [b"", b"{", b"[]", b'{"format_version": 1}', b"\xff\xfe"])
def test_malformed_manifest_is_a_format_error(raw: bytes) -> None:
    """Truncated or foreign JSON raises VaultFormatError, never a bare parser error."""
    with pytest.raises(VaultFormatError):
        Manifest.from_json(raw, where="m")


def test_newer_format_asks_for_an_upgrade() -> None:
    """A manifest from a newer wrdsvault is refused with 'upgrade wrdsvault'."""
    obj = json.loads(manifest({}).to_json())
    obj["format_version"] = FORMAT_VERSION + 1
    with pytest.raises(VaultFormatError, match="upgrade wrdsvault"):
        Manifest.from_json(json.dumps(obj).encode(), where="m")


def test_column_label_round_trips_and_is_not_identity() -> None:
    """A column label survives JSON, is absent when unknown, and never changes equality."""
    import pyarrow as pa

    from wrdsvault._sync import columns_of
    from wrdsvault.manifest import ColumnSchema
    from wrdsvault.sources.base import COMMENT_KEY

    schema = pa.schema(
        [pa.field("at", pa.float64(), metadata={COMMENT_KEY: b"Total Assets"}), ("x", pa.int32())]
    )
    at, x = columns_of(schema)
    assert at.comment == "Total Assets" and x.comment is None
    assert ColumnSchema.from_json(at.to_json()).comment == "Total Assets"
    assert "comment" not in x.to_json()
    assert at == ColumnSchema(name="at", type="double")
