"""Warehouse: a vault folder and the entry point for syncing, pinning and querying WRDS data."""

from __future__ import annotations

import contextlib
import enum
import functools
import json
import logging
import math
import os
import stat
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal, TypeVar, overload

import attrs

from wrdsvault._storage.atomic import NO_WRITE_ACCESS, fsync_dir, make_dirs, put_if_absent
from wrdsvault._storage.catalog import Catalog, read_head
from wrdsvault._storage.diskguard import DiskGuard, DiskState, UsageProvider, psutil_usage
from wrdsvault._storage.layout import Layout, validate_tag
from wrdsvault._storage.lease import Lease, try_take_lease
from wrdsvault.datasets import (
    AUTO_DATE_COLUMN,
    BUILTIN_SPECS,
    DatasetSpec,
    builtin_spec,
    detect_date_column,
    validate_dataset,
    validate_new_dataset,
)
from wrdsvault.errors import (
    BackupError,
    DiskSpaceError,
    InvalidNameError,
    InvalidValueError,
    NotAVaultError,
    SnapshotNotFoundError,
    SourceRequiredError,
    TagExistsError,
    UnknownDatasetError,
    VaultAccessError,
    VaultFormatError,
    WrdsVaultError,
)
from wrdsvault.manifest import FORMAT_VERSION, Manifest, format_timestamp, parse_timestamp
from wrdsvault.refs import not_found_error, resolve_ref
from wrdsvault.retention import ExpiredSnapshot, GcPlan, GcReport, RetentionPolicy
from wrdsvault.settings import VaultSettings

if TYPE_CHECKING:
    import duckdb
    import pandas as pd
    import pyarrow as pa

    from wrdsvault._backup import BackupProgress
    from wrdsvault._doctor import DoctorFinding, DoctorReport
    from wrdsvault._query import Params
    from wrdsvault._storage.quarantine import QuarantineEntry
    from wrdsvault._storage.writer import Operation, Writer
    from wrdsvault._sync import ProgressCallback, SyncOptions
    from wrdsvault._verify import VerifyProgress
    from wrdsvault.exports import ExportRecord, IcebergExport
    from wrdsvault.reports import (
        BackupReport,
        LockInfo,
        RepairReport,
        SnapshotInfo,
        SyncReport,
        VaultStatus,
        VerifyReport,
    )
    from wrdsvault.revisions import Revision
    from wrdsvault.schema import DriftPolicy, SchemaVersion
    from wrdsvault.snapshot import Snapshot
    from wrdsvault.sources.base import Source
    from wrdsvault.validation import Rule

__all__ = ["Warehouse"]

log = logging.getLogger(__name__)

T = TypeVar("T")


class _BuiltinSpec(enum.Enum):
    """The default of ``sync(date_column=...)``: partition as the dataset's built-in spec does."""

    BUILTIN = "builtin"

    def __repr__(self) -> str:
        return "<the dataset's built-in spec>"


_BUILTIN: Final = _BuiltinSpec.BUILTIN


