"""Per-year checkpoints: an interrupted sync resumes without downloading finished years again.

When a partition has been staged (written, hashed, fsynced), the writer hard-links its file to
``tmp/resume/<library>/<table>/<YYYY|all>.parquet`` and writes a record beside it
(``<YYYY|all>.json``: sha256, size, rows, and the source's markers at the time). If the sync then
fails (a dropped connection, Ctrl-C, SIGKILL, a full disk), the checkpoint survives the writer's
cleanup and the next writer's recovery. The next sync of that dataset takes a checkpointed year
instead of reading it from the source when all of these hold:

* the record names the same source and the same columns;
* the source's per-year marker for that year equals the recorded one, or, when the source has no
  per-year markers, its table-level change marker (WRDS: the table comment) does;
* the exact row count, if the source gives one, equals the recorded one;
* the file still hashes to the recorded sha256 (it is re-read: ~1 GB/s, far cheaper than a
  download).

Anything else re-downloads the year. A commit removes the checkpoints of the datasets it
committed; recovery drops incomplete entries (a crash between the link and the record) and
entries older than `MAX_AGE_S`. Checkpoints are only read and written under the writer lock.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Final

import attrs

from wrdsvault._storage.atomic import (
    atomic_write_bytes,
    fsync_dir,
    hard_link,
    make_dirs,
    publish_link,
    remove_tree,
    sha256_file,
)
from wrdsvault._storage.crashpoints import CrashPoint, crashpoint
from wrdsvault._storage.layout import SHA256_RE, Layout
from wrdsvault.manifest import ColumnSchema, canonical_json

log = logging.getLogger(__name__)

#: Checkpoints older than this are garbage (a week: a sync interrupted on Friday resumes Monday).
MAX_AGE_S: Final = 7 * 24 * 3600.0
_RECORD_FORMAT: Final = 1


@attrs.frozen(kw_only=True)
class CheckpointRecord:
    """What was known about a staged year when it was checkpointed."""

    dataset: str
    year: int | None
    source: str
    columns_digest: str
    change_marker: str | None
    marker: str | None
    sha256: str
    size_bytes: int
    row_count: int

    def to_json(self) -> bytes:
        body = attrs.asdict(self) | {"format": _RECORD_FORMAT}
        return json.dumps(body, sort_keys=True).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> CheckpointRecord | None:
        """Parse a record; ``None`` for anything malformed (a checkpoint is only a cache)."""
        try:
            body = json.loads(raw)
            if not isinstance(body, dict) or body.pop("format", None) != _RECORD_FORMAT:
                return None
            record = cls(**body)
        except (ValueError, TypeError):
            return None
        ok = (
            isinstance(record.sha256, str)
            and SHA256_RE.fullmatch(record.sha256) is not None
            and all(
                isinstance(v, int) and not isinstance(v, bool) and v >= 0
                for v in (record.size_bytes, record.row_count)
            )
            and all(v is None or isinstance(v, str) for v in (record.change_marker, record.marker))
            and isinstance(record.source, str)
            and isinstance(record.columns_digest, str)
        )
        return record if ok else None


class Checkpoints:
    """The checkpoint area of one vault (``tmp/resume/``)."""

    def __init__(self, layout: Layout, *, file_mode: int = 0o644, dir_mode: int = 0o755) -> None:
        self.layout = layout
        self.root = layout.resume_dir
        self._file_mode = file_mode
        self._dir_mode = dir_mode

    def _paths(self, dataset: str, year: int | None) -> tuple[Path, Path]:
        return self.layout.checkpoint(dataset, year)

    def save(self, staged_path: Path, record: CheckpointRecord) -> None:
        """Checkpoint a staged, fsynced partition file (a hard link: no copy)."""
        data, meta = self._paths(record.dataset, record.year)
        make_dirs(data.parent, mode=self._dir_mode)
        meta.unlink(missing_ok=True)  # never a record beside a file it does not describe
        publish_link(staged_path, data)
        crashpoint(CrashPoint.CHECKPOINT_LINKED)
        atomic_write_bytes(meta, record.to_json(), mode=self._file_mode)  # fsyncs the folder
        crashpoint(CrashPoint.CHECKPOINT_RECORDED)

    def take(self, want: CheckpointRecord, *, link_to: Path) -> CheckpointRecord | None:
        """Hard-link a matching checkpoint to ``link_to`` and return its record, or ``None``.

        ``want`` carries what the source says now (``sha256``, ``size_bytes`` are ignored;
        ``row_count`` < 0 means unknown). See the module docstring for what must match.
        """
        data, meta = self._paths(want.dataset, want.year)
        try:
            have = CheckpointRecord.from_json(meta.read_bytes())
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.warning("checkpoint %s unreadable (%s); reading the year again", meta, exc)
            return None
        if have is None or not _fresh(have, want):
            return None
        try:
            digest, size = sha256_file(data)
        except OSError:
            return None
        if (digest, size) != (have.sha256, have.size_bytes):
            log.warning("checkpoint %s does not match its record; reading the year again", data)
            return None
        hard_link(data, link_to)
        return have

    def years(self, dataset: str) -> list[int | None]:
        """The years of ``dataset`` with a checkpoint record (``None``: an unpartitioned one)."""
        folder = self.layout.checkpoint_dir(dataset)
        try:
            stems = [p.stem for p in folder.glob("*.json")]
        except OSError:
            return []
        return [None if s == "all" else int(s) for s in stems if s == "all" or s.isdigit()]

    def forget(self, dataset: str, year: int | None) -> None:
        """Drop one year's checkpoint (best effort: a failed `save`)."""
        for path in reversed(self._paths(dataset, year)):  # the record first
            with contextlib.suppress(OSError):
                path.unlink(missing_ok=True)

    def clear(self, dataset: str) -> None:
        """Drop every checkpoint of ``dataset`` (after a commit that includes it)."""
        folder = self.layout.checkpoint_dir(dataset)
        if folder.is_dir():
            remove_tree(folder)
            for parent in (folder.parent, self.root):
                try:
                    parent.rmdir()
                except OSError:
                    break  # not empty: other datasets' checkpoints
            if self.root.parent.is_dir():
                fsync_dir(self.root.parent)

    def clean(self, *, now: float | None = None) -> list[str]:
        """Recovery: drop temp files, incomplete entries and entries older than `MAX_AGE_S`."""
        actions: list[str] = []
        if not self.root.is_dir():
            return actions
        now = time.time() if now is None else now
        for library in sorted(self.root.iterdir()):
            if not library.is_dir() or library.is_symlink():
                remove_tree(library)
                actions.append(f"removed stray checkpoint entry {library.name}")
                continue
            for table in sorted(library.iterdir()):
                if not table.is_dir() or table.is_symlink():
                    remove_tree(table)
                    actions.append(f"removed stray checkpoint entry {library.name}/{table.name}")
                    continue
                actions += _clean_table(table, now)
                _rmdir_if_empty(table)
            _rmdir_if_empty(library)
        return actions

    def entries(self) -> list[tuple[str, Path, int]]:
        """``(dataset, folder, bytes)`` per dataset with checkpoints (for `doctor`, `status`)."""
        out: list[tuple[str, Path, int]] = []
        if not self.root.is_dir():
            return out
        for library in sorted(self.root.iterdir()):
            if not library.is_dir():
                continue
            for table in sorted(library.iterdir()):
                if table.is_dir():
                    size = sum(f.lstat().st_size for f in table.iterdir() if f.is_file())
                    out.append((f"{library.name}.{table.name}", table, size))
        return out


