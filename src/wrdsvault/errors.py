"""Every error wrdsvault raises, in one place.

Only these (plus ``TypeError`` for arguments of the wrong type) escape the public API; errors from
DuckDB, pyarrow, psycopg and the operating system are re-raised as one of them with ``from exc``.
Each message says what happened and what to do next.

```
WrdsVaultError
├─ InvalidNameError(ValueError)        a dataset, tag, ref or entry name fails its rule
├─ InvalidValueError(ValueError)       a setting or argument value is out of range
├─ UnknownDatasetError(LookupError)    the dataset is not in the snapshot / not known to the source
├─ SnapshotNotFoundError(LookupError)  no snapshot matches the ref (or gc expired it); lists all
├─ QueryRejectedError(ValueError)      SQL other than one read-only SELECT
├─ QueryError(ValueError)              DuckDB could not run the SELECT (syntax, unknown column, ...)
├─ QueryTimeoutError(TimeoutError)     a query ran past its time limit and was interrupted
├─ SourceRequiredError                 sync() on a Warehouse opened without a source
├─ MissingExtraError(ImportError)      an optional dependency is missing; names the extra
├─ VaultFormatError                    the folder is not a vault, or one newer than this wrdsvault
│  └─ NotAVaultError                    reading a path that holds no vault; nothing was created
├─ IntegrityError                      a pinned file is missing, resized or altered
├─ LockHeldError(TimeoutError)         another writer holds the vault; names the holder
├─ LockBreakRefusedError               breaking the lock by hand was refused; nothing was broken
├─ VaultAccessError(PermissionError)   a write (sync, tag, unlock, ...) without write access
├─ DiskSpaceError                      not enough free space to write safely
├─ CommitOutcomeUnknownError           HEAD names the new snapshot but its last fsync failed
├─ TagExistsError                      the tag already names another snapshot (pass force=True)
├─ WriteError                          a drop, tag, repair or quarantine purge hit an OS error
├─ BackupError                         a backup or repair was refused or failed; nothing committed
├─ SyncError                           nothing was committed; the previous snapshot stays current
│  ├─ SchemaDriftError                  the source's columns changed and the policy refuses it
│  └─ ValidationFailedError             a staged partition failed a validation rule
└─ SourceError                         the data source failed (wraps the driver's error)
   ├─ SourceUnavailableError            unreachable or the connection broke (retryable)
   └─ SourceAuthError                   the login was refused (never echoes a secret)
```
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from wrdsvault.schema import SchemaDrift
    from wrdsvault.validation import ValidationReport

__all__ = [
    "BackupError",
    "CommitOutcomeUnknownError",
    "DiskSpaceError",
    "IntegrityError",
    "InvalidNameError",
    "InvalidValueError",
    "LockBreakRefusedError",
    "LockHeldError",
    "MissingExtraError",
    "NotAVaultError",
    "QueryError",
    "QueryRejectedError",
    "QueryTimeoutError",
    "SchemaDriftError",
    "SnapshotNotFoundError",
    "SourceAuthError",
    "SourceError",
    "SourceRequiredError",
    "SourceUnavailableError",
    "SyncError",
    "TagExistsError",
    "UnknownDatasetError",
    "ValidationFailedError",
    "VaultAccessError",
    "VaultFormatError",
    "WrdsVaultError",
    "WriteError",
]


class WrdsVaultError(Exception):
    """Base class of every wrdsvault error.

    Subclasses take keyword-only evidence (kept as attributes) and build the message from it, so
    that callers can react to the facts and not parse strings. Instances pickle (they cross process
    boundaries in the CLI and in multi-process readers).

    Each subclass declares its evidence attributes as class annotations (no class-level values),
    so a type checker knows ``exc.problem`` etc.; the values live on the instance and in
    ``_evidence``, which is what ``__reduce__`` pickles.
    """

    message: str
    _evidence: dict[str, Any]

    def __init__(self, message: str, **evidence: Any) -> None:
        super().__init__(message)
        self.message = message
        self._evidence = evidence
        for key, value in evidence.items():
            setattr(self, key, value)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.message, self._evidence))

    def __str__(self) -> str:
        return self.message


def _rebuild(cls: type[WrdsVaultError], message: str, evidence: dict[str, Any]) -> WrdsVaultError:
    err = cls.__new__(cls)
    WrdsVaultError.__init__(err, message, **evidence)
    return err


class InvalidNameError(WrdsVaultError, ValueError):
    """A dataset name, tag, snapshot ref or quarantine entry name does not match its pattern.

    Nothing was written. A *value* out of range (a setting, a time limit, a year) is an
    `InvalidValueError` instead.
    """

    kind: str
    value: object
    rule: str

    def __init__(self, *, kind: str, value: object, rule: str) -> None:
        super().__init__(
            f"invalid {kind} {value!r}: {rule}",
            kind=kind,
            value=value,
            rule=rule,
        )


class InvalidValueError(WrdsVaultError, ValueError):
    """A setting or an argument has a value outside what it accepts. Nothing was written.

    Raised for `VaultSettings` fields (a time limit that is not a finite number > 0, a fraction
    outside its range, an unknown compression or drift policy, ...), ``WRDSVAULT_*`` variables
    (``name`` is the variable), ``timeout_s=`` of a query, ``years=`` and ``drift=`` of a sync,
    and the parameters of the bundled sources. A value of the wrong *type* is a ``TypeError``.
    """

    name: str
    value: object
    rule: str

    def __init__(self, *, name: str, value: object, rule: str) -> None:
        super().__init__(
            f"invalid {name} {value!r}: {rule}",
            name=name,
            value=value,
            rule=rule,
        )


class UnknownDatasetError(WrdsVaultError, LookupError):
    """A dataset is not part of the snapshot, or not known to the source."""

    dataset: str
    known: list[str]

    def __init__(self, *, dataset: str, known: list[str], hint: str = "") -> None:
        listed = ", ".join(known) if known else "(none)"
        text = f"unknown dataset {dataset!r}; known: {listed}"
        super().__init__(f"{text}. {hint}" if hint else text, dataset=dataset, known=known)


class SnapshotNotFoundError(WrdsVaultError, LookupError):
    """No committed snapshot matches the ref, or the one it names was expired by ``gc``.

    ``expired_id`` and ``expired_at`` are set when the ref names (or, as of a date, falls on) a
    snapshot that gc expired: it is listed in ``wrdsvault expired``, its files may be gone.
    """

    ref: str
    tags: list[str]
    newest: list[str]
    committed_range: tuple[str, str] | None
    expired_id: str | None
    expired_at: str | None

    def __init__(
        self,
        *,
        ref: str,
        tags: list[str],
        newest: list[str],
        committed_range: tuple[str, str] | None,
        expired_id: str | None = None,
        expired_at: str | None = None,
        expired_policy: str | None = None,
    ) -> None:
        if expired_id is not None:
            named = "" if ref == expired_id else f" ({ref!r} names it)"
            by = f" by the policy {expired_policy}" if expired_policy else ""
            text = (
                f"snapshot {expired_id}{named} was expired by gc at {expired_at}{by}; its files "
                "may be deleted. To read it again, restore the vault from a backup taken before "
                f"then; or use a retained snapshot (newest ids: {', '.join(newest) or '(none)'}; "
                f"tags: {', '.join(tags) if tags else '(none)'}). Tag a snapshot to keep it from "
                "future gc runs"
            )
        elif committed_range is None:
            text = (
                f"no snapshot matches {ref!r}: the vault has no committed snapshot yet; run sync()"
            )
        else:
            text = (
                f"no snapshot matches {ref!r}. Snapshots were committed from {committed_range[0]} "
                f"to {committed_range[1]}; newest ids: {', '.join(newest)}; "
                f"tags: {', '.join(tags) if tags else '(none)'}. "
                "A ref is a tag, an exact id, 'latest', or an ISO date/datetime (as-of, UTC)."
            )
        super().__init__(
            text,
            ref=ref,
            tags=tags,
            newest=newest,
            committed_range=committed_range,
            expired_id=expired_id,
            expired_at=expired_at,
        )


class QueryRejectedError(WrdsVaultError, ValueError):
    """The SQL is not exactly one read-only SELECT statement."""

    statement_type: str
    reason: str

    def __init__(self, *, statement_type: str, reason: str) -> None:
        super().__init__(
            f"query rejected ({statement_type}): {reason}. Only one SELECT statement over the "
            "snapshot's tables is allowed per call.",
            statement_type=statement_type,
            reason=reason,
        )


class QueryError(WrdsVaultError, ValueError):
    """DuckDB could not run an allowed query (syntax error, unknown table or column, ...)."""

    sql: str
    reason: str

    def __init__(self, *, sql: str, reason: str) -> None:
        super().__init__(
            f"query failed: {reason}. Tables are named as on WRDS (e.g. crsp.msf); "
            "`wrdsvault status` lists the datasets of the snapshot",
            sql=sql,
            reason=reason,
        )


class QueryTimeoutError(WrdsVaultError, TimeoutError):
    """A query ran past its time limit and was interrupted."""

    timeout_s: float

    def __init__(self, *, timeout_s: float) -> None:
        super().__init__(
            f"query interrupted after {timeout_s:g} s; narrow it (filter years or permnos) or pass "
            "a larger timeout_s",
            timeout_s=timeout_s,
        )


class SourceRequiredError(WrdsVaultError):
    """A write needs a data source and the Warehouse was opened without one."""

    operation: str

    def __init__(self, *, operation: str) -> None:
        super().__init__(
            f"{operation} needs a data source: open the vault with "
            "Warehouse(root, source=WrdsSource()) or source=SampleSource()",
            operation=operation,
        )


class MissingExtraError(WrdsVaultError, ImportError):
    """A feature needs an optional dependency that is not installed; the message names the
    extra that installs it (``pip install 'wrdsvault[polars]'``)."""

    module: str
    extra: str
    reason: str

    def __init__(self, *, module: str, extra: str, reason: str) -> None:
        super().__init__(
            f"this needs the optional package {module!r}, which is not installed ({reason}): "
            f"pip install 'wrdsvault[{extra}]'",
            module=module,
            extra=extra,
            reason=reason,
        )


class VaultFormatError(WrdsVaultError):
    """The folder is not a wrdsvault vault, is damaged, or was written by a newer wrdsvault."""

    path: str
    problem: str

    def __init__(self, *, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}", path=path, problem=problem)


class NotAVaultError(VaultFormatError):
    """The path holds no vault: no such folder, an empty folder, a file, or a folder with other
    content. Raised by every read (and by every write but ``sync``); nothing was created.

    Only ``sync`` (or ``Warehouse(path, create=True)``) makes a vault, so a mistyped path never
    leaves an empty vault behind.
    """

    path: str
    problem: str

    def __init__(self, *, path: str, problem: str) -> None:
        WrdsVaultError.__init__(
            self,
            f"{path} is not a wrdsvault vault ({problem}); nothing was created there. Check the "
            "path (or $WRDSVAULT_VAULT). To make a vault, sync into a new or empty folder: "
            f"`wrdsvault sync --vault {path} crsp.msf` (from WRDS; `--source sample` for "
            "synthetic data), Warehouse(path, source=...).sync(...) in Python, or "
            "`wrdsvault demo DIR` for a demo vault",
            path=path,
            problem=problem,
        )


class IntegrityError(WrdsVaultError):
    """A file pinned by a snapshot is missing, has the wrong size, or fails its checksum."""

    path: str
    problem: str
    snapshot_id: str | None

    def __init__(self, *, path: str, problem: str, snapshot_id: str | None = None) -> None:
        where = f" (snapshot {snapshot_id})" if snapshot_id else ""
        super().__init__(
            f"integrity check failed for {path}{where}: {problem}. Run `wrdsvault verify` to list "
            "every damaged file; re-sync the dataset to restore it",
            path=path,
            problem=problem,
            snapshot_id=snapshot_id,
        )


class LockHeldError(WrdsVaultError, TimeoutError):
    """Another writer holds the vault's lock."""

    lock_path: str
    holder: dict[str, Any]
    waited_s: float

    def __init__(self, *, lock_path: str, holder: dict[str, Any], waited_s: float) -> None:
        who = (
            ", ".join(
                f"{k}={holder[k]}"
                for k in ("pid", "host", "acquired_at", "operation")
                if k in holder
            )
            or "unknown holder"
        )
        super().__init__(
            f"the vault is locked by another writer ({who}); waited {waited_s:.1f} s. Wait for it "
            "to finish (pass wait=... / --wait), or, if that process is gone, run `wrdsvault "
            f"unlock` to see the owner of {lock_path} and break it (a live owner on this host is "
            "never broken)",
            lock_path=lock_path,
            holder=holder,
            waited_s=waited_s,
        )