class Warehouse:
    """A local vault of WRDS data: year-partitioned Parquet, one manifest per commit.

    Args:
        root: the vault folder. Opening it creates nothing: if the folder is missing or
            empty, the first `sync` creates the vault there, and every read before that (a
            mistyped path) raises `NotAVaultError` naming it.
        source: where `sync` pulls rows from (`WrdsSource`, `SampleSource`); reading needs none.
        settings: vault settings; by default those in ``vault.json`` with ``WRDSVAULT_*`` overrides
            (a vault `sync` creates stores these).
        create: ``None`` (default): as above. ``True``: create the vault (``vault.json``) now if
            the folder is missing or empty, e.g. to store ``settings`` before any sync.
            ``False``: there must be a vault now (`NotAVaultError` at once otherwise), and
            `sync` does not create one.
        rules: extra validation rules per dataset (`wrdsvault.validation`), run on every staged
            partition after the built-in ones.
        lock_timeout_s: how long writes wait for another writer before `LockHeldError`
            (default: ``settings.lock_timeout_s``, 0); ``sync(wait=...)`` overrides it per call.

    Raises:
        NotAVaultError: ``root`` is a file or a folder with content but no vault, or (with
            ``create=False``) a missing or empty folder. Nothing was created.
        VaultFormatError: ``vault.json`` is unreadable or was written by a newer wrdsvault.
        InvalidValueError: ``lock_timeout_s`` or a ``WRDSVAULT_*`` variable is out of range.

    Example:
        >>> from wrdsvault.sources import SampleSource
        >>> wh = Warehouse("vault", source=SampleSource(years=range(2020, 2022)))  # doctest: +SKIP
        >>> wh.sync("crsp.msf").summary()  # doctest: +SKIP
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        source: Source | None = None,
        settings: VaultSettings | None = None,
        create: bool | None = None,
        rules: Mapping[str, Sequence[Rule]] | None = None,
        lock_timeout_s: float | None = None,
    ) -> None:
        given: object = settings  # untyped callers can pass anything; mypy cannot see that
        if given is not None and not isinstance(given, VaultSettings):
            msg = f"settings must be a VaultSettings, not {type(given).__name__}"
            raise TypeError(msg)
        self.source = source
        self._path = Path(os.fspath(root)).expanduser()
        self._given_settings = settings
        self._lock_timeout_s = lock_timeout_s
        self._may_create = create is not False
        self._open_lock = threading.Lock()
        self._vault: tuple[Layout, Catalog] | None = None
        self._root = Path(os.path.realpath(self._path))
        self._format_version = FORMAT_VERSION
        self.settings = self._with_override(
            settings if settings is not None else VaultSettings().with_env()
        )
        opened = _open_root(self._path, settings, create=create is True, absent_ok=create is None)
        self.rules: dict[str, list[Rule]] = {}
        for name, extra in (rules or {}).items():
            self.rules[validate_dataset(name)] = list(extra)
        if opened is not None:
            self._adopt(*opened)
        else:  # no vault yet: nothing is created until `sync` (`_create`)
            self._guard = self._disk_guard(psutil_usage)
        self._latest: Snapshot | None = None
        self._latest_lock = threading.Lock()

    def _with_override(self, settings: VaultSettings) -> VaultSettings:
        if self._lock_timeout_s is None:
            return settings
        return attrs.evolve(settings, lock_timeout_s=self._lock_timeout_s)

    def _disk_guard(self, usage: UsageProvider) -> DiskGuard:
        return DiskGuard(
            self._root,
            warn=self.settings.disk_warn_fraction,
            critical=self.settings.disk_critical_fraction,
            refuse=self.settings.disk_refuse_fraction,
            usage=usage,
            hint=self._disk_hint,
        )

    def _adopt(self, layout: Layout, settings: VaultSettings, version: int) -> None:
        """Take the opened vault at ``layout`` as this Warehouse's."""
        self._root = layout.root
        self._format_version = version
        self.settings = self._with_override(settings)
        # The usage probe set before the vault existed (`wrdsvault.testing.set_disk_usage`) stays.
        old = getattr(self, "_guard", None)
        self._guard = self._disk_guard(psutil_usage if old is None else old.usage)
        self._vault = (layout, Catalog(layout))

    def _opened(self) -> tuple[Layout, Catalog]:
        """The vault's layout and catalog; the one gate every read and write passes.

        A Warehouse opened on a missing or empty folder looks again (another process may have
        synced into it since); if there is still no vault, `NotAVaultError`, and nothing is
        created.
        """
        vault = self._vault
        if vault is not None:
            return vault
        with self._open_lock:
            if self._vault is None:
                opened = _open_root(self._path, self._given_settings, create=False, absent_ok=False)
                assert opened is not None  # absent_ok=False raises instead
                self._adopt(*opened)
            assert self._vault is not None
            return self._vault

    def _create(self) -> None:
        """Create the vault if there is none yet (only `sync` does, once its arguments passed)."""
        if self._vault is not None or not self._may_create:
            return
        with self._open_lock:
            if self._vault is None:
                opened = _open_root(self._path, self._given_settings, create=True, absent_ok=False)
                assert opened is not None
                self._adopt(*opened)

    @property
    def _layout(self) -> Layout:
        return self._opened()[0]

    @property
    def _catalog(self) -> Catalog:
        return self._opened()[1]

    @property
    def root(self) -> Path:
        """The vault folder (absolute, symlinks resolved)."""
        return self._root

    def __repr__(self) -> str:
        return f"Warehouse({str(self.root)!r})"

    # -- writing ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def _writer(
        self, operation: Operation, *, wait: float | None = None, quarantine_on_error: bool = False
    ) -> Iterator[Writer]:
        """The single-writer context: lock, recovery, staging; staging removed on exit."""
        from wrdsvault._storage.writer import open_writer, operation_error
        from wrdsvault._sync import os_error

        timeout = self.settings.lock_timeout_s if wait is None else _wait_s(wait)
        try:
            with open_writer(
                self._layout,
                self.settings,
                operation=operation,
                timeout_s=timeout,
                quarantine_on_error=quarantine_on_error,
                catalog=self._catalog,
            ) as w:
                yield w
        except WrdsVaultError:
            raise  # LockHeldError is a TimeoutError, hence an OSError: keep it as it is
        except OSError as exc:
            # Taking the lock, recovery, the operation or cleanup failed (ENOSPC, EIO, EACCES,
            # ...): say which operation, and what its failure may have left.
            if exc.errno in NO_WRITE_ACCESS:
                raise VaultAccessError(
                    path=str(self.root), operation=str(operation), reason=str(exc)
                ) from exc
            err = os_error(exc, dataset=operation.label, root=self.root)
            if not isinstance(err, DiskSpaceError):
                err = operation_error(operation, f"{type(exc).__name__}: {exc}")
            raise err from exc

    def sync(
        self,
        datasets: str | Iterable[str],
        *,
        years: Iterable[int] | None = None,
        full: bool = False,
        date_column: str | _BuiltinSpec | None = _BUILTIN,
        wait: float | None = None,
        progress: ProgressCallback | None = None,
        drift: DriftPolicy | Mapping[str, DriftPolicy] | None = None,
        validate: bool = True,
        allow_removal: bool = False,
    ) -> SyncReport:
        """Pull datasets from the source and commit one new snapshot for all of them.

        Unchanged datasets (same source change marker) are skipped without reading rows; within a
        changed dataset only years whose content changed get new files. If nothing changed, no
        snapshot is committed and the report says so.

        Args:
            datasets: ``"crsp.msf"`` or a list of names.
            years: only these calendar years (others keep their current files).
            full: ignore change markers and compare every year's content.
            date_column: for a table without a built-in spec, the date column that picks the
                year (``None``: store the table as one partition; ``"auto"``: the first of
                `DATE_COLUMN_NAMES` the table has, else its only date column, else one
                partition). Left out: the dataset's built-in spec decides.
            wait: seconds to wait for another writer (default: ``settings.lock_timeout_s``).
            progress: called with a `Progress` event before and after each partition.
            drift: what to do if the source's columns changed since the last commit:
                ``"strict"`` refuses, ``"additive"`` accepts added columns only, ``"accept"``
                accepts all; one policy or one per dataset (default: the vault's settings).
            validate: run the validation rules on staged partitions (default True).
            allow_removal: let years the source no longer lists leave the snapshot whatever
                rows they hold; by default they may take at most the ``max_removed_fraction``
                setting's share of the dataset's rows (0: none), else the sync fails validation
                (rule ``removed_years``).

        Returns:
            What happened to each dataset, and the new snapshot id if one was committed.

        Raises:
            SourceRequiredError: the Warehouse was opened without a source.
            InvalidNameError: a malformed dataset name; nothing was written.
            InvalidValueError: ``years``, ``drift`` or ``wait`` out of range; nothing was written.
            UnknownDatasetError: no built-in spec and no ``date_column``, or the source does
                not serve the table; nothing was written (no lock, staging, quarantine entry
                or snapshot).
            LockHeldError: another writer kept the lock for the whole wait.
            DiskSpaceError: too little free space, or the disk filled up mid-write.
            SchemaDriftError: the columns changed and the drift policy refuses it.
            ValidationFailedError: a partition failed a rule, or years the source no longer
                lists would take rows away; the staged files are in quarantine.
            SyncError: a dataset failed; nothing was committed.
        """
        from wrdsvault._storage.writer import Operation
        from wrdsvault._sync import run_sync

        if self.source is None:
            raise SourceRequiredError(operation="sync()")
        given: object = datasets  # bytes would pass as an iterable of ints at run time
        if isinstance(given, (bytes, bytearray)):
            msg = "datasets must be a str or an iterable of str, not bytes"
            raise TypeError(msg)
        names = [datasets] if isinstance(datasets, str) else list(datasets)
        if not names:
            raise InvalidNameError(
                kind="dataset list", value=names, rule="sync() needs at least one dataset name"
            )
        specs = [self._spec(name, date_column) for name in names]
        if len({s.name for s in specs}) != len(specs):
            raise InvalidNameError(
                kind="dataset list", value=names, rule="each dataset may be named once"
            )
        opts = self._sync_options(
            years=None if years is None else _years(years),
            full=full,
            progress=progress,
            drift=drift,
            validate=validate,
            allow_removal=allow_removal,
        )
        if wait is not None:
            _wait_s(wait)
        from wrdsvault._sync import preflight

        preflight(self.source, specs)  # a table the source lacks fails before any write
        self._create()  # the arguments passed: the one place a vault comes into being
        operation = Operation("sync", " ".join(s.name for s in specs))
        with self._writer(operation, wait=wait, quarantine_on_error=True) as writer:
            head_id = read_head(self._layout)
            head = self._manifest(head_id) if head_id else None
            return run_sync(writer, self.source, specs, head, opts)

    def sync_all(
        self,
        *,
        full: bool = False,
        wait: float | None = None,
        progress: ProgressCallback | None = None,
        drift: DriftPolicy | Mapping[str, DriftPolicy] | None = None,
        validate: bool = True,
        allow_removal: bool = False,
    ) -> SyncReport:
        """Re-sync every dataset the latest snapshot holds, each as it was synced: one commit.

        What a scheduled daily sync runs (``wrdsvault sync --all``). Each dataset keeps its
        partition column (built-in spec, ``date_column=`` or ``"auto"`` as resolved then) and
        the years its syncs asked for (the manifest's ``sync_recipe``; a dataset synced by a
        wrdsvault that did not record it is synced over every year, and ``report.notes`` says
        so). Like `sync`, all datasets land in one commit, or none if any fails.

        Args:
            full, wait, progress, drift, validate, allow_removal: as for `sync`.

        Returns:
            The `SyncReport`; ``report.committed`` is False if nothing changed.

        Raises:
            SourceRequiredError: the Warehouse was opened without a source.
            UnknownDatasetError: the vault has no snapshot, its latest snapshot no dataset,
                or the source no longer serves one of them; nothing was written.
            InvalidValueError: a dataset was synced from another source (its name is
                recorded in the manifest); nothing was written.
            LockHeldError, DiskSpaceError, SchemaDriftError, ValidationFailedError,
            SourceError, SyncError: as for `sync`.
        """
        from wrdsvault._storage.writer import Operation
        from wrdsvault._sync import run_sync

        if self.source is None:
            raise SourceRequiredError(operation="sync_all()")
        opts = self._sync_options(
            years=None,
            full=full,
            progress=progress,
            drift=drift,
            validate=validate,
            allow_removal=allow_removal,
        )
        # Checked before the lock too, so that a refusal writes nothing (no quarantine entry).
        # A HEAD that cannot be read is left to the locked path (recovery, then its own error).
        try:
            early = self._sync_all_plan(self.source)[1]
        except (UnknownDatasetError, InvalidValueError, NotAVaultError):
            raise
        except WrdsVaultError:
            early = []
        from wrdsvault._sync import preflight

        preflight(self.source, early)
        with self._writer(
            Operation("sync", "--all"), wait=wait, quarantine_on_error=True
        ) as writer:
            # Read under the lock: the datasets are those of the HEAD this commit builds on.
            head, specs, years, notes = self._sync_all_plan(self.source)
            opts = attrs.evolve(opts, dataset_years=years)
            for note in notes:
                log.warning("%s", note)
            report = run_sync(writer, self.source, specs, head, opts)
        return attrs.evolve(report, notes=tuple(notes))

    def _sync_all_plan(
        self, source: Source
    ) -> tuple[Manifest, list[DatasetSpec], dict[str, frozenset[int] | None], list[str]]:
        """HEAD, and the spec, years and notes of each dataset it holds, for `sync_all`.

        Raises:
            UnknownDatasetError: no snapshot, or a snapshot without datasets.
            InvalidValueError: a dataset was synced from another source.
        """
        head_id = read_head(self._layout)
        head = self._manifest(head_id) if head_id else None
        if head is None or not head.datasets:
            raise UnknownDatasetError(
                dataset="--all",
                known=[],
                hint="the vault holds no dataset yet; sync datasets by name first "
                "(`wrdsvault sync crsp.msf ...`), then `sync --all` re-syncs them",
            )
        name = source.name
        foreign = sorted(f"{d} ({e.source})" for d, e in head.datasets.items() if e.source != name)
        if foreign:
            raise InvalidValueError(
                name="source",
                value=name,
                rule=f"the source the datasets were synced from; {', '.join(foreign)} came "
                "from another source. Run sync --all with that source, or sync the "
                "datasets by name",
            )
        specs, years, notes = _recipes(head)
        return head, specs, years, notes

    def _sync_options(
        self,
        *,
        years: frozenset[int] | None,
        full: bool,
        progress: ProgressCallback | None,
        drift: DriftPolicy | Mapping[str, DriftPolicy] | None,
        validate: bool,
        allow_removal: bool,
    ) -> SyncOptions:
        from wrdsvault._sync import SyncOptions

        return SyncOptions(
            years=years,
            full=full,
            progress=progress,
            drift=self._drift_policies(drift),
            default_drift=self._default_drift(drift),
            rules=self.rules,
            validate=validate,
            guard=self._guard,
            max_removed_fraction=None if allow_removal else self.settings.max_removed_fraction,
        )

    def _default_drift(self, drift: DriftPolicy | Mapping[str, DriftPolicy] | None) -> DriftPolicy:
        if isinstance(drift, str):
            return _policy(drift)
        return _policy(self.settings.drift_policy)

    def _drift_policies(
        self, drift: DriftPolicy | Mapping[str, DriftPolicy] | None
    ) -> dict[str, DriftPolicy]:
        out = {validate_dataset(k): _policy(v) for k, v in self.settings.drift_policies.items()}
        if isinstance(drift, str):
            return {}  # one policy for every dataset of this call
        for k, v in (drift or {}).items():
            out[validate_dataset(k)] = _policy(v)
        return out

    def _spec(self, name: str, date_column: str | _BuiltinSpec | None) -> DatasetSpec:
        from wrdsvault._sync import ask

        validate_new_dataset(name)
        if date_column is _BuiltinSpec.BUILTIN:
            return builtin_spec(name)
        base = BUILTIN_SPECS.get(name)
        if date_column == AUTO_DATE_COLUMN:
            assert self.source is not None
            probe = DatasetSpec(name=name, partition_column=None)
            date_column = detect_date_column(name, ask(self.source, probe).schema)
            log.info("%s: date_column=%r (auto)", name, date_column)
        return DatasetSpec(
            name=name,
            partition_column=date_column,
            primary_key=base.primary_key if base else (),
            title=base.title if base else "",
        )

    def drop(self, datasets: str | Iterable[str], *, wait: float | None = None) -> str:
        """Commit a new snapshot that holds everything the latest one does but ``datasets``.

        The way out for a dataset that should not be in the vault, for example one committed
        under a library name DuckDB reserves (``main.x``), which no query can reach. Older
        snapshots keep it, files included (pinned backtests still read it); the commit follows
        the same protocol as a sync, under the writer lock.

        Args:
            datasets: ``"crsp.msf"`` or a list of names, each held by the latest snapshot.
            wait: seconds to wait for another writer (default: ``settings.lock_timeout_s``).

        Returns:
            The id of the new snapshot.

        Raises:
            InvalidNameError: a malformed name, an empty list, or a name given twice.
            UnknownDatasetError: the latest snapshot does not hold a dataset (or there is none);
                nothing was committed.
            LockHeldError: another writer kept the lock for the whole wait.
        """
        from wrdsvault._storage.writer import Operation

        given: object = datasets  # typed callers cannot pass bytes; untyped ones can
        if isinstance(given, (bytes, bytearray)):
            msg = "datasets must be a str or an iterable of str, not bytes"
            raise TypeError(msg)
        names = [datasets] if isinstance(datasets, str) else list(datasets)
        for name in names:
            validate_dataset(name)
        if not names or len(set(names)) != len(names):
            raise InvalidNameError(
                kind="dataset list",
                value=names,
                rule="drop() needs at least one dataset name, each named once",
            )
        with self._writer(Operation("drop", " ".join(names)), wait=wait) as writer:
            head_id = read_head(self._layout)
            head = self._manifest(head_id) if head_id else None
            held = dict(head.datasets) if head is not None else {}
            for name in names:
                if name not in held:
                    raise UnknownDatasetError(
                        dataset=name,
                        known=sorted(held),
                        hint="the latest snapshot does not hold it; nothing was dropped",
                    )
                del held[name]
            manifest = writer.commit(head, held)
        log.info("dropped %s in snapshot %s", ", ".join(names), manifest.snapshot_id)
        return manifest.snapshot_id

    def tag(self, name: str, ref: str = "latest", *, force: bool = False) -> str:
        """Give a snapshot a name backtests can pin (``wh.snapshot("paper-v1")``).

        Args:
            name: a letter, then letters, digits, ``.``, ``_``, ``-`` (64 at most).
            ref: which snapshot (default: the latest).
            force: move the tag if it already names another snapshot.

        Returns:
            The id of the tagged snapshot.

        Raises:
            InvalidNameError: a malformed tag name.
            SnapshotNotFoundError: ``ref`` matches no snapshot.
            TagExistsError: the tag exists and names another snapshot (pass ``force=True``).
            VaultFormatError: HEAD is damaged or behind committed snapshots (see `doctor`).
            WriteError: an OS error while writing the tag.
        """
        from wrdsvault._storage.writer import Operation

        validate_tag(name)
        self._resolve(ref)  # fail before taking the lock
        with self._writer(Operation("tag", name)) as writer:
            target = self._resolve(ref)
            current = self.tags().get(name)
            if current is not None and current != target and not force:
                raise TagExistsError(tag=name, current=current, requested=target)
            writer.write_tag(name, target)
        return target

    def untag(self, name: str) -> str:
        """Delete a tag; its snapshot is no longer kept by it (gc may expire it).

        Returns:
            The id of the snapshot the tag named.

        Raises:
            InvalidNameError: a malformed tag name.
            SnapshotNotFoundError: no such tag (the message lists the tags).
            VaultFormatError: HEAD is damaged or behind committed snapshots (see `doctor`).
            WriteError: an OS error while deleting the tag.
        """
        from wrdsvault._storage.writer import Operation

        validate_tag(name)
        with self._writer(Operation("untag", name)) as writer:
            tags = self.tags()
            if name not in tags:
                committed = self._committed()
                raise SnapshotNotFoundError(
                    ref=name,
                    tags=sorted(tags),
                    newest=[sid for sid, _ in committed[-3:]][::-1],
                    committed_range=(
                        (committed[0][1].isoformat(), committed[-1][1].isoformat())
                        if committed
                        else None
                    ),
                )
            writer.delete_tag(name)
        log.info("deleted tag %s (it named %s)", name, tags[name])
        return tags[name]

    # -- retention -------------------------------------------------------------------------

    @overload
    def gc(
        self,
        *,
        keep_last: int | None = ...,
        keep_within: str | None = ...,
        keep_daily: int | None = ...,
        keep_weekly: int | None = ...,
        keep_monthly: int | None = ...,
        keep_yearly: int | None = ...,
        policy: RetentionPolicy | None = ...,
        dry_run: Literal[True],
        wait: float | None = ...,
    ) -> GcPlan: ...

    @overload
    def gc(
        self,
        *,
        keep_last: int | None = ...,
        keep_within: str | None = ...,
        keep_daily: int | None = ...,
        keep_weekly: int | None = ...,
        keep_monthly: int | None = ...,
        keep_yearly: int | None = ...,
        policy: RetentionPolicy | None = ...,
        dry_run: Literal[False] = ...,
        wait: float | None = ...,
    ) -> GcReport: ...

    def gc(
        self,
        *,
        keep_last: int | None = None,
        keep_within: str | None = None,
        keep_daily: int | None = None,
        keep_weekly: int | None = None,
        keep_monthly: int | None = None,
        keep_yearly: int | None = None,
        policy: RetentionPolicy | None = None,
        dry_run: bool = False,
        wait: float | None = None,
    ) -> GcPlan | GcReport:
        """Expire snapshots by a retention policy and delete the files nothing needs any more.

        The policy is the ``keep_*`` arguments if any is given, else ``policy``, else the one
        stored in the vault's settings (``retention``); with none, nothing expires and gc only
        deletes data files no snapshot references (left by crashed writers). Whatever the
        policy, the latest snapshot, tagged snapshots, snapshots a live reader holds and
        snapshots an export still publishes (`export_iceberg`) are kept; a file shared with a
        kept snapshot is never deleted. Expired snapshots are listed
        by `expired` (docs/retention.md).

        Args:
            keep_last: keep the N newest snapshots.
            keep_within: keep every snapshot committed within this span before the newest
                (``"90d"``, ``"12h"``, ``"2w"``, ``"6m"``, ``"1y"``).
            keep_daily, keep_weekly, keep_monthly, keep_yearly: keep the newest snapshot of
                each of the N most recent UTC days, ISO weeks, months, years that hold one.
            policy: a `RetentionPolicy` (instead of the ``keep_*`` arguments).
            dry_run: only plan: return a `GcPlan` (``plan.summary()``), change nothing.
            wait: seconds to wait for another writer (default: ``settings.lock_timeout_s``).

        Returns:
            A `GcPlan` (``dry_run``) or a `GcReport`.

        Raises:
            InvalidNameError: a rule has a bad value (a count < 1, a malformed duration).
            LockHeldError: another writer kept the lock for the whole wait.
            VaultFormatError: HEAD is damaged or behind committed snapshots (see `doctor`).
            WriteError: an OS error; every retained snapshot is still complete.
        """
        from wrdsvault import _gc
        from wrdsvault._storage.writer import Operation

        given = RetentionPolicy(
            keep_last=keep_last,
            keep_within=keep_within,
            keep_daily=keep_daily,
            keep_weekly=keep_weekly,
            keep_monthly=keep_monthly,
            keep_yearly=keep_yearly,
        )
        passed: object = policy  # untyped callers can pass anything
        if passed is not None and not isinstance(passed, RetentionPolicy):
            msg = f"policy must be a RetentionPolicy, not {type(passed).__name__}"
            raise TypeError(msg)
        if not given.empty:
            if policy is not None:
                msg = "pass either policy= or keep_* arguments, not both"
                raise TypeError(msg)
            chosen = given
        elif policy is not None:
            chosen = policy
        else:
            chosen = self.settings.retention_policy
        if dry_run:
            return _gc.plan(
                self._catalog,
                chosen,
                leased=_gc.leased_ids_if_readable(self._layout, self.settings),
            )
        with self._writer(Operation("gc"), wait=wait):
            return _gc.execute(self._catalog, self.settings, chosen, now=_gc.utc_now())

    def expired(self) -> list[ExpiredSnapshot]:
        """Every snapshot gc expired (the expiry log), oldest commit first."""
        return sorted(self._catalog.expired().values(), key=lambda e: e.snapshot_id)

    def _disk_hint(self) -> str:
        """What a full disk's warnings and errors say to do (the stored policy's yield)."""
        policy = self.settings.retention_policy
        if policy.empty:
            return (
                "no retention policy is stored: `wrdsvault gc --dry-run --keep-last 10` shows "
                "what expiring old snapshots would free"
            )
        freed = self.reclaimable_bytes(policy)
        return (
            f"`wrdsvault gc --dry-run` shows what to expire: the stored retention policy "
            f"({policy}) would free {freed:,} bytes"
        )

    def reclaimable_bytes(self, policy: RetentionPolicy | None = None) -> int:
        """Bytes a gc by ``policy`` (default: the stored one) would free, from the manifests
        alone; see `GcPlan.freed_bytes` for the exact figure (``gc(dry_run=True)``)."""
        from wrdsvault import _gc

        chosen = self.settings.retention_policy if policy is None else policy
        return _gc.reclaimable_bytes(self._catalog, chosen)

    # -- exports ---------------------------------------------------------------------------

    def export_iceberg(
        self,
        catalog: str | Mapping[str, object] | object | None = None,
        namespace: str = "wrds",
        *,
        wait: float | None = None,
    ) -> IcebergExport:
        """Publish the committed snapshots as Apache Iceberg tables, without copying data.

        One table per dataset (``<namespace>.<library>_<table>``), partitioned by year, one
        Iceberg snapshot per vault snapshot that changed it (its time is the vault commit
        time), vault tags as Iceberg tags. Incremental: snapshots already in a table are
        skipped. Writes the export record ``exports/iceberg-<key>.json``: gc keeps every vault
        snapshot the tables still name (docs/scale-out.md, docs/retention.md). Needs the
        ``iceberg`` extra.

        Args:
            catalog: a catalog URI (``"sqlite:///data/wrds-iceberg.db"``, a SQL catalog), a dict
                of pyiceberg catalog properties (``{"type": "rest", "uri": ...}``), or a
                pyiceberg ``Catalog``. Default: a SQLite file beside the vault
                (``<vault>-iceberg.db``, metadata in ``<vault>-iceberg/``).
            namespace: the Iceberg namespace of the tables (``"wrds"``).
            wait: seconds to wait for another writer (default: ``settings.lock_timeout_s``).

        Raises:
            MissingExtraError: pyiceberg is not installed (``pip install 'wrdsvault[iceberg]'``).
            IcebergExportError: a table of that name is not this vault's export, a column
                changed in a way Iceberg cannot evolve, or the catalog failed.
            LockHeldError: another writer kept the lock for the whole wait.
        """
        from wrdsvault import _iceberg
        from wrdsvault._storage.writer import Operation

        chosen = _iceberg.default_catalog_uri(self._layout) if catalog is None else catalog
        subject = f"{_iceberg.catalog_label(chosen)} {namespace}"
        with self._writer(Operation("export-iceberg", subject), wait=wait):
            return _iceberg.export(
                self._layout,
                self._catalog,
                self.settings,
                catalog=chosen,
                namespace=namespace,
                now=datetime.now(timezone.utc),
            )

    def iceberg_exports(self) -> list[ExportRecord]:
        """The export records: each Iceberg target and the vault snapshots gc keeps for it."""
        from wrdsvault.exports import read_records

        return read_records(self._layout)

    def forget_iceberg_export(
        self, catalog: str | None = None, namespace: str = "wrds", *, wait: float | None = None
    ) -> bool:
        """Remove an export's record, so gc no longer keeps the snapshots its tables name.

        The Iceberg tables are not touched: expire their old snapshots with Iceberg's tools (or
        drop the tables) first, or their time travel will find files gc deleted. ``catalog`` is
        the catalog as `iceberg_exports` names it (default: the default catalog). Returns
        whether there was a record.
        """
        from wrdsvault import _iceberg
        from wrdsvault._storage.writer import Operation

        chosen = _iceberg.default_catalog_uri(self._layout) if catalog is None else catalog
        label = _iceberg.catalog_label(chosen)
        with self._writer(Operation("export-iceberg", f"--forget {label} {namespace}"), wait=wait):
            from wrdsvault.exports import remove_record

            return remove_record(self._layout, label, namespace)

    # -- reading ---------------------------------------------------------------------------

    def _manifest(self, snapshot_id: str) -> Manifest:
        return self._catalog.manifest(snapshot_id)

    def _committed(self) -> list[tuple[str, datetime]]:
        """(id, committed_at) of every committed snapshot, oldest first."""
        return self._catalog.committed()

    def tags(self) -> dict[str, str]:
        """Tag name -> snapshot id (damaged tag files are left out; `doctor` reports them)."""
        return self._catalog.tags()

    def _resolve(self, ref: str) -> str:
        if isinstance(ref, str):  # untyped callers: resolve_ref words the TypeError
            quick = self._catalog.quick_resolve(ref)
            if quick is not None:
                return quick
        return resolve_ref(
            ref, tags=self.tags(), snapshots=self._committed(), expired=self._catalog.expired()
        )

    def snapshot(self, ref: str = "latest", *, verify: bool = False) -> Snapshot:
        """Open a read-only view pinned to one committed snapshot.

        Takes a reader lease first (``leases/``): until `Snapshot.close`, ``gc`` keeps every
        file of the snapshot, even if it expires it meanwhile. A process that cannot write the
        vault (a group member, a read-only mount) reads without one, unprotected, and logs a
        warning once (docs/retention.md).

        Args:
            ref: a tag, an exact snapshot id, ``"latest"``, or an ISO date/datetime read as-of
                (the last snapshot committed at or before the end of that day, UTC).
            verify: check and re-hash every pinned file (SHA-256) before returning. Without
                it no data file is looked at here: a dataset's files are checked when a query
                first names it (or `Snapshot.files` lists them).

        Raises:
            SnapshotNotFoundError: nothing matches, or gc expired the snapshot ``ref`` names
                (the message says when); it lists tags and newest ids.
            InvalidNameError: ``ref`` cannot be a ref.
            IntegrityError: (verify) a pinned file is missing, resized, a symlink (or behind a
                symlinked folder), unreadable (EIO, EACCES), or altered.
            VaultFormatError: the manifest is damaged (its fingerprint, over every dataset,
                does not match). A dataset entry that is malformed, or names a path that does
                not follow from its dataset, year and sha256, raises it when the dataset is
                first used (with ``verify``: here).
        """
        # DuckDB is imported with the first snapshot: a sync that finds nothing changed
        # never loads it (docs/wrds.md#how-the-sync-logs-in-and-what-db-is).
        from wrdsvault.snapshot import Snapshot

        snapshot_id = self._resolve(ref)
        renew = functools.partial(_reader_lease, self._layout, self.settings, snapshot_id)
        lease = renew()
        try:
            return Snapshot(
                self._layout,
                self._catalog.manifest(snapshot_id, lazy=True),
                verify=verify,
                query_timeout_s=self.settings.query_timeout_s,
                query_threads=self.settings.query_threads,
                query_memory_limit=self.settings.query_memory_limit,
                lease=lease,
                renew_lease=renew,
            )
        except BaseException:
            if lease is not None:
                lease.release()
            raise

    def snapshots(self) -> list[SnapshotInfo]:
        """Every committed snapshot, oldest first (not those gc expired: see `expired`)."""
        from wrdsvault.reports import SnapshotInfo

        by_id: dict[str, list[str]] = {}
        for name, sid in self.tags().items():
            by_id.setdefault(sid, []).append(name)
        out = []
        for sid, _ in self._committed():
            m = self._manifest(sid)
            out.append(
                SnapshotInfo(
                    snapshot_id=sid,
                    sequence=m.sequence,
                    committed_at=m.committed_at,
                    fingerprint=m.fingerprint,
                    datasets=tuple(sorted(m.datasets)),
                    row_count=sum(e.row_count for e in m.datasets.values()),
                    size_bytes=sum(e.size_bytes for e in m.datasets.values()),
                    tags=tuple(sorted(by_id.get(sid, ()))),
                )
            )
        return out

    def _run_latest(
        self,
        sql: str,
        params: Params,
        timeout_s: float | None,
        fetch: Callable[[duckdb.DuckDBPyRelation], T],
        dialect: str = "duckdb",
    ) -> T:
        """Run one query on the snapshot HEAD names now (``dialect``: see `Snapshot.query`).

        When HEAD has moved, the cached snapshot is replaced and closed; queries other threads
        still run on it hold their own use of its connection, so they finish first.
        """
        head = read_head(self._layout)
        with self._latest_lock:
            if self._latest is None or self._latest.id != head:
                old, self._latest = self._latest, self.snapshot("latest")
                if old is not None:
                    old.close()
            snap = self._latest
            con = snap._acquire()
        try:
            sql, params = snap._translate(sql, params, dialect)
            return con.run(sql, params, snap._timeout(timeout_s), fetch)
        finally:
            con.release()

    def query(
        self,
        sql: str,
        params: Params = None,
        *,
        timeout_s: float | None = None,
        dialect: str = "duckdb",
    ) -> pd.DataFrame:
        """Run one SELECT on the latest snapshot; see `Snapshot.query`. Thread-safe."""
        from wrdsvault._query import fetch_df

        return self._run_latest(sql, params, timeout_s, fetch_df, dialect)

    def arrow(
        self,
        sql: str,
        params: Params = None,
        *,
        timeout_s: float | None = None,
        dialect: str = "duckdb",
    ) -> pa.Table:
        """Run one SELECT on the latest snapshot and return a pyarrow Table."""
        from wrdsvault._query import fetch_arrow

        return self._run_latest(sql, params, timeout_s, fetch_arrow, dialect)

    def pl(
        self,
        sql: str,
        params: Params = None,
        *,
        timeout_s: float | None = None,
        dialect: str = "duckdb",
    ) -> Any:
        """Run one SELECT on the latest snapshot and return a polars DataFrame; see
        `Snapshot.pl` (the extra ``polars``)."""
        from wrdsvault._polars import from_arrow, require_polars
        from wrdsvault._query import fetch_arrow

        self._opened()  # a mistyped vault is the first thing to say, before a missing extra
        require_polars()
        return from_arrow(self._run_latest(sql, params, timeout_s, fetch_arrow, dialect))

    def diff(
        self,
        a: str,
        b: str = "latest",
        *,
        datasets: Sequence[str] | None = None,
        key: Mapping[str, Sequence[str]] | Sequence[str] | None = None,
        tolerance: float | None = None,
    ) -> Revision:
        """What changed from snapshot ``a`` to snapshot ``b``, row by row (docs/revisions.md).

        Only partitions whose files differ are read (unchanged years cost nothing), in the
        same sandbox as a query. Rows are matched by key; a key occurring twice in either
        snapshot is reported (`DatasetDiff.duplicate_keys`), never joined.

        Args:
            a, b: refs (tag, id, ``"latest"``, ISO date), resolved once.
            datasets: the datasets to compare (default: every dataset either snapshot holds).
            key: the key columns: one tuple for every dataset, or a dict dataset -> tuple;
                default each dataset's primary key from its spec.
            tolerance: FLOAT/DOUBLE/DECIMAL values within this absolute distance are equal
                (default: exact; NaN always equals NaN).

        Raises:
            SnapshotNotFoundError: a ref matches nothing.
            UnknownDatasetError: a named dataset is in neither snapshot.
            InvalidValueError: no key for a dataset, a key column one snapshot lacks, or a
                tolerance that is not a finite number >= 0.
            IntegrityError: a file to read is missing or damaged.
        """
        from wrdsvault.revisions import build as build_revision

        if tolerance is not None:
            if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)):
                msg = f"tolerance must be a number or None, not {type(tolerance).__name__}"
                raise TypeError(msg)
            if not (math.isfinite(tolerance) and tolerance >= 0):
                raise InvalidValueError(
                    name="tolerance", value=tolerance, rule="a finite number >= 0, or None"
                )
        if isinstance(datasets, str):
            datasets = [datasets]
        return build_revision(
            self,
            self._resolve(a),
            self._resolve(b),
            datasets=datasets,
            key=key,
            tolerance=None if tolerance is None else float(tolerance),
        )

    def query_across(
        self,
        aliases: Mapping[str, str],
        sql: str,
        params: Params = None,
        *,
        timeout_s: float | None = None,
    ) -> pd.DataFrame:
        """Run one SELECT over several snapshots; each alias names one (docs/revisions.md).

        ``wh.query_across({"old": "paper-v1", "new": "latest"}, "select ... from new.crsp.msf n
        join old.crsp.msf o using (permno, date)")``: every alias is a DuckDB catalog holding
        that snapshot's tables and sees only its pinned files, with the sandbox of `query`.

        Raises:
            InvalidNameError: an alias that is not a plain lower-case name, one DuckDB
                reserves, or one that is also a library of the snapshots.
            SnapshotNotFoundError: a ref matches nothing.
            QueryRejectedError, QueryError, QueryTimeoutError: as `Snapshot.query`.
        """
        from wrdsvault._query import fetch_df
        from wrdsvault.revisions import run_across

        return run_across(self, aliases, sql, params, timeout_s, fetch_df)

    def verify(
        self,
        ref: str = "latest",
        *,
        all_snapshots: bool = False,
        progress: VerifyProgress | None = None,
    ) -> VerifyReport:
        """Check and re-hash every file a snapshot (or every committed snapshot) references.

        Runs the checks a reader runs when it opens the snapshot (no symlinked folder on the
        way, a regular file of the recorded size), then hashes every file that passes them.

        Reads every byte (DuckDB does not check Parquet page checksums, so the manifest SHA-256
        is the only end-to-end guard); files shared by snapshots are hashed once.

        Args:
            ref: the snapshot to check (default: the latest).
            all_snapshots: check every committed snapshot instead.
            progress: called after each file with (files done, total, bytes done, total bytes).

        Returns:
            A `VerifyReport`; ``report.ok`` is False if any file is missing, resized or altered,
            or any manifest is damaged. Nothing is repaired.

        Raises:
            SnapshotNotFoundError: ``ref`` matches nothing.
        """
        from wrdsvault._verify import verify as verify_files
        from wrdsvault.reports import FileFault

        ids = [sid for sid, _ in self._committed()] if all_snapshots else [self._resolve(ref)]
        manifests: list[Manifest] = []
        faults: list[FileFault] = []
        for sid in ids:
            try:
                manifests.append(self._manifest(sid))
            except VaultFormatError as exc:
                faults.append(
                    FileFault(
                        path=f"snapshots/{sid}.json",
                        problem="manifest",
                        detail=exc.problem,
                        snapshots=(sid,),
                    )
                )
        report = verify_files(self._layout, manifests, manifest_faults=faults, progress=progress)
        return attrs.evolve(report, snapshots=tuple(ids))

    def schema_history(self, dataset: str) -> list[SchemaVersion]:
        """Every schema ``dataset`` has had, with the snapshot that introduced it, oldest first.

        Derived from the committed manifests (no separate registry file to fall out of step).
        """
        from wrdsvault.schema import SchemaVersion, diff

        validate_dataset(dataset)
        out: list[SchemaVersion] = []
        for sid, _ in self._committed():
            entry = self._manifest(sid).datasets.get(dataset)
            if entry is None:
                continue
            if out and out[-1].columns == entry.columns:
                continue
            drift = diff(dataset, out[-1].columns, entry.columns) if out else None
            out.append(
                SchemaVersion(
                    snapshot_id=sid,
                    committed_at=self._manifest(sid).committed_at,
                    columns=entry.columns,
                    drift=drift,
                )
            )
        return out

    def quarantine(self) -> list[QuarantineEntry]:
        """Failed writes kept in ``quarantine/``, oldest first (each with its reason.json)."""
        from wrdsvault._storage.quarantine import list_entries

        return list_entries(self._layout)

    def purge_quarantine(self, names: Sequence[str] | None = None) -> list[str]:
        """Delete quarantine entries (all of them when ``names`` is None); return their names.

        Raises:
            InvalidNameError: a name is not a listed entry; nothing was deleted.
        """
        from wrdsvault._storage.quarantine import purge as purge_entries
        from wrdsvault._storage.writer import Operation

        with self._writer(Operation("purge-quarantine")):
            targets = [e.name for e in self.quarantine()] if names is None else list(names)
            return purge_entries(self._layout, targets)

    def doctor(self, *, repair: bool = False) -> DoctorReport:
        """Report leftovers and damage; with ``repair``, remove what is provably garbage.

        Read-only by default. The repair takes the writer lock (breaking a stale one) and removes
        staging folders, temp files, the manifest a crashed writer left, data files no
        manifest references, reader leases of dead processes (live ones are listed as
        ``lease``) and the manifests of snapshots gc expired that no reader holds (an
        interrupted gc's work). Quarantine entries, damage, symlinks and a ``HEAD`` behind
        committed snapshots are only reported (nothing a tag or a manifest names is removed).

        Raises:
            LockHeldError: ``repair`` and a live writer holds the lock.
            WriteError: ``repair`` failed on an OS error (a full disk: `DiskSpaceError`).
        """
        from wrdsvault import _gc
        from wrdsvault._doctor import DoctorReport, examine
        from wrdsvault._storage.catalog import find_garbage
        from wrdsvault._storage.writer import Operation

        def look() -> tuple[DoctorFinding, ...]:
            return tuple(
                examine(
                    self._catalog,
                    stale_after_s=self.settings.lock_stale_after_s,
                    file_mode=self.settings.file_mode,
                    leased=_gc.leased_ids_if_readable(self._layout, self.settings),
                    lease_stale_after_s=self.settings.lease_stale_after_s,
                )
            )

        findings = look()
        if not repair:
            return DoctorReport(findings=findings)
        with self._writer(Operation("doctor-repair")):
            # Taking the lock broke a stale lock and ran recovery (staging, temp files, the
            # uncommitted manifest); orphan data files are garbage now that no writer runs, and
            # leases of dead readers at any time, and the manifests of expired snapshots no
            # reader holds (the leases are read after the expiry was made durable by the gc
            # that recorded it).
            garbage = find_garbage(
                self._catalog,
                leased=_gc.leased_ids(self._layout, self.settings),
                lease_stale_after_s=self.settings.lease_stale_after_s,
            )
            for item in garbage:
                if item.kind in ("orphan-file", "dead-lease", "expired-manifest"):
                    item.path.unlink(missing_ok=True)
                    fsync_dir(item.path.parent)
        after = {(f.kind, f.path) for f in look()}
        removed = [
            f.path
            for f in findings
            if (f.garbage or f.kind == "stale-lock") and (f.kind, f.path) not in after
        ]
        return DoctorReport(findings=findings, repaired=tuple(removed))

    def backup(
        self,
        dest: str | os.PathLike[str],
        *,
        verify: bool = False,
        progress: BackupProgress | None = None,
        wait: float | None = None,
        storage_options: Mapping[str, Any] | None = None,
    ) -> BackupReport:
        """Copy every committed snapshot (and tag) into the backup vault ``dest``, incrementally.

        The destination is a vault in the same format (created if absent or empty):
        ``Warehouse(dest)`` reads, verifies and tags it. Only files it lacks are copied (by
        content address; a file already there is skipped by name and size). Each copied file is
        fsynced and re-hashed at the destination before the manifests, then the tags, then its
        ``HEAD`` are written, under the destination's writer lock; an interrupted backup leaves
        the previous one current and complete (docs/backup.md). The source is read under reader
        leases, never under its writer lock: a sync may commit meanwhile (its snapshot is in
        the next backup). Snapshots the source has expired stay in the backup.

        ``dest`` may also be an object-storage URL (``s3://bucket/prefix``, through fsspec;
        needs ``pip install 'wrdsvault[s3]'``): the same layout, one object per file, data
        objects first and ``HEAD`` last (a PUT is atomic per object); no lock there, so run one
        backup into a prefix at a time (docs/backup.md#object-storage).

        Args:
            dest: the backup folder (another disk, an NFS or SMB mount), or an fsspec URL.
            verify: also re-hash every file already in the backup (a restore drill); damaged
                ones are copied again, damage in snapshots only the backup keeps is reported
                in ``faults``.
            progress: called after each data file with (files done, total, bytes done, total).
            wait: seconds to wait for another backup into ``dest`` (default: the lock timeout).
            storage_options: options of the fsspec file system of a URL ``dest`` (s3fs:
                ``key``, ``secret``, ``profile``, ``client_kwargs={"endpoint_url": ...}``).

        Raises:
            MissingExtraError: a URL ``dest`` without the ``s3`` extra installed.
            BackupError: a bad destination (a file, a folder with content that is not a vault,
                the vault itself or a folder in it, a symlink inside it, the backup of another
                vault or one newer than this vault), a vault file that fails its manifest, or a
                failing destination; the previous backup stays current.
            DiskSpaceError: the destination filled up; the previous backup stays current.
            VaultAccessError: the destination may not be written.
            LockHeldError: another backup into ``dest`` kept its lock for the whole wait.
        """
        from wrdsvault import _backup, _remote

        self._opened()  # this vault first: a mistyped source creates no backup
        if _remote.is_remote(dest):
            assert isinstance(dest, str)
            return _remote.backup_remote(
                self._layout,
                self._catalog,
                _remote.RemoteVault(dest, storage_options),
                take_lease=functools.partial(_reader_lease, self._layout, self.settings),
                verify=verify,
                progress=progress,
            )
        real = _backup.check_destination_path(self.root, Path(os.fspath(dest)).expanduser())
        exists = (real / "vault.json").exists()
        try:
            target = Warehouse(real, settings=None if exists else self.settings, create=True)
        except VaultAccessError as exc:
            raise BackupError(destination=str(dest), reason=exc.message) from exc
        except VaultFormatError as exc:
            raise BackupError(
                destination=str(dest), reason=f"it cannot be opened as a vault ({exc.problem})"
            ) from exc
        timeout = target.settings.lock_timeout_s if wait is None else _wait_s(wait)
        return _backup.backup(
            self._layout,
            self._catalog,
            real,
            dest_settings=target.settings,
            dest_layout=target._layout,
            take_lease=functools.partial(_reader_lease, self._layout, self.settings),
            timeout_s=timeout,
            verify=verify,
            progress=progress,
        )

    def repair(
        self,
        source: str | os.PathLike[str],
        *,
        wait: float | None = None,
        storage_options: Mapping[str, Any] | None = None,
    ) -> RepairReport:
        """Restore every missing or damaged file of every committed snapshot from a backup.

        Runs ``verify`` over all committed snapshots and restores each file it finds missing,
        resized or altered by its hash from the backup vault ``source``: copied to a temp file,
        fsynced, checked against the manifest, renamed over the damaged name (a damaged file is
        never written into). Missing or unreadable manifests of committed snapshots are put back
        first when the backup has the same manifest. Runs under the writer lock. ``source`` may
        be an object-storage URL (``s3://bucket/prefix``, with ``storage_options`` as for
        `backup`): each object is downloaded, hashed and checked the same way.

        Returns:
            A `RepairReport`: what was restored and what could not be (``ok`` is False then).

        Raises:
            BackupError: ``source`` is this vault or not a vault, or the object store failed;
                nothing was written (or what was restored stays restored).
            MissingExtraError: a URL ``source`` without the ``s3`` extra installed.
            WriteError: an OS error while restoring (a full disk: `DiskSpaceError`); the files
                restored until then stay restored.
            LockHeldError: another writer kept the lock for the whole wait.
        """
        from wrdsvault import _backup, _remote
        from wrdsvault._storage.writer import Operation

        started = time.monotonic()
        self._opened()  # this vault first: NotAVaultError names a mistyped vault, not the backup
        if _remote.is_remote(source):
            assert isinstance(source, str)
            remote = _remote.RemoteVault(source, storage_options)
            with (
                _remote.remote_errors(source, "repair"),
                self._writer(Operation("repair", source), wait=wait) as writer,
            ):
                result = _backup.repair(
                    self._layout,
                    self._catalog,
                    writer,
                    remote,
                    verify_all=lambda: self.verify(all_snapshots=True).faults,
                )
            return _backup.repair_report(source, started, result)
        src = Path(os.path.realpath(Path(os.fspath(source)).expanduser()))
        if src == self.root:
            raise BackupError(destination=str(source), reason="it is this vault itself")
        try:
            backup_vault = Warehouse(src, create=False)
        except VaultFormatError as exc:
            raise BackupError(
                destination=str(source), reason=f"it is not a backup vault ({exc.problem})"
            ) from exc
        with self._writer(Operation("repair", str(src)), wait=wait) as writer:
            result = _backup.repair(
                self._layout,
                self._catalog,
                writer,
                _backup.LocalBackup(backup_vault._layout),
                verify_all=lambda: self.verify(all_snapshots=True).faults,
            )
        return _backup.repair_report(src, started, result)

    @staticmethod
    def restore(
        source: str | os.PathLike[str],
        path: str | os.PathLike[str],
        *,
        storage_options: Mapping[str, Any] | None = None,
        wait: float | None = None,
    ) -> BackupReport:
        """Rebuild a vault from a backup into the new (or empty) folder ``path``.

        ``source`` is a backup vault: a folder, or an object-storage URL (``s3://bucket/prefix``
        with ``storage_options`` as for `backup`; needs the ``s3`` extra). Every committed
        snapshot of the backup, its tags and its settings are copied into ``path``; each data
        file is hashed and checked against its manifest and fsynced before the manifests, tags
        and ``HEAD`` are written (``HEAD`` last). Open the result with ``Warehouse(path)``.

        Returns:
            A `BackupReport` whose ``destination`` is the new vault.

        Raises:
            BackupError: ``path`` is a file or a folder with content, ``source`` is not a
                backup, one of its files does not match its manifest, or the store failed.
            MissingExtraError: a URL ``source`` without the ``s3`` extra installed.
            DiskSpaceError, VaultAccessError: ``path`` filled up or may not be written.
        """
        from wrdsvault import _backup, _remote

        dest = Path(os.path.realpath(Path(os.fspath(path)).expanduser()))
        if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
            raise BackupError(
                destination=str(path),
                reason="a restore needs a new or empty folder; this one is a file or has content",
            )
        if not _remote.is_remote(source):
            with Warehouse(Path(os.fspath(source)).expanduser(), create=False) as backup:
                return backup.backup(dest, wait=wait)
        assert isinstance(source, str)
        opened: list[Warehouse] = []

        def open_vault(
            root: Path, settings: VaultSettings
        ) -> tuple[Layout, VaultSettings, Catalog]:
            opened.append(Warehouse(root, settings=settings, create=True))
            return opened[0]._layout, opened[0].settings, opened[0]._catalog

        try:
            with _backup.os_errors(dest, "restore"):
                return _remote.restore(
                    _remote.RemoteVault(source, storage_options),
                    dest,
                    timeout_s=_wait_s(wait) if wait is not None else 0.0,
                    open_vault=open_vault,
                )
        finally:
            for wh in opened:
                wh.close()

    def lock_info(self) -> LockInfo:
        """The writer lock as a human needs to see it: ``state`` (``free``, ``held``,
        ``stale: <why>``, ``unknown: <why>``), the owner's pid, host, start, operation,
        heartbeat age, token. Needs no write access."""
        from wrdsvault._storage.lock_tools import describe_lock
        from wrdsvault.reports import LockInfo

        return describe_lock(
            self._layout.lock,
            stale_after_s=self.settings.lock_stale_after_s,
            file_mode=self.settings.file_mode,
        ) or LockInfo(state="free", path=str(self._layout.lock))

    def break_lock(self, *, expect_token: str | None = None) -> LockInfo:
        """Break the writer lock by hand (``wrdsvault unlock --force``).

        Args:
            expect_token: the ``incarnation`` shown by `lock_info`; if the lock changed since,
                nothing is broken.

        Returns:
            What was broken (``broken`` is False if the lock was free).

        Raises:
            VaultAccessError: this process may not write the vault folder.
            LockBreakRefusedError: the owner is a live process on this host (stop it first),
                the lock changed since it was shown, or its staleness cannot be judged here.
        """
        from wrdsvault._storage.lock_tools import break_lock

        return break_lock(
            self._layout.lock,
            expect_token=expect_token,
            stale_after_s=self.settings.lock_stale_after_s,
            file_mode=self.settings.file_mode,
        )

    def disk(self) -> DiskState:
        """How full the vault's file system is, against the watermarks."""
        self._opened()
        return self._guard.state()

    def status(self, *, max_age_s: float | None = None) -> VaultStatus:
        """What the vault holds now: latest snapshot, datasets, tags, the writer lock.

        Args:
            max_age_s: flag each dataset whose last sync (its ``synced_at``) is older than
                this many seconds as ``stale``, and the vault if any is (or it holds none).

        Raises:
            InvalidValueError: ``max_age_s`` is not a number > 0.
        """
        from wrdsvault.reports import DatasetSummary, VaultStatus

        if max_age_s is not None:
            max_age_s = _positive_s("max_age_s", max_age_s)
        now = datetime.now(timezone.utc)
        committed = self._committed()
        latest = self._manifest(committed[-1][0]) if committed else None
        datasets = []
        if latest is not None:
            for name, e in sorted(latest.datasets.items()):
                years = [p.year for p in e.partitions if p.year is not None]
                age = _age_s(e.synced_at, now)
                datasets.append(
                    DatasetSummary(
                        name=name,
                        row_count=e.row_count,
                        size_bytes=e.size_bytes,
                        partitions=len(e.partitions),
                        first_year=min(years) if years else None,
                        last_year=max(years) if years else None,
                        source=e.source,
                        comment=e.comment,
                        synced_at=e.synced_at,
                        age_s=age,
                        stale=None if max_age_s is None else (age is None or age > max_age_s),
                    )
                )
        lock = self.lock_info()
        return VaultStatus(
            root=str(self.root),
            format_version=self._format_version,
            snapshot_count=len(committed),
            latest_snapshot_id=latest.snapshot_id if latest else None,
            latest_committed_at=latest.committed_at if latest else None,
            fingerprint=latest.fingerprint if latest else None,
            datasets=tuple(datasets),
            tags=self.tags(),
            lock_holder=None if lock.free else lock,
            disk=self.disk(),
            drift={
                d.name: f"{h[-1].drift.summary()} (in {h[-1].snapshot_id})"
                for d in datasets
                if len(h := self.schema_history(d.name)) > 1 and h[-1].drift is not None
            },
            quarantined=len(self.quarantine()),
            reclaimable_bytes=self.reclaimable_bytes(),
            expired_count=len(self._catalog.expired()),
            max_age_s=max_age_s,
        )

    def close(self) -> None:
        """Close cached query connections and the source. Idempotent."""
        with self._latest_lock:
            if self._latest is not None:
                self._latest.close()
                self._latest = None
        if self.source is not None:
            self.source.close()

    def __enter__(self) -> Warehouse:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _recipes(
    head: Manifest,
) -> tuple[list[DatasetSpec], dict[str, frozenset[int] | None], list[str]]:
    """The spec and years of every dataset of ``head``, as its syncs recorded them.

    The partition column is the entry's own (what the built-in spec, ``date_column=`` or
    ``"auto"`` gave then); a built-in dataset partitioned as its spec keeps the spec itself.
    """
    specs: list[DatasetSpec] = []
    years: dict[str, frozenset[int] | None] = {}
    notes: list[str] = []
    for name, entry in sorted(head.datasets.items()):
        base = BUILTIN_SPECS.get(name)
        if base is not None and base.partition_column == entry.partition_column:
            specs.append(base)
        else:
            specs.append(
                DatasetSpec(
                    name=name,
                    partition_column=entry.partition_column,
                    primary_key=base.primary_key if base else entry.primary_key,
                    title=base.title if base else "",
                )
            )
        if entry.recipe is None:
            years[name] = None
            notes.append(
                f"{name}: its manifest entry records no sync options (synced by an older "
                f"wrdsvault); syncing every year, partitioned by {entry.partition_column!r}"
            )
        else:
            years[name] = None if entry.recipe.years is None else frozenset(entry.recipe.years)
    return specs, years, notes


