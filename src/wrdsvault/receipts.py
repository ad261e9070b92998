"""Reproducibility receipts: which data a result used, and whether a vault still holds it.

A `Receipt` names a snapshot (id, fingerprint) and, per dataset, its source vintage, row count and
content digest (`wrdsvault._digest`: a SHA-256 of the rows that ignores their encoding and order),
plus the versions of wrdsvault, DuckDB and pyarrow. `check_receipt` compares it with a vault: the
same snapshot if the vault has it, else any snapshot whose dataset has the same content digest.
See docs/revisions.md.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

import attrs

from wrdsvault._digest import combine, file_digest
from wrdsvault._version import __version__
from wrdsvault.errors import IntegrityError, InvalidValueError, SnapshotNotFoundError
from wrdsvault.manifest import format_timestamp

if TYPE_CHECKING:
    from wrdsvault._storage.layout import Layout
    from wrdsvault.manifest import DatasetEntry, Manifest
    from wrdsvault.warehouse import Warehouse

__all__ = [
    "RECEIPT_FORMAT",
    "DatasetCheck",
    "Receipt",
    "ReceiptCheck",
    "ReceiptDataset",
    "check_receipt",
    "dataset_digest",
    "make_receipt",
    "snapshot_holding",
]

log = logging.getLogger(__name__)

#: The version of the receipt JSON (``"receipt_format"``).
RECEIPT_FORMAT: Final = 1


def dataset_digest(layout: Layout, entry: DatasetEntry) -> tuple[str, bool]:
    """``entry``'s content digest and whether it had to be computed from the files.

    Manifests of format 3 and later store a digest per partition; older partitions have none,
    and their files are read (slow: every row of every such year).

    Raises:
        IntegrityError: a file to read is missing, unreadable or not Parquet.
    """
    stored = entry.content_digest
    if stored is not None:
        return stored, False
    parts: list[tuple[int | None, str]] = []
    for p in entry.partitions:
        digest = p.content_digest
        if digest is None:
            path = layout.resolve_relpath_str(p.path)
            try:
                digest = file_digest(path, entry.primary_key)
            except (OSError, ValueError) as exc:  # pyarrow's errors are OSError / ValueError
                raise IntegrityError(path=path, problem=f"cannot read its rows ({exc})") from exc
        parts.append((p.year, digest))
    log.info("%s: content digest computed from the files (synced before format 3)", entry.name)
    return combine(parts), True


@attrs.frozen
class ReceiptDataset:
    """One dataset of a receipt.

    Attributes:
        name: the dataset, e.g. ``crsp.msf``.
        row_count: its rows in the snapshot.
        content_digest: SHA-256 of its rows, independent of encoding and row order.
        comment: the source's table comment when it was synced (WRDS: the vintage, e.g.
            "... (Updated 2025-02-05)"); None if the source gave none.
        change_marker: the source's change marker when it was synced.
        source: the source's name.
        computed: the digest was computed from the files (synced before format 3), not read
            from the manifest.
    """

    name: str
    row_count: int
    content_digest: str
    comment: str | None = None
    change_marker: str | None = None
    source: str = ""
    computed: bool = False

    def to_json(self) -> dict[str, Any]:
        return attrs.asdict(self)

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> ReceiptDataset:
        return cls(
            name=str(obj["name"]),
            row_count=int(obj["row_count"]),
            content_digest=str(obj["content_digest"]),
            comment=obj.get("comment"),
            change_marker=obj.get("change_marker"),
            source=str(obj.get("source", "")),
            computed=bool(obj.get("computed", False)),
        )


@attrs.frozen
class Receipt:
    """Which data a result used: small, JSON-able, checkable on any machine (`check_receipt`).

    Attributes:
        snapshot_id: the snapshot the data came from.
        fingerprint: that snapshot's fingerprint (all its datasets' files).
        committed_at: when it was committed (ISO 8601 UTC).
        datasets: one `ReceiptDataset` per dataset, sorted by name.
        versions: of wrdsvault, duckdb and pyarrow that made the receipt.
        created_at: when the receipt was made (ISO 8601 UTC).
    """

    snapshot_id: str
    fingerprint: str
    committed_at: str
    datasets: tuple[ReceiptDataset, ...]
    versions: dict[str, str] = attrs.field(factory=dict)
    created_at: str = ""

    def dataset(self, name: str) -> ReceiptDataset | None:
        return next((d for d in self.datasets if d.name == name), None)

    def to_json(self) -> dict[str, Any]:
        return {
            "receipt_format": RECEIPT_FORMAT,
            "snapshot_id": self.snapshot_id,
            "fingerprint": self.fingerprint,
            "committed_at": self.committed_at,
            "created_at": self.created_at,
            "versions": dict(sorted(self.versions.items())),
            "datasets": [d.to_json() for d in self.datasets],
        }

    def dumps(self) -> str:
        """The receipt as indented JSON text (what `save` writes)."""
        return json.dumps(self.to_json(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, obj: Any, *, where: str = "receipt") -> Receipt:
        """Parse a receipt's JSON object.

        Raises:
            InvalidValueError: not a receipt, or one of a newer format.
        """
        try:
            version = int(obj["receipt_format"])
            if version > RECEIPT_FORMAT:
                raise InvalidValueError(
                    name="receipt",
                    value=where,
                    rule=f"receipt format {version} is newer than this wrdsvault reads "
                    f"({RECEIPT_FORMAT}); upgrade wrdsvault",
                )
            return cls(
                snapshot_id=str(obj["snapshot_id"]),
                fingerprint=str(obj["fingerprint"]),
                committed_at=str(obj.get("committed_at", "")),
                datasets=tuple(ReceiptDataset.from_json(d) for d in obj["datasets"]),
                versions={str(k): str(v) for k, v in dict(obj.get("versions", {})).items()},
                created_at=str(obj.get("created_at", "")),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            if isinstance(exc, InvalidValueError):
                raise
            raise InvalidValueError(
                name="receipt",
                value=where,
                rule=f"not a wrdsvault receipt ({type(exc).__name__}: {exc}); make one with "
                "`wrdsvault receipt` or Snapshot.receipt()",
            ) from exc

    def save(self, path: str | Path) -> Path:
        """Write the receipt as JSON to ``path`` (parent folders created); returns the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.dumps(), encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: str | Path) -> Receipt:
        """Read a receipt written by `save` (or ``wrdsvault receipt``).

        Raises:
            InvalidValueError: the file cannot be read or is not a receipt.
        """
        try:
            obj = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise InvalidValueError(
                name="receipt", value=str(path), rule=f"cannot be read as JSON ({exc})"
            ) from exc
        return cls.from_json(obj, where=str(path))