class LockBreakRefusedError(WrdsVaultError):
    """Breaking the writer lock by hand (`Warehouse.break_lock`, ``wrdsvault unlock --force``)
    was refused; nothing was broken.

    ``reason`` says why: its owner is a live process on this host, the lock changed since it was
    shown, its staleness cannot be judged here, or another process is breaking or taking it
    right now. ``holder`` is the lock as it was seen (`LockInfo.to_json`), empty if free.
    """

    lock_path: str
    holder: dict[str, Any]
    reason: str

    def __init__(self, *, lock_path: str, holder: dict[str, Any], reason: str) -> None:
        super().__init__(
            f"refusing to break the writer lock {lock_path}: {reason}; nothing was broken",
            lock_path=lock_path,
            holder=holder,
            reason=reason,
        )


class VaultAccessError(WrdsVaultError, PermissionError):
    """An operation that writes needs write access to the vault folder, which this process lacks.

    A member of the vault's group (``group_access`` gives the group read access only), another
    user, or a read-only mount. Reading (status, snapshots, query, verify, doctor) works without it.
    """

    path: str
    operation: str
    reason: str

    def __init__(self, *, path: str, operation: str, reason: str) -> None:
        super().__init__(
            f"{operation} needs write access to the vault folder {path}, which this process does "
            f"not have ({reason}). Run it as a user who may write the vault (its owner) on a "
            "mount that is not read-only; reading (status, snapshots, query, verify, doctor "
            "without --repair) works without write access",
            path=path,
            operation=operation,
            reason=reason,
        )


