"""The only code that turns names and ids into paths. Every path it returns stays under the root.

Inputs are validated by pattern before any join (dataset names, snapshot ids, tags, sha256 digests),
and the result is checked once more to lie inside the root, so no user string can name a file
outside the vault (fuzzed by tests/test_names.py).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Final

import attrs

from wrdsvault.datasets import validate_dataset
from wrdsvault.errors import InvalidNameError

SNAPSHOT_ID_RE: Final = re.compile(r"^[0-9]{8}T[0-9]{6}[0-9]{6}Z-[0-9a-f]{8}$")
TAG_RE: Final = re.compile(r"^[A-Za-z][A-Za-z0-9._-]{0,63}$")
SHA256_RE: Final = re.compile(r"^[0-9a-f]{64}$")
#: A reader lease's file name: ``<snapshot id>.<token>.json`` (token: 32 hex digits).
LEASE_NAME_RE: Final = re.compile(
    r"^(?P<snapshot>[0-9]{8}T[0-9]{6}[0-9]{6}Z-[0-9a-f]{8})\.(?P<token>[0-9a-f]{32})\.json$"
)
#: A quarantine entry's folder name: ``<UTC time>-<label>-<4 hex>``.
QUARANTINE_ENTRY_RE: Final = re.compile(r"^[0-9]{8}T[0-9]{6}Z-[a-z0-9_.-]{1,80}-[0-9a-f]{4}$")
#: A write transaction's id (its staging folder is ``tmp/tx-<id>``).
TX_ID_RE: Final = re.compile(r"^[0-9a-f]{16}$")
#: The incarnation a lock claim breaks: the stale record's token, or ``ino<inode>`` without one.
_NONCE_RE: Final = re.compile(r"^(?:[0-9a-f]{8,64}|ino[0-9]+)$")
#: The folder name of the single partition of an unpartitioned dataset.
UNPARTITIONED: Final = "all"

#: A manifest path `Layout.resolve_relpath_str` accepts without looking further: ``data`` then
#: one or more ``/``-separated parts, none empty, ``.`` or ``..``, none holding ``\`` or NUL.
#: Stricter than (never looser than) the checks it short-cuts, which judge everything else.
_PLAIN_RELPATH: Final = re.compile(r"data(?:/(?!\.{1,2}(?:/|$))[^/\\\x00]+)+")


def validate_snapshot_id(value: object) -> str:
    """Return ``value`` if it is a well-formed snapshot id, else raise `InvalidNameError`."""
    if not isinstance(value, str) or SNAPSHOT_ID_RE.fullmatch(value) is None:
        raise InvalidNameError(
            kind="snapshot id", value=value, rule="expected e.g. '20251201T143012123456Z-1a2b3c4d'"
        )
    return value


def validate_tag(value: object) -> str:
    """Return ``value`` if it is a valid tag name, else raise `InvalidNameError`."""
    if not isinstance(value, str) or TAG_RE.fullmatch(value) is None or value == "latest":
        raise InvalidNameError(
            kind="tag",
            value=value,
            rule="a letter, then up to 63 letters, digits, '.', '_' or '-'; 'latest' is reserved",
        )
    return value


def partition_relpath(dataset: str, year: int | None, sha256: str, *, hive: bool = False) -> str:
    """``data/<library>/<table>/<YYYY or all>/<sha256[:16]>.parquet`` (pure, validated).

    ``hive=True`` gives format 1's folder name ``year=<YYYY>`` (read, never written).
    """
    library, table = validate_dataset(dataset).split(".")
    if SHA256_RE.fullmatch(sha256) is None:
        raise InvalidNameError(kind="sha256", value=sha256, rule="64 lower-case hex digits")
    part = partition_name(year)
    if hive and year is not None:
        part = f"year={part}"
    return f"data/{library}/{table}/{part}/{sha256[:16]}.parquet"


def partition_name(year: int | None) -> str:
    """A partition's name in paths: the year in four digits (``2019``), or ``all`` (validated).

    Not ``year=YYYY`` (format 1): engines that detect hive folders add a ``year`` column.
    """
    if year is None:
        return UNPARTITIONED
    if isinstance(year, int) and not isinstance(year, bool) and 0 < year < 10_000:
        return f"{year:04d}"
    raise InvalidNameError(kind="year", value=year, rule="an int from 1 to 9999, or None")


@attrs.frozen
class LockFiles:
    """The writer lock's files, all beside ``path`` (``<root>/.lock``; docs/locking.md, "Files")."""

    path: Path

    @property
    def epoch(self) -> Path:
        """``.lock.epoch``: empty, never deleted; its mtime is the last fencing epoch."""
        return self.path.with_name(f"{self.path.name}.epoch")

    @property
    def clock(self) -> Path:
        """``.lock.clock``: the probe touched to read the file server's clock."""
        return self.path.with_name(f"{self.path.name}.clock")

    def claim_prefix(self, nonce: str | None = None) -> str:
        """The name prefix of every claim, or of the claims on the incarnation ``nonce``."""
        prefix = f"{self.path.name}.claim."
        return prefix if nonce is None else f"{prefix}{_valid_nonce(nonce)}."

    def claim(self, nonce: str, k: int) -> Path:
        """``.lock.claim.<nonce>.<k>``: claim number ``k`` on the stale incarnation ``nonce``."""
        if not isinstance(k, int) or isinstance(k, bool) or k < 0:
            raise InvalidNameError(kind="lock claim number", value=k, rule="an int >= 0")
        return self.path.with_name(f"{self.claim_prefix(nonce)}{k}")

    def claim_nonce(self, name: str) -> str | None:
        """The incarnation a claim called ``name`` breaks (None: ``name`` is not a claim)."""
        prefix = self.claim_prefix()
        if not name.startswith(prefix):
            return None
        return name[len(prefix) :].rsplit(".", 1)[0]

    def sibling(self, name: str) -> Path:
        """The entry ``name`` (as listed) of the lock's folder, e.g. a claim to remove."""
        if not name.startswith(f"{self.path.name}.") or "/" in name or "\x00" in name:
            raise InvalidNameError(kind="lock file", value=name, rule=f"{self.path.name}.*")
        return self.path.with_name(name)