def _fresh(have: CheckpointRecord, want: CheckpointRecord) -> bool:
    if (have.dataset, have.year, have.source, have.columns_digest) != (
        want.dataset,
        want.year,
        want.source,
        want.columns_digest,
    ):
        return False
    if want.row_count >= 0 and want.row_count != have.row_count:
        return False
    if want.marker is not None or have.marker is not None:
        return want.marker == have.marker
    return want.change_marker is not None and want.change_marker == have.change_marker


def _clean_table(folder: Path, now: float) -> list[str]:
    actions = []
    children = {c.name: c for c in folder.iterdir()}
    for name, child in sorted(children.items()):
        stem, _, suffix = name.rpartition(".")
        partner = {"parquet": f"{stem}.json", "json": f"{stem}.parquet"}.get(suffix)
        try:
            old = now - child.lstat().st_mtime > MAX_AGE_S
        except FileNotFoundError:
            continue
        if partner is None or partner not in children or old or not child.is_file():
            remove_tree(child)
            why = "older than a week" if old else "incomplete"
            actions.append(f"removed {why} checkpoint {folder.parent.name}/{folder.name}/{name}")
    return actions


def _rmdir_if_empty(folder: Path) -> None:
    with contextlib.suppress(OSError):  # not empty
        folder.rmdir()


def columns_digest(columns: Iterable[ColumnSchema]) -> str:
    """A stable digest of a dataset's column list (`columns_of` output)."""
    return hashlib.sha256(canonical_json([c.to_json() for c in columns])).hexdigest()