class DiskSpaceError(WrdsVaultError):
    """Not enough free space to write safely.

    ``needed_bytes`` is what the refused write needed (twice its expected size), or None when it
    is not known: a disk or quota that fills up mid-write does not say how much more was needed.
    ``free_bytes`` is the space free to this user then (None if it could not be read).
    """

    path: str
    needed_bytes: int | None
    free_bytes: int | None
    reason: str

    def __init__(
        self, *, path: str, needed_bytes: int | None, free_bytes: int | None, reason: str
    ) -> None:
        needed = "unknown" if needed_bytes is None else f"{needed_bytes:,} bytes"
        free = "unknown" if free_bytes is None else f"{free_bytes:,} bytes"
        super().__init__(
            f"not enough disk space at {path}: {reason} (needed: {needed}; free: {free}). "
            "Free space or move the vault; nothing was committed",
            path=path,
            needed_bytes=needed_bytes,
            free_bytes=free_bytes,
            reason=reason,
        )


class SyncError(WrdsVaultError):
    """A sync failed; nothing was committed and the previous snapshot stays current."""

    dataset: str
    reason: str

    def __init__(self, *, dataset: str, reason: str) -> None:
        super().__init__(
            f"sync of {dataset} failed: {reason}. Nothing was committed; the previous snapshot "
            "stays current",
            dataset=dataset,
            reason=reason,
        )