def _reader_lease(layout: Layout, settings: VaultSettings, snapshot_id: str) -> Lease | None:
    """Take a reader lease on ``snapshot_id``, then check that it may still be read.

    None if this process cannot write a lease (it reads unprotected; `try_take_lease` warns).
    A function of the layout and settings, not a method: a `Snapshot` keeps it to renew its
    lease after ``close``, and must not keep the `Warehouse` alive.
    """
    lease = try_take_lease(
        layout,
        snapshot_id,
        file_mode=settings.file_mode,
        dir_mode=settings.dir_mode,
        refresh_s=settings.lease_refresh_s,
    )
    # The expiry check comes after the lease is durable and before any file or manifest of the
    # snapshot is read. gc records an expiry durably before it reads the leases, so a reader
    # that finds the snapshot not expired now is seen by every later gc (docs/retention.md).
    catalog = Catalog(layout)
    try:
        expired = catalog.expired()
        if snapshot_id in expired:
            raise not_found_error(
                snapshot_id,
                tags=catalog.tags(),
                snapshots=catalog.committed(),
                expired=expired,
                expired_id=snapshot_id,
            )
    except BaseException:
        if lease is not None:
            lease.release()
        raise
    return lease


def _policy(value: object) -> DriftPolicy:
    from wrdsvault.schema import DRIFT_POLICIES

    if value not in DRIFT_POLICIES:
        raise InvalidValueError(
            name="drift policy", value=value, rule=f"one of {', '.join(DRIFT_POLICIES)}"
        )
    return value


