"""Manifest format: canonical JSON round trip, data-only fingerprint, tamper and version checks."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wrdsvault.errors import VaultFormatError
from wrdsvault.manifest import (
    FORMAT_VERSION,
    ColumnSchema,
    DatasetEntry,
    LazyEntries,
    Manifest,
    PartitionFile,
    SyncRecipe,
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


# -- lazily read manifests -----------------------------------------------------------------------

LIBRARIES = ("crsp.msf", "crsp.dsf", "comp.funda", "ff.factors_monthly")


def _partition(name: str, year: int | None, salt: str, *, version: int, digest: bool):
    from wrdsvault._storage.layout import partition_relpath

    sha = hashlib.sha256(f"{name}{year}{salt}".encode()).hexdigest()
    return PartitionFile(
        year=year,
        path=partition_relpath(name, year, sha, hive=version < 2),
        sha256=sha,
        size_bytes=1000 + (year or 0),
        row_count=year or 7,
        marker=f"m{year}",
        content_digest=hashlib.sha256(sha.encode()).hexdigest() if digest else None,
    )


@st.composite
def manifests(draw: st.DrawFn) -> Manifest:
    """Manifests of every format: some datasets, partitioned or not, with or without digests."""
    version = draw(st.integers(min_value=1, max_value=FORMAT_VERSION))
    names = draw(st.lists(st.sampled_from(LIBRARIES), unique=True, max_size=len(LIBRARIES)))
    datasets = {}
    for name in names:
        years: list[int | None] = (
            [None]
            if draw(st.booleans())
            else draw(st.lists(st.integers(1900, 2100), unique=True, max_size=5))
        )
        salt = draw(st.text("ab", max_size=3))
        digest = version >= 3 and draw(st.booleans())
        recipe = draw(
            st.one_of(st.none(), st.just(SyncRecipe(years=None)), st.just(SyncRecipe((2020,))))
        )
        datasets[name] = attrs.evolve(
            entry(name, []),
            partitions=tuple(
                _partition(name, y, salt, version=version, digest=digest) for y in years
            ),
            recipe=recipe,
            comment=draw(st.one_of(st.none(), st.just("Monthly Stock File"))),
        )
    return attrs.evolve(manifest(datasets), format_version=version)


@settings(max_examples=60, deadline=None)
@given(m=manifests())
def test_a_lazily_read_manifest_equals_an_eager_read(m: Manifest) -> None:
    """Read lazily or eagerly, a manifest has the same entries, paths, fingerprint and bytes."""
    raw = m.to_json()
    eager = Manifest.from_json(raw, where="m")
    lazy = Manifest.from_json(raw, where="m", lazy=True)
    assert isinstance(lazy.datasets, LazyEntries)
    assert not isinstance(eager.datasets, LazyEntries)
    assert lazy.fingerprint == eager.fingerprint == m.fingerprint == json.loads(raw)["fingerprint"]
    assert sorted(lazy.datasets) == sorted(eager.datasets) == sorted(m.datasets)
    for name in m.datasets:
        assert lazy.partition_paths(name) == eager.partition_paths(name)
        assert lazy.partition_paths(name) == [p.path for p in m.datasets[name].partitions]
    assert lazy == eager == m
    assert lazy.to_json() == raw
    assert lazy.files() == eager.files()
    lazy.check()


def _two_datasets(**dsf: object) -> Manifest:
    """crsp.msf and crsp.dsf, with ``dsf``'s first partition changed as given (validators off:
    the point is a manifest whose fingerprint matches damaged content)."""
    msf, dsf_entry = entry("crsp.msf", [2019, 2020]), entry("crsp.dsf", [2019, 2020], salt="b")
    with attrs.validators.disabled():
        first = attrs.evolve(dsf_entry.partitions[0], **dsf)
    return manifest(
        {
            "crsp.msf": msf,
            "crsp.dsf": attrs.evolve(dsf_entry, partitions=(first, *dsf_entry.partitions[1:])),
        }
    )


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"path": "data/crsp/msf/2019/aaaaaaaaaaaaaaaa.parquet"}, "does not follow"),
        ({"path": "data/crsp/dsf/2019/../../../../outside.parquet"}, "does not follow"),
        ({"sha256": "../../" + "b" * 58}, "not a sha256"),
        ({"year": 0, "path": "data/crsp/dsf/0000/bbbbbbbbbbbbbbbb.parquet"}, "invalid year"),
    ],
    ids=["other-dataset-file", "escaping-path", "bad-sha256", "bad-year"],
)
def test_an_altered_entry_fails_when_its_dataset_is_used_not_at_open(
    change: dict[str, object], problem: str
) -> None:
    """An entry altered along with the fingerprint: eager reads refuse the manifest; a lazy
    read opens it, serves the other datasets, and refuses the altered one on every use."""
    raw = _two_datasets(**change).to_json()
    with pytest.raises(VaultFormatError, match=problem):
        Manifest.from_json(raw, where="m")
    lazy = Manifest.from_json(raw, where="m", lazy=True)
    assert sorted(lazy.datasets) == ["crsp.dsf", "crsp.msf"]
    assert "crsp.dsf" in lazy.datasets
    assert [p.year for p in lazy.datasets["crsp.msf"].partitions] == [2019, 2020]
    assert lazy.partition_paths("crsp.msf") == [
        p.path for p in lazy.datasets["crsp.msf"].partitions
    ]
    for use in (
        lambda: lazy.datasets["crsp.dsf"],
        lambda: lazy.partition_paths("crsp.dsf"),
        lazy.check,
        lazy.files,
    ):
        with pytest.raises(VaultFormatError, match=problem):
            use()


def test_damage_to_a_dataset_never_used_still_fails_a_lazy_open() -> None:
    """The fingerprint covers every dataset, so a lazy read refuses damage anywhere, at once."""
    raw = _two_datasets().to_json()
    damaged = raw.replace(b'"row_count":2020', b'"row_count":2021', 1)
    assert damaged != raw
    for lazy in (False, True):
        with pytest.raises(VaultFormatError, match="fingerprint"):
            Manifest.from_json(damaged, where="m", lazy=lazy)


def test_a_manifest_in_another_json_shape_is_judged_by_the_eager_read() -> None:
    """Hand-written JSON whose numbers are not ints (the stored fingerprint was computed over
    ints) is read lazily exactly as eagerly: converted, and its fingerprint accepted."""
    m = _two_datasets()
    obj = json.loads(m.to_json())
    obj["datasets"]["crsp.msf"]["partitions"][0]["size_bytes"] = 2119.0
    raw = json.dumps(obj).encode()
    eager = Manifest.from_json(raw, where="m")
    lazy = Manifest.from_json(raw, where="m", lazy=True)
    assert eager == lazy == m
    assert lazy.fingerprint == m.fingerprint