class CommitOutcomeUnknownError(WrdsVaultError):
    """HEAD names the new snapshot but the fsync that makes it durable failed (see docs/design).

    Readers see the new snapshot now; after a power loss the vault may come back at the previous
    one. Nothing is retried (after a failed fsync the data must be treated as lost).
    """

    snapshot_id: str
    reason: str

    def __init__(self, *, snapshot_id: str, reason: str) -> None:
        super().__init__(
            f"commit outcome unknown: HEAD names the new snapshot {snapshot_id}, but making it "
            f"durable failed ({reason}). Check the disk; after a crash or power loss, run "
            "`wrdsvault status` and sync again if the previous snapshot is current",
            snapshot_id=snapshot_id,
            reason=reason,
        )


class TagExistsError(WrdsVaultError):
    """The tag already names another snapshot; moving it needs ``force=True``. Nothing changed."""

    tag: str
    current: str
    requested: str

    def __init__(self, *, tag: str, current: str, requested: str) -> None:
        super().__init__(
            f"tag {tag!r} already names snapshot {current}, not {requested}; pass force=True "
            "(`wrdsvault tag --force`) to move it (code pinned to this tag will then see other "
            "data)",
            tag=tag,
            current=current,
            requested=requested,
        )


class WriteError(WrdsVaultError):
    """A write other than a sync (a drop, a tag, ``doctor --repair``, a quarantine purge) failed.

    Raised for an operating-system error (EIO, EACCES, ...; a full disk is `DiskSpaceError`) or
    when the writer lock was taken over; the message says what the failure may have left.
    """

    operation: str
    reason: str
    after: str

    def __init__(self, *, operation: str, reason: str, after: str) -> None:
        super().__init__(
            f"{operation} failed: {reason}. {after[:1].upper()}{after[1:]}",
            operation=operation,
            reason=reason,
            after=after,
        )


