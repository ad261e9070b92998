"""Manifests: the complete, immutable list of files that make up one committed snapshot.

The JSON written to ``snapshots/<id>.json`` is a *format* (documented in docs/format.md), not a
dump of these classes: `Manifest.to_json` and `Manifest.from_json` are the only code that reads or
writes it, and ``format_version`` says which rules apply.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from datetime import datetime, timezone
from typing import Any, Final

import attrs

from wrdsvault._storage.layout import (
    SHA256_RE,
    partition_name,
    partition_relpath,
    validate_snapshot_id,
)
from wrdsvault.datasets import validate_dataset
from wrdsvault.errors import InvalidNameError, VaultFormatError

__all__ = [
    "FORMAT_VERSION",
    "ColumnSchema",
    "DatasetEntry",
    "LazyEntries",
    "Manifest",
    "PartitionFile",
    "SyncRecipe",
    "canonical_json",
    "format_timestamp",
    "parse_timestamp",
]

#: The on-disk format this version of wrdsvault writes (docs/format.md).
FORMAT_VERSION: Final = 3


def canonical_json(obj: object) -> bytes:
    """The canonical JSON bytes of ``obj`` (sorted keys, no spaces, UTF-8)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def format_timestamp(ts: datetime) -> str:
    """An aware datetime as ISO 8601 UTC with microseconds and a ``Z`` suffix."""
    return ts.astimezone(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


def parse_timestamp(text: str) -> datetime:
    """Parse `format_timestamp` output back into an aware UTC datetime."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(timezone.utc)


@attrs.frozen
class ColumnSchema:
    """One column as stored: Arrow type, the source's declared type, nullability, label.

    ``comment`` is the source's label for the column (WRDS: the column comment, e.g. ``"Total
    Assets"``); ``None`` when the source has none. It is not part of the fingerprint, and a
    manifest written before labels were kept simply has none.
    """

    name: str
    type: str
    source_type: str | None = None
    nullable: bool = True
    # Not part of equality: a relabelled column is the same column (no rewrite, no drift).
    comment: str | None = attrs.field(default=None, eq=False)

    def to_json(self) -> dict[str, Any]:
        obj: dict[str, Any] = {
            "name": self.name,
            "type": self.type,
            "source_type": self.source_type,
            "nullable": self.nullable,
        }
        if self.comment is not None:  # absent, not null: older manifests stay byte-identical
            obj["comment"] = self.comment
        return obj

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> ColumnSchema:
        return cls(
            name=str(obj["name"]),
            type=str(obj["type"]),
            source_type=obj.get("source_type"),
            nullable=bool(obj.get("nullable", True)),
            comment=obj.get("comment"),
        )


def _sha256(_inst: object, _attr: object, value: str) -> None:
    if SHA256_RE.fullmatch(value) is None:
        msg = f"not a sha256 hex digest: {value!r}"
        raise ValueError(msg)


def _optional_sha256(inst: object, attr: object, value: str | None) -> None:
    if value is not None:
        _sha256(inst, attr, value)


@attrs.frozen
class PartitionFile:
    """One immutable Parquet file: one dataset's rows for one calendar year.

    Attributes:
        year: the calendar year, or None for an unpartitioned dataset.
        path: relative to the vault root, always under ``data/``.
        sha256: of the whole file's bytes.
        size_bytes: file size.
        row_count: rows in the file.
        marker: the source's per-year content marker when it was synced (None if unknown).
        content_digest: SHA-256 of the rows, independent of their encoding and order
            (`wrdsvault._digest`); None for files synced before format 3 (computed on demand).
    """

    year: int | None
    path: str
    sha256: str = attrs.field(validator=_sha256)
    size_bytes: int
    row_count: int
    marker: str | None = None
    content_digest: str | None = attrs.field(default=None, validator=_optional_sha256)

    def to_json(self) -> dict[str, Any]:
        return {
            "year": self.year,
            "path": self.path,
            "sha256": self.sha256,
            "size_bytes": self.size_bytes,
            "row_count": self.row_count,
            "marker": self.marker,
            "content_digest": self.content_digest,
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> PartitionFile:
        year = obj["year"]
        return cls(
            year=None if year is None else int(year),
            path=str(obj["path"]),
            sha256=str(obj["sha256"]),
            size_bytes=int(obj["size_bytes"]),
            row_count=int(obj["row_count"]),
            marker=obj.get("marker"),
            content_digest=obj.get("content_digest"),
        )


def _year_tuple(value: object) -> tuple[int, ...] | None:
    if value is None:
        return None
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple, frozenset, set)):
        msg = f"years must be a list of ints or null, not {value!r}"
        raise TypeError(msg)
    years = sorted({int(y) for y in value})
    if not years or not 1 <= years[0] <= years[-1] <= 9999:
        msg = f"years must be a non-empty list of years 1-9999, not {value!r}"
        raise ValueError(msg)
    return tuple(years)


@attrs.frozen
class SyncRecipe:
    """How a dataset is re-synced by ``sync --all``: the options its explicit syncs asked for.

    The date column and the source are not repeated here: the entry's ``partition_column`` and
    ``source`` already record them.

    Attributes:
        years: the calendar years asked for (``years=``), sorted; None for every year.
    """

    years: tuple[int, ...] | None = attrs.field(default=None, converter=_year_tuple)

    def merged(self, years: frozenset[int] | None) -> SyncRecipe:
        """This recipe widened by a later sync that asked for ``years`` (None: every year)."""
        if self.years is None or years is None:
            return SyncRecipe(years=None)
        return SyncRecipe(years=tuple(sorted(set(self.years) | years)))

    def to_json(self) -> dict[str, Any]:
        return {"years": None if self.years is None else list(self.years)}

    @classmethod
    def from_json(cls, obj: object) -> SyncRecipe:
        if not isinstance(obj, dict):
            msg = f"sync_recipe must be an object, not {obj!r}"
            raise TypeError(msg)
        return cls(years=obj.get("years"))


@attrs.frozen
class DatasetEntry:
    """One dataset within a snapshot: its spec, schema, source vintage and partition files.

    ``recipe`` is None in manifests written before it was recorded (see `SyncRecipe`).
    """

    name: str = attrs.field(converter=validate_dataset)
    partition_column: str | None
    primary_key: tuple[str, ...]
    columns: tuple[ColumnSchema, ...]
    partitions: tuple[PartitionFile, ...]
    source: str
    change_marker: str | None = None
    comment: str | None = None
    synced_at: str = ""
    recipe: SyncRecipe | None = None

    @property
    def row_count(self) -> int:
        return sum(p.row_count for p in self.partitions)

    @property
    def size_bytes(self) -> int:
        return sum(p.size_bytes for p in self.partitions)

    @property
    def content_digest(self) -> str | None:
        """SHA-256 of the dataset's rows (its partitions' digests combined), or None if a
        partition has none (synced before format 3): `Snapshot.receipt` computes it then."""
        if any(p.content_digest is None for p in self.partitions):
            return None
        from wrdsvault._digest import combine  # numpy and pyarrow: only when asked

        return combine((p.year, p.content_digest) for p in self.partitions if p.content_digest)

    def partition(self, year: int | None) -> PartitionFile | None:
        for p in self.partitions:
            if p.year == year:
                return p
        return None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "partition_column": self.partition_column,
            "primary_key": list(self.primary_key),
            "columns": [c.to_json() for c in self.columns],
            "partitions": [p.to_json() for p in self.partitions],
            "source": self.source,
            "change_marker": self.change_marker,
            "comment": self.comment,
            "synced_at": self.synced_at,
        }
        if self.recipe is not None:  # absent, not null, when unknown: older manifests match
            out["sync_recipe"] = self.recipe.to_json()
        return out

    @classmethod
    def from_json(cls, name: str, obj: dict[str, Any]) -> DatasetEntry:
        recipe = obj.get("sync_recipe")
        return cls(
            name=name,
            partition_column=obj.get("partition_column"),
            primary_key=tuple(obj.get("primary_key", ())),
            columns=tuple(ColumnSchema.from_json(c) for c in obj["columns"]),
            partitions=tuple(PartitionFile.from_json(p) for p in obj["partitions"]),
            source=str(obj.get("source", "")),
            change_marker=obj.get("change_marker"),
            comment=obj.get("comment"),
            synced_at=str(obj.get("synced_at", "")),
            recipe=None if recipe is None else SyncRecipe.from_json(recipe),
        )

    def content(self, format_version: int = FORMAT_VERSION) -> dict[str, Any]:
        """What the fingerprint covers: the columns and every file's identity and path.

        The path is derived from the dataset, year and sha256, so equal data still gives equal
        fingerprints; covering it means an altered path breaks the fingerprint (a damaged
        manifest must never make doctor call a real file an orphan). From format 3 a partition's
        content digest is covered too when it is known (a damaged digest must not make a receipt
        match), so a format-3 file without one fingerprints as in format 2.
        """
        return {
            "columns": [[c.name, c.type] for c in self.columns],
            "partitions": sorted(
                [p.year if p.year is not None else -1, p.sha256, p.size_bytes, p.row_count]
                + ([p.path] if format_version >= 2 else [])  # format 1 left the path out
                + ([p.content_digest] if format_version >= 3 and p.content_digest else [])
                for p in self.partitions
            ),
        }


def _build_entry(name: str, obj: Any, *, where: str) -> DatasetEntry:
    """`DatasetEntry.from_json`, its errors as `VaultFormatError`."""
    try:
        return DatasetEntry.from_json(name, obj)
    except (ValueError, KeyError, TypeError, AttributeError, OverflowError) as exc:
        raise VaultFormatError(path=where, problem=f"malformed manifest ({exc})") from exc


def _check_paths(entry: DatasetEntry, version: int, *, where: str) -> None:
    """Every file's path follows from the dataset, year and sha256 (a damaged or altered path
    must never make a query, gc or doctor look at another file)."""
    name = entry.name
    # The dataset's folder once, not per file; the sha256 was validated by PartitionFile, the
    # year is checked by partition_name.
    folder = partition_relpath(name, None, "0" * 64).rsplit("/", 2)[0]
    for part in entry.partitions:
        try:
            allowed = {f"{folder}/{partition_name(part.year)}/{part.sha256[:16]}.parquet"}
        except InvalidNameError as exc:
            raise VaultFormatError(
                path=where, problem=f"{name}: {exc} (altered or damaged); run `wrdsvault verify`"
            ) from exc
        if version < 2:  # format 1 wrote year=<YYYY> folders (and later <YYYY>)
            allowed.add(partition_relpath(name, part.year, part.sha256, hive=True))
        if part.path not in allowed:
            raise VaultFormatError(
                path=where,
                problem=f"{name} {part.year}: path {part.path!r} does not follow from the "
                "dataset, year and sha256 (altered or damaged); run `wrdsvault verify`",
            )


def _raw_content(obj: Any, format_version: int) -> dict[str, Any]:
    """`DatasetEntry.content` computed from a dataset's parsed JSON, without building objects.

    Equal to ``DatasetEntry.from_json(name, obj).content(format_version)`` for every manifest
    wrdsvault writes (the fields already have their types); for anything else the fingerprint
    check falls back to the eager parse, whose verdict is the one that counts.
    """
    rows = []
    for p in obj["partitions"]:
        year = p["year"]
        row = [-1 if year is None else year, p["sha256"], p["size_bytes"], p["row_count"]]
        if format_version >= 2:  # format 1 left the path out
            row.append(p["path"])
        if format_version >= 3:
            digest = p.get("content_digest")
            if digest:
                row.append(digest)
        rows.append(row)
    rows.sort()
    return {"columns": [[c["name"], c["type"]] for c in obj["columns"]], "partitions": rows}


def _checked_paths(name: str, obj: Any) -> list[str] | None:
    """The paths of a dataset's JSON entry if each is exactly the one `_check_paths` allows
    (format 2 and later); None if any is not, or a field is not of the type wrdsvault writes."""
    try:
        parts = obj["partitions"]
        if not isinstance(parts, list):
            return None
        folder = partition_relpath(name, None, "0" * 64).rsplit("/", 2)[0]
        out = []
        for p in parts:
            year, sha, path = p["year"], p["sha256"], p["path"]
            if (
                type(sha) is not str
                or SHA256_RE.fullmatch(sha) is None
                or not (year is None or type(year) is int)
                or path != f"{folder}/{partition_name(year)}/{sha[:16]}.parquet"
            ):
                return None
            out.append(path)
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    return out


class LazyEntries(Mapping[str, DatasetEntry]):
    """The datasets of a manifest read from disk: each dataset's JSON becomes a checked
    `DatasetEntry` when it is first looked up, then stays built.

    Opening a snapshot of 6,000 files needs the names and the fingerprint check, not 6,000
    `PartitionFile` objects: building them all was most of the open. A lookup raises
    `VaultFormatError` if that dataset's entry is malformed or a path does not follow from its
    dataset, year and sha256 (the checks an eager parse makes for every dataset up front);
    `Manifest.check` makes them for all. Two threads may build the same entry at once: both
    build equal objects and either is kept.
    """

    __slots__ = ("_built", "_paths", "_raw", "_version", "_where")

    def __init__(self, raw: dict[str, Any], *, format_version: int, where: str) -> None:
        self._raw = raw
        self._built: dict[str, DatasetEntry] = {}
        self._paths: dict[str, list[str]] = {}
        self._version = format_version
        self._where = where

    def __getitem__(self, name: str) -> DatasetEntry:
        entry = self._built.get(name)
        if entry is None:
            entry = _build_entry(name, self._raw[name], where=self._where)
            _check_paths(entry, self._version, where=self._where)
            self._built[name] = entry
        return entry

    def paths(self, name: str) -> list[str]:
        """The relative paths of ``name``'s files, in manifest order, each checked to follow
        from the dataset, year and sha256: from the JSON if the entry is not built yet (a query
        must know every file a snapshot may read; building 6,000 entries for that would undo
        the point of building them lazily), else from the entry.

        Raises:
            KeyError: no such dataset.
            VaultFormatError: a path does not follow, or the entry is malformed.
        """
        checked = self._paths.get(name)
        if checked is None:
            entry = self._built.get(name)
            if entry is None and self._version >= 2:
                checked = _checked_paths(name, self._raw[name])
                # None: not in the shape wrdsvault writes; building the entry gives the verdict.
            if checked is None:
                checked = [p.path for p in self[name].partitions]
            self._paths[name] = checked  # every snapshot of this cached manifest asks again
        return list(checked)

    def __contains__(self, name: object) -> bool:
        return name in self._raw

    def __iter__(self) -> Iterator[str]:
        return iter(self._raw)

    def __len__(self) -> int:
        return len(self._raw)

    def __repr__(self) -> str:
        return f"LazyEntries({sorted(self._raw)!r}, built={len(self._built)})"


@attrs.frozen
class Manifest:
    """One committed state of the vault.

    ``datasets`` maps each dataset name to its entry. A manifest read with
    ``from_json(..., lazy=True)`` builds and checks an entry when it is first looked up
    (`LazyEntries`); equality, `to_json` and every other method are the same either way.
    """

    snapshot_id: str = attrs.field(converter=validate_snapshot_id)
    sequence: int
    parent: str | None
    committed_at: datetime
    datasets: Mapping[str, DatasetEntry] = attrs.field(factory=dict)
    format_version: int = FORMAT_VERSION
    # The fingerprint from_json checked, so a lazily read manifest answers without building
    # every entry; None for a manifest built in memory (computed on each use).
    _checked_fingerprint: str | None = attrs.field(default=None, init=False, eq=False, repr=False)

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the data content (columns and files of every dataset), order-independent.

        Two snapshots holding identical data have the same fingerprint whatever their ids and
        commit times, so a backtest can log it and check it later on any machine.
        """
        if self._checked_fingerprint is not None:
            return self._checked_fingerprint
        content = {
            name: entry.content(self.format_version) for name, entry in self.datasets.items()
        }
        return hashlib.sha256(canonical_json(content)).hexdigest()

    def check(self) -> None:
        """Build and check every dataset entry (a lazily read manifest does it on first use).

        Raises:
            VaultFormatError: an entry is malformed or names a path that does not follow
                from its dataset, year and sha256.
        """
        for name in self.datasets:
            self.datasets[name]

    def partition_paths(self, name: str) -> list[str]:
        """The relative paths of dataset ``name``'s files, in manifest order (oldest year
        first), each following from its dataset, year and sha256; for a lazily read manifest
        without building the entry (`LazyEntries.paths`).

        Raises:
            KeyError: the manifest does not hold ``name``.
            VaultFormatError: a path does not follow, or the entry is malformed.
        """
        if isinstance(self.datasets, LazyEntries):
            return self.datasets.paths(name)
        return [p.path for p in self.datasets[name].partitions]

    def files(self) -> list[PartitionFile]:
        return [p for entry in self.datasets.values() for p in entry.partitions]

    def to_json(self) -> bytes:
        obj = {
            "format_version": self.format_version,
            "snapshot_id": self.snapshot_id,
            "sequence": self.sequence,
            "parent": self.parent,
            "committed_at": format_timestamp(self.committed_at),
            "fingerprint": self.fingerprint,
            "datasets": {name: e.to_json() for name, e in sorted(self.datasets.items())},
        }
        return canonical_json(obj) + b"\n"

    @classmethod
    def from_json(cls, raw: bytes, *, where: str, lazy: bool = False) -> Manifest:
        """Parse and check a manifest.

        The fingerprint is always checked against the whole content, so any damage to what it
        covers is found here. With ``lazy`` the dataset entries are built (and their paths
        checked) when first looked up, see `LazyEntries`; without it, all of them here.

        Raises:
            VaultFormatError: not JSON, a newer format, a missing field, or a fingerprint that does
                not match the content (the manifest was altered); without ``lazy``, also a
                malformed entry or a path that does not follow from its dataset, year and sha256.
        """
        try:
            obj = json.loads(raw)
            version = int(obj["format_version"])
        except (ValueError, KeyError, TypeError, OverflowError, RecursionError) as exc:
            raise VaultFormatError(path=where, problem=f"not a wrdsvault manifest ({exc})") from exc
        if version > FORMAT_VERSION:
            raise VaultFormatError(
                path=where,
                problem=f"manifest format {version} is newer than this wrdsvault supports "
                f"({FORMAT_VERSION}); upgrade wrdsvault",
            )
        if lazy:
            manifest = cls._lazy(obj, version, where=where)
            if manifest is not None:
                return manifest
            # The fast check failed: the eager parse gives the verdict (and the same message).
        try:
            manifest = cls(
                snapshot_id=obj["snapshot_id"],
                sequence=int(obj["sequence"]),
                parent=obj.get("parent"),
                committed_at=parse_timestamp(obj["committed_at"]),
                datasets={
                    name: _build_entry(name, entry, where=where)
                    for name, entry in obj["datasets"].items()
                },
                format_version=version,
            )
        except (ValueError, KeyError, TypeError, AttributeError, OverflowError) as exc:
            raise VaultFormatError(path=where, problem=f"malformed manifest ({exc})") from exc
        for entry in manifest.datasets.values():
            _check_paths(entry, version, where=where)
        if obj.get("fingerprint") != manifest.fingerprint:
            raise VaultFormatError(
                path=where,
                problem="manifest content does not match its fingerprint (altered or damaged); "
                "run `wrdsvault verify`",
            )
        return manifest

    @classmethod
    def _lazy(cls, obj: Any, version: int, *, where: str) -> Manifest | None:
        """The manifest over `LazyEntries` if its fingerprint matches the content computed
        straight from the JSON (`_raw_content`); None if anything does not fit."""
        try:
            datasets = obj["datasets"]
            if not isinstance(datasets, dict):
                return None
            content = {
                validate_dataset(name): _raw_content(e, version) for name, e in datasets.items()
            }
            fingerprint = hashlib.sha256(canonical_json(content)).hexdigest()
            if obj.get("fingerprint") != fingerprint:
                return None
            manifest = cls(
                snapshot_id=obj["snapshot_id"],
                sequence=int(obj["sequence"]),
                parent=obj.get("parent"),
                committed_at=parse_timestamp(obj["committed_at"]),
                datasets=LazyEntries(datasets, format_version=version, where=where),
                format_version=version,
            )
        except (ValueError, KeyError, TypeError, AttributeError, OverflowError):
            return None
        object.__setattr__(manifest, "_checked_fingerprint", fingerprint)
        return manifest