def _versions() -> dict[str, str]:
    import duckdb
    import pyarrow

    return {"wrdsvault": __version__, "duckdb": duckdb.__version__, "pyarrow": pyarrow.__version__}


def make_receipt(layout: Layout, manifest: Manifest, datasets: Iterable[str]) -> Receipt:
    """The receipt of ``datasets`` in ``manifest`` (`Snapshot.receipt` validates the names)."""
    rows = []
    for name in sorted(set(datasets)):
        entry = manifest.datasets[name]
        digest, computed = dataset_digest(layout, entry)
        rows.append(
            ReceiptDataset(
                name=name,
                row_count=entry.row_count,
                content_digest=digest,
                comment=entry.comment,
                change_marker=entry.change_marker,
                source=entry.source,
                computed=computed,
            )
        )
    return Receipt(
        snapshot_id=manifest.snapshot_id,
        fingerprint=manifest.fingerprint,
        committed_at=format_timestamp(manifest.committed_at),
        datasets=tuple(rows),
        versions=_versions(),
        created_at=format_timestamp(datetime.now(timezone.utc)),
    )


CheckStatus = Literal["match", "differs", "missing"]


@attrs.frozen
class DatasetCheck:
    """How one dataset of a receipt compares with the vault.

    Attributes:
        name: the dataset.
        status: ``match`` (a snapshot holds rows with the receipt's digest), ``differs`` (the
            compared snapshot holds other rows) or ``missing`` (no snapshot holds the dataset).
        snapshot_id: the snapshot compared: the receipt's own if the vault has it, else the
            newest one with an equal digest, else the latest holding the dataset; None if missing.
        expected_digest, actual_digest: the receipt's and the compared snapshot's digests.
        expected_rows, actual_rows: the same for row counts.
    """

    name: str
    status: CheckStatus
    snapshot_id: str | None
    expected_digest: str
    actual_digest: str | None
    expected_rows: int
    actual_rows: int | None

    @property
    def ok(self) -> bool:
        return self.status == "match"

    def describe(self) -> str:
        if self.status == "match":
            return f"{self.name}: match (snapshot {self.snapshot_id})"
        if self.status == "missing":
            return f"{self.name}: MISSING, no snapshot of this vault holds it"
        rows = (
            f"{self.expected_rows} rows expected, {self.actual_rows} found"
            if self.expected_rows != self.actual_rows
            else f"same row count ({self.actual_rows}), other values"
        )
        return (
            f"{self.name}: DIFFERS in snapshot {self.snapshot_id}: {rows}; content digest "
            f"{(self.actual_digest or '')[:16]} vs {self.expected_digest[:16]} in the receipt"
        )

    def to_json(self) -> dict[str, Any]:
        return attrs.asdict(self) | {"ok": self.ok}