def _valid_nonce(nonce: str) -> str:
    if not isinstance(nonce, str) or _NONCE_RE.fullmatch(nonce) is None:
        raise InvalidNameError(
            kind="lock incarnation", value=nonce, rule="a record's token or 'ino<inode>'"
        )
    return nonce


@attrs.frozen
class Layout:
    """Paths of one vault. ``root`` must already be an absolute, symlink-free real path."""

    root: Path

    @property
    def vault_json(self) -> Path:
        return self.root / "vault.json"

    @property
    def head(self) -> Path:
        return self.root / "HEAD"

    @property
    def lock(self) -> Path:
        return self.root / ".lock"

    @property
    def snapshots_dir(self) -> Path:
        return self.root / "snapshots"

    @property
    def tags_dir(self) -> Path:
        return self.root / "tags"

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def tmp_dir(self) -> Path:
        return self.root / "tmp"

    @property
    def quarantine_dir(self) -> Path:
        return self.root / "quarantine"

    @property
    def expiry_log(self) -> Path:
        """``expired.jsonl``: every snapshot gc expired (docs/format.md)."""
        return self.root / "expired.jsonl"

    @property
    def leases_dir(self) -> Path:
        return self.root / "leases"

    @property
    def exports_dir(self) -> Path:
        """``exports/``: the records of exports whose tables name the vault's files."""
        return self.root / "exports"

    def lease(self, snapshot_id: str, token: str) -> Path:
        """``leases/<snapshot id>.<token>.json``: one open snapshot's reader lease."""
        name = f"{validate_snapshot_id(snapshot_id)}.{token}.json"
        if not isinstance(token, str) or LEASE_NAME_RE.fullmatch(name) is None:
            raise InvalidNameError(kind="lease token", value=token, rule="32 lower-case hex digits")
        return self._inside(self.leases_dir / name)

    @property
    def lock_files(self) -> LockFiles:
        """The writer lock's support files (epoch, clock probe, claims)."""
        return LockFiles(self.lock)

    def staging(self, tx_id: str) -> Path:
        """``tmp/tx-<tx_id>``: the staging folder of one write transaction."""
        if not isinstance(tx_id, str) or TX_ID_RE.fullmatch(tx_id) is None:
            raise InvalidNameError(kind="transaction id", value=tx_id, rule="16 hex digits")
        return self._inside(self.tmp_dir / f"tx-{tx_id}")

    def staged_partition(self, tx_id: str, dataset: str, year: int | None) -> Path:
        """``tmp/tx-<tx_id>/<dataset>-<YYYY|all>.parquet``: a partition before it is published."""
        name = f"{validate_dataset(dataset)}-{partition_name(year)}.parquet"
        return self._inside(self.staging(tx_id) / name)

    @property
    def resume_dir(self) -> Path:
        """``tmp/resume``: checkpoints of finished years of interrupted syncs."""
        return self.tmp_dir / "resume"

    def checkpoint_dir(self, dataset: str) -> Path:
        """``tmp/resume/<library>/<table>``: the checkpoints of one dataset."""
        library, table = validate_dataset(dataset).split(".")
        return self._inside(self.resume_dir / library / table)

    def checkpoint(self, dataset: str, year: int | None) -> tuple[Path, Path]:
        """The checkpoint of one year: its Parquet file and its record (``<YYYY|all>.json``)."""
        folder = self.checkpoint_dir(dataset)
        stem = partition_name(year)
        return folder / f"{stem}.parquet", folder / f"{stem}.json"

    def quarantine_entry(self, name: str) -> Path:
        """``quarantine/<name>``: one quarantined write (``name`` as `QUARANTINE_ENTRY_RE`)."""
        if not isinstance(name, str) or QUARANTINE_ENTRY_RE.fullmatch(name) is None:
            raise InvalidNameError(
                kind="quarantine entry",
                value=name,
                rule="a name listed by `wrdsvault quarantine list`",
            )
        return self._inside(self.quarantine_dir / name)

    def relative(self, path: Path) -> str:
        """``path`` relative to the root, as shown to humans and recorded in manifests."""
        return str(path.relative_to(self.root))

    def manifest(self, snapshot_id: str) -> Path:
        return self._inside(self.snapshots_dir / f"{validate_snapshot_id(snapshot_id)}.json")

    def tag(self, name: str) -> Path:
        return self._inside(self.tags_dir / validate_tag(name))

    def partition_relpath(self, dataset: str, year: int | None, sha256: str) -> str:
        """The path of a partition file relative to the root, as recorded in manifests."""
        return partition_relpath(dataset, year, sha256)

    def resolve_relpath(self, relpath: str) -> Path:
        """Turn a manifest's relative path into an absolute one, refusing anything outside data/."""
        return Path(self.resolve_relpath_str(relpath))

    def resolve_relpath_str(self, relpath: str) -> str:
        """`resolve_relpath` as a str (no pathlib: snapshots resolve thousands at a time)."""
        if isinstance(relpath, str) and _PLAIN_RELPATH.fullmatch(relpath) is not None:
            return f"{self.root}{os.sep}{relpath}"  # one regex instead of a loop over the parts
        if (
            not isinstance(relpath, str)
            or not relpath.startswith("data/")
            or "\\" in relpath
            or "\x00" in relpath
            or any(part in ("", ".", "..") for part in relpath.split("/"))
        ):
            raise InvalidNameError(kind="manifest path", value=relpath, rule="a path under data/")
        path = f"{self.root}{os.sep}{relpath}"
        if not path.startswith(f"{self.root}{os.sep}data/"):
            raise InvalidNameError(kind="path", value=path, rule="must stay inside the vault")
        return path

    def _inside(self, path: Path) -> Path:
        # Belt and braces: the patterns above already exclude separators and dots.
        # A string prefix test: ``root in path.parents`` builds every parent (~30 us a call).
        if not os.fspath(path).startswith(os.path.join(os.fspath(self.root), "")):
            raise InvalidNameError(kind="path", value=str(path), rule="must stay inside the vault")
        return path
