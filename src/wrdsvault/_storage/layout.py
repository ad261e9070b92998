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
#: The folder name of the single partition of an unpartitioned dataset.
UNPARTITIONED: Final = "all"


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
    def leases_dir(self) -> Path:
        return self.root / "leases"

    def lease(self, snapshot_id: str, token: str) -> Path:
        """``leases/<snapshot id>.<token>.json``: one open snapshot's reader lease."""
        name = f"{validate_snapshot_id(snapshot_id)}.{token}.json"
        if not isinstance(token, str) or LEASE_NAME_RE.fullmatch(name) is None:
            raise InvalidNameError(kind="lease token", value=token, rule="32 lower-case hex digits")
        return self._inside(self.leases_dir / name)

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