@attrs.frozen
class ReceiptCheck:
    """The result of `check_receipt`.

    Attributes:
        snapshot_id: the receipt's snapshot.
        snapshot_found: the vault has that snapshot (else datasets were compared by digest
            against its other snapshots).
        fingerprint_match: the snapshot's fingerprint equals the receipt's (None if not found).
        datasets: one `DatasetCheck` per dataset of the receipt.
    """

    snapshot_id: str
    snapshot_found: bool
    fingerprint_match: bool | None
    datasets: tuple[DatasetCheck, ...]

    @property
    def ok(self) -> bool:
        """Every dataset matches."""
        return all(d.ok for d in self.datasets)

    @property
    def mismatched(self) -> list[str]:
        """The datasets that differ or are missing."""
        return [d.name for d in self.datasets if not d.ok]

    def summary(self) -> str:
        where = (
            f"snapshot {self.snapshot_id} found"
            if self.snapshot_found
            else f"snapshot {self.snapshot_id} not in this vault; datasets compared by content "
            "digest with its snapshots"
        )
        head = "receipt matches" if self.ok else "receipt DOES NOT match"
        return "\n".join([f"{head}: {where}", *(f"  {d.describe()}" for d in self.datasets)])

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "snapshot_id": self.snapshot_id,
            "snapshot_found": self.snapshot_found,
            "fingerprint_match": self.fingerprint_match,
            "datasets": [d.to_json() for d in self.datasets],
        }


def check_receipt(receipt: Receipt | str | Path, warehouse: Warehouse) -> ReceiptCheck:
    """Compare a receipt with a vault: per dataset, match or what differs.

    If the vault has the receipt's snapshot, each dataset is compared with it. If not (collected
    by ``gc``, another machine's vault), each dataset is looked up by content digest in the
    vault's snapshots, newest first; without an equal one it is compared with the latest
    snapshot that holds it. Digests of files synced before format 3 are computed from the files
    of the compared snapshot only.

    Args:
        receipt: a `Receipt`, or the path of a saved one.
        warehouse: the vault to check against.

    Raises:
        InvalidValueError: ``receipt`` is a path that does not hold a receipt.
        IntegrityError: a file whose digest had to be computed cannot be read.
    """
    given: object = receipt  # untyped callers can pass anything; mypy cannot see that
    if isinstance(given, (str, Path)):
        given = Receipt.load(given)
    if not isinstance(given, Receipt):
        msg = f"check_receipt() wants a Receipt or a path, not {type(given).__name__}"
        raise TypeError(msg)
    receipt = given
    layout = warehouse._layout
    committed = [sid for sid, _ in warehouse._committed()]
    try:
        own: Manifest | None = (
            warehouse._manifest(receipt.snapshot_id) if receipt.snapshot_id in committed else None
        )
    except SnapshotNotFoundError:
        own = None
    if own is not None:
        checks = [_compare(layout, want, own) for want in receipt.datasets]
        return ReceiptCheck(
            snapshot_id=receipt.snapshot_id,
            snapshot_found=True,
            fingerprint_match=own.fingerprint == receipt.fingerprint,
            datasets=tuple(checks),
        )
    manifests = [warehouse._manifest(sid) for sid in reversed(committed)]  # newest first
    return ReceiptCheck(
        snapshot_id=receipt.snapshot_id,
        snapshot_found=False,
        fingerprint_match=None,
        datasets=tuple(_search(layout, want, manifests) for want in receipt.datasets),
    )


def _compare(layout: Layout, want: ReceiptDataset, manifest: Manifest) -> DatasetCheck:
    entry = manifest.datasets.get(want.name)
    if entry is None:
        return DatasetCheck(
            want.name, "missing", None, want.content_digest, None, want.row_count, None
        )
    digest = dataset_digest(layout, entry)[0]
    status: CheckStatus = (
        "match"
        if digest == want.content_digest and entry.row_count == want.row_count
        else "differs"
    )
    return DatasetCheck(
        name=want.name,
        status=status,
        snapshot_id=manifest.snapshot_id,
        expected_digest=want.content_digest,
        actual_digest=digest,
        expected_rows=want.row_count,
        actual_rows=entry.row_count,
    )


def _search(layout: Layout, want: ReceiptDataset, manifests: Sequence[Manifest]) -> DatasetCheck:
    """The newest snapshot whose ``want.name`` has the receipt's digest, else the latest one."""
    holding = [m for m in manifests if want.name in m.datasets]
    for m in holding:
        if m.datasets[want.name].content_digest == want.content_digest:  # stored digests only
            return _compare(layout, want, m)
    if not holding:
        return (
            _compare(layout, want, manifests[0])
            if manifests
            else DatasetCheck(
                want.name, "missing", None, want.content_digest, None, want.row_count, None
            )
        )
    return _compare(layout, want, holding[0])


def snapshot_holding(receipt: Receipt, warehouse: Warehouse) -> str | None:
    """The newest snapshot of ``warehouse`` holding every receipt dataset with its rows, if any.

    The receipt's own snapshot if the vault has it; else compared by content digest (digests
    of files synced before format 3 are computed from the files).
    """
    layout = warehouse._layout
    for sid, _ in reversed(warehouse._committed()):
        m = warehouse._manifest(sid)
        if all(
            want.name in m.datasets
            and m.datasets[want.name].row_count == want.row_count
            and dataset_digest(layout, m.datasets[want.name])[0] == want.content_digest
            for want in receipt.datasets
        ):
            return sid
    return None