class BackupError(WrdsVaultError):
    """A backup (or a repair from one) was refused or failed.

    Refused before anything is written: the destination is a file, a folder with content that is
    not a vault, the vault itself or a folder inside it, holds a symlink where the backup writes,
    or holds snapshots the source does not (another vault was backed up into it, or it is newer
    than the source). Failed part-way: a source file does not match its manifest, a copied file
    does not hash back, or an OS error; the destination's previous backup stays current and
    complete (files already copied are reused by the next backup). ``destination`` is the
    backup folder, ``reason`` what happened and what to do.
    """

    destination: str
    reason: str

    def __init__(self, *, destination: str, reason: str) -> None:
        super().__init__(
            f"backup to {destination} failed: {reason}",
            destination=destination,
            reason=reason,
        )


class SchemaDriftError(SyncError):
    """The source's columns changed in a way the dataset's drift policy refuses."""

    drift: SchemaDrift
    policy: str

    def __init__(self, *, dataset: str, drift: SchemaDrift, policy: str) -> None:
        WrdsVaultError.__init__(
            self,
            f"sync of {dataset} refused: the source's columns changed ({drift.summary()}) and the "
            f"drift policy is {policy!r}. Nothing was committed. If the change is expected, sync "
            f"with drift='additive' (added columns only) or drift='accept'",
            dataset=dataset,
            drift=drift,
            policy=policy,
            reason=f"schema drift: {drift.summary()}",
        )


class ValidationFailedError(SyncError):
    """A staged partition failed a validation rule; its files are in quarantine."""

    report: ValidationReport

    def __init__(self, *, dataset: str, report: ValidationReport) -> None:
        WrdsVaultError.__init__(
            self,
            f"sync of {dataset} failed validation; nothing was committed and the staged files "
            f"are in quarantine (`wrdsvault quarantine list`):\n{report.summary()}",
            dataset=dataset,
            report=report,
            reason="validation failed",
        )


class SourceError(WrdsVaultError):
    """The data source failed, or sent what the `Source` contract does not allow.

    ``dataset`` names the dataset being synced when the sync raised it (None otherwise).
    """

    source: str
    reason: str
    retryable: bool
    dataset: str | None

    def __init__(
        self, *, source: str, reason: str, retryable: bool = False, dataset: str | None = None
    ) -> None:
        where = f" for {dataset}" if dataset else ""
        super().__init__(
            f"source {source} failed{where}: {reason}",
            source=source,
            reason=reason,
            retryable=retryable,
            dataset=dataset,
        )


class SourceUnavailableError(SourceError):
    """The source could not be reached, or the connection broke; running the sync again may work."""

    def __init__(self, *, source: str, reason: str) -> None:
        super().__init__(source=source, reason=reason, retryable=True)


class SourceAuthError(SourceError):
    """The source refused the login. The message never contains a secret."""

    def __init__(self, *, source: str, reason: str) -> None:
        super().__init__(source=source, reason=reason, retryable=False)
