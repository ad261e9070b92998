"""The internal single-writer context manager: lock, recovery, staging, commit or roll back.

Commit protocol (docs/design/commit-protocol.md), every step a named crash point:

1. Stage each new partition under ``tmp/<txid>/``, hashing while writing; fsync it.
2. Move it to its final, content-addressed name under ``data/``; fsync the directory.
3. Write the manifest ``snapshots/<id>.json`` (temp, fsync, rename, directory fsync).
4. Fencing: the lock must still be ours.
5. Commit point: replace ``HEAD`` (temp, fsync, rename, directory fsync).

A crash before step 5 leaves the old snapshot current; files from steps 2-3 are unreferenced
(a manifest newer than ``HEAD`` is not listed as a snapshot and is removed by the next writer's
recovery; data files are reported as orphans and removed only by ``doctor --repair``). What is
garbage is decided by one classifier, `catalog.find_garbage`, never here.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import attrs

from wrdsvault._storage.atomic import (
    NO_LINKS,
    HashingWriter,
    atomic_write_bytes,
    copy_to_temp,
    fsync_dir,
    make_dirs,
    publish,
    publish_link,
    remove_tree,
    sha256_file,
)
from wrdsvault._storage.catalog import Catalog, committed_at_of, find_garbage, read_head
from wrdsvault._storage.checkpoint import CheckpointRecord, Checkpoints
from wrdsvault._storage.crashpoints import CrashPoint, crashpoint
from wrdsvault._storage.layout import Layout
from wrdsvault._storage.lock import WriterLock
from wrdsvault._storage.quarantine import REASON_FILE, quarantine
from wrdsvault.errors import (
    CommitOutcomeUnknownError,
    SyncError,
    VaultFormatError,
    WrdsVaultError,
    WriteError,
)
from wrdsvault.manifest import DatasetEntry, Manifest, PartitionFile

if TYPE_CHECKING:
    import pyarrow as pa

    from wrdsvault.settings import VaultSettings

log = logging.getLogger(__name__)

_MANIFEST_POINTS = (
    CrashPoint.MANIFEST_TEMP_WRITTEN,
    CrashPoint.MANIFEST_TEMP_FSYNCED,
    CrashPoint.MANIFEST_RENAMED,
    CrashPoint.MANIFEST_DIR_FSYNCED,
)
_HEAD_POINTS = (
    CrashPoint.HEAD_TEMP_WRITTEN,
    CrashPoint.HEAD_TEMP_FSYNCED,
    CrashPoint.HEAD_RENAMED,
    CrashPoint.HEAD_DIR_FSYNCED,
)


TAKEN_OVER = (
    "the writer lock was taken over by another process while this writer ran (it was paused "
    "past the stale-lock timeout, or its lock was broken by hand); this writer commits nothing"
)


@attrs.frozen
class StagedFile:
    """A partition written and fsynced under ``tmp/``, not yet visible."""

    dataset: str
    year: int | None
    path: Path
    sha256: str
    size_bytes: int
    row_count: int
    content_digest: str | None = None  # of the rows (`wrdsvault._digest`); None: not computed
    #: the key columns whose values arrived in strictly increasing order (so no two rows share
    #: them), as the content digester saw while hashing; empty when not proven
    ordered_key: tuple[str, ...] = ()


def new_snapshot_id(when: datetime) -> str:
    """An id that sorts by commit time: ``YYYYMMDDTHHMMSSffffffZ-<8 hex>``."""
    return when.astimezone(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ-") + secrets.token_hex(4)


__all__ = [
    "TAKEN_OVER",
    "Operation",
    "StagedFile",
    "Writer",
    "committed_at_of",
    "new_snapshot_id",
    "open_writer",
    "operation_error",
    "read_head",
    "recover",
]

OperationKind = Literal[
    "sync",
    "drop",
    "tag",
    "untag",
    "gc",
    "doctor-repair",
    "purge-quarantine",
    "backup",
    "repair",
    "export-iceberg",
]


@attrs.frozen
class Operation:
    """A write path that takes the writer lock, as the lock record, errors and logs name it.

    Attributes:
        kind: ``sync``, ``drop``, ``tag``, ``untag``, ``gc``, ``doctor-repair``,
            ``purge-quarantine``, ``backup`` (into the destination vault), ``repair``
            (restoring files from a backup) or ``export-iceberg`` (writing an export record).
        subject: what it writes: the dataset names of a sync or drop, the name of a tag, the
            source of a backup or repair.
    """

    kind: OperationKind
    subject: str = ""

    def __str__(self) -> str:
        return {
            "sync": f"sync {self.subject}",
            "drop": f"drop {self.subject}",
            "tag": f"tag {self.subject}",
            "untag": f"tag --delete {self.subject}",
            "gc": "gc",
            "doctor-repair": "doctor --repair",
            "purge-quarantine": "purge quarantine",
            "backup": f"backup from {self.subject}",
            "repair": f"repair from {self.subject}",
            "export-iceberg": f"export-iceberg {self.subject}",
        }[self.kind]

    @property
    def label(self) -> str:
        """What a failure names: the datasets of a sync, else the operation itself."""
        return self.subject if self.kind == "sync" else str(self)

    @property
    def commits(self) -> bool:
        """Whether it writes commit records (HEAD, manifests, tags): refused while the catalog
        is inconsistent (`Catalog.require_writable`). A backup checks its destination itself
        (an interrupted backup leaves manifests newer than HEAD that the next one commits), and a
        repair only puts back the files and manifests of committed snapshots."""
        return self.kind in ("sync", "drop", "tag", "untag", "gc")

    @property
    def after_failure(self) -> str:
        """What a failure of this operation leaves, for error messages."""
        return {
            "sync": "nothing was committed; the previous snapshot stays current",
            "drop": "nothing was committed; the previous snapshot stays current",
            "tag": "the tag may or may not have been written; `wrdsvault status` lists the tags",
            "untag": "the tag may or may not have been deleted; `wrdsvault status` lists the tags",
            "gc": "every retained snapshot is complete; some expired snapshots' files may "
            "remain (run `wrdsvault gc` again, or `wrdsvault doctor --repair`)",
            "doctor-repair": "committed snapshots are untouched; some garbage may remain "
            "(run `wrdsvault doctor` to see it)",
            "purge-quarantine": "some entries may remain (`wrdsvault quarantine list`)",
            "backup": "the previous backup stays current and complete",
            "repair": "files already restored stay restored; run `wrdsvault verify --all`",
        }[self.kind]


class Writer:
    """One write transaction. Use through `open_writer`.

    `stage_partition`, `checkpoint` and `resume_partition` may run in several threads at once,
    each on its own partition (a sync reading years in parallel); everything else, and the
    commit, from one thread.
    """

    def __init__(self, layout: Layout, settings: VaultSettings, lock: WriterLock) -> None:
        self.layout = layout
        self.settings = settings
        self.lock = lock
        self.tx_id = secrets.token_hex(8)
        self.staging = layout.staging(self.tx_id)
        self.checkpoints = Checkpoints(
            layout, file_mode=settings.file_mode, dir_mode=settings.dir_mode
        )
        self._staged: list[StagedFile] = []

    # -- staging ---------------------------------------------------------------------------

    def stage_partition(
        self,
        dataset: str,
        year: int | None,
        schema: pa.Schema,
        batches: Iterable[pa.RecordBatch],
        primary_key: Sequence[str] = (),
    ) -> StagedFile:
        """Write one partition's batches to a staged Parquet file, hashing as it goes.

        Batches are re-cut into row groups of ``settings.row_group_rows`` (one row group per
        driver batch makes files 1.5-2x larger, docs/design/measured-facts.md). The rows'
        content digest (`wrdsvault._digest`) is hashed from the batches as they pass when they
        come in strictly increasing ``primary_key`` order, else computed from the written file
        (sorted, a column at a time).

        Raises:
            SyncError: a batch does not have the declared schema.
        """
        # The Parquet writer and the digest (pyarrow.compute) are imported with the first file
        # written: a sync that finds nothing changed never loads them.
        import pyarrow as pa
        import pyarrow.parquet as pq

        from wrdsvault._digest import Digester, file_digest
        from wrdsvault._memory import stream_pool
        from wrdsvault._storage.encoding import dictionary_columns

        path = self._staged_path(dataset, year)
        crashpoint(CrashPoint.PARTITION_WRITE_STARTED)
        out = HashingWriter(path, mode=self.settings.file_mode)
        rows = 0
        digester = Digester(schema, primary_key)
        # Opened with the first row group, which decides the dictionary-encoded columns
        # (wrdsvault._storage.encoding); a partition without rows gets no dictionary choice.
        pw: pq.ParquetWriter | None = None

        def write(table: pa.Table) -> None:
            nonlocal pw
            if pw is None:  # the first row group, or an empty table: no rows, no row group
                chosen: bool | list[str] = dictionary_columns(table)
                pw = pq.ParquetWriter(
                    out,  # type: ignore[arg-type]  # any object with write() works
                    schema,
                    compression=self.settings.compression,
                    compression_level=self.settings.codec_level,
                    use_dictionary=chosen,  # type: ignore[arg-type]  # stubs say bool; names work
                    write_page_checksum=True,
                    write_statistics=True,
                    memory_pool=stream_pool(),  # hands freed pages back (wrdsvault._memory)
                )
            if table.num_rows:
                pw.write_table(table, row_group_size=group)

        try:
            try:
                pending: list[pa.RecordBatch] = []
                pending_rows = 0
                group = self.settings.row_group_rows
                for batch in batches:
                    if not batch.schema.equals(schema):
                        raise SyncError(
                            dataset=dataset,
                            reason=f"the source sent a batch for {year} whose schema differs from "
                            f"the declared one: {batch.schema} vs {schema}",
                        )
                    if batch.num_rows == 0:
                        continue
                    digester.update(batch)
                    pending.append(batch)
                    pending_rows += batch.num_rows
                    while pending_rows >= group:
                        table = pa.Table.from_batches(pending, schema)
                        write(table.slice(0, group))
                        rest = table.slice(group)
                        pending = rest.to_batches()
                        pending_rows = rest.num_rows
                    rows += batch.num_rows
                    self.lock.heartbeat()
                # The last rows; a partition without rows is still a file (with no row group).
                if pending_rows or pw is None:
                    write(pa.Table.from_batches(pending, schema))
            finally:
                if pw is not None:
                    pw.close()
            crashpoint(CrashPoint.PARTITION_WRITTEN)
            content_digest = (
                digester.hexdigest() if digester.in_order else file_digest(path, primary_key)
            )
            ordered_key = tuple(digester.key) if digester.in_order else ()
            out.fsync()
            crashpoint(CrashPoint.PARTITION_FSYNCED)
        finally:
            out.close()
        staged = StagedFile(
            dataset=dataset,
            year=year,
            path=path,
            sha256=out.sha256,
            size_bytes=out.size_bytes,
            row_count=rows,
            content_digest=content_digest,
            ordered_key=ordered_key,
        )
        self._staged.append(staged)
        crashpoint(CrashPoint.PARTITION_STAGED)
        return staged

    def _staged_path(self, dataset: str, year: int | None) -> Path:
        return self.layout.staged_partition(self.tx_id, dataset, year)

    def checkpoint(self, staged: StagedFile, record: CheckpointRecord) -> None:
        """Keep a staged year for a later sync if this one fails (see `Checkpoints`).

        Best effort: a checkpoint is a cache outside the commit protocol, so an I/O error here
        only costs a later download (the commit's own fsyncs catch a failing disk).
        """
        try:
            self.checkpoints.save(staged.path, record)
        except OSError as exc:
            log.warning(
                "could not checkpoint %s %s (%s); an interrupted sync would read it again",
                record.dataset,
                record.year,
                exc,
            )
            self.checkpoints.forget(record.dataset, record.year)

    def resume_partition(
        self, want: CheckpointRecord, primary_key: Sequence[str] = ()
    ) -> StagedFile | None:
        """Stage a year from the checkpoint of an interrupted sync, if it is still current.

        Checkpoints keep no content digest: it is computed again from the file.
        """
        from wrdsvault._digest import file_digest

        path = self._staged_path(want.dataset, want.year)
        have = self.checkpoints.take(want, link_to=path)
        if have is None:
            return None
        staged = StagedFile(
            dataset=want.dataset,
            year=want.year,
            path=path,
            sha256=have.sha256,
            size_bytes=have.size_bytes,
            row_count=have.row_count,
            content_digest=file_digest(path, primary_key),
        )
        self._staged.append(staged)
        return staged

    def discard(self, staged: StagedFile) -> None:
        """Drop a staged file that will not be published (its content already exists)."""
        staged.path.unlink(missing_ok=True)
        self._staged.remove(staged)

    # -- commit ----------------------------------------------------------------------------

    def commit(self, parent: Manifest | None, datasets: dict[str, DatasetEntry]) -> Manifest:
        """Publish the staged files and make the new manifest current (the commit point).

        Raises:
            SyncError: the lock is no longer ours (fencing); nothing was committed.
        """
        self._fence(datasets)  # before anything becomes visible, and again before HEAD
        datasets = {name: self._at_current_address(entry) for name, entry in datasets.items()}
        published = {p.path for e in datasets.values() for p in e.partitions}
        for staged in self._staged:
            rel = self.layout.partition_relpath(staged.dataset, staged.year, staged.sha256)
            if rel not in published:
                continue
            final = self.layout.resolve_relpath(rel)
            make_dirs(final.parent, mode=self.settings.dir_mode)
            crashpoint(CrashPoint.PUBLISH_DIR_CREATED)
            publish(
                staged.path,
                final,
                points=(CrashPoint.PARTITION_RENAMED, CrashPoint.PARTITION_DIR_FSYNCED),
            )
            # Checked again after the rename, before the commit: what readers will open is what
            # was hashed while writing.
            digest, size = sha256_file(final)
            if (digest, size) != (staged.sha256, staged.size_bytes):
                raise SyncError(
                    dataset=staged.dataset,
                    reason=f"{rel} changed between writing and publishing (sha256 {digest[:16]} "
                    f"vs {staged.sha256[:16]}); the disk or another process altered it",
                )
        self._staged.clear()

        now = datetime.now(timezone.utc)
        if parent is not None and now <= parent.committed_at:
            # The wall clock stepped back: ids and as-of order must still follow commit order.
            now = parent.committed_at + timedelta(microseconds=1)
        manifest = Manifest(
            snapshot_id=new_snapshot_id(now),
            sequence=(parent.sequence + 1) if parent else 1,
            parent=parent.snapshot_id if parent else None,
            committed_at=now,
            datasets=datasets,
        )
        make_dirs(self.layout.snapshots_dir, mode=self.settings.dir_mode)
        atomic_write_bytes(
            self.layout.manifest(manifest.snapshot_id),
            manifest.to_json(),
            mode=self.settings.file_mode,
            points=_MANIFEST_POINTS,
        )
        self._fence(datasets)
        try:
            atomic_write_bytes(
                self.layout.head,
                manifest.snapshot_id.encode() + b"\n",
                mode=self.settings.file_mode,
                points=_HEAD_POINTS,
            )
        except OSError as exc:
            try:
                visible = read_head(self.layout) == manifest.snapshot_id
            except (OSError, VaultFormatError):
                visible = False
            if visible:  # only the directory fsync after the rename can fail this late
                raise CommitOutcomeUnknownError(
                    snapshot_id=manifest.snapshot_id, reason=f"{type(exc).__name__}: {exc}"
                ) from exc
            raise
        return manifest

    def _at_current_address(self, entry: DatasetEntry) -> DatasetEntry:
        """``entry`` with every file named by the address the newest format gives it.

        The earliest format-1 vaults kept years in ``year=<YYYY>`` folders, which newer
        manifests may not name (docs/format.md). A reused file still there gets a second name
        at its current address (a hard link, else a copy; checked against its sha256 before
        the commit names it); the old manifests keep naming the old one, and gc removes that
        one with the last of them.
        """
        if not any("/year=" in part.path for part in entry.partitions):
            return entry  # every other path a manifest may hold is already the current one
        parts = []
        for part in entry.partitions:
            rel = self.layout.partition_relpath(entry.name, part.year, part.sha256)
            if part.path != rel:
                self._second_name(entry.name, part, rel)
                part = attrs.evolve(part, path=rel)
            parts.append(part)
        return attrs.evolve(entry, partitions=tuple(parts))

    def _second_name(self, dataset: str, part: PartitionFile, rel: str) -> None:
        """Make ``rel`` name the bytes of ``part`` (durably), unless it already does."""
        final = self.layout.resolve_relpath(rel)
        copy = None
        if not final.exists():
            source = self.layout.resolve_relpath(part.path)
            make_dirs(final.parent, mode=self.settings.dir_mode)
            try:
                publish_link(source, final)
            except OSError as exc:
                if exc.errno not in NO_LINKS:
                    raise
                copy, digest, size = copy_to_temp(source, final, mode=self.settings.file_mode)
        if copy is None:
            digest, size = sha256_file(final)
        if (digest, size) == (part.sha256, part.size_bytes):
            if copy is not None:
                publish(copy, final)  # checked before it is named
            return
        if copy is not None:
            copy.unlink(missing_ok=True)
        raise SyncError(
            dataset=dataset,
            reason=f"{part.path} does not hold the bytes its manifest names (sha256 "
            f"{digest[:16]} vs {part.sha256[:16]}); run `wrdsvault verify`",
        )

    def _fence(self, datasets: Iterable[str]) -> None:
        """Refuse to go on if the lock is no longer ours (a successor took it over)."""
        if not self.lock.still_ours():
            raise SyncError(dataset=",".join(sorted(datasets)), reason=TAKEN_OVER)

    def delete_tag(self, name: str) -> None:
        """Remove a tag durably (its snapshot becomes eligible for expiry)."""
        self.layout.tag(name).unlink()
        fsync_dir(self.layout.tags_dir)

    def write_tag(self, name: str, snapshot_id: str) -> None:
        make_dirs(self.layout.tags_dir, mode=self.settings.dir_mode)
        atomic_write_bytes(
            self.layout.tag(name), snapshot_id.encode() + b"\n", mode=self.settings.file_mode
        )


def recover(catalog: Catalog) -> list[str]:
    """Clean what a crashed writer left behind. Run under the lock; idempotent.

    Removes what `find_garbage` proves is garbage, orphan data files aside (``doctor --repair``
    removes those): staging folders, temp files of atomic writes, and the one manifest newer
    than ``HEAD`` that a writer which died before its commit point left. Keeps the checkpoints
    of finished years under ``tmp/resume/`` (dropping incomplete or week-old ones). Never
    removes a manifest a tag or another manifest names, nor anything newer than ``HEAD`` while
    ``HEAD`` is damaged or behind (`Catalog.require_writable` refuses the write then). Returns
    what it did.
    """
    actions: list[str] = []
    layout = catalog.layout
    garbage = list(find_garbage(catalog, orphans=False))
    for item in garbage:
        if item.kind == "staging":
            remove_tree(item.path)
            actions.append(f"removed staging {item.path.name}")
    actions += Checkpoints(layout).clean()
    for item in garbage:
        if item.kind == "temp-file":
            item.path.unlink(missing_ok=True)
            actions.append(f"removed temp file {layout.relative(item.path)}")
        elif item.kind == "uncommitted-manifest":
            item.path.unlink(missing_ok=True)
            actions.append(f"removed uncommitted manifest {item.path.name}")
    for action in actions:
        log.info("recovery: %s", action)
    return actions


def operation_error(operation: Operation, reason: str) -> WrdsVaultError:
    """The error a failed write raises: `SyncError` for a sync, else `WriteError`."""
    if operation.kind == "sync":
        return SyncError(dataset=operation.subject, reason=reason)
    return WriteError(operation=str(operation), reason=reason, after=operation.after_failure)


@contextmanager
def open_writer(
    layout: Layout,
    settings: VaultSettings,
    *,
    operation: Operation,
    timeout_s: float,
    quarantine_on_error: bool = False,
    catalog: Catalog | None = None,
) -> Iterator[Writer]:
    """Take the lock, recover, stage; remove the staging and release the lock on exit.

    An operation that writes commit records (``operation.commits``) is refused after recovery
    while the catalog is inconsistent (`Catalog.require_writable`). With
    ``quarantine_on_error``, a failure moves the staging folder (with a reason.json) to
    ``quarantine/`` instead of deleting it, and records the entry on the exception as
    ``quarantine_path``.

    Raises:
        VaultFormatError: ``operation.commits`` and HEAD is damaged or behind committed records.
    """
    catalog = catalog or Catalog(layout)
    lock = WriterLock(
        layout.lock,
        operation=str(operation),
        file_mode=settings.file_mode,
        stale_after_s=settings.lock_stale_after_s,
        heartbeat_s=settings.lock_heartbeat_s,
    )
    lock.acquire(timeout_s=timeout_s)
    try:
        crashpoint(CrashPoint.LOCK_ACQUIRED)
        recover(catalog)
        if operation.commits:
            catalog.require_writable()
        writer = Writer(layout, settings, lock)
        try:
            make_dirs(layout.tmp_dir, mode=settings.dir_mode)
            writer.staging.mkdir(mode=settings.dir_mode)
            crashpoint(CrashPoint.STAGING_CREATED)
            try:
                yield writer
            except Exception as exc:
                # A vault folder that vanished (unmounted, moved away) took the lock with it:
                # the original error says what happened, not a takeover.
                taken_over = lock.held and layout.root.is_dir() and not lock.still_ours()
                if taken_over and getattr(exc, "reason", None) != TAKEN_OVER:
                    # Whatever broke (often our staging, swept by the successor's recovery),
                    # the cause is the takeover: say so.
                    fenced = operation_error(operation, TAKEN_OVER)
                    if quarantine_on_error:
                        _quarantine_failure(layout, settings, writer, operation, fenced)
                    raise fenced from exc
                if quarantine_on_error and not isinstance(exc, CommitOutcomeUnknownError):
                    _quarantine_failure(layout, settings, writer, operation, exc)
                raise
        finally:
            remove_tree(writer.staging)
            crashpoint(CrashPoint.STAGING_REMOVED)
    finally:
        lock.release()
        crashpoint(CrashPoint.LOCK_RELEASED)


def _quarantine_failure(
    layout: Layout, settings: VaultSettings, writer: Writer, operation: Operation, exc: Exception
) -> None:
    label = getattr(exc, "dataset", None) or operation.label
    try:
        path = quarantine(
            layout,
            writer.staging,
            label=str(label),
            operation=str(operation),
            exc=exc,
            file_mode=settings.file_mode,
            dir_mode=settings.dir_mode,
        )
    except OSError:
        log.exception("could not quarantine the failed write of %s", label)
        return
    # A write refused before it staged anything (schema drift, a lost source) keeps only its
    # reason: say so rather than promise files that are not there.
    try:
        staged = any(p.name != REASON_FILE for p in path.iterdir())
    except OSError:  # never let the message hide the failure being reported
        staged = True
    kept = "staged files and reason" if staged else "reason (nothing was staged)"
    log.warning("%s failed; %s kept in %s", operation, kept, path)
    if isinstance(exc, WrdsVaultError):
        exc._evidence["quarantine_path"] = str(path)  # keeps it picklable
    exc.quarantine_path = str(path)  # type: ignore[attr-defined]