def _age_s(synced_at: str, now: datetime) -> float | None:
    """Seconds from a manifest's ``synced_at`` to ``now``; None if it is empty or unreadable."""
    try:
        return max(0.0, (now - parse_timestamp(synced_at)).total_seconds())
    except (ValueError, OverflowError):
        return None


def _positive_s(name: str, value: object) -> float:
    """A number of seconds > 0 (TypeError, `InvalidValueError` otherwise)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        msg = f"{name} must be a number of seconds, not {type(value).__name__}"
        raise TypeError(msg)
    if not (value > 0 and value != float("inf")):  # NaN too
        raise InvalidValueError(name=name, value=value, rule="a number of seconds > 0")
    return float(value)


def _wait_s(value: object) -> float:
    """``wait=`` as seconds: a number >= 0 (TypeError, `InvalidValueError` otherwise)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        msg = f"wait must be a number of seconds or None, not {type(value).__name__}"
        raise TypeError(msg)
    if not value >= 0:  # NaN too
        raise InvalidValueError(name="wait", value=value, rule="a number of seconds >= 0")
    return float(value)


def _years(years: Iterable[int]) -> frozenset[int]:
    out = set()
    for y in years:
        if not isinstance(y, int) or isinstance(y, bool) or not 1 <= y <= 9999:
            raise InvalidValueError(name="year", value=y, rule="an int from 1 to 9999")
        out.add(y)
    if not out:
        raise InvalidValueError(
            name="years", value=[], rule="years= is empty; omit it to sync every year"
        )
    return frozenset(out)


def _open_root(
    path: Path, settings: VaultSettings | None, *, create: bool, absent_ok: bool
) -> tuple[Layout, VaultSettings, int] | None:
    """Open the vault at ``path``; return its layout, settings and format version.

    A missing or empty folder holds no vault: with ``create`` the vault is created there, with
    ``absent_ok`` the answer is None (and nothing is touched), else `NotAVaultError`. A file,
    or a folder with other content, is always a `NotAVaultError`.
    """
    initial = settings or VaultSettings()
    try:
        if not path.exists():
            if not create:
                if absent_ok:
                    return None
                raise NotAVaultError(path=str(path), problem="no such folder")
            path.absolute().parent.mkdir(parents=True, exist_ok=True)
            make_dirs(path.absolute(), mode=initial.dir_mode)  # only the root gets dir_mode
        root = Path(os.path.realpath(path))
        st = root.stat()
    except OSError as exc:
        raise VaultFormatError(path=str(path), problem=f"cannot open the folder ({exc})") from exc
    if not stat.S_ISDIR(st.st_mode):
        raise NotAVaultError(path=str(root), problem="a file, not a folder")
    layout = Layout(root)
    if not layout.vault_json.exists():
        try:
            empty = not any(root.iterdir())
        except OSError as exc:
            raise VaultFormatError(
                path=str(root), problem=f"cannot list the folder ({exc})"
            ) from exc
        if not empty:
            raise NotAVaultError(
                path=str(root),
                problem="the folder has content but no vault.json; a vault needs a new or "
                "empty folder",
            )
        if not create:
            if absent_ok:
                return None
            raise NotAVaultError(path=str(root), problem="an empty folder")
        try:
            _create_vault_json(layout, initial)
        except OSError as exc:
            if exc.errno in NO_WRITE_ACCESS:
                raise VaultAccessError(
                    path=str(root), operation="creating a vault", reason=str(exc)
                ) from exc
            raise VaultFormatError(
                path=str(root), problem=f"cannot create vault.json ({exc})"
            ) from exc
    try:
        obj = json.loads(layout.vault_json.read_bytes())
        version = int(obj["format_version"])
        stored = obj.get("settings", {})
        if not isinstance(stored, dict):
            raise TypeError("settings is not an object")
    except (OSError, ValueError, KeyError, TypeError, OverflowError, RecursionError) as exc:
        raise VaultFormatError(
            path=str(layout.vault_json), problem=f"unreadable vault.json ({exc})"
        ) from exc
    if version > FORMAT_VERSION:
        raise VaultFormatError(
            path=str(layout.vault_json),
            problem=f"vault format {version} is newer than this wrdsvault reads "
            f"({FORMAT_VERSION}); upgrade wrdsvault",
        )
    if settings is None:
        settings = VaultSettings.from_json(stored, where=str(layout.vault_json)).with_env()
    return layout, settings, version


def _create_vault_json(layout: Layout, settings: VaultSettings) -> None:
    """Create vault.json if absent, atomically and durably (another process may win the race)."""
    from wrdsvault.settings import dump

    os.chmod(layout.root, settings.dir_mode)
    data = dump(
        settings,
        format_version=FORMAT_VERSION,
        created_at=format_timestamp(datetime.now(timezone.utc)),
    )
    put_if_absent(layout.vault_json, data, mode=settings.file_mode)  # else: another process's
